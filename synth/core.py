"""Batches, stages and `pipe`: the whole data model of synth.

A batch is a `pyarrow.Table` whose rows each carry a string `id`. A stage is any callable
from an iterable of batches to an iterator of batches; a plain generator function counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

import pyarrow as pa

Batch: TypeAlias = pa.Table
Stage = Callable[[Iterable[Batch]], Iterator[Batch]]


class SynthError(Exception):
    """A problem the user can fix: the CLI prints the message and exits with code 2."""

    exit_code = 2


EXIT_STOPPED_SHORT = 3  # the work asked for is not all done; what was kept is on disk


class StoppedShort(SynthError):
    """A run that ended before the work asked for was done (`--max-attempts`, the yield stop,
    `--max-error-rate`, a server that never came back): the rows kept are on disk, the card says
    `incomplete` with the reason, and the CLI exits with code 3 and the line to go on."""

    exit_code = EXIT_STOPPED_SHORT


def pipe(source: Iterable[Batch], *stages: Stage) -> Iterator[Batch]:
    """Chain `stages` over `source` lazily: nothing runs until the result is iterated."""
    stream: Iterable[Batch] = source
    for stage in stages:
        stream = stage(stream)
    return iter(stream)


def from_rows(rows: Sequence[Mapping[str, Any]]) -> Batch:
    """Build a batch from a list of dicts; every row needs an `id`, stored as a string."""
    table = pa.Table.from_pylist(list(rows))
    return with_string_ids(table)


def with_string_ids(batch: Batch) -> Batch:
    """Check the `id` column exists and cast it to string."""
    if "id" not in batch.column_names:
        raise SynthError(f"every row needs an `id` column; found columns {batch.column_names}")
    ids = batch["id"]
    if ids.null_count:
        raise SynthError("the `id` column has empty values; give every row an id")
    if not pa.types.is_string(ids.type) and not pa.types.is_large_string(ids.type):
        ids = ids.cast(pa.string())
        batch = batch.set_column(batch.column_names.index("id"), "id", ids)
    return batch


def add_columns(batch: Batch, **columns: Sequence[Any] | pa.Array | pa.ChunkedArray) -> Batch:
    """Return `batch` with `columns` added, or overwritten where the name already exists."""
    for name, values in columns.items():
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(list(values))
        if name in batch.column_names:
            batch = batch.set_column(batch.column_names.index(name), name, array)
        else:
            batch = batch.append_column(name, array)
    return batch


def rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Regroup a stream into batches of `size` rows (the last may be shorter)."""
    pending: list[Batch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.concat_tables(pending, promote_options="default").combine_chunks()
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, held = ([rest] if rest.num_rows else []), rest.num_rows
    if held:
        yield pa.concat_tables(pending, promote_options="default").combine_chunks()


def take(n: int) -> Stage:
    """Stop the stream after `n` rows; upstream work stops with it, since `pipe` is lazy."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        if n <= 0:
            return
        left = n
        for batch in batches:
            yield batch.slice(0, left)
            left -= min(left, batch.num_rows)
            if left == 0:
                return  # without pulling another batch: upstream generation stops here

    return stage


def counter_source(batch_size: int, start: int = 0, prefix: str = "") -> Iterator[Batch]:
    """An endless stream of id-only batches: `{prefix}{i:09d}` for i = start, start+1, ...

    Generative stages (Magpie) take their attempts from here, so ids are stable across resumes.
    """
    for first in itertools.count(start, batch_size):
        ids = [f"{prefix}{i:09d}" for i in range(first, first + batch_size)]
        yield pa.table({"id": pa.array(ids, pa.string())})
