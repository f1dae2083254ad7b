"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.dedup import (
    ExactDedup,
    MinHashDedup,
    SemanticDedup,
    dedup_exact,
    dedup_minhash,
    dedup_semantic,
)
from synth.stages.magpie import Magpie, Respond

__all__ = [
    "ExactDedup",
    "Magpie",
    "MinHashDedup",
    "Respond",
    "SemanticDedup",
    "dedup_exact",
    "dedup_minhash",
    "dedup_semantic",
]
