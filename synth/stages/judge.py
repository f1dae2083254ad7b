"""LLM judges: a rubric (a data file under `filters/rubrics/`) turns rows into prompts, the backend
answers in JSON that follows the rubric's schema, and parsing turns the answer into columns.

Prompting and parsing stay apart, and the raw answer is kept whenever parsing fails, so a bad
judge run can be inspected and re-parsed rather than lost.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.backends import Backend, Completion, Sampling
from synth.core import Batch, SynthError, add_columns
from synth.resources import choices, data_file
from synth.stages.magpie import CUT

RUBRICS = "filters/rubrics"
STATUSES = ("ok", "truncated", "parse_error", "backend_error")  # best first: the overall status is the worst
SLOT_OPTIONS = {
    "instruction": "--column",
    "response": "--response-column",
    "text": "--text-column",
    "response_a": "--response-a-column",  # pairwise rubrics compare two responses
    "response_b": "--response-b-column",
}
_TYPES = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}


@dataclass(frozen=True)
class Rubric:
    """A judge's instructions: which inputs it reads, its prompt, its JSON schema and its scales.

    `columns` maps output fields to column names; `scales` maps ordinal fields to their labels,
    worst first; `score` names the column that ranks responses (for preference pairs).
    """

    name: str
    reads: tuple[str, ...]
    prompt: str = field(repr=False)
    schema: Mapping[str, Any] = field(repr=False)
    columns: Mapping[str, str]
    scales: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    score: str | None = None
    system: str | None = None

    @cached_property
    def _template(self) -> Any:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(
            self.prompt
        )

    @cached_property
    def _validator(self) -> Any:
        from jsonschema import Draft202012Validator

        return Draft202012Validator(self.schema)

    @property
    def column_scales(self) -> dict[str, list[str]]:
        """Ordinal scales keyed by output column, as `synth filter` compares them."""
        return {self.columns[f]: list(labels) for f, labels in self.scales.items()}

    def messages(self, inputs: Mapping[str, str]) -> list[dict[str, str]]:
        """The chat prompt for one row (prompting)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self._template.render(**inputs).strip()}]

    def parse(self, completion: Completion) -> Verdict:
        """The answer as field values and a status (parsing); the raw text stays when it fails."""
        if completion.finish_reason == "error":
            return Verdict("backend_error", raw=completion.error or completion.text)
        values = _json_object(completion.text)
        if values is not None and self._valid(values):
            return Verdict("ok", values=values)
        if completion.finish_reason == "length":
            # Cut off inside a trailing free-text field (rubrics ask for the label first): the
            # fields before the cut are whole, so the verdict stands; the raw answer shows the cut.
            values = _closed(completion.text)
            if values is not None and self._valid(values):
                return Verdict("ok", values=values, raw=completion.text)
        status = "truncated" if completion.finish_reason == "length" else "parse_error"
        return Verdict(status, raw=completion.text)

    def _valid(self, values: Mapping[str, Any]) -> bool:
        return not any(True for _ in self._validator.iter_errors(values))


@dataclass(frozen=True)
class Verdict:
    """One row's judgement: `ok` with values, or a failure status with the raw answer."""

    status: str
    values: Mapping[str, Any] | None = None
    raw: str | None = None
    votes: int = 1


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A shipped rubric by name (`quality`, `difficulty`, ...) or a rubric file by path."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        known = choices(RUBRICS, ".yaml")
        if str(name_or_path) not in known:
            raise SynthError(
                f"unknown rubric {str(name_or_path)!r}; choose one of: {', '.join(known)}, or pass a .yaml file"
            )
        path = data_file(f"{RUBRICS}/{name_or_path}.yaml")
    elif not path.is_file():
        raise SynthError(f"rubric file {path} does not exist; pass a .yaml file or a shipped rubric name")
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SynthError(f"rubric file {path} is not valid YAML ({exc}); fix it") from None
    return rubric_from_dict(spec, where=str(path))


def rubric_from_dict(spec: Any, where: str = "rubric") -> Rubric:
    """Check a rubric's fields and build it; the scales become `enum`s of its schema."""
    if not isinstance(spec, dict):
        raise SynthError(f"{where} must be a mapping with name, reads, prompt, schema and columns")
    missing = [k for k in ("name", "reads", "prompt", "schema", "columns") if k not in spec]
    if missing:
        raise SynthError(f"{where} lacks {', '.join(missing)}; see filters/README.md for the rubric format")
    unknown_slots = set(spec["reads"]) - set(SLOT_OPTIONS)
    if unknown_slots:
        raise SynthError(f"{where} reads {sorted(unknown_slots)}; a rubric can read {', '.join(SLOT_OPTIONS)}")
    schema = json.loads(json.dumps(spec["schema"]))
    properties = schema.get("properties", {})
    scales = {f: tuple(labels) for f, labels in (spec.get("scales") or {}).items()}
    for f in [*scales, *spec["columns"]]:
        if f not in properties:
            raise SynthError(f"{where} names field {f!r}, which its schema does not define")
    for f, labels in scales.items():
        properties[f]["enum"] = list(labels)
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise SynthError(f"{where} has an invalid JSON schema ({exc.message})") from None
    if spec.get("score") and spec["score"] not in spec["columns"].values():
        raise SynthError(f"{where}: score {spec['score']!r} is not one of its columns")
    return Rubric(
        name=spec["name"],
        reads=tuple(spec["reads"]),
        prompt=spec["prompt"],
        schema=schema,
        columns=dict(spec["columns"]),
        scales=scales,
        score=spec.get("score"),
        system=spec.get("system"),
    )


