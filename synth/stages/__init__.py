"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.chunk import Chunk
from synth.stages.magpie import Magpie, MultiTurn, Respond
from synth.stages.synthesize import GroundedCheck, InstructionPretrain, PromptPairs, SftRows
from synth.stages.think import Think

__all__ = [
    "Chunk",
    "GroundedCheck",
    "InstructionPretrain",
    "Magpie",
    "MultiTurn",
    "PromptPairs",
    "Respond",
    "SftRows",
    "Think",
]
