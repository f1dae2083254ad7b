"""Pairwise judges: which of two responses is better, asked in both orders when `swap` is on.

A judge with position bias prefers whichever answer comes first; asking again with the answers
swapped shows it. MT-Bench's rule (arXiv 2306.05685) is kept: a verdict that flips is a tie, and
the share of pairs whose verdict held is the judge's consistency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from synth.backends import Backend, Sampling
from synth.core import Batch, SynthError, add_columns
from synth.stages.judge import STATUSES, Judge, Rubric, Verdict, _ask, _combine

VERDICTS = ("A", "B", "tie")
FORWARD = {"A": "model_a", "B": "model_b", "tie": "tie"}
SWAPPED = {"A": "model_b", "B": "model_a", "tie": "tie"}  # asked with B's answer first
PREFERENCE_COLUMNS = ("id", "prompt", "chosen", "rejected")


def verdict_field(rubric: Rubric) -> str:
    """The rubric's field whose labels are A, B and tie: a pairwise rubric must have one."""
    for name, prop in rubric.schema.get("properties", {}).items():
        if set(prop.get("enum", ())) == set(VERDICTS):
            return name
    raise SynthError(
        f"rubric {rubric.name!r} has no field with the labels A, B and tie; "
        "a pairwise rubric needs one (see filters/rubrics/pairwise.yaml)"
    )


@dataclass(frozen=True)
class PairwiseJudge:
    """Reads `instruction`, `response_a`, `response_b` (renamed by `inputs`); adds `winner`
    (model_a, model_b or tie), `winner_forward`, `winner_explanation`, `{rubric}_status`,
    `{rubric}_raw` and, with `swap`, `winner_swapped` and `swap_consistent`.

    With `swap` every pair is judged twice, the second time with the answers swapped; a verdict
    that flips is a tie and counted as `{rubric}_swap_inconsistent`, so a judge that always
    picks the first answer has no consistent verdict at all. Several backends vote (majority).
    """

    backends: tuple[Backend, ...]
    rubric: Rubric
    params: Sampling = Sampling(max_tokens=512, temperature=0.0)
    inputs: Mapping[str, str] = field(default_factory=dict)
    swap: bool = False
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __post_init__(self) -> None:
        verdict_field(self.rubric)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = replace(self.params, json_schema=self.rubric.schema)
        flipped = {
            **self.inputs,
            "response_a": self.inputs.get("response_b", "response_b"),
            "response_b": self.inputs.get("response_a", "response_a"),
        }
        for batch in batches:
            forward = self._ask(Judge(self.backends, self.rubric, params, self.inputs)._prompts(batch), params)
            swapped = None
            if self.swap:
                swapped = self._ask(Judge(self.backends, self.rubric, params, flipped)._prompts(batch), params)
            yield add_columns(batch, **self._columns(forward, swapped))

    def check(self, batch: Batch) -> None:
        """Fail now if the input lacks a column the rubric reads."""
        Judge(self.backends, self.rubric, self.params, self.inputs)._prompts(batch.slice(0, 0))

    def _ask(self, prompts: list[Any], params: Sampling) -> list[Verdict]:
        ballots = [_ask(backend, self.rubric, prompts, params) for backend in self.backends]
        return [_combine(self.rubric, list(row)) for row in zip(*ballots)]

    def _columns(self, forward: Sequence[Verdict], swapped: Sequence[Verdict] | None) -> dict[str, pa.Array]:
        name, key = self.rubric.name, verdict_field(self.rubric)
        first = [FORWARD[(v.values or {})[key]] if v.status == "ok" else None for v in forward]
        out: dict[str, Any] = {"winner": first, "winner_forward": first}
        statuses = [v.status for v in forward]
        raws = [v.raw for v in forward]
        if swapped is not None:
            second = [SWAPPED[(v.values or {})[key]] if v.status == "ok" else None for v in swapped]
            held = [None if a is None or b is None else a == b for a, b in zip(first, second)]
            out["winner"] = [None if h is None else (a if h else "tie") for a, h in zip(first, held)]
            out["winner_swapped"] = second
            out["swap_consistent"] = pa.array(held, pa.bool_())
            statuses = [max(a, v.status, key=STATUSES.index) for a, v in zip(statuses, swapped)]
            raws = [a if a is not None else v.raw for a, v in zip(raws, swapped)]
            self.stats.update(f"{name}_swap_{'consistent' if h else 'inconsistent'}" for h in held if h is not None)
        self.stats.update(f"{name}_{s}" for s in statuses)
        self.stats.update(f"winner_{w}" for w in out["winner"] if w is not None)
        explanation = "explanation" in self.rubric.schema.get("properties", {})
        out["winner_explanation"] = [(v.values or {}).get("explanation") if explanation else None for v in forward]
        out[f"{name}_status"] = statuses
        out[f"{name}_raw"] = raws
        return {k: v if isinstance(v, pa.Array) else pa.array(v, pa.string()) for k, v in out.items()}


