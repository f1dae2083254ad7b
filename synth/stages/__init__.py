"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.chunk import Chunk
from synth.stages.dedup import (
    ExactDedup,
    MinHashDedup,
    SemanticDedup,
    dedup_exact,
    dedup_minhash,
    dedup_semantic,
)
from synth.stages.magpie import Magpie, MultiTurn, Respond
from synth.stages.synthesize import GroundedCheck, InstructionPretrain, PromptPairs, SftRows
from synth.stages.think import Think

__all__ = [
    "Chunk",
    "ExactDedup",
    "GroundedCheck",
    "InstructionPretrain",
    "Magpie",
    "MinHashDedup",
    "MultiTurn",
    "PromptPairs",
    "Respond",
    "SemanticDedup",
    "SftRows",
    "Think",
    "dedup_exact",
    "dedup_minhash",
    "dedup_semantic",
]
