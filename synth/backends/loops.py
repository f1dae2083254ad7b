"""Telling a generation that loops from one that is merely long, token by token.

A small model that loses its way repeats itself: one token over and over, a line, or a whole
sentence. Each token closes an n-gram (it and the `n - 1` before it); a looping generation
writes only n-grams it has written several times before. `Loop` counts the tokens in a row
whose n-gram was written at least k times already and calls the generation looping once a
window of them follow each other, so a loop of period p costs about k*p + window tokens, not
the whole `max_tokens`.

Honest text repeats n-grams too (a list's `\\n- `, a table's `| --- |`, code's indentation, an
example shown twice), but not for that long: see LEVELS, checked on real lists, code and tables
(tests/test_loops.py, with the SmolLM2 tokenizer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

N = 6  # tokens per n-gram
# (k, window): a loop is `window` tokens in a row, each closing an n-gram already written k times
# or more. Real text repeats too: the longest such runs in 3,305 stretches of 200-1,024 tokens of
# Python's standard library, /usr/share/doc and the Python docs HTML (SmolLM2's tokenizer, n=6) were
# 85 tokens at k=2 (a usage message shown three times), 45 at k=4 and 27 at k=8; each window is
# about 1.5x that. A one-token loop ends after about 48 tokens, a 20-token one after about 144.
LEVELS = ((2, 128), (4, 64), (8, 40))


@dataclass
class Loop:
    """Feed it a generation's tokens one at a time; `add` says True once it loops."""

    n: int = N
    levels: tuple[tuple[int, int], ...] = LEVELS
    tail: list[int] = field(default_factory=list)
    seen: Counter[tuple[int, ...]] = field(default_factory=Counter)
    runs: list[int] = field(default_factory=list)

    def add(self, token: int) -> bool:
        """Take the next token; True when the generation so far ends in a loop."""
        self.tail.append(token)
        if len(self.tail) > self.n:
            del self.tail[0]
        if len(self.tail) < self.n:
            return False
        gram = tuple(self.tail)
        before = self.seen[gram]
        self.seen[gram] = before + 1
        if not self.runs:
            self.runs = [0] * len(self.levels)
        looping = False
        for i, (k, window) in enumerate(self.levels):
            self.runs[i] = self.runs[i] + 1 if before >= k else 0
            looping = looping or self.runs[i] >= window
        return looping


def loops_at(tokens: Iterable[int], levels: tuple[tuple[int, int], ...] = LEVELS) -> int | None:
    """How many tokens of `tokens` are read before they are found looping; None if never."""
    loop = Loop(levels=levels)
    for i, token in enumerate(tokens):
        if loop.add(token):
            return i + 1
    return None
