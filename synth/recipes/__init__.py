"""Short compositions of stages that the CLI calls; each reads as a recipe.

One module per family; the run machinery they share (checkpoints, progress, the card) is in `_runner`,
and each takes how it runs (overwrite, resume, the error-rate stop, the command) as one `RunSettings`.
"""

from synth.recipes._runner import Cursor, Interrupted, RunSettings, pipeline
from synth.recipes.chat import magpie, respond, steering
from synth.recipes.corpus import synthesize, think
from synth.recipes.decontaminate import decontaminate
from synth.recipes.personas import personas_expand, personas_from_text, personas_generate
from synth.recipes.quality import dedup, dedup_stage, filter_rows, judge, prefs
from synth.recipes.verify import verify_code, verify_math

__all__ = [
    "Cursor",
    "Interrupted",
    "RunSettings",
    "decontaminate",
    "dedup",
    "dedup_stage",
    "filter_rows",
    "judge",
    "magpie",
    "personas_expand",
    "personas_from_text",
    "personas_generate",
    "pipeline",
    "prefs",
    "respond",
    "steering",
    "synthesize",
    "think",
    "verify_code",
    "verify_math",
]
