"""Reading: any input, lazily, as batches with stable ids (`read`), and the first rows checked
before a run claims its output (`check_input`)."""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synth.core import Batch, SynthError, with_string_ids
from synth.io import _documents as documents

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
FORMATS = "parquet, jsonl, csv, text, HTML, PDF, DOCX, PPTX, EPUB or WARC"
_strict = [False]  # what `read` does with an unreadable document when not told: `strict_reading` sets it


def strict_reading(on: bool) -> None:
    """Make an unreadable document (corrupt, encrypted, cut off) stop every later `read` of this
    process instead of being skipped and counted; the CLI's `--strict`."""
    _strict[0] = on


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


def read(
    path: str | Path, batch_size: int = 1000, *, strict: bool | None = None, stats: Counter[str] | None = None
) -> Iterator[Batch]:
    """Stream batches from a synth output, parquet, jsonl, csv, text files, documents (HTML, PDF,
    DOCX, PPTX, EPUB, WARC/WET: see `_documents`) or a `save_to_disk` dir; `path` may be a glob.

    Rows without an `id` get one from their position, so ids are stable across runs. A jsonl
    column that mixes strings with other values is read as text, the others as JSON text (`5` ->
    `"5"`); a `DatasetDict` folder gives its `train` split, or all splits if it has none. A file
    that cannot be read (not UTF-8, a bad line, a corrupt parquet or csv) is a `SynthError` naming it;
    a document that cannot be read is named and skipped (counted in `stats`), or stops with `strict`.
    """
    path = Path(path)
    strict = _strict[0] if strict is None else strict
    stats = Counter() if stats is None else stats
    if not path.exists() and glob.has_magic(str(path)):
        return _ensure_ids(_read_glob(path, batch_size, strict, stats), path)
    if not path.exists():
        raise SynthError(f"input {path} does not exist; pass a file or folder of {FORMATS} files")
    batches = _read_raw(path, batch_size, strict, stats)
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


def _read_raw(path: Path, batch_size: int, strict: bool, stats: Counter[str]) -> Iterator[Batch]:
    if path.is_dir():
        if (path / "data").is_dir() and list((path / "data").glob("*.parquet")):
            return _read_parquet(sorted((path / "data").glob("*.parquet")), batch_size)
        if (path / "dataset_dict.json").exists():
            return _read_arrow(_dataset_dict_files(path), batch_size)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return _read_arrow(sorted(path.glob("*.arrow")), batch_size)
        return _read_files(documents.walk(path, stats), path, batch_size, strict, stats)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet([path], batch_size)
    if suffix in {".jsonl", ".json", ".ndjson"}:
        return _read_jsonl([path], batch_size)
    if suffix == ".csv":
        return _read_csv([path], batch_size)
    if suffix in TEXT_SUFFIXES:
        return _read_texts([path], path.parent, batch_size)
    if documents.kind_of(path):
        return documents.read_documents([path], path.parent, batch_size, strict, stats)
    raise SynthError(f"cannot read {path}: use .parquet, .jsonl, .csv, .txt/.md, a document ({FORMATS}) or a folder")


def _read_glob(pattern: Path, batch_size: int, strict: bool, stats: Counter[str]) -> Iterator[Batch]:
    """The files a glob matches (`**` recursive); ids relative to the folder before the first wildcard."""
    root = Path(*_until_magic(pattern.parts))
    top = root.resolve()
    files = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
    files = [f for f in files if documents.inside(f, top, root, stats)]
    if not files:
        raise SynthError(f"{pattern} matches no files; check the pattern (quote it so the shell leaves it alone)")
    return _read_files(files, root, batch_size, strict, stats)


def _until_magic(parts: tuple[str, ...]) -> Iterator[str]:
    for part in parts:
        if glob.has_magic(part):
            return
        yield part


def _read_files(files: list[Path], root: Path, batch_size: int, strict: bool, stats: Counter[str]) -> Iterator[Batch]:
    """A folder's (or a glob's) files: one kind of table, or documents and text files together."""
    readers = {".parquet": _read_parquet, ".jsonl": _read_jsonl, ".csv": _read_csv}
    found = {suffix: [f for f in files if f.suffix.lower() == suffix] for suffix in readers}
    kinds = [suffix for suffix, chosen in found.items() if chosen]
    docs = [f for f in files if documents.kind_of(f)]
    if docs:
        kinds.append(f"document ({documents.kind_of(docs[0])})")
    if len(kinds) > 1:  # one table from several formats would join unrelated files by chance
        raise SynthError(
            f"{root} mixes {' and '.join(kinds)} files; pass one file, or a folder holding one kind of file"
        )
    texts = [f for f in files if f.suffix.lower() in TEXT_SUFFIXES]
    if docs:
        return documents.read_documents(sorted(docs + texts), root, batch_size, strict, stats)
    if kinds:
        return readers[kinds[0]](found[kinds[0]], batch_size)
    if texts:
        return _read_texts(texts, root, batch_size)
    raise SynthError(f"found no {FORMATS} files in {root}")


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
        done = 0
        finished: list[bool] = []
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
