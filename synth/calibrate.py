"""`synth calibrate`: how often a judge agrees with people, field by field.

Judged rows meet human labels by `id` (MT-Bench's pairwise votes meet by question, turn and model
pair). The statistics come from scikit-learn, scipy and krippendorff; this module lines the
values up, counts what could not be compared and why, and writes the report.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.core import Batch, SynthError

MT_BENCH = ("question_id", "turn", "model_a", "model_b", "winner")
# A pairwise verdict; MT-Bench's "tie (bothbad)" and "tie (inconsistent)" are ties too.
PAIRWISE = ("model_a", "model_b", "tie")
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
    rows = {"labels": len(labelled), "joined": len(labelled) - len(missing), "not_joined": len(missing)}
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
        human, judge, raw, unscored = [], [], [], Counter()
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


def agreement(
    human: Sequence[int],
    judge: Sequence[int],
    raw: Sequence[float] | None,
    kind: str,
    n_labels: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, Cohen's kappa, (ordinal) quadratic-weighted kappa and Spearman, (pairwise) accuracy
    without ties, each with a bootstrap 95% interval; the confusion matrix (rows: people, columns:
    judge) and per-label precision and recall. Labels are codes 0..n_labels-1."""
    import numpy as np
    from scipy import stats
    from sklearn import metrics

    codes = list(range(n_labels))
    h, j = np.asarray(human, dtype=int), np.asarray(judge, dtype=int)
    r = np.asarray(raw if raw is not None else judge, dtype=float)
    measures: dict[str, Callable[..., float]] = {
        "accuracy": lambda a, b, _: metrics.accuracy_score(a, b),
        "cohen_kappa": lambda a, b, _: metrics.cohen_kappa_score(a, b, labels=codes),
    }
    if kind == "ordinal":
        measures["quadratic_kappa"] = lambda a, b, _: metrics.cohen_kappa_score(a, b, labels=codes, weights="quadratic")
        measures["spearman"] = lambda a, _, c: stats.spearmanr(a, c).statistic
    out: dict[str, Any] = {}
    with warnings.catch_warnings():  # undefined values (one class, constant input) are reported as null
        warnings.simplefilter("ignore")
        for name, measure in measures.items():
            out[name] = _with_interval(measure, (h, j, r), resamples, seed)
        if kind == "pairwise":  # MT-Bench's second setup: only the votes where neither side says tie
            tie = PAIRWISE.index("tie")
            keep = (h != tie) & (j != tie)
            kept = (h[keep], j[keep], r[keep])
            out["accuracy_without_ties"] = _with_interval(measures["accuracy"], kept, resamples, seed)
            out["compared_without_ties"] = int(keep.sum())
        out["confusion"] = metrics.confusion_matrix(h, j, labels=codes).tolist() if len(h) else []
        precision, recall, _, support = (
            metrics.precision_recall_fscore_support(h, j, labels=codes, zero_division=0.0)
            if len(h)
            else ([], [], [], [])
        )
    out["per_label"] = [
        {"precision": float(p), "recall": float(q), "support": int(s)} for p, q, s in zip(precision, recall, support)
    ]
    return out


