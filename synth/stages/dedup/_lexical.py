"""Semantic dedup's lexical confirmation: a pair the embedder puts a little further apart than its
threshold is still a copy when the two texts share most of their words.

A paraphrase model (all-MiniLM-L6-v2) moves a sentence a long way when one word of it is swapped
for an unrelated one ("Lists all of the versions" / "Lists vineyard of the versions": cosine
distance 0.18), while the two texts share all words but one. So a pair nearer than `within` is a
copy when the Jaccard similarity of the two texts' word sets is `jaccard` or more; both bounds are
calibrated per embedder on real text (`filters/dedup.toml`). The numbers-and-names check applies
as at the threshold. Memory holds a sketch of each kept row's words, never its text: the
WORDS_HELD smallest 32-bit hashes of its distinct words: exact for two rows of up to that many
distinct words, the bottom-k estimate past it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from synth.stages import similarity
from synth.stages.dedup._shingles import fold, shingle_hashes, word_lists

WORDS_HELD = 32  # a kept row's word sketch: 128 bytes


@dataclass(frozen=True)
class Lexical:
    """Pairs nearer than `within` (cosine distance) whose word sets overlap by `jaccard` or more are copies."""

    within: float
    jaccard: float


def calibrated_lexical(embedder: str) -> Lexical | None:
    """The embedder's calibrated lexical confirmation (`filters/dedup.toml`), or None."""
    entry = similarity.calibrated().get("semantic", {}).get(embedder, {}).get("lexical")
    return None if entry is None else Lexical(float(entry["within"]), float(entry["jaccard"]))


def word_sketches(texts: pa.Array) -> np.ndarray:
    """(rows, WORDS_HELD) uint32: each text's WORDS_HELD smallest distinct word hashes (words as
    MinHash splits them: NFKC, lower case, punctuation a separator), ascending, 0 past the end."""
    words, offsets = word_lists(texts)
    hashes, offsets = shingle_hashes(words, offsets, 1)
    rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.uint64), np.diff(offsets))
    keyed = np.unique((rows << np.uint64(32)) | fold(hashes).astype(np.uint64))  # by row, then hash: distinct
    row = (keyed >> np.uint64(32)).astype(np.int64)
    rank = np.arange(len(keyed)) - np.searchsorted(row, row)
    held = rank < WORDS_HELD
    out = np.zeros((len(offsets) - 1, WORDS_HELD), np.uint32)
    out[row[held], rank[held]] = (keyed[held] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return out


def sketch_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row, the Jaccard similarity of two word sets from their sketches (`word_sketches`):
    exact where both sketches hold their whole set, else that of the hashes up to the smaller of
    the full sketches' largest (every hash of either set up to there is held: the bottom-k estimate)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    whole = np.uint32(0xFFFFFFFF)  # above every hash (`fold` never gives it)
    upto = np.minimum(np.where(a[:, -1] != 0, a[:, -1], whole), np.where(b[:, -1] != 0, b[:, -1], whole))
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    first = (both != 0) & (both <= upto[:, None])
    first[:, 1:] &= both[:, 1:] != both[:, :-1]  # each distinct hash once: the union
    shared = np.zeros_like(first)
    shared[:, :-1] = first[:, :-1] & (both[:, 1:] == both[:, :-1])  # a hash both sets hold comes twice
    return shared.sum(axis=1) / np.maximum(first.sum(axis=1), 1)


@dataclass
class CopyCheck:
    """Whether a row and the kept row nearest it (at cosine similarity `sim`) are copies, for
    `_match_semantic`: nearer than `threshold`, or nearer than `lexical.within` with word sets
    overlapping by `lexical.jaccard` (`sketches`: the batch's; `stored`: kept rows' of earlier
    batches by their index in the store), and in both cases `terms` finding no other numbers
    or names. `differ`/`pair` answer True where the rows are not copies. Each row's last answer
    is its verdict: `terms_kept` and `lexical` count the rows kept by the terms check and the
    rows dropped on the lexical confirmation, once the batch is settled (`settle`)."""

    threshold: float
    lexical: Lexical | None
    sketches: np.ndarray | None
    stored: Callable[[np.ndarray], np.ndarray]
    terms: similarity.TermsGuard | None
    by_terms: np.ndarray = field(init=False)
    by_words: np.ndarray = field(init=False)
    terms_kept: int = 0
    lexical_dropped: int = 0

    def __post_init__(self) -> None:
        n = 0 if self.sketches is None else len(self.sketches)
        n = max(n, 0 if self.terms is None else len(self.terms.terms))
        self.by_terms, self.by_words = np.zeros(n, bool), np.zeros(n, bool)

    @property
    def within(self) -> float:
        """The distance under which a pair is a candidate."""
        return self.threshold if self.lexical is None else max(self.threshold, self.lexical.within)

    def differ(self, rows: np.ndarray, owner: np.ndarray, prior: np.ndarray, sim: np.ndarray) -> np.ndarray:
        """For each of `rows`: not a copy of its match (`owner` in the batch, else `prior` in the store)."""
        close = 1 - sim < self.threshold
        words = np.zeros(len(rows), bool)
        if self.lexical is not None and self.sketches is not None and not close.all():
            inside, earlier = owner >= 0, (owner < 0) & (prior >= 0)
            other = np.zeros((len(rows), self.sketches.shape[1]), self.sketches.dtype)
            other[inside] = self.sketches[owner[inside]]
            if earlier.any():
                other[earlier] = self.stored(prior[earlier])
            words = ~close & (sketch_jaccard(self.sketches[rows], other) >= self.lexical.jaccard)
        copy = close | words
        terms = np.zeros(len(rows), bool)
        if self.terms is not None and copy.any():
            terms[copy] = self.terms.differ(rows[copy], owner[copy], prior[copy])
        self.by_terms[rows], self.by_words[rows] = copy & terms, words & ~terms
        return ~copy | terms

    def pair(self, i: int, j: int, sim: float) -> bool:
        """Row i of the batch is not a copy of its row j."""
        rows, owner = np.array([i]), np.array([j])
        return bool(self.differ(rows, owner, np.array([-1]), np.array([sim]))[0])

    def settle(self, keep: np.ndarray) -> None:
        self.terms_kept = int((keep & self.by_terms).sum())
        self.lexical_dropped = int((~keep & self.by_words).sum())
