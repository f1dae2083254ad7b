"""`synth calibrate`: how often a judge agrees with people, field by field.

Judged rows meet human labels by `id` (MT-Bench's pairwise votes meet by question, turn and model
pair). The statistics come from scikit-learn, scipy and krippendorff; this module lines the
values up, counts what could not be compared and why, and writes the report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.agreement import PAIRWISE, agreement, jury_agreement, write_report
from synth.core import Batch, SynthError

MT_BENCH = ("question_id", "turn", "model_a", "model_b", "winner")
JURORS = "_jurors"  # a jury's judge writes each juror's value in `{column}_jurors`
LIBRARIES = ("sklearn", "scipy", "krippendorff", "matplotlib")


@dataclass(frozen=True)
class Field:
    """One thing people labelled: the labels' column, the judge columns it is compared with, its
    kind (`label`, `ordinal` or `pairwise`), its labels in order (worst first when ordinal), and the
    status column that says why a judge left a row unscored."""

    name: str
    judges: tuple[str, ...]
    kind: str
    scale: tuple[Any, ...] = ()
    status: str | None = None


def calibrate(
    judged: str | Path,
    labels: str | Path,
    *,
    out: str | Path,
    fields: Sequence[str] = (),
    resamples: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Compare `judged` with the human `labels`; write report.md, report.json and PNGs to `out`."""
    missing = [m for m in LIBRARIES if not _importable(m)]
    if missing:
        raise SynthError(f"synth calibrate needs {', '.join(missing)}: pip install 'synth[calibrate]'")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} is a file; pass a directory")
    if (out / "report.json").exists() and not overwrite:
        raise SynthError(f"{out} holds a calibration report; pass --overwrite to replace it, or choose another --out")
    people = _table(labels, "labels")
    head, batches = _peek(judged)
    if all(c in people.column_names for c in MT_BENCH) and all(c in head.column_names for c in MT_BENCH):
        rows, compared = mt_bench(people, batches)
    else:
        specs = resolve_fields(judged, head, people, fields)
        rows, compared = join(people, batches, specs)
    result = {
        "judged": str(judged),
        "labels": str(labels),
        "rows": rows,
        "fields": {name: report(field, pairs, resamples, seed) for name, (field, pairs) in compared.items()},
        "resamples": resamples,
        "seed": seed,
    }
    write_report(result, out)
    return result


# ------------------------------------------------------------------ which fields


def resolve_fields(judged: str | Path, head: Batch, people: Batch, requested: Sequence[str]) -> list[Field]:
    """The fields to compare: those named (`NAME`, or `NAME=COLUMN,COLUMN` for several judges'
    columns), else every judge field the labels also have."""
    known, text, rubrics = judge_fields(judged, head)
    if not requested:
        chosen = [f for name, f in known.items() if name in people.column_names]
        if not chosen:
            names = ", ".join(known) or "none found"
            raise SynthError(
                f"the labels have none of the judge's fields ({names}); name a labels column after one, or pass --field"
            )
        return chosen
    specs = []
    for item in requested:
        name, _, given = item.partition("=")
        name = name.strip()
        if name in text:
            raise SynthError(f"field {name!r} is free text; calibrate compares labels and scores: {', '.join(known)}")
        if name not in known and not given and rubrics:
            raise SynthError(f"the judge's rubrics have no field {name!r}; choose one of: {', '.join(known) or 'none'}")
        if name not in people.column_names:
            raise SynthError(f"the labels have no column {name!r} (they have {', '.join(people.column_names)})")
        field = known.get(name) or _inferred(name, head, people)
        if given:
            columns = tuple(c.strip() for c in given.split(",") if c.strip())
            absent = [c for c in columns if c not in head.column_names]
            if absent:
                raise SynthError(f"--field {item}: the judged data has no column {absent[0]!r}")
            field = Field(field.name, columns, field.kind, field.scale, field.status)
        specs.append(field)
    return specs


