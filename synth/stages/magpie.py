"""Magpie (arXiv 2406.08464): an aligned model, given only the text that precedes a user
message, writes a user instruction; the same or another model then answers it."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    seen: set[int] = field(default_factory=set, compare=False, repr=False)

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
        else:
            key = instruction_key(text)
            if key in self.seen:
                reason = "duplicate"
            self.seen.add(key)
        if reason:
            self.stats[f"dropped_{reason}"] += 1
        return reason is None


@dataclass(frozen=True)
class Respond:
    """Reads `instruction` (and `system_prompt` if present); adds `response`,
    `response_finish_reason` and `messages` (the conversation as TRL trainers take it)."""

    backend: Backend
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    column: str = "instruction"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            systems = _column_or(batch, "system_prompt", None)
            convs = [_conversation(s, q) for s, q in zip(systems, batch[self.column].to_pylist())]
            out = self.backend.generate(convs, _seeded(self.params, batch))
            for c in out:
                self.stats[f"response_{c.finish_reason}"] += 1
            messages = [[*conv, {"role": "assistant", "content": c.text.strip()}] for conv, c in zip(convs, out)]
            yield add_columns(
                batch,
                response=pa.array([c.text.strip() for c in out], pa.string()),
                response_finish_reason=pa.array([c.finish_reason for c in out], pa.string()),
                messages=pa.array(messages, MESSAGES),
            )


def instruction_key(text: str) -> int:
    """A 64-bit hash of the normalised text: NFKC, case-folded, whitespace collapsed."""
    norm = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return xxhash.xxh3_64_intdigest(norm.encode("utf-8"))


def _conversation(system: str | None, instruction: str) -> list[Mapping[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": instruction}]


def _column_or(batch: Batch, name: str, default: Any) -> Sequence[Any]:
    if name in batch.column_names:
        return batch[name].to_pylist()
    return [default] * batch.num_rows


def _seeded(params: Sampling, batch: Batch) -> Sampling:
    # Backends give prompt i of a call the seed `seed + i`. Offsetting by the first row's
    # position keeps every row's seed fixed however the run is batched or resumed.
    if params.seed is None or batch.num_rows == 0:
        return params
    first = batch["id"][0].as_py()
    digits = re.search(r"(\d+)$", first)
    offset = int(digits.group(1)) if digits else xxhash.xxh32_intdigest(first)
    return replace(params, seed=(params.seed + offset) % 2**31)
