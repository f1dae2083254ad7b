"""Writing: sharded parquet under OUT/data, the state file a resumed run reads, and the dataset card."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from synth import __version__
from synth.core import Batch, StoppedShort, SynthError

STATE = ".synth/state.json"
EMPTY_NOTE = (  # datasets refuses an empty split without streaming, even one it wrote itself
    "This run kept no rows: the shard holds the columns only. `load_dataset(..., streaming=True)` "
    "reads it as 0 rows; without streaming, `datasets` refuses any empty split.\n\n"
)


# ---------------------------------------------------------------- writing


@dataclass
class Output:
    """An output directory and what it already holds (for resume)."""

    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    complete: bool = False
    reason: str | None = None  # why a run that ended is not complete; None while it runs

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)

    @property
    def status(self) -> dict[str, str]:
        """What the card says of the run: `complete` only when the work asked for is done."""
        if self.complete:
            return {"status": "complete"}
        return {"status": "incomplete", "reason": self.reason or NOT_FINISHED}


NOT_FINISHED = "the run had not finished when this was written (still running, or killed: go on with --resume)"


def stopped(out: Output, reason: str, card: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
    """Mark `out` incomplete with `reason` (a run that ended short of the work asked for) and
    rewrite its state and card. What it holds stays a dataset: `write` gave it at least an
    empty shard with the run's columns."""
    out.complete, out.reason = False, reason
    _save_state(out)
    write_card(out, (card() if callable(card) else card) or {})


def preflight(
    path: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | Path | None] = (),
    flag: str = "--out",
) -> None:
    """Fail fast, before any model loads or anything is written, if `path` cannot take this run.

    `--overwrite` replaces only a directory synth wrote itself (it holds `.synth/state.json`), and
    an output may not be, hold or sit inside any of `inputs` (on real paths, links followed).
    """
    path = Path(path)
    if overwrite and resume:
        raise SynthError("--overwrite and --resume exclude each other; pick one")
    check_apart(path, inputs, flag)
    if path.exists() and not path.is_dir():
        raise SynthError(f"{flag} {path} is a file; pass a directory")
    has_state = (path / STATE).exists()
    if resume and not has_state:
        raise SynthError(f"nothing to resume in {path}: it holds no synth run; drop --resume to start one")
    if not resume and path.is_dir() and any(path.iterdir()):
        if not overwrite:
            what = "a synth run" if has_state else "other files"
            raise SynthError(
                f"{flag} directory {path} already holds {what}; "
                "pass --resume to continue it, --overwrite to replace it, or choose another directory"
            )
        if not has_state:
            raise SynthError(
                f"{flag} {path} holds files synth did not write (no {STATE}); --overwrite replaces only "
                "synth's own outputs, so choose another directory"
            )
    _check_writable(path)


