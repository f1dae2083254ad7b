"""Stage families, one file each; every stage maps an iterator of batches to an iterator of batches."""

from synth.stages.magpie import Magpie, MultiTurn, Respond

__all__ = ["Magpie", "MultiTurn", "Respond"]
