"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.chunk import Chunk
from synth.stages.decontaminate import Decontaminate
from synth.stages.dedup import (
    ExactDedup,
    MinHashDedup,
    SemanticDedup,
    dedup_exact,
    dedup_minhash,
    dedup_semantic,
)
from synth.stages.filters import Filter, Rule, heuristic_rules, load_heuristics, where
from synth.stages.judge import Judge, PreferencePairs, Rubric, load_rubric
from synth.stages.magpie import DropTruncated, Magpie, MultiTurn, Respond
from synth.stages.synthesize import GroundedCheck, InstructionPretrain, PromptPairs, SftRows
from synth.stages.think import Think
from synth.stages.verify import CheckAnswer, SelfConsistency, VerifyCode

__all__ = [
    "CheckAnswer",
    "Chunk",
    "Decontaminate",
    "DropTruncated",
    "ExactDedup",
    "Filter",
    "GroundedCheck",
    "InstructionPretrain",
    "Judge",
    "Magpie",
    "MinHashDedup",
    "MultiTurn",
    "PreferencePairs",
    "PromptPairs",
    "Respond",
    "Rubric",
    "Rule",
    "SelfConsistency",
    "SemanticDedup",
    "SftRows",
    "Think",
    "VerifyCode",
    "dedup_exact",
    "dedup_minhash",
    "dedup_semantic",
    "heuristic_rules",
    "load_heuristics",
    "load_rubric",
    "where",
]