def check_apart(out: str | Path, inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """Refuse an output that is an input, holds one or sits inside one, compared on real paths
    (symlinks followed): replacing or writing it would destroy or change what the run reads."""
    for given in inputs:
        if given is None or not Path(given).exists():
            continue  # a shipped set's name or a Hub id: nothing on disk to protect
        relation = overlap(out, given)
        if relation:
            raise SynthError(
                f"{flag} {out} {relation} the input {given}; write the output to a directory apart from it"
            )


def overlap(a: str | Path, b: str | Path) -> str | None:
    """How `a` lies against `b` on real paths: "is", "holds", "sits inside", or None when apart."""
    first, second = Path(a).resolve(), Path(b).resolve()
    if first == second:
        return "is"
    if first in second.parents:
        return "holds"
    return "sits inside" if second in first.parents else None


def open_output(
    path: str | Path,
    settings: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> Output:
    """Claim `path` for a run: new, replaced (`overwrite`) or continued (`resume`, same settings).
    `inputs` are what the run reads: the output may not overlap them (see `preflight`)."""
    path = Path(path)
    settings = json.loads(json.dumps(settings or {}, default=str))
    preflight(path, overwrite=overwrite, resume=resume, inputs=inputs)
    if resume:
        return _resumed(path, path / STATE, settings)
    _clear(path)
    (path / "data").mkdir(parents=True, exist_ok=True)
    out = Output(path, settings, started=_now())
    _save_state(out)
    return out


def _clear(path: Path) -> None:
    """Remove what an earlier synth run wrote into `path` (only a directory `preflight` let through,
    one with synth's state): its card, state and shards. Anything else the user put there stays."""
    (path / "README.md").unlink(missing_ok=True)
    shutil.rmtree(path / ".synth", ignore_errors=True)
    data = path / "data"
    if data.is_dir():
        for shard in [*data.glob("train-*.parquet"), *data.glob(".train-*.tmp")]:
            shard.unlink()


def _resumed(path: Path, state_file: Path, settings: dict[str, Any]) -> Output:
    state = json.loads(state_file.read_text())
    differs = {
        key: (state["settings"].get(key), settings.get(key))
        for key in sorted(set(state["settings"]) | set(settings))
        if state["settings"].get(key) != settings.get(key)
    }
    if differs:
        lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in differs.items())
        raise SynthError(f"cannot resume {path} with different settings ({lines}); use the original ones")
    shards = [s for s in state["shards"] if (path / "data" / s["file"]).exists()]
    for empty in [s for s in shards if not s["rows"]]:  # an ended run's columns-only shard: the rows come now
        (path / "data" / empty["file"]).unlink()
        shards.remove(empty)
    for stray in (path / "data").glob(".train-*.tmp"):
        stray.unlink()  # a shard the killed run was still writing
    listed = {s["file"] for s in shards}
    for unlisted in (path / "data").glob("train-*.parquet"):  # synth's names only: other files stay
        if unlisted.name not in listed:  # renamed into place, then killed before the state said so
            unlisted.unlink()  # its rows come again from the checkpoint; kept, they would be read twice
    # Running again, it is not complete until this run ends so (a card written on the way says so).
    return Output(path, settings, shards, state.get("checkpoint", {}), state["started"], complete=False)


def _check_writable(path: Path) -> None:
    """Refuse a directory this run could not write, without writing anything: the directory if it
    exists, else the nearest folder above it that does (where it would be made)."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise SynthError(f"cannot write to {path} ({target} is not a writable directory); choose a writable --out")


def _save_state(out: Output) -> None:
    state = {
        "version": __version__,
        "settings": out.settings,
        "shards": out.shards,
        "checkpoint": out.checkpoint,
        "started": out.started,
        "complete": out.complete,
        "reason": out.reason,
    }
    target = out.path / STATE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, target)


def write(
    batches: Iterable[Batch],
    out: str | Path | Output,
    *,
    card: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    checkpoint: Callable[[], dict[str, Any]] | None = None,
    shard_rows: int = 10_000,
    flush_seconds: float = 60.0,
) -> Output:
    """Stream `batches` into parquet shards under `out/data`, with a dataset card.

    A shard is flushed every `shard_rows` rows or `flush_seconds`, whichever comes first, so a
    killed run loses at most that much. `checkpoint()` is stored with each shard for resume.
    On Ctrl-C the rows in hand are flushed before the interrupt goes on up. A run that ends,
    whole or `StoppedShort`, leaves a dataset that loads, with no rows if it kept none.
    """
    output = out if isinstance(out, Output) else open_output(out)
    writer = _ShardWriter(output, card, checkpoint)
    last_flush = time.monotonic()
    ended = False
    try:
        for batch in batches:
            writer.add(batch)
            if writer.held >= shard_rows or time.monotonic() - last_flush >= flush_seconds:
                writer.flush()
                last_flush = time.monotonic()
        output.complete = ended = True
    except StoppedShort as exc:
        output.reason, ended = str(exc), True
        raise
    except KeyboardInterrupt:
        output.reason = "interrupted (Ctrl-C): run the same command with --resume to go on"
        raise
    finally:
        if ended and not output.shards and not writer.pending:  # no rows: still an (empty) dataset, not a bare card
            writer.pending = [writer.empty if writer.empty is not None else pa.table({"id": pa.array([], pa.string())})]
        writer.flush()
    return output


def tee(
    out: Output,
    select: Callable[[Batch], Batch],
    *,
    card: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    shard_rows: int = 10_000,
) -> Callable[[Iterable[Batch]], Iterator[Batch]]:
    """A pass-through stage that also writes `select(batch)` into a second output (a companion
    dataset) through a `Sink`, kept in step with the main output's checkpoints (see `Sink`)."""
    sink = Sink(out, card, shard_rows)

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        try:
            for batch in batches:
                sink(select(batch))
                yield batch
            out.complete = True
        finally:
            sink._writer.flush()

    stage.sink = sink  # type: ignore[attr-defined]  # a run finds side outputs by their Sink
    return stage


@dataclass
class _ShardWriter:
    output: Output
    card: dict[str, Any] | Callable[[], dict[str, Any]] | None
    checkpoint: Callable[[], dict[str, Any]] | None
    pending: list[Batch] = field(default_factory=list)
    schema: pa.Schema | None = None
    empty: Batch | None = None

    @property
    def held(self) -> int:
        return sum(b.num_rows for b in self.pending)

    def add(self, batch: Batch) -> None:
        if batch.num_rows:
            self.pending.append(batch)
        elif self.empty is None:
            self.empty = batch

    def flush(self) -> None:
        out = self.output
        if self.pending and (self.held or not out.shards):
            try:
                table = self._conform(pa.concat_tables(self.pending, promote_options="permissive"))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError):
                raise SynthError(f"cannot write {out.path}: {self._clash()}") from None
            name = f"train-{len(out.shards):05d}.parquet"
            tmp = out.path / "data" / f".{name}.tmp"
            if table.num_rows:
                pq.write_table(table, tmp, compression="zstd")
            else:  # no row group at all: a 0-row one makes `datasets` read with batch size 0 and fail
                pq.ParquetWriter(tmp, table.schema, compression="zstd").close()
            os.replace(tmp, out.path / "data" / name)
            out.shards.append({"file": name, "rows": table.num_rows})
            self.pending = []
        if self.checkpoint is not None:
            out.checkpoint = self.checkpoint()
        _save_state(out)
        card = self.card() if callable(self.card) else (self.card or {})
        write_card(out, card)

    def _clash(self) -> str:
        """Which column's type the held rows disagree on (with each other or the shards written)."""
        seen = {f.name: f.type for f in self.schema or _existing_schema(self.output) or []}
        for batch in self.pending:
            for f in batch.schema:
                if f.name not in seen and self.schema is not None:
                    return f"column {f.name!r} is in these rows, not in those before; give all rows the same columns"
                if not pa.types.is_null(f.type) and seen.setdefault(f.name, f.type) != f.type:
                    kinds = f"{seen[f.name]} values in some rows and {f.type} in others"
                    return f"column {f.name!r} holds {kinds}; give it one type in the input"
        return f"the rows lack columns of those before ({', '.join(seen)}); give all rows the same columns"

    def _conform(self, table: Batch) -> Batch:
        # Every shard must share one schema or `load_dataset` refuses the folder.
        fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
        table = table.cast(pa.schema(fields))
        if self.schema is None:
            self.schema = _existing_schema(self.output) or table.schema
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        return table