def judge_fields(judged: str | Path, head: Batch) -> tuple[dict[str, Field], set[str], list[str]]:
    """The judge's comparable columns (from its card's rubrics and scales), its free-text ones, and
    its rubrics' names (none when `judged` is not a synth output: then any shared column will do)."""
    from synth.io import read_provenance
    from synth.stages.judge import load_rubric

    try:
        card = read_provenance(judged)
    except (OSError, ValueError, KeyError, NotADirectoryError):
        card = {}
    fields: dict[str, Field] = {}
    text: set[str] = set()
    for name in card.get("rubrics") or []:
        try:
            rubric = load_rubric(name)
        except SynthError:  # a rubric file not at hand: its scales come from the card below
            continue
        _rubric_fields(rubric, head, fields, text)
    for column, labels in (card.get("scales") or {}).items():
        if column in head.column_names and column not in fields:
            fields[column] = Field(column, _judges(column, head), "ordinal", tuple(labels), "judge_status")
    if "winner" in head.column_names:
        fields["winner"] = Field("winner", ("winner",), "pairwise", PAIRWISE, "pairwise_status")
    return fields, text, list(card.get("rubrics") or [])


def _rubric_fields(rubric: Any, head: Batch, fields: dict[str, Field], text: set[str]) -> None:
    properties = rubric.schema.get("properties", {})
    for f, column in rubric.columns.items():
        kind, scale = _kind(properties.get(f, {}), rubric.scales.get(f))
        if kind is None:
            text.add(column)
        elif column in head.column_names:
            fields[column] = Field(column, _judges(column, head), kind, scale, f"{rubric.name}_status")


def _kind(prop: dict[str, Any], scale: Sequence[str] | None) -> tuple[str | None, tuple[Any, ...]]:
    if scale:
        return "ordinal", tuple(scale)
    if prop.get("type") in ("integer", "number"):
        return "ordinal", tuple(sorted(prop.get("enum", ())))
    if prop.get("type") == "boolean":
        return "label", (False, True)
    if "enum" in prop:
        return "label", tuple(prop["enum"])
    return None, ()


def _judges(column: str, head: Batch) -> tuple[str, ...]:
    return (column, column + JURORS) if column + JURORS in head.column_names else (column,)


def _inferred(name: str, head: Batch, people: Batch) -> Field:
    from synth.resources import choices
    from synth.stages.judge import RUBRICS, load_rubric

    if name not in head.column_names:
        raise SynthError(f"the judged data has no column {name!r}; pass --field {name}=JUDGE_COLUMN")
    shipped: dict[str, Field] = {}
    for rubric in choices(RUBRICS, ".yaml"):  # a shipped rubric's column keeps its scale outside synth too
        _rubric_fields(load_rubric(rubric), head, shipped, set())
    if name in shipped:
        return shipped[name]
    kind = head.schema.field(name).type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    return Field(name, (name,), "ordinal" if numeric else "label")


# ------------------------------------------------------------------ joining


