"""The loop the three methods share: each batch's checked rows through the method's `decide`, its
verdict written as `dup_cluster` (and the method's extra columns), kept rows yielded and dropped
ones sent to `rejects`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from synth.core import Batch, SynthError, add_columns
from synth.stages.dedup._index import _Store
from synth.stages.dedup._readahead import _ahead

Rejects = Callable[[Batch], None]


@dataclass
class Verdict:
    """One method's decision on the checked rows of a batch (positions are within those rows)."""

    keep: np.ndarray  # bool
    prior: np.ndarray  # index in the kept-row store of the earlier-batch row matched, or -1
    owner: np.ndarray  # position in this batch of the row matched, or -1
    similarity: np.ndarray  # float, to the row matched (NaN when kept)
    extra: dict[str, pa.Array] = field(default_factory=dict)


def _stream(
    batches: Iterable[Batch],
    column: str,
    stats: Counter[str],
    rejects: Rejects | None,
    decide: Callable[[Any, pa.Array], Verdict],
    store: _Store,  # the method's own: `decide` appends the rows it keeps
    extra: tuple[str, ...] = (),
    prepare: Callable[[pa.Array], Any] | None = None,
    ahead: Callable[[], bool] | None = None,
) -> Iterator[Batch]:
    """Each batch through `decide(texts, ids)`, or `decide(prepare(texts), ids)`; `prepare` must
    not touch what `decide` keeps. With `ahead`, the stage reads a batch ahead (see `_ahead`)."""
    for batch, texts, checked, prepared in _ahead(batches, column, stats, prepare, ahead):
        ids = batch["id"].combine_chunks().filter(pa.array(checked))
        verdict = decide(prepared, ids) if len(texts) else None
        keep = np.ones(batch.num_rows, bool)
        slot = np.full(batch.num_rows, len(texts))  # unchecked rows point past the end: a null
        slot[checked] = np.arange(len(texts))
        columns: dict[str, pa.Array] = {}
        similarity = np.full(batch.num_rows, np.nan)
        if verdict is None:
            columns["dup_cluster"] = pa.nulls(batch.num_rows, pa.string())
            columns.update({name: pa.nulls(batch.num_rows, pa.float32()) for name in extra})
        else:
            keep[checked] = verdict.keep
            similarity[checked] = verdict.similarity
            cluster = _clusters(ids, verdict, store)
            columns["dup_cluster"] = pa.concat_arrays([cluster, pa.nulls(1, pa.string())]).take(slot)
            for name, values in verdict.extra.items():
                columns[name] = pa.concat_arrays([values, pa.nulls(1, values.type)]).take(slot)
        out = add_columns(batch, **columns)
        stats["kept"] += int(keep.sum())
        stats["dropped"] += int((~keep).sum())
        if rejects is not None and not keep.all():
            dropped = add_columns(out, dup_similarity=pa.array(similarity, pa.float32()))
            rejects(dropped.filter(pa.array(~keep)))
        yield out.filter(pa.array(keep))


def _clusters(ids: pa.Array, verdict: Verdict, store: _Store) -> pa.Array:
    """Own id for kept rows; the matched row's id (from this batch or the store) for dropped ones."""
    index = np.arange(len(ids))
    inside = verdict.owner >= 0
    index[inside] = verdict.owner[inside]
    earlier = np.flatnonzero(verdict.prior >= 0)
    index[earlier] = len(ids) + np.arange(len(earlier))
    earlier_ids = store.ids(verdict.prior[earlier]) if len(earlier) else pa.array([], pa.string())
    return pa.concat_arrays([ids, earlier_ids]).take(pa.array(index))


def check_threshold(threshold: float, what: str) -> None:
    """A threshold must lie in (0, 1]."""
    if not 0 < threshold <= 1:
        raise SynthError(f"--threshold {threshold} is outside (0, 1]; give a {what} such as 0.7")
