"""Persona conditioning (Persona Hub, arXiv 2406.20094): persona sets read into one schema,
Text-to-Persona, Persona-to-Persona, persona-driven generation and persona-steered Magpie.

A persona set has the columns `id`, `persona`, `source` and `labels` (a list of strings, or
null). Prompts are data files under `personas/` (`templates/` and `tasks/`); each names the
answer labels it asks for ("Math problem:") and the column each label's text goes to.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.backends import Backend, Sampling
from synth.core import Batch, Stage, SynthError, add_columns
from synth.resources import choices, data_file, read_choice
from synth.stages.magpie import CUT, MESSAGES, Respond, _seeded
from synth.stages.persona_sets import SETS as SETS
from synth.stages.persona_sets import _cycle, _Rows
from synth.stages.persona_sets import check_documents as check_documents
from synth.stages.persona_sets import check_personas as check_personas
from synth.stages.persona_sets import read_personas as read_personas

TEMPLATES, TASKS = "personas/templates", "personas/tasks"
STATUSES = ("ok", "missing_prefix", "empty", "truncated", "repetition", "error")
# A generation cut off (by max tokens, or as looping) or failed is never parsed into an answer.
UNFINISHED = {"length": "truncated", "repetition": "repetition", "error": "error"}


# ---------------------------------------------------------------- templates and parsing


@dataclass(frozen=True)
class PersonaTemplate:
    """A prompt with `{field}` slots and the labelled answer it asks for, label -> column."""

    name: str
    prompt: str
    answer: Mapping[str, str]

    @property
    def column(self) -> str:
        """The main output column (the last label's): its status, raw text and finish reason
        are written as `<column>_status`, `<column>_raw` and `<column>_finish_reason`."""
        return list(self.answer.values())[-1]

    def fill(self, **values: str) -> str:
        """The prompt with its `{field}` slots filled from `values`."""
        return self.prompt.format_map(values)


def load_template(name: str, folder: str = TASKS, what: str = "task") -> PersonaTemplate:
    """A shipped template: `personas/tasks/NAME.yaml` (or `personas/templates/`)."""
    import yaml

    spec = yaml.safe_load(read_choice(folder, name, what, ".yaml"))
    if not isinstance(spec, dict) or not spec.get("prompt") or not spec.get("answer"):
        raise SynthError(f"{folder}/{name}.yaml needs a `prompt` and an `answer` mapping; reinstall synth")
    return PersonaTemplate(name, spec["prompt"], dict(spec["answer"]))


def tasks() -> list[str]:
    """Names of the shipped persona-driven generation tasks."""
    return choices(TASKS, ".yaml")


def parse_answer(text: str, answer: Mapping[str, str]) -> tuple[dict[str, str | None], str]:
    """Cut the labelled parts out of a model's answer: returns `{column: text}` and a status.

    A label counts at the start of a line, in any case, with markdown around it
    (`**Math problem:**`). Each part runs to the next label found. Status `missing_prefix`:
    some label is absent (the model ignored the format); `empty`: a label has no text.
    """
    found: list[tuple[int, int, str]] = []
    for label in answer:
        pattern = rf"^[ \t>#*_-]*{re.escape(label)}[ \t*_]*:[ \t*_]*"
        found += [(m.start(), m.end(), label) for m in re.finditer(pattern, text, re.IGNORECASE | re.MULTILINE)]
    found.sort()
    firsts = {label: (start, end) for start, end, label in reversed(found)}
    if len(firsts) < len(answer):
        return dict.fromkeys(answer.values()), "missing_prefix"
    starts = sorted(start for start, _, _ in found)
    values: dict[str, str | None] = {}
    for label, column in answer.items():
        start, end = firsts[label]
        stop = next((s for s in starts if s > start), len(text))
        values[column] = text[end:stop].strip().strip("*_").strip() or None
    return values, "ok" if all(values.values()) else "empty"


# ---------------------------------------------------------------- the LLM stages


@dataclass(frozen=True)
class PersonaPrompt:
    """Reads the columns in `inputs` (template slot -> column); adds the template's answer
    columns and `<column>_status`, `<column>_raw`, `<column>_finish_reason` (see
    `PersonaTemplate.column`). Rows whose answer does not parse keep their raw text, with a null
    answer and the status saying why; so do rows whose generation was cut off by max tokens
    (status `truncated`), ended as looping (`repetition`) or failed (`error`): a cut-off text
    is never an answer. Nothing is dropped here; each status is counted as `<column>_<status>`."""

    backend: Backend
    template: PersonaTemplate
    params: Sampling = Sampling(max_tokens=512, temperature=0.7)
    inputs: Mapping[str, str] = field(default_factory=lambda: {"persona": "persona"})
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield self.apply(batch)

    def apply(self, batch: Batch) -> Batch:
        """One backend call for the whole batch."""
        for column in self.inputs.values():
            if column not in batch.column_names:
                raise SynthError(
                    f"the input has no column {column!r} (it has {', '.join(batch.column_names)}); "
                    "name the right one with --column"
                )
        slots = {slot: batch[column].to_pylist() for slot, column in self.inputs.items()}
        prompts = [
            [{"role": "user", "content": self.template.fill(**{s: str(v[i] or "") for s, v in slots.items()})}]
            for i in range(batch.num_rows)
        ]
        out = self.backend.generate(prompts, _seeded(self.params, batch))
        parsed = [
            (dict.fromkeys(self.template.answer.values()), UNFINISHED[c.finish_reason])
            if c.finish_reason in UNFINISHED
            else parse_answer(c.text, self.template.answer)
            for c in out
        ]
        main = self.template.column
        self.stats.update(f"{main}_{status}" for _, status in parsed)
        columns: dict[str, Any] = {
            column: pa.array([values[column] for values, _ in parsed], pa.string())
            for column in self.template.answer.values()
        }
        columns[f"{main}_status"] = pa.array([status for _, status in parsed], pa.string())
        columns[f"{main}_raw"] = pa.array([c.text for c in out], pa.string())
        columns[f"{main}_finish_reason"] = pa.array([c.finish_reason for c in out], pa.string())
        return add_columns(batch, **columns)


@dataclass(frozen=True)
class TextToPersona:
    """Reads `id` and `column` (a document); writes persona rows: `id` (`<doc id>-p`),
    `source_id` (the document's id), `source`, `persona` and its status columns.

    The document text itself is not carried over: documents are long and `source_id` links back.
    """

    backend: Backend
    params: Sampling = Sampling(max_tokens=128, temperature=0.7)
    column: str = "text"
    source: str = ""
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        template = load_template("text_to_persona", TEMPLATES, "template")
        ask = PersonaPrompt(self.backend, template, self.params, {"text": self.column}, self.stats)
        for batch in batches:
            asked = ask.apply(batch)
            ids = batch["id"].to_pylist()
            rows = pa.table(
                {
                    "id": pa.array([f"{i}-p" for i in ids], pa.string()),
                    "source_id": batch["id"],
                    "source": pa.array([self.source] * batch.num_rows, pa.string()),
                }
            )
            keep = [c for c in asked.column_names if c == "persona" or c.startswith("persona_")]
            yield add_columns(rows, **{c: asked[c] for c in keep})


@dataclass(frozen=True)
class ExpandPersonas:
    """Reads `id`, `persona`; writes one related persona per input persona and hop: `id`
    (`<parent id>-r`), `parent_id`, `root_id` (the input persona), `hop`, `relation`, `persona`
    and its status columns. Hop k+1 expands the personas of hop k that parsed."""

    backend: Backend
    params: Sampling = Sampling(max_tokens=160, temperature=0.9)
    hops: int = 1
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        template = load_template("persona_to_persona", TEMPLATES, "template")
        ask = PersonaPrompt(self.backend, template, self.params, {"persona": "parent_persona"}, self.stats)
        for batch in batches:
            parents = pa.table({"id": batch["id"], "persona": batch["persona"], "root_id": batch["id"]})
            hops = []
            for hop in range(1, self.hops + 1):
                if parents.num_rows == 0:
                    break
                ids = [f"{p}-r" for p in parents["id"].to_pylist()]
                rows = pa.table(
                    {
                        "id": pa.array(ids, pa.string()),
                        "parent_id": parents["id"],
                        "root_id": parents["root_id"],
                        "hop": pa.array([hop] * parents.num_rows, pa.int32()),
                        "parent_persona": parents["persona"],
                    }
                )
                rows = ask.apply(rows).drop_columns(["parent_persona"])
                hops.append(rows)
                parents = rows.filter(pc.equal(rows["persona_status"], "ok")).select(["id", "persona", "root_id"])
            yield pa.concat_tables(hops)


@dataclass(frozen=True)
class PersonaGenerate:
    """Reads `id`, `persona`; writes one row per persona for `task` (a file in
    `personas/tasks/`): `id` (`<persona id>-<task>`), `persona_id`, `persona`, `task`, the
    task's output column (`instruction`, or `text` for articles, tools and NPCs) and its status
    columns."""

    backend: Backend
    task: str = "instruction"
    params: Sampling = Sampling(max_tokens=512, temperature=0.7)
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        ask = PersonaPrompt(self.backend, load_template(self.task), self.params, {"persona": "persona"}, self.stats)
        for batch in batches:
            ids = [f"{i}-{self.task}" for i in batch["id"].to_pylist()]
            rows = pa.table(
                {
                    "id": pa.array(ids, pa.string()),
                    "persona_id": batch["id"],
                    "persona": batch["persona"],
                    "task": pa.array([self.task] * batch.num_rows, pa.string()),
                }
            )
            yield ask.apply(rows)


@dataclass(frozen=True)
class AnswerParsed:
    """Runs `respond` on the rows whose `<respond.column>_status` is `ok`; the other rows get
    null `response`, `response_finish_reason` and `messages`, so every row keeps one schema.

    An answer cut off by max tokens or ended as looping is no training row: its `response` and
    `messages` are null, its `response_finish_reason` says why, counted as
    `dropped_response_truncated` or `dropped_response_repetition`."""

    respond: Respond

    @property
    def stats(self) -> Counter[str]:
        """The wrapped `respond` stage's counters."""
        return self.respond.stats

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        status = f"{self.respond.column}_status"
        for batch in batches:
            batch = batch.append_column("__row", pa.array(range(batch.num_rows), pa.int64()))
            ok = pc.fill_null(pc.equal(batch[status], "ok"), False)
            good, rest = batch.filter(ok), batch.filter(pc.invert(ok))
            if good.num_rows:
                (good,) = self.respond([good])
                good = self._without_cut_answers(good)
            rest = add_columns(
                rest,
                response=pa.nulls(rest.num_rows, pa.string()),
                response_finish_reason=pa.nulls(rest.num_rows, pa.string()),
                messages=pa.nulls(rest.num_rows, MESSAGES),
            )
            if not good.num_rows:
                good = rest.slice(0, 0)
            merged = pa.concat_tables([good, rest.select(good.column_names)])
            yield merged.sort_by("__row").drop_columns(["__row"])

    def _without_cut_answers(self, batch: Batch) -> Batch:
        reasons = batch["response_finish_reason"].to_pylist()
        cut = [r in CUT for r in reasons]
        if not any(cut):
            return batch
        for reason in CUT:
            if n := reasons.count(reason):
                self.stats[f"dropped_response_{CUT[reason]}"] += n
        mask = pa.array(cut, pa.bool_())
        return add_columns(
            batch,
            response=pc.if_else(mask, pa.scalar(None, pa.string()), batch["response"]),
            messages=pc.if_else(mask, pa.scalar(None, MESSAGES), batch["messages"]),
        )


def with_personas(source: str | Path, start: int = 0, persona_column: str | None = None) -> Stage:
    """Reads `id` (and `system_prompt` if present); adds `persona_id`, `persona` and a per-row
    `system_prompt`: `personas/templates/magpie_system.txt` filled with the persona, then any
    steering prompt already there. Row i of the run takes persona i, cycling through the set;
    `start` (the attempts of an earlier run, on resume) keeps that pairing."""
    template = data_file(f"{TEMPLATES}/magpie_system.txt").read_text(encoding="utf-8").strip()
    check_personas(source, persona_column)

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        people = _Rows(_cycle(source, persona_column, start))
        for batch in batches:
            persons = people.take(batch.num_rows)
            texts = persons["persona"].to_pylist()
            steer = batch["system_prompt"].to_pylist() if "system_prompt" in batch.column_names else [None] * len(texts)
            systems = [template.format(persona=p) + (f"\n\n{s}" if s else "") for p, s in zip(texts, steer)]
            systems = pa.array(systems, pa.string())
            yield add_columns(batch, persona_id=persons["id"], persona=persons["persona"], system_prompt=systems)

    stage.__qualname__ = f"with_personas({str(source)!r})"
    return stage


def dedup_personas(method: str | None, column: str = "persona") -> list[Stage]:
    """The dedup stages Persona Hub applies, by name from synth's dedup family: MinHash on word
    1-grams at Jaccard 0.9, then embeddings at cosine similarity 0.9 (distance 0.1).

    `method`: None (no dedup), `minhash`, `semantic` or `both` (MinHash, then semantic)."""
    if not method:
        return []
    plans = {
        "minhash": [("dedup_minhash", {"threshold": 0.9, "ngram": 1})],
        "semantic": [("dedup_semantic", {"threshold": 0.1})],
    }
    plans["both"] = plans["minhash"] + plans["semantic"]
    if method not in plans:
        raise SynthError(f"unknown --dedup {method!r}; use minhash, semantic or both")
    import synth.stages as family  # the dedup family is looked up by name: it may be absent

    stages = []
    for name, options in plans[method]:
        factory = getattr(family, name, None)
        if factory is None:
            raise SynthError(
                f"--dedup {method} needs synth's {name} stage, which this install lacks; drop --dedup, or update synth"
            )
        stages.append(factory(column, **options))
    return stages
