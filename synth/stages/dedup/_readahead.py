"""Reading a batch's texts to compare, and reading one batch ahead: a worker thread prepares the
next batch (hashes or embeds it) while the caller matches this one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from synth.core import Batch, SynthError


def _ahead(
    batches: Iterable[Batch],
    column: str,
    stats: Counter[str],
    prepare: Callable[[pa.Array], Any] | None,
    ahead: Callable[[], bool] | None = None,
) -> Iterator[tuple[Batch, pa.Array, np.ndarray, Any]]:
    """(batch, its checked texts, which rows those are, `prepare(texts)` or the texts).

    Without `ahead`, each batch is yielded before the next is read: a pipeline's resume
    checkpoint (the source rows read once a stage has yielded) counts on that. With `ahead`,
    batch k + 1 is read before batch k is yielded, and while `ahead()` holds one worker thread
    prepares it while the caller decides and writes batch k (numpy and Arrow let go of the GIL
    in their loops); otherwise it is prepared here. One worker, so one `prepare` at a time (a
    tokenizer may not be shared); a short one, as Ctrl-C waits for it. A batch is counted in
    `stats` as it is yielded, not as it is read."""
    if ahead is None:
        for batch in batches:
            stats["rows_in"] += batch.num_rows
            texts, checked = _checked_texts(batch, column, stats)
            yield batch, texts, checked, prepare(texts) if prepare and len(texts) else texts
        return
    assert prepare is not None, "reading ahead is for a stage that prepares"
    with ThreadPoolExecutor(1, thread_name_prefix="synth-dedup") as pool:
        pending: tuple[Batch, pa.Array, np.ndarray, Future[Any] | None, Counter[str]] | None = None
        for batch in batches:
            counts = Counter({"rows_in": batch.num_rows})  # into `stats` as the batch is yielded
            texts, checked = _checked_texts(batch, column, counts)
            job: Future[Any] | None = None
            if len(texts) and ahead():
                job = pool.submit(prepare, texts)
            elif len(texts):
                if pending is not None and pending[3] is not None:
                    pending[3].result()  # the worker's batch first: never two `prepare` at once
                job = Future()
                job.set_result(prepare(texts))
            if pending is not None:
                stats.update(pending[4])
                yield *pending[:3], pending[3] and pending[3].result()
            pending = (batch, texts, checked, job, counts)
        if pending is not None:
            stats.update(pending[4])
            yield *pending[:3], pending[3] and pending[3].result()


def _checked_texts(batch: Batch, column: str, stats: Counter[str]) -> tuple[pa.Array, np.ndarray]:
    if column not in batch.column_names:
        names = ", ".join(batch.column_names)
        raise SynthError(f"column {column!r} is not in the input (it has: {names}); pass one of these to --column")
    values = batch[column].combine_chunks()
    nulls = values.null_count
    stats["unchecked_null"] += nulls
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        stats["unchecked_non_string"] += len(values) - nulls
        return pa.array([], pa.string()), np.zeros(len(values), bool)
    checked = values.is_valid().to_numpy(zero_copy_only=False)
    return values.filter(pa.array(checked)).cast(pa.string()), checked
