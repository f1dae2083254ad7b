"""Exact dedup: a 64-bit hash of each row's normalised text against kept rows' hashes."""

from __future__ import annotations

import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from synth.core import Batch
from synth.stages.dedup._index import _Index, _Store
from synth.stages.dedup._stream import Rejects, Verdict, _stream


@dataclass(frozen=True)
class ExactDedup:
    """Reads `column`; adds `dup_cluster`. Drops rows whose normalised text (NFKC, case-folded,
    whitespace collapsed, punctuation dropped if asked) has the 64-bit hash of a kept row's."""

    column: str = "instruction"
    ignore_punctuation: bool = False
    rejects: Rejects | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        index, store = _Index(), _Store()
        self.notes.update(method="exact", ignore_punctuation=self.ignore_punctuation)

        def decide(texts: pa.Array, ids: pa.Array) -> Verdict:
            keys = np.fromiter((exact_key(t, self.ignore_punctuation) for t in texts.to_pylist()), np.uint64)
            prior = index.get(keys)
            owner = np.full(len(keys), -1)
            free = np.flatnonzero(prior < 0)
            _, first, inverse = np.unique(keys[free], return_index=True, return_inverse=True)
            owner[free] = free[first][inverse]
            keep = np.zeros(len(keys), bool)
            keep[free] = owner[free] == free
            owner[keep] = -1
            index.add(keys[keep], len(store) + np.arange(int(keep.sum())))
            store.append(ids.filter(pa.array(keep)))
            return Verdict(keep, prior, owner, np.where(keep, np.nan, 1.0))

        return _stream(batches, self.column, self.stats, self.rejects, decide, store)


def exact_key(text: str, ignore_punctuation: bool = False) -> int:
    """A 64-bit hash of `text` after NFKC, case folding and whitespace collapsing (never 0)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    if ignore_punctuation:
        norm = norm.translate(_punctuation())
    return xxhash.xxh3_64_intdigest(" ".join(norm.split()).encode()) or 1


@lru_cache(maxsize=1)
def _punctuation() -> dict[int, None]:
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")}
