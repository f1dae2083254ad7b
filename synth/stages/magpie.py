"""Magpie (arXiv 2406.08464): an aligned model, given only the text that precedes a user
message, writes a user instruction; the same or another model then answers it."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from synth.backends import Backend, Completion, Sampling, watching
from synth.core import Batch, add_columns
from synth.templates import ChatTemplate

# Finish reasons of a generation cut off before its end, and the name its rows are counted under.
CUT = {"length": "truncated", "repetition": "repetition"}
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


@dataclass(frozen=True)
class Magpie:
    """Reads `id` (and `system_prompt` if present); adds `instruction`, `instruction_finish_reason`.

    Rows whose instruction comes back empty, cut off by max tokens, ended as looping, failed, or
    repeating an earlier one are dropped and counted in `stats` by reason.
    """

    backend: Backend
    template: ChatTemplate
    params: Sampling = Sampling(max_tokens=256, temperature=1.0)
    system_prompt: str | None = None
    stats: Counter[str] = field(default_factory=Counter, compare=False)
    seen: KeySet | None = field(default_factory=lambda: KeySet(), compare=False, repr=False)  # None: no check
    on_answer: Callable[[Completion], None] | None = field(default=None, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        params = self.params.with_stop(*self.template.instruction_stop)
        for batch in batches:
            systems = _column_or(batch, "system_prompt", self.system_prompt)
            prompts = [self.template.pre_query(s) for s in systems]
            self.stats["attempts"] += batch.num_rows  # before: the progress line's yield reads it as rows end
            with _watching(self.on_answer):
                out = self.backend.generate(prompts, _seeded(params, batch))
            texts = [c.text.strip() for c in out]
            keep = [self._verdict(text, c.finish_reason) for text, c in zip(texts, out)]
            self.stats["kept"] += sum(keep)
            batch = add_columns(
                batch,
                instruction=pa.array(texts, pa.string()),
                instruction_finish_reason=pa.array([c.finish_reason for c in out], pa.string()),
            )
            yield batch.filter(pa.array(keep, pa.bool_()))

    def _verdict(self, text: str, finish_reason: str) -> bool:
        reason = _failure(text, finish_reason)
        if reason is None and self.seen is not None:
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
    conversation with the answer appended, as TRL trainers take it); with `errors`, also
    `response_error`, why a row failed (null where it did not).

    A row with nothing to answer (a null, non-text or blank instruction, a conversation without a
    user turn) is not sent: like a request that failed, it gets finish reason `error` and null
    `messages` (never a conversation ending in an empty answer), counted in `stats` as
    `response_no_input`. An answer that comes back empty or blank is no answer either: null
    `messages`, counted as `response_empty`; with `errors` (the caller keeps every row, so each
    must say why) also finish reason `error` and `response_error` "empty answer", else its own
    finish reason, for `DropTruncated` to drop. With `errors`, an answer cut off by max tokens or
    ended as looping is no training row either: null `messages`, its finish reason kept and
    `response_error` saying so (without `errors`, `DropTruncated` drops or keeps it). `on_answer`
    sees each answer as it ends (a recipe moves its progress bar with it).
    """

    backend: Backend
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    column: str = "instruction"
    messages_column: str | None = None
    errors: bool = False
    stats: Counter[str] = field(default_factory=Counter, compare=False)
    on_answer: Callable[[Completion], None] | None = field(default=None, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            convs, problems = self._conversations(batch)
            out = self._complete(convs, problems, batch)
            for i, c in enumerate(out):
                if c.finish_reason != "error" and not c.text.strip():
                    self.stats["response_empty"] += 1
                    if self.errors:
                        out[i] = Completion("", "error", c.prompt_tokens, c.completion_tokens, error="empty answer")
                self.stats[f"response_{out[i].finish_reason}"] += 1
            answers = [c.text.strip() for c in out]
            # A failed or empty answer is no training row: its `messages` is null, never an empty assistant turn.
            messages = [
                None
                if c.finish_reason == "error" or not a or (self.errors and c.finish_reason in CUT)
                else [*conv, _turn("assistant", a)]
                for conv, a, c in zip(convs, answers, out)
            ]
            columns: dict[str, pa.Array] = {
                "response": pa.array(answers, pa.string()),
                "response_finish_reason": pa.array([c.finish_reason for c in out], pa.string()),
                "messages": pa.array(messages, MESSAGES),
            }
            if self.errors:
                columns["response_error"] = pa.array([_error_of(c) for c in out], pa.string())
            yield add_columns(batch, **columns)

    def _complete(
        self, convs: list[list[dict[str, str]]], problems: list[str | None], batch: Batch
    ) -> list[Completion]:
        """The backend's answers, in row order; a row with a problem is not sent, and fails with it."""
        asked = [i for i, problem in enumerate(problems) if problem is None]
        if len(asked) < len(problems):
            self.stats["response_no_input"] += len(problems) - len(asked)
        out = [Completion("", "error", error=problem) for problem in problems]
        if asked:
            with _watching(self.on_answer):
                answers = self.backend.generate([convs[i] for i in asked], _seeded(self.params, batch))
            for i, c in zip(asked, answers):
                out[i] = c
        return out

    def _conversations(self, batch: Batch) -> tuple[list[list[dict[str, str]]], list[str | None]]:
        """Each row's conversation to answer, and why it cannot be answered (None if it can)."""
        if self.messages_column:
            convs = [_open_turn(conv) for conv in batch[self.messages_column].to_pylist()]
            return convs, [_conversation_problem(conv, self.messages_column) for conv in convs]
        systems = _column_or(batch, "system_prompt", None)
        questions = batch[self.column].to_pylist()
        problems = [_text_problem(q, self.column) for q in questions]
        return [_conversation(s, q) for s, q in zip(systems, questions)], problems


@dataclass(frozen=True)
class DropTruncated:
    """Reads `response_finish_reason` (and `response`); drops rows whose answer was cut off by max
    tokens (finish reason `length`), counted as `dropped_response_truncated`, or ended as looping
    (`repetition`), counted as `dropped_response_repetition`, and rows whose answer is empty or
    blank, counted as `dropped_response_empty`. A cut-off answer is not a training row; with `keep`
    they are kept (and still counted, as `kept_response_truncated`, `kept_response_repetition`);
    an empty one never is.
    Failed answers (finish reason `error`) are left to the recipe, which counts them as failed requests."""

    keep: bool = False
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if "response_finish_reason" not in batch.column_names:
                yield batch
                continue
            reasons = batch["response_finish_reason"].to_pylist()
            texts = _column_or(batch, "response", "-")
            empty = [r != "error" and not (t or "").strip() for r, t in zip(reasons, texts)]
            cut = [r in CUT and not e for r, e in zip(reasons, empty)]
            self.stats["dropped_response_empty"] += sum(empty)
            for reason in CUT:
                n = sum(r == reason for r, c in zip(reasons, cut) if c)
                if n:
                    self.stats[f"{'kept' if self.keep else 'dropped'}_response_{CUT[reason]}"] += n
            keep = [not e and (self.keep or not c) for e, c in zip(empty, cut)]
            yield batch.filter(pa.array(keep, pa.bool_()))


@dataclass(frozen=True)
class MultiTurn:
    """Reads `messages` (one finished exchange); adds turns until each conversation has `turns`,
    and the `turns` column.

    Each next user turn comes from `instructor` prompted with the pre-query template placed
    after the conversation so far (Magpie's multi-turn recipe); `responder` answers it. A
    conversation whose new user turn or its answer comes back empty, cut off or failed ends at
    its last whole exchange, counted by turn (`ended_at_turn_T`) and by reason
    (`ended_instruction_empty`, `ended_response_truncated`, ...); with `exact` it is dropped.
    With `keep_truncated` a cut-off answer counts as a whole turn (and as `kept_response_truncated`).
    A row whose first answer failed (`response_finish_reason` `error`) is left as it is: the
    recipe drops it.
    """

    instructor: Backend
    responder: Backend
    template: ChatTemplate
    turns: int = 2
    instruction: Sampling = Sampling(max_tokens=256, temperature=1.0)
    response: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    exact: bool = False
    keep_truncated: bool = False
    stats: Counter[str] = field(default_factory=Counter, compare=False)
    on_answer: Callable[[Completion], None] | None = field(default=None, compare=False, repr=False)  # last turn

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        asking = self.instruction.with_stop(*self.template.instruction_stop)
        for batch in batches:
            convs = [[dict(m) for m in conv or []] for conv in batch["messages"].to_pylist()]
            first = _column_or(batch, "response_finish_reason", "stop")
            # A failed first answer is dropped downstream; a cut-off one goes on only if kept on request.
            ended = ("error",) if self.keep_truncated else ("error", *CUT)
            live = [i for i, reason in enumerate(first) if reason not in ended]
            for turn in range(2, self.turns + 1):
                if not live:
                    break
                live = self._next_turn(convs, live, batch, turn, asking)
            counts = [sum(m["role"] == "user" for m in conv) for conv in convs]
            batch = add_columns(batch, messages=pa.array(convs, MESSAGES), turns=pa.array(counts, pa.int32()))
            if self.exact:
                keep = [c == self.turns for c in counts]
                self.stats["dropped_short"] += keep.count(False)
                batch = batch.filter(pa.array(keep, pa.bool_()))
            yield batch

    def _next_turn(
        self, convs: list[list[dict[str, str]]], live: list[int], batch: Batch, turn: int, asking: Sampling
    ) -> list[int]:
        """Asks and answers turn `turn` of the `live` conversations; returns those still going.

        A conversation whose new question or answer comes back empty, cut off or failed keeps
        only its earlier turns, so every kept turn is a whole exchange.
        """
        prompts = [self.template.pre_query(history=convs[i]) for i in live]
        asked = self.instructor.generate(prompts, _seeded(asking, batch, turn))
        questions = {}
        for i, c in zip(live, asked):
            reason = _failure(c.text.strip(), c.finish_reason)
            if reason:
                self._ended(turn, "instruction", reason)
            else:
                questions[i] = c.text.strip()
        if not questions:
            return []
        histories = [[*convs[i], _turn("user", q)] for i, q in questions.items()]
        with _watching(self.on_answer if turn == self.turns else None):
            answers = self.responder.generate(histories, _seeded(self.response, batch, turn))
        going = []
        for (i, q), a in zip(questions.items(), answers):
            reason = _failure(a.text.strip(), a.finish_reason)
            if reason in CUT.values() and self.keep_truncated:
                self.stats[f"kept_response_{reason}"] += 1
                reason = None
            if reason:
                self._ended(turn, "response", reason)
                continue
            convs[i] += [_turn("user", q), _turn("assistant", a.text.strip())]
            going.append(i)
        return going

    def _ended(self, turn: int, part: str, reason: str) -> None:
        self.stats[f"ended_at_turn_{turn}"] += 1
        self.stats[f"ended_{part}_{reason}"] += 1


class KeySet:
    """A growing set of 64-bit keys at 8 bytes a key (a Python set costs about 70): a small set of
    recent keys in front of sorted numpy runs, merged while of similar size. Memory stays flat
    as a run of 300,000 instructions checks each against all earlier ones."""

    def __init__(self, keys: Iterable[int] = ()) -> None:
        self._runs: list[np.ndarray] = []
        self._recent: set[int] = set()
        for key in keys:
            self.add(key)

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        probe = np.uint64(key)
        for run in self._runs:
            i = int(np.searchsorted(run, probe))
            if i < len(run) and run[i] == probe:
                return True
        return False

    def add(self, key: int) -> None:
        """Add `key`; every 4,096 keys the recent set becomes a sorted run, merged with runs of similar size."""
        self._recent.add(key)
        if len(self._recent) >= 4096:
            self._runs.append(np.sort(np.fromiter(self._recent, np.uint64, len(self._recent))))
            self._recent = set()
            while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
                newer, older = self._runs.pop(), self._runs.pop()
                self._runs.append(np.union1d(older, newer))

    def __len__(self) -> int:
        return len(self._recent) + sum(len(run) for run in self._runs)

    def __iter__(self) -> Iterator[int]:
        yield from self._recent
        for run in self._runs:
            yield from run.tolist()


def instruction_key(text: str) -> int:
    """A 64-bit hash of the normalised text: NFKC, case-folded, whitespace collapsed."""
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return xxhash.xxh3_64_intdigest(norm.encode("utf-8"))


def _failure(text: str, finish_reason: str) -> str | None:
    """Why a generated turn cannot be kept: error, truncated (cut off by max tokens), repetition
    (ended as looping) or empty."""
    if finish_reason == "error":
        return "error"
    if finish_reason in CUT:
        return CUT[finish_reason]
    return None if text else "empty"


def _error_of(c: Completion) -> str | None:
    if c.finish_reason in CUT:
        return "cut off by max tokens" if c.finish_reason == "length" else "ended as looping"
    if c.finish_reason != "error":
        return None
    return c.error or "unknown error"


def _text_problem(value: Any, column: str) -> str | None:
    if value is None:
        return f"{column} is null"
    if not isinstance(value, str):
        return f"{column} is {type(value).__name__}, not text"
    return None if value.strip() else f"{column} is empty"


def _open_turn(conv: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The conversation up to its last user turn (an answer already there is replaced)."""
    conv = [dict(m) for m in conv or []]
    return conv[:-1] if conv and conv[-1].get("role") == "assistant" else conv


def _conversation_problem(conv: list[dict[str, Any]], column: str) -> str | None:
    if not conv:
        return f"{column} holds no conversation"
    if any(not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str) for m in conv):
        return f"{column} has a message without a text role or content"
    if conv[-1]["role"] != "user":
        return f"{column} does not end with a user turn"
    return None


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _conversation(system: str | None, instruction: str) -> list[dict[str, str]]:
    head = [_turn("system", system)] if system else []
    return [*head, _turn("user", instruction)]


def _column_or(batch: Batch, name: str, default: Any) -> Sequence[Any]:
    if name in batch.column_names:
        return batch[name].to_pylist()
    return [default] * batch.num_rows


def _watching(callback: Callable[[Completion], None] | None) -> Any:
    return nullcontext() if callback is None else watching(callback)


def _seeded(params: Sampling, batch: Batch, turn: int = 1) -> Sampling:
    # Backends give prompt i of a call the seed `seed + i`. Offsetting by the first row's
    # position keeps every row's seed fixed however the run is batched or resumed.
    if params.seed is None or batch.num_rows == 0:
        return params
    first = batch["id"][0].as_py()
    digits = re.search(r"(\d+)$", first)
    offset = int(digits.group(1)) if digits else xxhash.xxh32_intdigest(first.encode("utf-8"))
    return replace(params, seed=(params.seed + offset + 7919 * (turn - 1)) % 2**31)