def shipped_scales() -> dict[str, list[str]]:
    """The ordinal scales of every shipped rubric, keyed by output column."""
    scales: dict[str, list[str]] = {}
    for name in choices(RUBRICS, ".yaml"):
        scales.update(load_rubric(name).column_scales)
    return scales


@dataclass(frozen=True)
class Judge:
    """Reads the rubric's inputs (`instruction`, `response` or `text`, renamed by `inputs`); adds
    the rubric's columns, `{rubric}_status` and `{rubric}_raw` (the answer, kept when not `ok`).

    Several backends make a jury: numbers are averaged, labels go to the majority,
    `{rubric}_votes` counts the jurors whose answers parsed and `{column}_jurors` keeps each
    juror's own value (for their agreement). A failed answer is retried once.
    """

    backends: tuple[Backend, ...]
    rubric: Rubric
    params: Sampling = Sampling(max_tokens=512, temperature=0.0)
    inputs: Mapping[str, str] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = replace(self.params, json_schema=self.rubric.schema)
        for batch in batches:
            prompts = self._prompts(batch)
            ballots = [_ask(backend, self.rubric, prompts, params) for backend in self.backends]
            rows = [list(row) for row in zip(*ballots)]
            verdicts = [_combine(self.rubric, row) for row in rows]
            self.stats.update(f"{self.rubric.name}_{v.status}" for v in verdicts)
            yield add_columns(batch, **self._columns(verdicts), **self._jurors(rows))

    def _prompts(self, batch: Batch) -> list[list[dict[str, str]]]:
        values = {}
        for slot in self.rubric.reads:
            column = self.inputs.get(slot, slot)
            if column not in batch.column_names:
                raise SynthError(
                    f"rubric {self.rubric.name!r} reads the {slot} from column {column!r}, which the input lacks "
                    f"(it has {', '.join(batch.column_names)}); name it with {SLOT_OPTIONS[slot]}"
                )
            values[slot] = [v if v is not None else "" for v in batch[column].to_pylist()]
        rows = [dict(zip(values, row)) for row in zip(*values.values())]
        return [self.rubric.messages(row) for row in rows]

    def _columns(self, verdicts: Sequence[Verdict]) -> dict[str, pa.Array]:
        properties = self.rubric.schema.get("properties", {})
        jury = len(self.backends) > 1
        out = {}
        for f, column in self.rubric.columns.items():
            kind = _arrow_type(properties.get(f, {}))
            if jury and pa.types.is_integer(kind):
                kind = pa.float64()  # a jury's mean
            values = [(v.values or {}).get(f) for v in verdicts]
            if kind == pa.string():  # objects and untyped fields are kept as JSON text
                values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
            out[column] = pa.array(values, kind)
        name = self.rubric.name
        out[f"{name}_status"] = pa.array([v.status for v in verdicts], pa.string())
        out[f"{name}_raw"] = pa.array([v.raw for v in verdicts], pa.string())
        if jury:
            out[f"{name}_votes"] = pa.array([v.votes if v.values else 0 for v in verdicts], pa.int32())
        return out

    def _jurors(self, rows: Sequence[Sequence[Verdict]]) -> dict[str, pa.Array]:
        """A jury's single votes, `{column}_jurors` (one value per juror, in --model order, null where
        its answer failed), for every label or score field: what `synth calibrate` measures the
        jurors' agreement on."""
        if len(self.backends) < 2:
            return {}
        properties = self.rubric.schema.get("properties", {})
        out = {}
        for f, column in self.rubric.columns.items():
            prop = properties.get(f, {})
            scored = f in self.rubric.scales or "enum" in prop or prop.get("type") in ("integer", "number", "boolean")
            if not scored:
                continue  # free text: nothing to agree on
            votes = [[(b.values or {}).get(f) if b.status == "ok" else None for b in row] for row in rows]
            out[f"{column}_jurors"] = pa.array(votes, pa.list_(_arrow_type(prop)))
        return out


