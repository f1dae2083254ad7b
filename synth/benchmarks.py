"""Evaluation sets to decontaminate against: the shipped catalogue (`filters/benchmarks.yaml`), the
Hub (streamed with `datasets`) or any file synth reads, each turned into items of question and answer text.

A benchmark is named one of four ways: a catalogue name (`gsm8k`, read from the Hub); `NAME=PATH`, a
local copy of a catalogue set; a Hub id (`openai/gsm8k:main`, `ID[:CONFIG][@SPLIT]`); or a path. The
fields to compare come from the catalogue, or from `Fields` given by the caller for other sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from synth.core import SynthError
from synth.resources import data_file

CATALOGUE = "filters/benchmarks.yaml"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.-]+)?$")


@dataclass(frozen=True)
class Fields:
    """Which fields of a benchmark's rows hold its text; dotted names reach into nested fields."""

    question: tuple[str, ...] = ()
    answer: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    id: str | None = None

    def __bool__(self) -> bool:
        return bool(self.question or self.answer or self.choices)

    @property
    def texts(self) -> tuple[str, ...]:
        """Every text field, question fields first."""
        return (*self.question, *self.answer, *self.choices)


@dataclass(frozen=True)
class Benchmark:
    """Items of one evaluation set: ids, question texts and answer texts (answers and choices joined)."""

    name: str
    source: str
    ids: tuple[str, ...] = field(repr=False)
    questions: tuple[str, ...] = field(repr=False)
    answers: tuple[str, ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:  # what the card records: where it came from and its size, not its text
        return f"Benchmark({self.name!r}, {self.source!r}, {len(self)} items)"


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, Any]]:
    """The shipped benchmark definitions, by name."""
    import yaml

    return yaml.safe_load(data_file(CATALOGUE).read_text(encoding="utf-8"))


def catalogue_names() -> list[str]:
    """The shipped benchmarks' names, in file order, without parsing the YAML: every command's
    help lists them, and yaml's import and parse cost 25 ms of each `synth` start."""
    text = data_file(CATALOGUE).read_text(encoding="utf-8")
    return re.findall(r"^([A-Za-z0-9_-]+):", text, flags=re.MULTILINE)


def catalogue_fields(name: str) -> Fields:
    """The question, answer, choice and id fields `filters/benchmarks.yaml` gives benchmark `name`."""
    entry = catalogue()[name]
    return Fields(
        tuple(entry.get("question") or ()),
        tuple(entry.get("answer") or ()),
        tuple(entry.get("choices") or ()),
        entry.get("id"),
    )


def load_benchmark(spec: str, fields: Fields = Fields(), split: str | None = None) -> Benchmark:
    """The items of benchmark `spec` (see the module's docstring); `fields` name the text of a set the
    catalogue lacks; `split` overrides the catalogue's or the default `test`."""
    known = catalogue()
    name, _, path = spec.partition("=")
    if path:
        if name not in known and not fields:
            raise SynthError(f"unknown benchmark {name!r} in {spec!r}; use one of {', '.join(known)}, {_FIELD_HINT}")
        chosen = fields or catalogue_fields(name)
        return _build(name, path, _local_rows(Path(path)), chosen)
    if Path(spec).exists():
        local = Path(spec)
        rows = _local_rows(local)
        first = next(rows, None)
        if first is None:
            raise SynthError(f"benchmark {spec} is empty; give a file with at least one item")
        chosen = fields or _guess(first, spec)
        return _build(local.stem, spec, _chain(first, rows), chosen)
    if spec in known:
        entry = known[spec]
        configs = entry.get("configs") or [None]
        return _build(
            spec, entry["hub"], _hub_rows(entry["hub"], configs, split or entry["split"]), catalogue_fields(spec)
        )
    if _HUB_ID.match(spec):
        hub, _, chosen_split = spec.partition("@")
        hub, _, config = hub.partition(":")
        match = next((n for n, e in known.items() if e["hub"] == hub), None)
        if not fields and match is None:
            raise SynthError(f"benchmark {spec!r} is not in the catalogue; {_FIELD_HINT}")
        chosen = fields or catalogue_fields(match)  # type: ignore[arg-type]  # no fields: match found, or raised
        configs = [config] if config else (known[match].get("configs") if match else None) or [None]
        default_split = known[match]["split"] if match else "test"
        return _build(hub, spec, _hub_rows(hub, configs, chosen_split or split or default_split), chosen)
    raise SynthError(
        f"unknown benchmark {spec!r}: not a file, a catalogue name ({', '.join(known)}) or a Hub id (owner/name)"
    )


