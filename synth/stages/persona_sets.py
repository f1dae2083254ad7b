"""Persona sets read into one schema (`id`, `persona`, `source`, `labels`): a shipped set, a
local file or folder, or a Hugging Face dataset; Persona Hub, FinePersonas and Nemotron-Personas
are recognised. The persona stages (`synth.stages.persona`) read their personas through here.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.core import Batch, SynthError
from synth.io import read
from synth.resources import choices, data_file

SETS = "personas/sets"
# Nemotron-Personas: a persona is composed from these fields, where the set has them.
NEMOTRON_TEXT = ("persona", "professional_persona")
NEMOTRON_FACTS = ("age", "sex", "occupation", "city", "state", "country")


# ---------------------------------------------------------------- persona sets


def read_personas(source: str | Path, persona_column: str | None = None, batch_size: int = 1000) -> Iterator[Batch]:
    """Stream a persona set as `id`, `persona`, `source`, `labels`; rows with no persona text
    are skipped.

    `source`: a shipped set's name (`starter`), a jsonl/parquet/csv file, a `save_to_disk` or
    synth output folder, or a Hugging Face dataset id (`owner/name`, `owner/name:config`).
    Persona Hub (`persona`, `input persona`), FinePersonas (`id`, `persona`, `labels`) and
    Nemotron-Personas (composed from its fields) are recognised; else name `persona_column`.
    """
    batches, name = _open_set(source, batch_size)
    first = next(batches, None)
    if first is None:
        raise SynthError(f"persona set {name} is empty; pass a set with at least one persona")
    convert = _schema(first.column_names, persona_column, name)
    return (b for b in map(convert, itertools.chain([first], batches)) if b.num_rows)


def check_personas(source: str | Path, persona_column: str | None = None) -> None:
    """Fail now, before a model loads, if `source` cannot be read as a persona set."""
    next(read_personas(source, persona_column, batch_size=16), None)


def check_documents(source: str | Path, column: str) -> None:
    """Fail now if the documents in `source` have no `column`."""
    first = next(read(source, batch_size=16), None)
    if first is not None and column not in first.column_names:
        raise SynthError(
            f"{source} has no column {column!r} (its columns: {', '.join(first.column_names)}); "
            "name the one holding the text with --column"
        )


def _open_set(source: str | Path, batch_size: int) -> tuple[Iterator[Batch], str]:
    text = str(source)
    if not Path(text).exists() and text in choices(SETS, ".jsonl"):
        return read(data_file(f"{SETS}/{text}.jsonl"), batch_size), text
    if Path(text).exists():
        return read(text, batch_size), text
    if re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", text):
        return _hub(text, batch_size), text
    raise SynthError(
        f"persona set {text!r} is not a file, a folder, a shipped set ({', '.join(choices(SETS, '.jsonl'))}) "
        "or a Hugging Face dataset id (owner/name)"
    )


def _hub(name: str, batch_size: int) -> Iterator[Batch]:
    try:
        import datasets
    except ImportError:
        raise SynthError(f"reading {name} from the Hub needs the datasets package: pip install datasets") from None
    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split="train", streaming=True)
    except Exception as exc:  # the Hub's errors are many; the user needs the message
        raise SynthError(f"could not load persona set {name} from the Hugging Face Hub: {exc}") from None

    def batches() -> Iterator[Batch]:
        offset = 0
        for rows in ds.iter(batch_size=batch_size):
            table = pa.Table.from_pydict(rows)
            if "id" not in table.column_names and "uuid" not in table.column_names:
                ids = [f"{repo.split('/')[-1]}-{i:09d}" for i in range(offset, offset + table.num_rows)]
                table = table.add_column(0, "id", pa.array(ids, pa.string()))
            offset += table.num_rows
            yield table

    return batches()


def _schema(columns: Sequence[str], persona_column: str | None, name: str) -> Any:
    """A function mapping one batch of this set to the unified schema."""
    if persona_column is not None:
        if persona_column not in columns:
            raise SynthError(f"persona set {name} has no column {persona_column!r}; its columns: {', '.join(columns)}")
        return lambda b: _unified(b, _texts(b, persona_column, name), name)
    if "professional_persona" in columns:  # Nemotron-Personas
        return lambda b: _unified(b, _nemotron(b), name, id_column="uuid" if "uuid" in columns else "id")
    for column in ("persona", "input persona"):  # FinePersonas, synth; Persona Hub's synthesized files
        if column in columns:
            return lambda b, c=column: _unified(b, _texts(b, c, name), name)
    raise SynthError(
        f"cannot tell which column of persona set {name} holds the persona text (its columns: "
        f"{', '.join(columns)}); name it with --persona-column"
    )


def _texts(batch: Batch, column: str, name: str) -> list[Any]:
    kind = batch.schema.field(column).type
    if not (pa.types.is_null(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise SynthError(
            f"column {column!r} of persona set {name} holds {kind}, not text; name a text column with --persona-column"
        )
    return batch[column].to_pylist()


def _unified(batch: Batch, texts: list[Any], name: str, id_column: str = "id") -> Batch:
    ids = batch[id_column].cast(pa.string())
    sources = batch["source"].to_pylist() if "source" in batch.column_names else [None] * batch.num_rows
    labels = batch["labels"].to_pylist() if "labels" in batch.column_names else [None] * batch.num_rows
    table = pa.table(
        {
            "id": ids,
            "persona": pa.array([str(t).strip() if t is not None else None for t in texts], pa.string()),
            "source": pa.array([str(s) if s is not None else name for s in sources], pa.string()),
            "labels": pa.array([_labels(v) for v in labels], pa.list_(pa.string())),
        }
    )
    return table.filter(pc.fill_null(pc.greater(pc.utf8_length(table["persona"]), 0), False))


def _labels(value: Any) -> list[str] | None:
    # FinePersonas stores its labels as the text of a list: '["Education", "Science"]'.
    if value is None:
        return None
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError):
                continue
        else:
            return [value]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _nemotron(batch: Batch) -> list[str]:
    cols = {c: batch[c].to_pylist() for c in (*NEMOTRON_TEXT, *NEMOTRON_FACTS) if c in batch.column_names}
    texts = []
    for i in range(batch.num_rows):
        words = " ".join(str(cols[c][i]).strip() for c in NEMOTRON_TEXT if c in cols and cols[c][i])
        facts = [_fact(c, cols[c][i]) for c in NEMOTRON_FACTS if c in cols and cols[c][i] not in (None, "")]
        texts.append(f"{words} ({', '.join(facts)})" if facts else words)
    return texts


def _fact(column: str, value: Any) -> str:
    return f"{value} years old" if column == "age" else str(value).replace("_", " ")


def _cycle(source: str | Path, persona_column: str | None, skip: int) -> Iterator[Batch]:
    while True:
        total = 0
        for batch in read_personas(source, persona_column):
            total += batch.num_rows
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            yield batch.slice(skip)
            skip = 0
        if total == 0:
            raise SynthError(f"persona set {source} has no row with persona text")
        skip %= total  # after one whole pass, a long skip wraps round the set


@dataclass
class _Rows:
    """Hands out exactly `k` rows at a time from a stream of batches."""

    stream: Iterator[Batch]
    held: list[Batch] = field(default_factory=list)

    def take(self, k: int) -> Batch:
        while sum(b.num_rows for b in self.held) < k:
            self.held.append(next(self.stream))
        table = pa.concat_tables(self.held).combine_chunks()
        self.held = [table.slice(k)]
        return table.slice(0, k)