class Sink:
    """A push-style `write` target: a stage hands it the rows it sets aside (datatrove's side writer).

    `with Sink(open_output(path)) as rejects: ...`; each call adds a batch, exit writes the rest.
    Beside a main output (a run of the recipes' runner) it is kill-safe: each main checkpoint
    `commit`s the sink first and records its shards, and a resumed run `rewind`s the sink to
    that record, so the side rows always match the input rows the main output has finished.
    Between checkpoints it may flush every `shard_rows` rows, to bound memory; a rewind drops those.
    """

    def __init__(
        self, out: Output, card: dict[str, Any] | Callable[[], dict[str, Any]] | None = None, shard_rows: int = 10_000
    ) -> None:
        self.output, self.shard_rows = out, shard_rows
        self._writer = _ShardWriter(out, card, None)

    def __call__(self, batch: Batch) -> None:
        self._writer.add(batch)
        if self._writer.held >= self.shard_rows:
            self._writer.flush()

    def commit(self) -> dict[str, int]:
        """Write every row in hand; what the main checkpoint records of this output."""
        self._writer.flush()
        return {"shards": len(self.output.shards), "rows": self.output.rows}

    def rewind(self, shards: int) -> None:
        """Keep only the first `shards` shards: later ones hold rows past the main output's last
        checkpoint, which the resumed run writes again. Shard files no state lists go too."""
        out = self.output
        out.shards = out.shards[:shards]
        kept = {s["file"] for s in out.shards}
        for file in (out.path / "data").glob("train-*.parquet"):
            if file.name not in kept:
                file.unlink()
        out.complete, out.reason = False, None
        _save_state(out)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, kind: object, value: object, *_: object) -> None:
        self.output.complete = kind is None
        if isinstance(value, StoppedShort):  # the main run stopped short: so did this side of it
            self.output.reason = str(value)
        elif isinstance(value, KeyboardInterrupt):
            self.output.reason = "interrupted (Ctrl-C): run the same command with --resume to go on"
        self._writer.flush()


def _existing_schema(out: Output) -> pa.Schema | None:
    if not out.shards:
        return None
    return pq.read_schema(out.path / "data" / out.shards[0]["file"])


# ---------------------------------------------------------------- dataset card


def write_card(out: Output, provenance: dict[str, Any]) -> None:
    """Write README.md: Hub YAML metadata, then a provenance section (JSON, for machines too)."""
    import yaml

    from synth.card import diversity_section, public

    rows = out.rows
    meta = {
        "tags": ["synthetic", "synth"],
        "size_categories": [_size_category(rows)],
    }
    record = {
        "synth_version": __version__,
        "rows": rows,
        "shards": len(out.shards),
        "started": out.started,
        "finished": _now() if out.complete else None,
        **public(out.status),  # a reason may name the output's path
        **public(provenance),  # pushed with the data: no local paths, hosts or addresses
    }
    body = (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {out.path.name}\n\n"
        f"Synthetic data made with [synth](https://pypi.org/project/synth/) {__version__}: "
        f"{rows} rows in {len(out.shards)} parquet shard(s) under `data/`.\n\n"
        "```python\nfrom datasets import load_dataset\n"
        f'ds = load_dataset("{out.path.name}")\n```\n\n'
        f"{EMPTY_NOTE if out.shards and not rows else ''}"
        f"{diversity_section(record['diversity']) if isinstance(record.get('diversity'), dict) else ''}"
        "## Provenance\n\n"
        f"```json\n{json.dumps(record, indent=2, default=str, ensure_ascii=False)}\n```\n"
    )
    tmp = out.path / ".README.md.tmp"
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, out.path / "README.md")


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance record of a synth output's dataset card."""
    text = (Path(path) / "README.md").read_text(encoding="utf-8")
    start = text.index("## Provenance")
    block = text[text.index("```json\n", start) + 8 :]
    return json.loads(block[: block.index("\n```")])


def _size_category(rows: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for bound, label in bounds:
        if rows < bound:
            return label
    return "1M<n<10M" if rows < 10_000_000 else "10M<n<100M"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
