"""Magpie (arXiv 2406.08464): an aligned model, given only the text that precedes a user
message, writes a user instruction; the same or another model then answers it."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import xxhash

from synth.backends import Backend, Sampling
from synth.core import Batch, add_columns
from synth.templates import ChatTemplate

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@dataclass(frozen=True)
class Magpie:
    """Reads `id` (and `system_prompt` if present); adds `instruction`, `instruction_finish_reason`.

    Rows whose instruction comes back empty, cut off by max tokens, failed, or repeating an
    earlier one are dropped and counted in `stats` by reason.
    """

    backend: Backend
    template: ChatTemplate
    params: Sampling = Sampling(max_tokens=256, temperature=1.0)
    system_prompt: str | None = None
    stats: Counter[str] = field(default_factory=Counter, compare=False)
    seen: set[int] | None = field(default_factory=set, compare=False, repr=False)  # None: no repeat check

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = self.params.with_stop(*self.template.instruction_stop)
        for batch in batches:
            systems = _column_or(batch, "system_prompt", self.system_prompt)
            prompts = [self.template.pre_query(s) for s in systems]
            out = self.backend.generate(prompts, _seeded(params, batch))
            texts = [c.text.strip() for c in out]
            keep = [self._verdict(text, c.finish_reason) for text, c in zip(texts, out)]
            self.stats["attempts"] += batch.num_rows
            self.stats["kept"] += sum(keep)
            batch = add_columns(
                batch,
                instruction=pa.array(texts, pa.string()),
                instruction_finish_reason=pa.array([c.finish_reason for c in out], pa.string()),
            )
            yield batch.filter(pa.array(keep, pa.bool_()))

    def _verdict(self, text: str, finish_reason: str) -> bool:
        reason = None
        if finish_reason == "error":
            reason = "error"
        elif finish_reason == "length":
            reason = "truncated"
        elif not text:
            reason = "empty"
        elif self.seen is not None:
            key = instruction_key(text)
            if key in self.seen:
                reason = "duplicate"
            self.seen.add(key)
        if reason:
            self.stats[f"dropped_{reason}"] += 1
        return reason is None


@dataclass(frozen=True)
class Respond:
    """Reads `instruction` (and `system_prompt` if present), or the conversation in
    `messages_column`; adds `response`, `response_finish_reason` and `messages` (the
    conversation with the answer appended, as TRL trainers take it)."""

    backend: Backend
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    column: str = "instruction"
    messages_column: str | None = None
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            convs = self._conversations(batch)
            out = self.backend.generate(convs, _seeded(self.params, batch))
            for c in out:
                self.stats[f"response_{c.finish_reason}"] += 1
            answers = [c.text.strip() for c in out]
            yield add_columns(
                batch,
                response=pa.array(answers, pa.string()),
                response_finish_reason=pa.array([c.finish_reason for c in out], pa.string()),
                messages=pa.array([[*conv, _turn("assistant", a)] for conv, a in zip(convs, answers)], MESSAGES),
            )

    def _conversations(self, batch: Batch) -> list[list[dict[str, str]]]:
        if self.messages_column:
            convs = [[dict(m) for m in conv] for conv in batch[self.messages_column].to_pylist()]
            return [conv[:-1] if conv and conv[-1]["role"] == "assistant" else conv for conv in convs]
        systems = _column_or(batch, "system_prompt", None)
        return [_conversation(s, q) for s, q in zip(systems, batch[self.column].to_pylist())]


@dataclass(frozen=True)
class MultiTurn:
    """Reads `messages` (one finished exchange); adds turns until each conversation has `turns`,
    and the `turns` column.

    Each next user turn comes from `instructor` prompted with the pre-query template placed
    after the conversation so far (Magpie's multi-turn recipe); `responder` answers it. A
    conversation whose new user turn comes back empty, cut off or failed ends there, counted;
    with `exact` it is dropped instead.
    """

    instructor: Backend
    responder: Backend
    template: ChatTemplate
    turns: int = 2
    instruction: Sampling = Sampling(max_tokens=256, temperature=1.0)
    response: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    exact: bool = False
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        asking = self.instruction.with_stop(*self.template.instruction_stop)
        for batch in batches:
            convs = [[dict(m) for m in conv] for conv in batch["messages"].to_pylist()]
            done = [False] * len(convs)
            for turn in range(2, self.turns + 1):
                live = [i for i, d in enumerate(done) if not d]
                if not live:
                    break
                prompts = [self.template.pre_query(history=convs[i]) for i in live]
                asked = self.instructor.generate(prompts, _seeded(asking, batch, turn))
                ok = [(i, c.text.strip()) for i, c in zip(live, asked) if c.finish_reason == "stop" and c.text.strip()]
                for i in set(live) - {i for i, _ in ok}:
                    done[i] = True
                    self.stats[f"ended_at_turn_{turn}"] += 1
                answers = self.responder.generate(
                    [[*convs[i], _turn("user", q)] for i, q in ok], _seeded(self.response, batch, turn)
                )
                for (i, q), a in zip(ok, answers):
                    convs[i] += [_turn("user", q), _turn("assistant", a.text.strip())]
            counts = [sum(m["role"] == "user" for m in conv) for conv in convs]
            batch = add_columns(batch, messages=pa.array(convs, MESSAGES), turns=pa.array(counts, pa.int32()))
            if self.exact:
                keep = [c == self.turns for c in counts]
                self.stats["dropped_short"] += keep.count(False)
                batch = batch.filter(pa.array(keep, pa.bool_()))
            yield batch


def instruction_key(text: str) -> int:
    """A 64-bit hash of the normalised text: NFKC, case-folded, whitespace collapsed."""
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return xxhash.xxh3_64_intdigest(norm.encode("utf-8"))


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _conversation(system: str | None, instruction: str) -> list[dict[str, str]]:
    head = [_turn("system", system)] if system else []
    return [*head, _turn("user", instruction)]


def _column_or(batch: Batch, name: str, default: Any) -> Sequence[Any]:
    if name in batch.column_names:
        return batch[name].to_pylist()
    return [default] * batch.num_rows


def _seeded(params: Sampling, batch: Batch, turn: int = 1) -> Sampling:
    # Backends give prompt i of a call the seed `seed + i`. Offsetting by the first row's
    # position keeps every row's seed fixed however the run is batched or resumed.
    if params.seed is None or batch.num_rows == 0:
        return params
    first = batch["id"][0].as_py()
    digits = re.search(r"(\d+)$", first)
    offset = int(digits.group(1)) if digits else xxhash.xxh32_intdigest(first.encode("utf-8"))
    return replace(params, seed=(params.seed + offset + 7919 * (turn - 1)) % 2**31)
