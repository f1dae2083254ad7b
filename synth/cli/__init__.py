"""The `synth` command: typed options in, a recipe call out. No logic lives here.

One module a command family; shared options and helpers live in `_shared`, declared once.
A new command is a module here, imported below so that it registers on `app`.
"""

# isort: off
# In the order `synth --help` lists them: generation, quality, corpora, personas, checks, reading.
from synth.cli import chat, quality, corpus, personas, decontaminate, verify, calibrate, view, diversity  # noqa: F401

# isort: on
from synth.cli._shared import app, main

__all__ = ["app", "main"]
