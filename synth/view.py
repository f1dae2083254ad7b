"""`synth view`: one self-contained HTML page to read a dataset: its card, a stage funnel, charts
over every row, and a paged, searchable browser of a stratified sample of rows and rejects.

The page needs no server and no network: data, script and styles are inline, a Content-Security-
Policy forbids every fetch, and row text only ever reaches the page through `textContent`.
"""

from __future__ import annotations

import heapq
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from synth.card import drop_counts
from synth.core import SynthError
from synth.io import read, read_provenance

TEXT_COLUMNS = ("instruction", "response", "text", "question", "answer", "persona", "chosen", "rejected")
LABEL_LIMIT = 30  # a string column with at most this many distinct values is a label
STRATA = ("task", "category", "language", "input_quality", "verify_status", "response_finish_reason")
REASONS = ("rejected_by", "contaminated_by", "verify_status", "dup_cluster", "judge_status")
NOT_LABELS = {"id", "source_id", "model", "system_prompt", "persona_id", "parent_id", "root_id", "dup_cluster"}
CELL_CHARS = 20_000  # a longer text is cut in the page (the dataset keeps it whole)
_PAGE = Path(__file__).with_name("view_page.html")
GENERATOR = '<meta name="generator" content="synth view">'  # marks a page synth may replace


