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
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth import __version__
from synth.core import Batch, SynthError, with_string_ids

STATE = ".synth/state.json"
EMPTY_NOTE = (  # datasets refuses an empty split without streaming, even one it wrote itself
    "This run kept no rows: the shard holds the columns only. `load_dataset(..., streaming=True)` "
    "reads it as 0 rows; without streaming, `datasets` refuses any empty split.\n\n"
)
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}


# ---------------------------------------------------------------- reading


def jemalloc_for_arrow() -> None:
    """Take Arrow's buffers from jemalloc for the rest of the process, unless
    ARROW_DEFAULT_MEMORY_POOL names a pool. `synth dedup` calls it.

    Arrow's Linux default, mimalloc, keeps much of what a streaming reader frees: reading a
    million-row parquet file batch by batch peaks at 166 MB with it and at 111 MB with jemalloc,
    told here to hand freed pages back at once. Not a default for every command: over a long
    `synth magpie`, jemalloc's peak grew 12% from n=10,000 to 300,000, mimalloc's 2%.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc keeps its default
        pass


def arrow_without_pandas() -> None:
    """Have pyarrow settle now, with pandas out of reach, that it runs without pandas: its first
    array from Python or numpy values would import pandas (35 MB and half a second) only to ask
    whether the values are pandas objects. `synth dedup` calls it; a process that has pandas
    loaded already keeps it. pyarrow still imports pandas later where a call needs it (`to_pandas`).
    """
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])  # pyarrow tries pandas once, and remembers the answer
    finally:
        sys.meta_path.remove(finder)


class _NoPandas:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("synth dedup runs without pandas", name=name)


def read(path: str | Path, batch_size: int = 1000) -> Iterator[Batch]:
    """Stream batches from a synth output, parquet, jsonl, csv, text files or a `save_to_disk` dir.

    Rows without an `id` get one from their position, so ids are stable across runs. A jsonl
    column that mixes strings with other values is read as text, the others as JSON text (`5` ->
    `"5"`); a `DatasetDict` folder gives its `train` split, or all splits if it has none. A file
    that cannot be read (not UTF-8, a bad line, a corrupt parquet or csv) is a `SynthError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise SynthError(f"input {path} does not exist; pass a file or folder of parquet, jsonl, csv or text")
    batches = _read_raw(path, batch_size)
    return _ensure_ids(batches, path)


def check_input(source: str | Path, columns: Iterable[str] = (), flag: str = "--column") -> Batch:
    """The first rows of `source`, read now so that a file synth cannot use fails before any output
    is claimed or model loads: unreadable, empty, or lacking a text column in `columns`."""
    first = next(read(source, 64), None)
    if first is None:
        raise SynthError(f"{source} holds no rows; pass a file or folder with data")
    for name in columns:
        if name not in first.column_names:
            raise SynthError(
                f"{source} has no column {name!r} (it has {', '.join(first.column_names)}); "
                f"name the right one with {flag}"
            )
        kind = first.schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_null(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise SynthError(f"column {name!r} of {source} holds {kind}, not text; name a text column with {flag}")
    return first


def _read_raw(path: Path, batch_size: int) -> Iterator[Batch]:
    if path.is_dir():
        if (path / "data").is_dir() and list((path / "data").glob("*.parquet")):
            return _read_parquet(sorted((path / "data").glob("*.parquet")), batch_size)
        if (path / "dataset_dict.json").exists():
            return _read_arrow(_dataset_dict_files(path), batch_size)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return _read_arrow(sorted(path.glob("*.arrow")), batch_size)
        readers = {".parquet": _read_parquet, ".jsonl": _read_jsonl, ".csv": _read_csv}
        found = {suffix: sorted(path.rglob(f"*{suffix}")) for suffix in readers}
        kinds = [suffix for suffix, files in found.items() if files]
        if len(kinds) > 1:  # one table from several formats would join unrelated files by chance
            raise SynthError(
                f"{path} mixes {' and '.join(kinds)} files; pass one file, or a folder holding one kind of file"
            )
        if kinds:
            return readers[kinds[0]](found[kinds[0]], batch_size)
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


def _dataset_dict_files(path: Path) -> list[Path]:
    # `DatasetDict.save_to_disk`: one `save_to_disk` folder per split. A pipeline reads one table,
    # so take `train`; without one, every split in the order the dict lists them.
    try:
        splits = [str(s) for s in json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise SynthError(f"{path / 'dataset_dict.json'} is not a DatasetDict index; re-save the dataset") from None
    chosen = ["train"] if "train" in splits else splits
    rest = [s for s in splits if s not in chosen]
    if rest:
        note = f"reading its train split only (not {', '.join(rest)}); pass {path}/SPLIT to read another"
    else:
        note = f"it has no train split, so reading all of them in order ({', '.join(chosen)})"
    print(f"synth: note: {path} is a DatasetDict; {note}", file=sys.stderr)
    return [f for split in chosen for f in sorted((path / split).glob("*.arrow"))]


def _corrupt(file: Path, exc: Exception, kind: str) -> SynthError:
    return SynthError(f"cannot read {file}: it is not a valid {kind} file ({exc}); replace or remove it")


def _read_parquet(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        try:
            # pre_buffer off: on, pyarrow keeps every column chunk it has read, the whole file by the end
            batches = pq.ParquetFile(file, pre_buffer=False).iter_batches(batch_size=batch_size)
            for record_batch in batches:
                yield pa.Table.from_batches([record_batch])
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(file, exc, "parquet") from None


def _read_arrow(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        try:
            with pa.memory_map(str(file)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    reader = pa.ipc.open_file(source)
                table = reader.read_all()  # memory-mapped: pages come in as the slices are read
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(file, exc, "Arrow") from None
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


def _read_jsonl(files: list[Path], batch_size: int) -> Iterator[Batch]:
    for file in files:
        kinds: dict[str, pa.DataType] = {}  # each column's type in this file's batches so far
        done, finished = 0, []
        for batch in _jsonl_arrow(file, batch_size, finished):
            done += batch.num_rows
            kinds.update(zip(batch.column_names, batch.schema.types))
            yield batch
        if not finished:
            yield from _jsonl_python(file, batch_size, skip=done, kinds=kinds)


def _jsonl_arrow(file: Path, batch_size: int, finished: list[bool]) -> Iterator[Batch]:
    """The file's rows through Arrow's JSON reader (C++, 10x Python's json), as long as it agrees
    with `_jsonl_python`: the first error, a type change between blocks or a text column that Arrow
    would read as timestamps stops it, and `_jsonl_python` reads the rest, with its messages.
    Appends True to `finished` when it has read the whole file."""
    import pyarrow.json as pajson

    try:
        reader = pajson.open_json(file, read_options=pajson.ReadOptions(block_size=1 << 18, use_threads=False))
        if any(_has_timestamp(t) for t in reader.schema.types):
            return
        pending: list[pa.RecordBatch] = []
        held = 0
        for record_batch in reader:
            record_batch.validate(full=True)  # Arrow's reader lets bad UTF-8 through; json would not
            pending.append(record_batch)
            held += record_batch.num_rows
            while held >= batch_size:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield table.slice(0, batch_size)
                rest = table.slice(batch_size)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield pa.Table.from_batches(pending).combine_chunks()
        finished.append(True)
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        return


def _has_timestamp(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return True
    return any(_has_timestamp(kind.field(i).type) for i in range(kind.num_fields))


def _jsonl_python(file: Path, batch_size: int, skip: int, kinds: dict[str, pa.DataType]) -> Iterator[Batch]:
    """Line by line with `json`: exact messages for bad lines, mixed-type columns read as text."""
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    noted: set[str] = set()  # the columns already said to be read as text
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if skip:
                skip -= bool(raw.strip())
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SynthError(
                    f"{file}:{number} is not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SynthError(f"{file}:{number} is not valid JSON ({exc.msg}); fix or remove it") from None
            if not isinstance(row, dict):
                raise SynthError(
                    f"{file}:{number} is a JSON {type(row).__name__}, not an object; "
                    'write one {"column": value, ...} object per line'
                )
            rows.append(row)
            lines.append(number)
            if len(rows) == batch_size:
                yield _jsonl_table(rows, lines, file, kinds, noted)
                rows, lines = [], []
    if rows:
        yield _jsonl_table(rows, lines, file, kinds, noted)


def _jsonl_table(
    rows: list[dict[str, Any]], lines: list[int], file: Path, kinds: dict[str, pa.DataType], noted: set[str]
) -> Batch:
    """The rows as a table. A column whose values Arrow cannot give one type (`5` next to `"five"`,
    in this batch or after strings in an earlier one) is text: its non-string values become JSON
    text (`"5"`, `"true"`). Nothing is lost, no stage crashes on it (`json.loads` gives the values
    back; dedup compares `"5"` as text). Text after batches of only numbers (lists, ...) is refused,
    naming the line: the rows before it have gone on with the other type.
    """
    columns = {}
    for name in dict.fromkeys(name for row in rows for name in row):
        values = [row.get(name) for row in rows]
        before = kinds.get(name)
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            array = None  # mixed in this batch
        if array is not None and pa.types.is_null(array.type):
            columns[name] = array if before is None else pa.nulls(len(values), before)
            continue
        text = array is None or before == pa.string() or (before is not None and pa.types.is_string(array.type))
        if text and before not in (None, pa.string()):
            at = next((n for v, n in zip(values, lines) if isinstance(v, str)), lines[0])
            raise SynthError(
                f"{file}:{at}: column {name!r} changes type here: it held only {before} values in the lines "
                'before; give it one type in the whole file (e.g. quote the numbers: "5")'
            )
        if text and (array is None or array.type != pa.string()):
            if name not in noted:
                noted.add(name)
                print(
                    f"synth: note: column {name!r} of {file} mixes value types (lines {lines[0]}-{lines[-1]}); "
                    "it is read as text, its non-string values as JSON text",
                    file=sys.stderr,
                )
            values = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]
            array = pa.array(values, pa.string())
        kinds.setdefault(name, array.type)
        columns[name] = array
    return pa.table(columns)


def _read_csv(files: list[Path], batch_size: int) -> Iterator[Batch]:
    import pyarrow.csv as pacsv

    for file in files:
        if file.stat().st_size == 0:
            continue  # an empty file holds no rows (not even a header): nothing to read
        try:
            reader = pacsv.open_csv(file, read_options=pacsv.ReadOptions(block_size=1 << 20))
            for record_batch in reader:
                table = pa.Table.from_batches([record_batch])
                for start in range(0, table.num_rows, batch_size):
                    yield table.slice(start, batch_size)
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(file, exc, "CSV") from None


def _read_texts(files: list[Path], root: Path, batch_size: int) -> Iterator[Batch]:
    rows: list[dict[str, str]] = []
    for file in files:
        rows.append({"id": str(file.relative_to(root)), "text": file.read_text(encoding="utf-8", errors="replace")})
        if len(rows) == batch_size:
            yield pa.Table.from_pylist(rows)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows)


def _ensure_ids(batches: Iterable[Batch], path: Path) -> Iterator[Batch]:
    """Ids for rows without them; refuse null ids and an id twice in a batch (a check per batch keeps
    memory flat: one id in two batches is not caught here)."""
    prefix, offset = path.stem, 0
    for batch in batches:
        if "id" not in batch.column_names:
            ids = [f"{prefix}-{i:09d}" for i in range(offset, offset + batch.num_rows)]
            batch = batch.add_column(0, "id", pa.array(ids, pa.string()))
        offset += batch.num_rows
        batch = with_string_ids(batch)
        if pc.count_distinct(batch["id"]).as_py() < batch.num_rows:
            counts = pc.value_counts(batch["id"])
            twice = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
            raise SynthError(
                f"id {twice!r} appears more than once in {path}; give every row its own id, "
                "or drop the id column and synth numbers the rows"
            )
        yield batch


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
    for stray in (path / "data").glob(".train-*.tmp"):
        stray.unlink()  # a shard the killed run was still writing
    listed = {s["file"] for s in shards}
    for unlisted in (path / "data").glob("train-*.parquet"):  # synth's names only: other files stay
        if unlisted.name not in listed:  # renamed into place, then killed before the state said so
            unlisted.unlink()  # its rows come again from the checkpoint; kept, they would be read twice
    return Output(path, settings, shards, state.get("checkpoint", {}), state["started"], state.get("complete", False))


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

    def __init__(self, out: Output, card: dict[str, Any] | None = None, shard_rows: int = 10_000) -> None:
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
        out.complete = False
        _save_state(out)

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

    from synth.card import public

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
        "status": "complete" if out.complete else "in progress",
        **public(provenance),  # pushed with the data: no local paths, hosts or addresses
    }
    body = (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {out.path.name}\n\n"
        f"Synthetic data made with [synth](https://pypi.org/project/synth/) {__version__}: "
        f"{rows} rows in {len(out.shards)} parquet shard(s) under `data/`.\n\n"
        "```python\nfrom datasets import load_dataset\n"
        f'ds = load_dataset("{out.path.name}")\n```\n\n'
        f"{EMPTY_NOTE if out.complete and not rows else ''}"
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