_FIELD_HINT = "or name its text fields with --question-field (and --answer-field, --choices-field)"


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _guess(row: Mapping[str, Any], spec: str) -> Fields:
    """The fields of the first catalogue entry whose text fields the row has (a local copy of a known set)."""
    for name in catalogue():
        fields = catalogue_fields(name)
        if all(_has(row, f) for f in fields.texts):
            return fields
    columns = ", ".join(k for k in row if k != "id")
    raise SynthError(f"benchmark {spec} matches no catalogue set (its fields: {columns}); {_FIELD_HINT}")


def _has(row: Mapping[str, Any], name: str) -> bool:
    value: Any = row
    for part in [name] if name in row else name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _get(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    value: Any = row
    for part in name.split("."):
        value = value[part]
    return value


def _text(value: Any) -> str:
    """A field's value as text: lists and mappings joined line by line, numbers written out."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(_text(v) for v in value.values())
    if isinstance(value, list | tuple):
        return "\n".join(_text(v) for v in value)
    return str(value)


def _build(name: str, source: str, rows: Iterable[dict[str, Any]], fields: Fields) -> Benchmark:
    ids, questions, answers = [], [], []
    for index, row in enumerate(rows):
        if index == 0:
            missing = [f for f in fields.texts if not _has(row, f)]
            if missing:
                have = ", ".join(k for k in row if not k.startswith("_"))
                raise SynthError(
                    f"benchmark {name} ({source}) has no field {missing[0]!r} (it has: {have}); "
                    f"fix {CATALOGUE} or name the fields with --question-field / --answer-field"
                )
        if fields.id and _has(row, fields.id):  # a local copy without it gets ids from its position
            ids.append(_text(_get(row, fields.id)))
        else:
            ids.append(str(row.get("id", row.get("_position", index))))
        questions.append("\n".join(_text(_get(row, f)) for f in fields.question))
        answers.append("\n".join(_text(_get(row, f)) for f in (*fields.answer, *fields.choices)))
    if not ids:
        raise SynthError(f"benchmark {name} ({source}) has no items; check its split and file")
    return Benchmark(name, source, tuple(ids), tuple(questions), tuple(answers))


def _local_rows(path: Path) -> Iterator[dict[str, Any]]:
    from synth import io

    if not path.exists():
        raise SynthError(f"benchmark file {path} does not exist; pass a file or folder synth can read")
    for batch in io.read(path, batch_size=4096):
        yield from batch.to_pylist()


def _hub_rows(hub: str, configs: list[str | None], split: str) -> Iterator[dict[str, Any]]:
    """Rows of a Hub dataset, streamed (nothing is downloaded whole); ids are `config/position`."""
    try:
        import datasets
    except ImportError:
        raise SynthError(f"reading {hub} from the Hub needs `datasets`: pip install datasets") from None
    for config in configs:
        try:
            stream = datasets.load_dataset(hub, config, split=split, streaming=True)
            for position, row in enumerate(stream):
                yield {**row, "_position": f"{config}/{position}" if len(configs) > 1 else str(position)}
        except SynthError:
            raise
        except Exception as exc:  # offline, gated, a moved repo: one line, and the way around it
            reason = " ".join(str(exc).split())[:200]
            raise SynthError(
                f"cannot read {hub} ({config or 'default'}, split {split}) from the Hub "
                f"({type(exc).__name__}: {reason}); save a copy and pass NAME=PATH"
            ) from None