@dataclass(frozen=True)
class PreferencePairs:
    """Reads `source_id`, `prompt_column`, `response` and the `score` column, k rows per source (as
    `_repeat` lays them out, in one batch); adds one row per source: `prompt`, `chosen`, `rejected`,
    `chosen_score`, `rejected_score`, the form TRL's DPO trainer takes.

    A source with fewer than two scored responses, or whose best and worst score tie, is dropped
    and counted. Labels on an ordinal `scale` rank in scale order. A response cut off by max
    tokens or ended as looping (`response_finish_reason` `length`, `repetition`) is neither
    chosen nor rejected: counted as `dropped_response_truncated`, `dropped_response_repetition`.
    """

    score: str
    scale: tuple[str, ...] = ()
    prompt_column: str = "instruction"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            groups: dict[str, list[dict[str, Any]]] = {}
            reason = ["response_finish_reason"] if "response_finish_reason" in batch.column_names else []
            for row in batch.select(["source_id", self.prompt_column, "response", self.score, *reason]).to_pylist():
                if (cut := row.get("response_finish_reason")) in CUT:
                    self.stats[f"dropped_response_{CUT[cut]}"] += 1
                    row["response"] = None  # a cut-off answer is no training text, chosen or rejected
                groups.setdefault(row["source_id"], []).append(row)
            pairs = [pair for rows in groups.values() if (pair := self._pair(rows))]
            kind = batch.schema.field(self.score).type
            yield pa.table(
                {
                    "id": pa.array([p["id"] for p in pairs], pa.string()),
                    "prompt": pa.array([p["prompt"] for p in pairs], pa.string()),
                    "chosen": pa.array([p["chosen"] for p in pairs], pa.string()),
                    "rejected": pa.array([p["rejected"] for p in pairs], pa.string()),
                    "chosen_score": pa.array([p["chosen_score"] for p in pairs], kind),
                    "rejected_score": pa.array([p["rejected_score"] for p in pairs], kind),
                }
            )

    def _pair(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        def rank(row: dict[str, Any]) -> float:
            value = row[self.score]
            return float(self.scale.index(value)) if self.scale else float(value)

        scored = [r for r in rows if r[self.score] is not None and r["response"]]
        if len(scored) < 2:
            self.stats["dropped_unscored"] += 1
            return None
        best, worst = max(scored, key=rank), min(scored, key=rank)
        if rank(best) == rank(worst):
            self.stats["dropped_tie"] += 1
            return None
        self.stats["pairs"] += 1
        return {
            "id": rows[0]["source_id"],
            "prompt": rows[0][self.prompt_column],
            "chosen": best["response"],
            "rejected": worst["response"],
            "chosen_score": best[self.score],
            "rejected_score": worst[self.score],
        }


def overall_status(rubrics: Sequence[str]) -> Any:
    """A stage adding `judge_status`: the worst of the rubrics' `{rubric}_status` columns."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            rank = pa.array([0] * batch.num_rows, pa.int8())
            for name in rubrics:
                mine = pc.index_in(batch[f"{name}_status"], value_set=pa.array(STATUSES))
                rank = pc.max_element_wise(rank, pc.cast(mine, pa.int8()))
            yield add_columns(batch, judge_status=pc.take(pa.array(STATUSES), rank))

    stage.__qualname__ = f"overall_status({', '.join(rubrics)})"
    return stage


def _ask(backend: Backend, rubric: Rubric, prompts: list[Any], params: Sampling) -> list[Verdict]:
    # One call for the batch, then one call for whatever failed: the "retry once".
    verdicts = [rubric.parse(c) for c in _generate(backend, prompts, params)]
    again = [i for i, v in enumerate(verdicts) if v.status != "ok"]
    if again:
        retried = _generate(backend, [prompts[i] for i in again], params)
        for i, completion in zip(again, retried):
            verdicts[i] = rubric.parse(completion)
    return verdicts


def _generate(backend: Backend, prompts: list[Any], params: Sampling) -> list[Completion]:
    if not prompts:
        return []
    try:
        return backend.generate(prompts, params)
    except SynthError:
        raise
    except Exception as exc:  # a judge never crashes a batch: every row gets `backend_error`
        return [Completion("", "error", error=f"{type(exc).__name__}: {exc}") for _ in prompts]


def _combine(rubric: Rubric, ballots: list[Verdict]) -> Verdict:
    good = [v for v in ballots if v.status == "ok"]
    if len(ballots) == 1 or not good:
        return ballots[0]
    properties = rubric.schema.get("properties", {})
    values = {}
    for f in rubric.columns:
        votes = [v.values[f] for v in good if v.values and f in v.values]
        if not votes:
            continue
        kind = properties.get(f, {}).get("type")
        if kind in ("integer", "number"):
            values[f] = sum(votes) / len(votes)
        elif f in rubric.scales or "enum" in properties.get(f, {}) or kind == "boolean":
            values[f] = Counter(votes).most_common(1)[0][0]  # ties: the earliest juror's vote
        else:
            values[f] = votes[0]
    return Verdict("ok", values=values, votes=len(good))


def _json_object(text: str) -> dict[str, Any] | None:
    # Backends without structured output wrap JSON in prose or code fences: take the outermost object.
    text = re.sub(r"^```(?:json)?|```$", "", text.strip()).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _closed(text: str) -> dict[str, Any] | None:
    """A JSON object cut off inside its last string value, closed there (None if it was cut elsewhere)."""
    text = text.strip()
    if not text.startswith("{") or text.endswith("\\"):
        return None
    try:
        value = json.loads(text + '"}')
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _arrow_type(prop: Mapping[str, Any]) -> pa.DataType:
    if prop.get("type") == "array":
        return pa.list_(_arrow_type(prop.get("items", {})))
    return _TYPES.get(prop.get("type", "string"), pa.string())
