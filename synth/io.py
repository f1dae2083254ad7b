"""Read any input lazily; write a Hub-shaped dataset directory that resumes.

Output layout (a Hugging Face dataset repo):
    OUT/data/train-00000.parquet ...   shards, each written to a temporary file then renamed
    OUT/README.md                      dataset card: YAML metadata + provenance
    OUT/.synth/state.json              settings, finished shards, the source's checkpoint
"""

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
from synth.core import Batch, SynthError, with_string_ids

STATE = ".synth/state.json"
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}


# ---------------------------------------------------------------- reading


def read(path: str | Path, batch_size: int = 1000) -> Iterator[Batch]:
    """Stream batches from a synth output, parquet, jsonl, csv, text files or a `save_to_disk` dir.

    Rows without an `id` get one from their position, so ids are stable across runs.
    """
    path = Path(path)
    if not path.exists():
        raise SynthError(f"input {path} does not exist; pass a file or folder of parquet, jsonl, csv or text")
    batches = _read_raw(path, batch_size)
    return _ensure_ids(batches, prefix=path.stem)


def _read_raw(path: Path, batch_size: int) -> Iterator[Batch]:
    if path.is_dir():
        if (path / "data").is_dir() and list((path / "data").glob("*.parquet")):
            return _read_parquet(sorted((path / "data").glob("*.parquet")), batch_size)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return _read_arrow(sorted(path.glob("*.arrow")), batch_size)
        for suffix, reader in ((".parquet", _read_parquet), (".jsonl", _read_jsonl), (".csv", _read_csv)):
            files = sorted(path.rglob(f"*{suffix}"))
            if files:
                return reader(files, batch_size)
        texts = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        if texts:
            return _read_texts(texts, path, batch_size)
        raise SynthError(f"found no parquet, jsonl, csv, arrow or text files in {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet([path], batch_size)
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return _read_jsonl([path], batch_size)
    if suffix == ".csv":
        return _read_csv([path], batch_size)
    if suffix in TEXT_SUFFIXES:
        return _read_texts([path], path.parent, batch_size)
    raise SynthError(f"cannot read {path}: use .parquet, .jsonl, .csv, .txt/.md or a dataset folder")


def _read_parquet(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        for record_batch in pq.ParquetFile(file).iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([record_batch])


def _read_arrow(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        with pa.memory_map(str(file)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(source)
            table = reader.read_all()  # memory-mapped: pages come in as the slices are read
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


def _read_jsonl(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        rows: list[dict[str, Any]] = []
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SynthError(f"{file}:{number} is not valid JSON ({exc.msg}); fix or remove it") from None
                if len(rows) == batch_size:
                    yield pa.Table.from_pylist(rows)
                    rows = []
        if rows:
            yield pa.Table.from_pylist(rows)


def _read_csv(files: list[Path], batch_size: int) -> Iterator[Batch]:
    import pyarrow.csv as pacsv

    for file in files:
        reader = pacsv.open_csv(file, read_options=pacsv.ReadOptions(block_size=1 << 20))
        for record_batch in reader:
            table = pa.Table.from_batches([record_batch])
            for start in range(0, table.num_rows, batch_size):
                yield table.slice(start, batch_size)


def _read_texts(files: list[Path], root: Path, batch_size: int) -> Iterator[Batch]:
    rows: list[dict[str, str]] = []
    for file in files:
        rows.append({"id": str(file.relative_to(root)), "text": file.read_text(encoding="utf-8", errors="replace")})
        if len(rows) == batch_size:
            yield pa.Table.from_pylist(rows)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows)


def _ensure_ids(batches: Iterable[Batch], prefix: str) -> Iterator[Batch]:
    offset = 0
    for batch in batches:
        if "id" not in batch.column_names:
            ids = [f"{prefix}-{i:09d}" for i in range(offset, offset + batch.num_rows)]
            batch = batch.add_column(0, "id", pa.array(ids, pa.string()))
        offset += batch.num_rows
        yield with_string_ids(batch)


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

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)


def preflight(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Fail fast, before any model loads, if `path` cannot take this run."""
    path = Path(path)
    if overwrite and resume:
        raise SynthError("--overwrite and --resume exclude each other; pick one")
    if path.exists() and not path.is_dir():
        raise SynthError(f"output path {path} is a file; pass a directory to --out")
    has_state = (path / STATE).exists()
    if resume and not has_state:
        raise SynthError(f"nothing to resume in {path}: it holds no synth run; drop --resume to start one")
    if not resume and path.is_dir() and any(path.iterdir()):
        if not overwrite:
            what = "a synth run" if has_state else "other files"
            raise SynthError(
                f"output directory {path} already holds {what}; "
                "pass --resume to continue it, --overwrite to replace it, or choose another --out"
            )
        if not has_state and not (path / "data").is_dir():
            raise SynthError(f"{path} holds files that are not a synth dataset; refusing to overwrite them")
    _check_writable(path)


def open_output(
    path: str | Path, settings: dict[str, Any] | None = None, *, overwrite: bool = False, resume: bool = False
) -> Output:
    """Claim `path` for a run: new, replaced (`overwrite`) or continued (`resume`, same settings)."""
    path = Path(path)
    settings = json.loads(json.dumps(settings or {}, default=str))
    preflight(path, overwrite=overwrite, resume=resume)
    if resume:
        return _resumed(path, path / STATE, settings)
    for name in ("data", ".synth", "README.md"):
        target = path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (path / "data").mkdir()
    out = Output(path, settings, started=_now())
    _save_state(out)
    return out


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
    for stray in (path / "data").glob(".*.tmp"):
        stray.unlink()  # a shard the killed run was still writing
    return Output(path, settings, shards, state.get("checkpoint", {}), state["started"], state.get("complete", False))


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".synth-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SynthError(f"cannot write to {path} ({exc.strerror}); choose a writable --out") from None


def _save_state(out: Output) -> None:
    state = {
        "version": __version__,
        "settings": out.settings,
        "shards": out.shards,
        "checkpoint": out.checkpoint,
        "started": out.started,
        "complete": out.complete,
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
    On Ctrl-C the rows in hand are flushed before the interrupt goes on up.
    """
    output = out if isinstance(out, Output) else open_output(out)
    writer = _ShardWriter(output, card, checkpoint)
    last_flush = time.monotonic()
    try:
        for batch in batches:
            writer.add(batch)
            if writer.held >= shard_rows or time.monotonic() - last_flush >= flush_seconds:
                writer.flush()
                last_flush = time.monotonic()
        output.complete = True
        if not output.shards and not writer.pending:  # no rows: still an (empty) dataset, not a bare card
            writer.pending = [writer.empty if writer.empty is not None else pa.table({"id": pa.array([], pa.string())})]
    finally:
        writer.flush()
    return output


def tee(
    out: Output,
    select: Callable[[Batch], Batch],
    *,
    card: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    shard_rows: int = 10_000,
    flush_seconds: float = 60.0,
) -> Callable[[Iterable[Batch]], Iterator[Batch]]:
    """A pass-through stage that also writes `select(batch)` into a second output (a companion
    dataset), flushed on the same policy as `write`, and when the stream ends or is interrupted."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        writer = _ShardWriter(out, card, None)
        last_flush = time.monotonic()
        try:
            for batch in batches:
                writer.add(select(batch))
                if writer.held >= shard_rows or time.monotonic() - last_flush >= flush_seconds:
                    writer.flush()
                    last_flush = time.monotonic()
                yield batch
            out.complete = True
        finally:
            writer.flush()

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
            table = self._conform(pa.concat_tables(self.pending, promote_options="permissive"))
            name = f"train-{len(out.shards):05d}.parquet"
            tmp = out.path / "data" / f".{name}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, out.path / "data" / name)
            out.shards.append({"file": name, "rows": table.num_rows})
            self.pending = []
        if self.checkpoint is not None:
            out.checkpoint = self.checkpoint()
        _save_state(out)
        card = self.card() if callable(self.card) else (self.card or {})
        write_card(out, card)

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
    """

    def __init__(self, out: Output, card: dict[str, Any] | None = None, shard_rows: int = 10_000) -> None:
        self.output, self.shard_rows = out, shard_rows
        self._writer = _ShardWriter(out, card, None)

    def __call__(self, batch: Batch) -> None:
        self._writer.add(batch)
        if self._writer.held >= self.shard_rows:
            self._writer.flush()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        self.output.complete = kind is None
        self._writer.flush()


def _existing_schema(out: Output) -> pa.Schema | None:
    if not out.shards:
        return None
    return pq.read_schema(out.path / "data" / out.shards[0]["file"])


# ---------------------------------------------------------------- dataset card


def write_card(out: Output, provenance: dict[str, Any]) -> None:
    """Write README.md: Hub YAML metadata, then a provenance section (JSON, for machines too)."""
    import yaml

    rows = out.rows
    meta = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        "tags": ["synthetic", "synth"],
        "size_categories": [_size_category(rows)],
    }
    record = {
        "synth_version": __version__,
        "rows": rows,
        "shards": len(out.shards),
        "started": out.started,
        "finished": _now() if out.complete else None,
        "status": "complete" if out.complete else "in progress",
        **provenance,
    }
    body = (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {out.path.name}\n\n"
        f"Synthetic data made with [synth](https://pypi.org/project/synth/) {__version__}: "
        f"{rows} rows in {len(out.shards)} parquet shard(s) under `data/`.\n\n"
        "```python\nfrom datasets import load_dataset\n"
        f'ds = load_dataset("{out.path.name}")\n```\n\n'
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