def consistency(counts: Mapping[str, int], rubric: str = "pairwise") -> dict[str, Any]:
    """The card's swap figures from a run's counters: pairs judged both ways, and the share whose
    verdict held (None before any)."""
    held, flipped = counts.get(f"{rubric}_swap_consistent", 0), counts.get(f"{rubric}_swap_inconsistent", 0)
    if not held + flipped:
        return {}
    both = held + flipped
    return {"swap": {"judged_both_ways": both, "inconsistent": flipped, "consistency": held / both}}


@dataclass(frozen=True)
class PairUp:
    """Reads `source_id`, `prompt_column`, `response`, `response_finish_reason`, two rows per source
    (as `_repeat(2)` lays them out, in one batch); adds one row per source: `id`, the prompt,
    `response_a`, `response_b`. A source with a failed or cut-off response is dropped and counted."""

    prompt_column: str = "instruction"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            groups: dict[str, list[dict[str, Any]]] = {}
            reason = "response_finish_reason" in batch.column_names
            columns = ["source_id", self.prompt_column, "response", *(["response_finish_reason"] if reason else [])]
            for row in batch.select(columns).to_pylist():
                groups.setdefault(row["source_id"], []).append(row)
            pairs = []
            for source, rows in groups.items():
                done = [r for r in rows if r["response"] and r.get("response_finish_reason", "stop") == "stop"]
                if len(done) < 2:
                    self.stats["dropped_unfinished"] += 1
                    continue
                pairs.append(
                    {
                        "id": source,
                        self.prompt_column: rows[0][self.prompt_column],
                        "response_a": done[0]["response"],
                        "response_b": done[1]["response"],
                    }
                )
            schema = pa.schema([(c, pa.string()) for c in ("id", self.prompt_column, "response_a", "response_b")])
            yield pa.Table.from_pylist(pairs, schema=schema)


@dataclass(frozen=True)
class PairwisePreferences:
    """Reads `prompt_column`, `response_a`, `response_b`, `winner`; adds one row per decided pair:
    `id`, `prompt`, `chosen`, `rejected` (TRL's DPO form). Ties, flipped verdicts included, and
    unjudged pairs are dropped and counted."""

    prompt_column: str = "instruction"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            rows = []
            for row in batch.select(["id", self.prompt_column, "response_a", "response_b", "winner"]).to_pylist():
                if row["winner"] not in ("model_a", "model_b"):
                    self.stats["dropped_tie" if row["winner"] == "tie" else "dropped_unjudged"] += 1
                    continue
                a_wins = row["winner"] == "model_a"
                self.stats["pairs"] += 1
                rows.append(
                    {
                        "id": row["id"],
                        "prompt": row[self.prompt_column],
                        "chosen": row["response_a" if a_wins else "response_b"],
                        "rejected": row["response_b" if a_wins else "response_a"],
                    }
                )
            yield pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in PREFERENCE_COLUMNS]))
