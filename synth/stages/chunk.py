"""Cutting documents into chunks that fit a model's context, counted with its own tokenizer."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from synth.core import Batch, SynthError

BINARY_SHARE = 0.05  # above this share of undecodable characters, a "text" file is binary


@dataclass(frozen=True)
class Chunk:
    """Reads `column`; yields one row per chunk: `id` (`{source_id}#{chunk}`), `source_id`, `chunk`, `text`.

    Chunks are cut on paragraph boundaries (then sentences, then characters for a paragraph
    that alone is too long) so each holds at most `budget` tokens by `count`, the backend's
    own tokenizer. Empty and binary documents are skipped and counted.
    """

    count: Callable[[str], int] = field(repr=False)
    budget: int
    column: str = "text"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            rows = []
            for source_id, text in zip(batch["id"].to_pylist(), batch[self.column].to_pylist()):
                kind = document_kind(text)
                self.stats[f"documents_{kind}"] += 1
                if kind != "text":
                    continue
                for index, piece in enumerate(split_text(text, self.count, self.budget)):
                    rows.append({"id": f"{source_id}#{index}", "source_id": source_id, "chunk": index, "text": piece})
            self.stats["chunks"] += len(rows)
            if rows:
                yield pa.Table.from_pylist(rows, _CHUNK_SCHEMA)


_CHUNK_SCHEMA = pa.schema(
    [("id", pa.string()), ("source_id", pa.string()), ("chunk", pa.int32()), ("text", pa.string())]
)


def document_kind(text: Any) -> str:
    """`text`, `empty` or `binary` (NUL bytes, or many characters that did not decode)."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    if "\x00" in text or text.count("\ufffd") > BINARY_SHARE * len(text):
        return "binary"
    return "text"


def split_text(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """Cut `text` into pieces of at most `budget` tokens, on the largest boundary that fits."""
    if budget < 1:
        raise SynthError(f"no room for text in the context (budget {budget} tokens); lower --max-tokens")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return _pack(paragraphs, "\n\n", count, budget, _sentences)


def _sentences(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    return _pack(re.split(r"(?<=[.!?])\s+", text), " ", count, budget, _characters)


def _characters(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    pieces = []
    while text:
        size = len(text)
        while size > 1 and count(text[:size]) > budget:
            size = max(1, min(size - 1, int(size * budget / count(text[:size]) * 0.95)))
        pieces.append(text[:size])
        text = text[size:].lstrip()
    return pieces


def _pack(units: list[str], sep: str, count: Callable[[str], int], budget: int, finer: Callable) -> list[str]:
    """Greedy packing; each join is counted whole, so tokens merging across a boundary are seen."""
    pieces: list[str] = []
    current: list[str] = []
    for unit in units:
        if count(unit) > budget:
            if current:
                pieces.append(sep.join(current))
                current = []
            pieces += finer(unit, count, budget)
        elif current and count(sep.join([*current, unit])) > budget:
            pieces.append(sep.join(current))
            current = [unit]
        else:
            current.append(unit)
    if current:
        pieces.append(sep.join(current))
    return pieces
