"""The `synth` command: typed options in, a recipe call out. No logic lives here.

One module a command family; shared options and helpers live in `_shared`, declared once.
A new command is a module here, imported below so that it registers on `app`.
"""

from synth.cli import chat, corpus, decontaminate, personas, quality  # noqa: F401  (each registers its commands)
from synth.cli._shared import app, main

__all__ = ["app", "main"]