def _with_interval(measure: Callable[..., float], data: tuple[Any, ...], resamples: int, seed: int) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    n = len(data[0])
    value = _finite(measure(*data)) if n else None
    if value is None or n < 2 or resamples < 1:
        return {"value": value, "ci95": None}
    result = stats.bootstrap(
        data,
        measure,
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    # A resample can leave the statistic undefined (kappa on one class): those resamples drop out.
    spread = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    if not len(spread):
        return {"value": value, "ci95": None}
    low, high = np.percentile(spread, [2.5, 97.5])
    return {"value": value, "ci95": [float(low), float(high)], "undefined_resamples": int(resamples - len(spread))}


def jury_agreement(raters: Sequence[Sequence[float]], kind: str, n_labels: int) -> dict[str, Any]:
    """Krippendorff's alpha among the judges (rows: judges, columns: items; NaN where one gave none)."""
    import krippendorff
    import numpy as np

    level = "ordinal" if kind == "ordinal" else "nominal"
    data = np.asarray(raters, dtype=float)
    units = int((np.isfinite(data).sum(axis=0) >= 2).sum())
    try:
        alpha = krippendorff.alpha(data, level_of_measurement=level, value_domain=list(range(n_labels)))
    except ValueError as exc:  # fewer than two values anywhere: alpha is undefined
        return {"krippendorff_alpha": None, "level": level, "units": units, "note": str(exc)}
    return {"krippendorff_alpha": _finite(alpha), "level": level, "units": units, "judges": len(raters)}


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


def _finite(value: Any) -> float | None:
    import math

    value = float(value)
    return value if math.isfinite(value) else None


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
    if Path(text).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", text):
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


# ------------------------------------------------------------------ the report


def summary(result: dict[str, Any]) -> str:
    """Plain-text lines: the join counts, then per field and judge the headline figures."""
    rows = result["rows"]
    lines = ["rows: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rows.items() if not isinstance(v, list))]
    for name, figures in result["fields"].items():
        for judge, f in figures["judges"].items():
            shown = [f"{m} {_shown(f[m])}" for m in _MEASURES if m in f]
            unscored = sum(f["unscored"].values())
            lines.append(f"{name} [{judge}]: {f['compared']} compared, {unscored} unscored; " + ", ".join(shown))
        if "jury" in figures:
            alpha = {"value": figures["jury"]["krippendorff_alpha"]}
            lines.append(f"{name}: judges' Krippendorff alpha {_shown(alpha)}")
    return "\n".join(lines)


_MEASURES = ("accuracy", "accuracy_without_ties", "cohen_kappa", "quadratic_kappa", "spearman")


def _shown(figure: dict[str, Any]) -> str:
    value = figure.get("value")
    if value is None:
        return "n/a"
    ci = figure.get("ci95")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def write_report(result: dict[str, Any], out: Path) -> list[Path]:
    """report.json, report.md and one confusion-matrix PNG per field and judge."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    page = ["# Judge calibration", "", f"Judged: `{result['judged']}`; labels: `{result['labels']}`.", ""]
    page += ["| rows | count |", "| --- | --- |"]
    page += [f"| {k.replace('_', ' ')} | {v} |" for k, v in result["rows"].items() if not isinstance(v, list)]
    for name, figures in result["fields"].items():
        page += ["", f"## {name}", "", f"Kind: {figures['kind']}; labels: {', '.join(map(str, figures['labels']))}."]
        page += [f"Rows with no human label: {figures['unlabelled']}.", ""]
        for judge, f in figures["judges"].items():
            page += _judge_section(name, judge, f, figures["labels"])
            if f["compared"]:
                files.append(_confusion_png(out, name, judge, f["confusion"], figures["labels"]))
                page += [f"![{name} {judge}]({files[-1].name})", ""]
        if "jury" in figures:
            jury = figures["jury"]
            page += [
                f"Agreement among the judges: Krippendorff's alpha ({jury['level']}) "
                f"{_shown({'value': jury['krippendorff_alpha']})} over {jury['units']} items.",
                "",
            ]
    (out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text("\n".join(page) + "\n", encoding="utf-8")
    print(f"synth: wrote {len(files) + 2} files to {out}", file=sys.stderr)
    return [*files, out / "report.json", out / "report.md"]


def _judge_section(name: str, judge: str, f: dict[str, Any], labels: list[Any]) -> list[str]:
    unscored = ", ".join(f"{k} {v}" for k, v in f["unscored"].items()) or "none"
    lines = [f"### {judge}", "", f"Compared: {f['compared']}; unscored: {unscored}.", ""]
    lines += ["| measure | value | 95% interval |", "| --- | --- | --- |"]
    for m in _MEASURES:
        if m in f:
            value, ci = f[m]["value"], f[m]["ci95"]
            lines.append(
                f"| {m} | {'n/a' if value is None else f'{value:.3f}'} | "
                f"{f'{ci[0]:.3f} to {ci[1]:.3f}' if ci else 'n/a'} |"
            )
    if f["confusion"]:
        lines += ["", "Confusion (rows: people, columns: judge):", ""]
        lines += ["| people \\ judge | " + " | ".join(map(str, labels)) + " |", "| --- " * (len(labels) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(map(str, row)) + " |" for label, row in zip(labels, f["confusion"])]
        lines += ["", "| label | precision | recall | support |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {label} | {p['precision']:.3f} | {p['recall']:.3f} | {p['support']} |"
            for label, p in zip(labels, f["per_label"])
        ]
    return [*lines, ""]


def _confusion_png(out: Path, name: str, judge: str, matrix: list[list[int]], labels: list[Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    slug = re.sub(r"[^\w.-]+", "_", f"{name}__{judge}" if name != judge else name).strip("_")
    path = out / f"confusion_{slug}.png"
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=[str(v) for v in labels]).plot(
        ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_xlabel(f"judge ({judge})")
    ax.set_ylabel("people")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