def join(people: Batch, batches: Iterable[Batch], fields: Sequence[Field]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pair each human label with the judges' values of the row with its `id`; count the rest."""
    if "id" not in people.column_names:
        raise SynthError("the labels have no `id` column; give each labelled row the id of the judged row it labels")
    ids = pa.array(sorted({str(i) for i in people["id"].to_pylist() if i is not None}), pa.string())
    wanted = {c for f in fields for c in (*f.judges, f.status) if c}
    found: dict[str, dict[str, Any]] = {}
    for batch in batches:
        hit = batch.filter(pc.is_in(batch["id"], value_set=ids))
        for row in hit.select(["id", *sorted(wanted & set(hit.column_names))]).to_pylist():
            found[row["id"]] = row
    labelled = people.to_pylist()
    if not found:
        sample = labelled[0]["id"] if labelled else "none"
        raise SynthError(
            f"none of the {len(ids)} label ids (e.g. {sample!r}) is an id of the judged data; "
            "labels join the judged rows by their `id` column"
        )
    missing = [r["id"] for r in labelled if str(r["id"]) not in found]
    rows: dict[str, Any] = {"labels": len(labelled), "joined": len(labelled) - len(missing), "not_joined": len(missing)}
    rows["not_joined_ids"] = [str(i) for i in missing[:10]]
    compared = {}
    for field in fields:
        pairs = []
        for label in labelled:
            judged = found.get(str(label["id"]))
            if judged is not None:
                pairs.append((label[field.name], judged))
        compared[field.name] = (field, pairs)
    return rows, compared


def mt_bench(people: Batch, batches: Iterable[Batch]) -> tuple[dict[str, Any], dict[str, Any]]:
    """MT-Bench's human votes against a judge's, as the paper's compute_agreement.py pairs them:
    keyed by question, turn and the sorted model pair; every expert vote meets the judge's one
    vote; the authors' own votes are left out (counted)."""
    verdicts: dict[tuple[Any, ...], str | None] = {}
    duplicates = 0
    for batch in batches:
        for row in batch.select(list(MT_BENCH)).to_pylist():
            key, vote = _canonical(row)
            duplicates += key in verdicts
            verdicts.setdefault(key, vote)
    rows: Counter[str] = Counter()
    by_turn: dict[Any, list[Any]] = {}
    who = people["judge"].to_pylist() if "judge" in people.column_names else [None] * people.num_rows
    for row, judge in zip(people.select(list(MT_BENCH)).to_pylist(), who):
        rows["labels"] += 1
        if isinstance(judge, str) and judge.startswith("author"):
            rows["authors_left_out"] += 1
            continue
        key, vote = _canonical(row)
        if key not in verdicts:
            rows["not_joined"] += 1
            continue
        rows["joined"] += 1
        by_turn.setdefault(row["turn"], []).append((vote, {"winner": verdicts[key]}))
    if not rows["joined"]:
        raise SynthError(
            "no human vote matches a judged comparison by question_id, turn and model pair; "
            "check that both files are MT-Bench pairwise judgments of the same questions and models"
        )
    rows["judge_duplicates"] = duplicates
    field = Field("winner", ("winner",), "pairwise", PAIRWISE, None)
    compared = {f"winner (turn {t})": (field, pairs) for t, pairs in sorted(by_turn.items())}
    if len(by_turn) > 1:
        compared["winner (all turns)"] = (field, [p for t in sorted(by_turn) for p in by_turn[t]])
    return dict(rows), compared


def _canonical(row: dict[str, Any]) -> tuple[tuple[Any, ...], str | None]:
    a, b, winner = row["model_a"], row["model_b"], _vote(row["winner"])
    if a <= b:
        return (row["question_id"], row["turn"], a, b), winner
    flipped = {"model_a": "model_b", "model_b": "model_a"}.get(winner or "", winner)
    return (row["question_id"], row["turn"], b, a), flipped


def _vote(winner: Any) -> str | None:
    if winner is None:
        return None
    return "tie" if str(winner).startswith("tie") else str(winner)


# ------------------------------------------------------------------ figures


def report(field: Field, pairs: Sequence[tuple[Any, dict[str, Any]]], resamples: int, seed: int) -> dict:
    """The figures of one field: per judge column against the people, and the judges' agreement."""
    scale = _scale(field, pairs)
    out: dict[str, Any] = {"kind": field.kind, "labels": [_plain(v) for v in scale], "judges": {}}
    codes_by_judge: dict[str, list[float]] = {}
    unlabelled = 0
    for human, _ in pairs:
        unlabelled += human is None
    for name, values in _judge_values(field, pairs).items():
        human, judge, raw = [], [], []
        unscored: Counter[str] = Counter()
        per_row: list[float] = []
        for (label, row), value in zip(pairs, values):
            h = _code(_vote(label) if field.kind == "pairwise" else label, scale, field, "label")
            j = _code(_vote(value) if field.kind == "pairwise" else value, scale, field, "judge")
            per_row.append(float("nan") if j is None else float(j))
            if h is None:
                continue
            if j is None:
                status = row.get(field.status) if field.status else None
                unscored[status if status not in (None, "ok") else "no value"] += 1
                continue
            human.append(h)
            judge.append(j)
            raw.append(_number(value, j))
        codes_by_judge[name] = per_row
        figures = agreement(human, judge, raw, field.kind, len(scale), resamples=resamples, seed=seed)
        out["judges"][name] = {"compared": len(human), "unscored": dict(unscored), **figures}
    out["unlabelled"] = unlabelled
    jurors = [v for k, v in codes_by_judge.items() if JURORS in k] or list(codes_by_judge.values())
    if len(jurors) > 1:  # a jury's jurors, or several judges' columns; never the jury's mean among them
        out["jury"] = jury_agreement(jurors, field.kind, len(scale))
    return out


def jury_figures(files: Sequence[Path], rubrics: Sequence[Any]) -> dict[str, Any]:
    """Krippendorff's alpha among a jury's jurors for each label or score column, read from the
    `{column}_jurors` columns of a judged dataset's parquet `files` (the card of `synth judge --jury`)."""
    import pyarrow.parquet as pq

    fields = {}
    for rubric in rubrics:
        properties = rubric.schema.get("properties", {})
        for f, column in rubric.columns.items():
            kind, scale = _kind(properties.get(f, {}), rubric.scales.get(f))
            if kind is not None:
                fields[column + JURORS] = Field(column, (column + JURORS,), kind, scale)
    votes: dict[str, list[Any]] = {c: [] for c in fields}
    for file in files:  # only the jurors' columns are read
        table = pq.read_table(file, columns=sorted(fields.keys() & set(pq.read_schema(file).names)))
        for column in table.column_names:
            votes[column] += table[column].to_pylist()
    out = {}
    for column, rows in votes.items():
        if not rows:
            continue
        field = fields[column]
        pairs = [(None, {column: r}) for r in rows]
        scale = _scale(field, pairs)
        raters = [
            [float("nan") if c is None else float(c) for c in (_code(v, scale, field, "judge") for v in values)]
            for values in _judge_values(field, pairs).values()
        ]
        out[field.name] = jury_agreement(raters, field.kind, len(scale))
    return out


def _judge_values(field: Field, pairs: Sequence[tuple[Any, dict[str, Any]]]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for column in field.judges:
        if not column.endswith(JURORS):
            values[column] = [row.get(column) for _, row in pairs]
            continue
        lists = [row.get(column) or [] for _, row in pairs]
        for i in range(max((len(v) for v in lists), default=0)):
            values[f"{column}[{i}]"] = [v[i] if i < len(v) else None for v in lists]
    return values


def _scale(field: Field, pairs: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[Any, ...]:
    if field.scale:
        return field.scale
    seen = {p[0] for p in pairs} | {v for vs in _judge_values(field, pairs).values() for v in vs}
    seen.discard(None)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen)
    return tuple(sorted(seen, key=(float if numbers else str)))


def _code(value: Any, scale: tuple[Any, ...], field: Field, who: str) -> int | None:
    if value is None:
        return None
    if value in scale:
        return scale.index(value)
    numeric = [s for s in scale if isinstance(s, (int, float)) and not isinstance(s, bool)]
    number = _as_number(value)
    if numeric and number is not None:
        if number in scale:
            return scale.index(number)
        if who == "judge":  # a jury's mean goes to the nearest point of the scale (ties: the lower)
            return scale.index(min(numeric, key=lambda s: (abs(s - number), s)))
    if who == "judge":
        return None  # off the scale: unscored
    shown = ", ".join(str(s) for s in scale)
    raise SynthError(f"label {value!r} of {field.name} is not one of its labels ({shown}); fix the labels file")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value.strip()):
        number = float(value)
        return int(number) if number.is_integer() else number
    return None


def _number(value: Any, code: int) -> float:
    number = _as_number(value)
    return float(number) if number is not None else float(code)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------ reading


def _open(source: str | Path, batch_size: int = 1000) -> Iterator[Batch]:
    """A local dataset through `synth.io.read`, or a Hub dataset `OWNER/NAME[:SPLIT]`."""
    from synth.io import read

    text = str(source)
    local = Path(text).exists() or Path(text).suffix.lower() in {".jsonl", ".json", ".csv", ".parquet", ".txt"}
    if local or not re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", text):
        return read(text, batch_size)
    try:
        import datasets
    except ImportError:
        raise SynthError(f"reading {text} from the Hub needs the datasets package: pip install datasets") from None
    repo, _, split = text.partition(":")
    try:
        ds = datasets.load_dataset(repo, split=split or "train")
    except Exception as exc:  # the Hub's errors are many; the user needs the message
        raise SynthError(f"could not load {text} from the Hugging Face Hub: {exc}") from None
    return (table for table in ds.with_format("arrow").iter(batch_size=batch_size))


def _peek(source: str | Path) -> tuple[Batch, Iterator[Batch]]:
    import itertools

    batches = _open(source)
    first = next(batches, None)
    if first is None:
        raise SynthError(f"{source} holds no rows; judge some rows first")
    return first, itertools.chain([first], batches)


def _table(source: str | Path, what: str) -> Batch:
    batches = list(_open(source))
    if not batches:
        raise SynthError(f"the {what} file {source} holds no rows")
    return pa.concat_tables(batches, promote_options="permissive")
