"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.filters import Filter, Rule, heuristic_rules, load_heuristics, where
from synth.stages.judge import Judge, PreferencePairs, Rubric, load_rubric
from synth.stages.magpie import Magpie, MultiTurn, Respond

__all__ = [
    "Filter",
    "Judge",
    "Magpie",
    "MultiTurn",
    "PreferencePairs",
    "Respond",
    "Rubric",
    "Rule",
    "heuristic_rules",
    "load_heuristics",
    "load_rubric",
    "where",
]