def build(
    path: str | Path,
    rejects: str | Path | None = None,
    sample: int = 2000,
    embed_map: bool = True,
) -> dict[str, Any]:
    """Everything the page shows: charts from all rows, a stratified sample of rows to browse."""
    path = Path(path)
    if sample < 1:
        raise SynthError(f"--sample must be at least 1, got {sample}")
    summary = _Summary()
    for batch in read(path):
        summary.add(batch)
    if summary.rows == 0 and not summary.columns:
        raise SynthError(f"{path} holds no rows and no columns; point synth view at a dataset")
    stratum = next((c for c in STRATA if c in summary.labels), None)
    rows = _sample_rows(path, summary, stratum, sample)
    data: dict[str, Any] = {
        "title": path.resolve().name,
        "total": summary.rows,
        "columns": summary.columns,
        "stratum": stratum,
        "card": _card(path, summary.rows),
        "charts": summary.charts(),
        "filters": summary.filters(),
        "rows": rows,
        "rejects": [],
        "total_rejects": 0,
        "map": None,
        "diversity": None,
    }
    if rejects is not None:
        data["rejects"], data["total_rejects"] = _rejects(Path(rejects), max(1, sample // 4))
    if embed_map:
        data["map"] = _embedding_map(rows, stratum)
        data["diversity"] = _diversity(path, summary.columns)
    return data


def render(data: dict[str, Any]) -> str:
    """The HTML page, with `data` inline as JSON that cannot close its script element."""
    payload = json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    payload = payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return _PAGE.read_text(encoding="utf-8").replace("/*DATA*/{}", payload, 1)


def write_view(
    path: str | Path,
    out: str | Path | None = None,
    rejects: str | Path | None = None,
    sample: int = 2000,
    embed_map: bool = True,
) -> Path:
    """Build and write the page; returns its path (`<DIR>/view.html` unless `out` says otherwise)."""
    path = Path(path)
    target = Path(out) if out is not None else path / "view.html" if path.is_dir() else path.with_suffix(".view.html")
    if target.is_dir():
        raise SynthError(f"--out {target} is a directory; give a file name such as {target / 'view.html'}")
    if target.suffix.lower() not in {".html", ".htm"}:
        raise SynthError(f"--out {target} must end in .html, so that it cannot replace a data file")
    if target.exists() and GENERATOR not in target.read_text(encoding="utf-8", errors="replace")[:2000]:
        raise SynthError(f"{target} exists and synth did not write it; choose another --out or move that file")
    html = render(build(path, rejects, sample, embed_map))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target


class _Summary:
    """One streaming pass: row count, lengths, labels, numbers, instruction verbs, and per stratum
    the rows with the smallest id hashes (a seeded, reproducible sample that needs no second copy)."""

    def __init__(self) -> None:
        self.rows = 0
        self.columns: list[str] = []
        self.lengths: dict[str, list[np.ndarray]] = {}
        self.labels: dict[str, Counter[str]] = {}
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.distinct: dict[str, set[float]] = {}  # numeric columns with few values are labels too (scores)
        self.verbs: Counter[tuple[str, str]] = Counter()
        self.stratum_of: dict[str, list[str | None]] = {}
        self.hashes: list[np.ndarray] = []

    def add(self, batch: pa.RecordBatch) -> None:
        for name in batch.column_names:
            if name not in self.columns:
                self.columns.append(name)
        for name in batch.column_names:
            column = batch[name]
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                if name in TEXT_COLUMNS:
                    self.lengths.setdefault(name, []).append(pc.utf8_length(column).fill_null(0).to_numpy())
                elif name not in NOT_LABELS and (name in self.labels or self.rows == 0):
                    self._label(name, column)
            elif (
                pa.types.is_integer(column.type)
                or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)
            ):
                if name not in {"turns", "response_index", "hop"}:
                    values = pc.cast(column, pa.float64()).drop_null().to_numpy()
                    self.numbers.setdefault(name, []).append(values)
                    seen = self.distinct.setdefault(name, set())
                    if len(seen) <= LABEL_LIMIT:
                        seen.update(np.unique(values[: 10 * LABEL_LIMIT + 1]).tolist())
        for text in _instructions(batch):
            found = root_verb(text)
            if found:
                self.verbs[found] += 1
        for name in self.labels:
            self.stratum_of.setdefault(name, []).extend(
                batch[name].to_pylist() if name in batch.column_names else [None] * batch.num_rows
            )
        ids = batch["id"].to_pylist() if "id" in batch.column_names else range(self.rows, self.rows + batch.num_rows)
        self.hashes.append(np.array([xxhash.xxh64_intdigest(str(i).encode()) for i in ids], dtype=np.uint64))
        self.rows += batch.num_rows

    def _label(self, name: str, column: pa.Array) -> None:
        if name in NOT_LABELS:
            return
        counts = self.labels.setdefault(name, Counter())
        counts.update(str(v) for v in column.to_pylist() if v is not None)
        if len(counts) > LABEL_LIMIT:
            del self.labels[name]
            self.stratum_of.pop(name, None)

    def charts(self) -> dict[str, Any]:
        lengths = {k: _histogram(np.concatenate(v)) for k, v in self.lengths.items() if v}
        numbers = {k: _histogram(np.concatenate(v), integer=False) for k, v in self.numbers.items() if v}
        labels = {k: dict(v.most_common()) for k, v in self.labels.items() if v}
        verbs = [[v, o, n] for (v, o), n in self.verbs.most_common(40)]
        return {"lengths": lengths, "numbers": numbers, "labels": labels, "verbs": verbs}

    def filters(self) -> list[str]:
        """Columns the page offers as filters: labels, and numbers with few distinct values."""
        few = [k for k, v in self.distinct.items() if len(v) <= LABEL_LIMIT]
        return [c for c in self.columns if c in self.labels or c in few]


def _sample_rows(path: Path, summary: _Summary, stratum: str | None, sample: int) -> list[dict[str, Any]]:
    """A stratified sample: each stratum gets its share of `sample` (at least one row), taking the
    rows with the smallest id hashes, so the same dataset always shows the same rows."""
    if summary.rows == 0:
        return []
    hashes = np.concatenate(summary.hashes)
    groups = np.array([str(v) for v in summary.stratum_of[stratum]]) if stratum else np.zeros(summary.rows)
    chosen: list[int] = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        quota = max(1, round(sample * len(members) / summary.rows))
        picked = heapq.nsmallest(quota, members, key=lambda i: hashes[i])
        chosen.extend(int(i) for i in picked)
    chosen = sorted(chosen)[: max(sample, 1) + len(np.unique(groups))]
    wanted, offset = set(chosen), 0
    rows: list[dict[str, Any]] = []
    for batch in read(path):
        local = [i - offset for i in range(offset, offset + batch.num_rows) if i in wanted]
        if local:
            rows.extend(_plain(r) for r in batch.take(pa.array(local)).to_pylist())
        offset += batch.num_rows
    return rows


def _rejects(path: Path, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Rejected rows (their reason column kept), the first `limit` of them, and how many there are."""
    rows: list[dict[str, Any]] = []
    total = 0
    for batch in read(path):
        total += batch.num_rows
        if len(rows) < limit:
            for row in batch.slice(0, limit - len(rows)).to_pylist():
                row = _plain(row)
                row["_reason"] = next((f"{k}: {row[k]}" for k in REASONS if row.get(k) not in (None, "")), "")
                rows.append(row)
    return rows, total


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _cut(v) for k, v in row.items()}


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > CELL_CHARS:
        return value[:CELL_CHARS] + f" [... {len(value) - CELL_CHARS} more characters]"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _histogram(values: np.ndarray, integer: bool = True, bins: int = 30) -> dict[str, Any]:
    if values.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(values.min()), float(values.max())
    if high == low:
        high = low + 1
    counts, edges = np.histogram(values, bins=min(bins, max(1, values.size)), range=(low, high))
    bounds = [round(float(e)) if integer else round(float(e), 3) for e in edges]
    return {
        "edges": bounds,
        "counts": counts.tolist(),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "n": int(values.size),
    }


def _instructions(batch: pa.RecordBatch) -> list[str]:
    if "instruction" in batch.column_names:
        return [t for t in batch["instruction"].to_pylist() if isinstance(t, str)]
    if "messages" in batch.column_names:
        out = []
        for turns in batch["messages"].to_pylist():
            first = next((t.get("content") for t in turns or [] if t and t.get("role") == "user"), None)
            if isinstance(first, str):
                out.append(first)
        return out
    return []


_POLITE = re.compile(
    r"^(?:(?:hi|hello|hey|please|kindly|so|ok|okay)[,!.]?\s+)*"
    r"(?:(?:can|could|would|will) you(?: please)?\s+|i (?:want|need|would like) you to\s+|help me(?: to)?\s+|"
    r"i(?:'d| would) like to\s+|let's\s+)?",
    re.IGNORECASE,
)
_SKIP = {"a", "an", "the", "me", "my", "us", "our", "some", "this", "that", "these", "those", "your", "it", "its"}
_VERBS_FILE = Path(__file__).with_name("view_verbs.txt")


def root_verb(text: str) -> tuple[str, str] | None:
    """(verb, object) of an imperative instruction, by a light rule: strip politeness ("can you
    please"), take the first word if it is a common English verb, then the first content word after
    it. Magpie's paper uses a parser; this rule needs no model and is right for the common forms."""
    words = re.findall(r"[a-z][a-z'-]*", _POLITE.sub("", text.strip()[:200]).lower())
    if not words or words[0] not in _verbs():
        return None
    obj = next((w for w in words[1:6] if w not in _SKIP), "")
    return words[0], obj


def _verbs() -> frozenset[str]:
    global _VERB_SET
    if _VERB_SET is None:
        _VERB_SET = frozenset(_VERBS_FILE.read_text(encoding="utf-8").split())
    return _VERB_SET


_VERB_SET: frozenset[str] | None = None


def _card(path: Path, rows: int) -> dict[str, Any]:
    """The card as a person reads it: every value a plain string (never an object for the page to
    print raw), the model by name, each stage by name with its settings, and the funnel."""
    try:
        provenance = read_provenance(path)
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    counts = provenance.get("counts", {})
    sampling = {
        k: readable(v) for k, v in provenance.items() if (k.endswith("sampling") or k == "params") and v is not None
    }
    status = provenance.get("status", "")
    if provenance.get("reason"):
        status = f"{status}: {provenance['reason']}"
    backend = provenance.get("backend")
    return {
        "command": provenance.get("command", ""),
        "status": status,
        "model": _model_name(provenance),
        "models": _other_models(provenance),
        "backend": backend.get("name", "") if isinstance(backend, dict) else str(backend or ""),
        "template": readable(provenance.get("template") or ""),
        "sampling": sampling,
        "stages": [_stage(s) for s in provenance.get("stages", [])],
        "counts": counts,
        "funnel": _funnel(drop_counts(counts), rows, provenance.get("input_rows")),  # counts are per stage
    }


def readable(value: Any) -> str:
    """A card value in words: `name (key: value, ...)` for a record, items joined by commas; no
    braces or quotes, so the page shows settings, not JSON."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if value == "":
        return "(empty)"
    if isinstance(value, dict):
        settings = ", ".join(f"{k}: {readable(v)}" for k, v in value.items() if k != "stage")
        name = value.get("stage")
        if name is None:
            return settings or "none"
        return f"{name} ({settings})" if settings else str(name)
    if isinstance(value, (list, tuple)):
        return ", ".join(readable(v) for v in value) if value else "none"
    return str(value)


def _stage(record: Any) -> dict[str, Any]:
    """A stage of the card: its name and its settings, each a (name, words) pair."""
    if isinstance(record, dict):
        name = str(record.get("stage", "stage"))
        return {"name": name, "settings": [[str(k), readable(v)] for k, v in record.items() if k != "stage"]}
    return {"name": readable(record), "settings": []}


def _model_name(provenance: dict[str, Any]) -> str:
    """The model that made the rows (`smollm2:135m`), not the backend that ran it (`ollama`)."""
    model, backend = provenance.get("model"), provenance.get("backend")
    if isinstance(model, dict):  # a local model file: its name
        model = model.get("file") or model.get("model")
    if not model and isinstance(backend, dict):  # a record naming the backend and its model
        model = backend.get("model")
    return readable(model) if model else ""


def _other_models(provenance: dict[str, Any]) -> list[list[str]]:
    """Models besides the main one: a response model, judges."""
    found = []
    response = provenance.get("response_model")
    if isinstance(response, dict) and response.get("model"):
        found.append(["response model", readable(response["model"])])
    judges = [j for j in [provenance.get("judge"), *(provenance.get("judges") or [])] if isinstance(j, dict)]
    if judges:
        label = "judge models" if len(judges) > 1 else "judge model"
        found.append([label, ", ".join(readable(j.get("model")) for j in judges)])
    return found


def _funnel(counts: dict[str, Any], rows: int, input_rows: int | None = None) -> list[dict[str, Any]]:
    """A chain: what went in, what is left after each drop (each bar is the next one's input), and
    last the rows on disk. Rows the counts do not explain (a stage that makes several rows of one,
    or an older card) show as their own step, so the chain always ends at what is on disk."""
    drops = [(k.removeprefix("dropped_"), v) for k, v in counts.items() if k.startswith("dropped_") and v]
    start = counts.get("attempts") or counts.get("rows_in") or input_rows
    if not start and not drops:
        return [{"label": "rows on disk", "value": rows, "kind": "out"}] if counts else []
    label = "attempts" if counts.get("attempts") else "rows in"
    if not start:  # no count of what went in: at least what was kept and dropped
        start, label = rows + sum(v for _, v in drops), "rows in (kept + dropped)"
    steps = [{"label": label, "value": start, "kind": "in"}]
    left = start
    for reason, dropped in drops:
        left -= dropped
        steps.append({"label": f"{reason.replace('_', ' ')} \u2212{dropped}", "value": left, "kind": "drop"})
    if left != rows:
        change = f"not written \u2212{left - rows}" if left > rows else f"made by the stages +{rows - left}"
        steps.append({"label": change, "value": rows, "kind": "gap"})
    steps.append({"label": "rows on disk", "value": rows, "kind": "out"})
    return steps


def _embedding_map(rows: list[dict[str, Any]], stratum: str | None) -> dict[str, Any]:
    """Sampled instructions embedded with the dedup embedder, projected to 2-D by PCA."""
    texts, colours, ids = [], [], []
    for i, row in enumerate(rows):
        text = row.get("instruction") or next(
            (t.get("content") for t in row.get("messages") or [] if t and t.get("role") == "user"), None
        )
        if isinstance(text, str) and text.strip():
            texts.append(text)
            colours.append(str(row.get(stratum)) if stratum else "rows")
            ids.append(str(row.get("id", i)))
    if len(texts) < 3:
        return {"error": "fewer than 3 instructions to place on a map"}
    try:
        vectors = np.asarray(_embed(texts), dtype=np.float64)
    except Exception as exc:  # the map is one panel of many: say why it is missing, here and on the page
        why = str(exc) if isinstance(exc, SynthError) else f"{type(exc).__name__}: {exc}"
        print(f"synth: view: no embedding map ({why})", file=sys.stderr)
        return {"error": f"no embedding map: {why}"}
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T
    return {"points": np.round(points, 4).tolist(), "colour": colours, "by": stratum or "", "ids": ids}


def _diversity(path: Path, columns: list[str], sample: int = 2_000) -> dict[str, Any]:
    """`synth diversity`'s figures of the first text column (instruction, text, prompt, response)
    on a uniform sample of `sample` rows, with the map's embedder; {"error": why} where they
    cannot be had, so that the page says why."""
    from synth.recipes.diversity import TEXT_COLUMNS as DIVERSITY_COLUMNS
    from synth.recipes.diversity import sampled_texts
    from synth.stages.diversity import measure

    column = next((c for c in DIVERSITY_COLUMNS if c in columns), None)
    if column is None:
        return {"error": f"no diversity figures: no text column ({', '.join(DIVERSITY_COLUMNS)})"}
    try:
        texts, rows = sampled_texts(path, column, sample)
        if len(texts) < 2:
            return {"error": f"no diversity figures: fewer than 2 texts in {column}"}
        figures = measure(texts, k=10, rows=rows)
    except Exception as exc:  # one panel of many, as the map: say why it is missing
        why = str(exc) if isinstance(exc, SynthError) else f"{type(exc).__name__}: {exc}"
        print(f"synth: view: no diversity figures ({why})", file=sys.stderr)
        return {"error": f"no diversity figures: {why}"}
    return _cut({"column": column, **figures})


def _embed(texts: list[str]) -> np.ndarray:
    """The embedder semantic dedup uses, so the map shows the neighbourhoods dedup acts on."""
    from synth.stages.embed import embed

    return embed(texts)
