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


CARRY = ("source", "url", "title", "page", "offset", "date")  # where a chunk came from, kept with it


@dataclass(frozen=True)
class Chunk:
    """Reads `column`; yields one row per chunk: `id` (`{source_id}#{chunk}`), `source_id`, `chunk`, `text`,
    and the document's `source`, `url`, `title`, `page`, `offset`, `date` where the input has them.

    Chunks are cut on paragraph boundaries (then sentences, then words for a sentence that alone
    is too long) so each holds at most `budget` tokens by `count`, the backend's own tokenizer;
    each after the first begins with the last sentences of the one before, up to `overlap`
    tokens. Empty and binary documents are skipped and counted.
    """

    count: Callable[[str], int] = field(repr=False)
    budget: int
    column: str = "text"
    overlap: int = 0
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            rows = []
            carried = [name for name in CARRY if name in batch.column_names and name != self.column]
            where = batch.select(carried).to_pylist() if carried else [{}] * batch.num_rows
            for source_id, text, origin in zip(batch["id"].to_pylist(), batch[self.column].to_pylist(), where):
                kind = document_kind(text)
                self.stats[f"documents_{kind}"] += 1
                if kind != "text":
                    continue
                for index, piece in enumerate(split_text(text, self.count, self.budget, self.overlap, self.stats)):
                    rows.append(
                        {"id": f"{source_id}#{index}", "source_id": source_id, "chunk": index, "text": piece, **origin}
                    )
            self.stats["chunks"] += len(rows)
            if rows:
                extra = [batch.schema.field(name) for name in carried]
                yield pa.Table.from_pylist(rows, pa.schema([*_CHUNK_SCHEMA, *extra]))


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


def split_text(
    text: str, count: Callable[[str], int], budget: int, overlap: int = 0, stats: Counter[str] | None = None
) -> list[str]:
    """Cut `text` into pieces of at most `budget` tokens, on the largest boundary that fits, never
    inside a word (a run of `budget` tokens with no space in it is the one thing cut, and counted);
    each piece after the first starts with the last sentences (words, if no sentence fits) of the
    piece before, up to `overlap` tokens."""
    if budget < 1:
        raise SynthError(f"no room for text in the context (budget {budget} tokens); lower --max-tokens")
    if overlap and overlap * 2 > budget:
        raise SynthError(
            f"an overlap of {overlap} tokens leaves too little of a {budget}-token chunk; lower the overlap"
        )
    stats = Counter() if stats is None else stats
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces = _pack(paragraphs, "\n\n", count, budget - overlap, _sentences, stats)
    if not overlap:
        return pieces
    out = pieces[:1]
    for before, piece in zip(pieces, pieces[1:]):
        tail = _tail(before, count, overlap)
        while tail and count(f"{tail}\n\n{piece}") > budget:  # tokens merging at the join
            tail = _tail(tail, count, count(tail) - 1)
        out.append(f"{tail}\n\n{piece}" if tail else piece)
        stats["chunks_overlapped"] += bool(tail)
    return out


_BOUNDARY = re.compile(r"\n\s*\n|(?<=[.!?])\s+")


def _tail(piece: str, count: Callable[[str], int], overlap: int) -> str:
    """The longest end of `piece` within `overlap` tokens that starts a paragraph or a sentence, or
    failing that a word; as it stands in `piece`."""
    for pattern in (_BOUNDARY, re.compile(r"\s+")):
        best = ""
        for start in sorted({0, *(m.end() for m in pattern.finditer(piece))}, reverse=True):  # shortest first
            if count(piece[start:]) > overlap:
                break
            best = piece[start:]
        if best.strip():
            return best.strip()
    return ""


def _split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def _sentences(text: str, count: Callable[[str], int], budget: int, stats: Counter[str]) -> list[str]:
    return _pack(_split_sentences(text), " ", count, budget, _words, stats)


def _words(text: str, count: Callable[[str], int], budget: int, stats: Counter[str]) -> list[str]:
    return _pack(text.split(), " ", count, budget, _characters, stats)


def _characters(text: str, count: Callable[[str], int], budget: int, stats: Counter[str]) -> list[str]:
    """A run with no space that alone holds more than `budget` tokens (base64, a long URL): cut."""
    stats["words_cut_over_budget"] += 1
    pieces = []
    while text:
        size = len(text)
        while size > 1 and count(text[:size]) > budget:
            size = max(1, min(size - 1, int(size * budget / count(text[:size]) * 0.95)))
        pieces.append(text[:size])
        text = text[size:]
    return pieces


def _pack(
    units: list[str], sep: str, count: Callable[[str], int], budget: int, finer: Callable, stats: Counter[str]
) -> list[str]:
    """Greedy packing; each join is counted whole, so tokens merging across a boundary are seen."""
    pieces: list[str] = []
    current: list[str] = []
    for unit in units:
        if count(unit) > budget:
            if current:
                pieces.append(sep.join(current))
                current = []
            pieces += finer(unit, count, budget, stats)
        elif current and count(sep.join([*current, unit])) > budget:
            pieces.append(sep.join(current))
            current = [unit]
        else:
            current.append(unit)
    if current:
        pieces.append(sep.join(current))
    return pieces
