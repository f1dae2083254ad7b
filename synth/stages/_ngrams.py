"""Word n-grams of text, hashed a whole batch at a time in numpy, and an index of a benchmark's
n-grams that scores rows against every item at once (decontamination's `ngram` and `edit` methods).

Hashes are polynomial rolling hashes over per-word hashes: no Python set per row. The benchmark's
n-grams sit in one sorted array behind a bitmap of hash prefixes, so most of a row's n-grams (found
in no item) cost one byte read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64: a window's hash is independent of its position


def normalised_words(texts: pa.Array) -> pa.Array:
    """Each text as a list of words: NFKC, lower case, punctuation and symbols as spaces."""
    norm = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(texts, ""), form="NFKC"))
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"[\p{P}\p{S}]+", " "))
    words = pc.utf8_split_whitespace(spaced)  # trimmed first, or a text ending in "?" ends in an empty word
    # Arrow splits "" into one empty word: at n = 1 an empty row was a copy of every empty answer.
    return pc.if_else(pc.equal(spaced, ""), pa.scalar([], words.type), words)


class _Powers:
    """BASE**i and BASE**-i modulo 2**64 for i below a size that grows as batches need."""

    def __init__(self) -> None:
        self.up = np.ones(1, np.uint64)
        self.down = np.ones(1, np.uint64)
        self.lock = threading.Lock()

    def upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            return self._upto(n)

    def _upto(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.up) < n:
            size = max(n, 2 * len(self.up))
            with np.errstate(over="ignore"):
                self.up = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _BASE, np.uint64)], dtype=np.uint64)
                inverse = np.uint64(pow(_BASE, -1, 2**64))
                self.down = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, inverse, np.uint64)], dtype=np.uint64)
        return self.up[:n], self.down[:n]


_POWERS = _Powers()


def ngram_hashes(texts: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word n-grams (a text of fewer than n words has none), and the
    offsets of each text's hashes: text i's are `hashes[offsets[i]:offsets[i + 1]]`."""
    words = normalised_words(texts)
    offsets = words.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    flat = words.flatten()
    lengths = np.diff(offsets)
    if len(flat) == 0:
        return np.zeros(0, np.uint64), np.zeros(len(lengths) + 1, np.int64)
    encoded = pc.dictionary_encode(flat)  # hash each distinct word of the batch once
    vocab = np.fromiter(
        (xxhash.xxh3_64_intdigest(w.encode()) for w in encoded.dictionary.to_pylist()),
        np.uint64,
        count=len(encoded.dictionary),
    )
    tokens = vocab[encoded.indices.to_numpy(zero_copy_only=False)]
    up, down = _POWERS.upto(len(tokens) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(tokens) + 1, np.uint64)
        np.cumsum(tokens * up[: len(tokens)], out=prefix[1:])
        row = np.repeat(np.arange(len(lengths)), lengths)
        start = np.flatnonzero(np.arange(len(tokens)) + n <= offsets[1:][row])
        hashes = (prefix[start + n] - prefix[start]) * down[start]  # sum of token[start + j] * BASE**j
        hashes ^= hashes >> np.uint64(31)  # a finaliser: the prefix bitmap reads the top bits
        hashes *= np.uint64(0xBF58476D1CE4E5B9)
        hashes ^= hashes >> np.uint64(29)
    counts = np.bincount(row[start], minlength=len(lengths))
    return hashes, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def ngram_hashes_threaded(texts: pa.Array, n: int, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes` on `threads` slices of `texts` at once: Arrow's string kernels and numpy
    release the GIL, so a batch is hashed on that many cores with no lookahead across batches."""
    if threads <= 1 or len(texts) < 2 * threads:
        return ngram_hashes(texts, n)
    step = -(-len(texts) // threads)
    parts = list(_pool(threads).map(lambda i: ngram_hashes(texts.slice(i, step), n), range(0, len(texts), step)))
    shifts = np.cumsum([0] + [len(h) for h, _ in parts[:-1]])
    offsets = np.concatenate([[0]] + [o[1:] + shift for (_, o), shift in zip(parts, shifts)])
    return np.concatenate([h for h, _ in parts]), offsets.astype(np.int64)


@lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="synth-ngrams")


def _after_fork() -> None:
    """In a forked child (multiprocessing, datasets' `map(num_proc=)`, a test runner's workers): the
    parent's pools have no threads there and would take work that never runs, so the child hung on
    its first batch; and a lock held at the fork would never be let go. Both made again."""
    _pool.cache_clear()
    _POWERS.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class NgramIndex:
    """The n-grams of benchmark items' question, answer and question+answer spans, searchable by batch.

    Postings (`item`, `span`) are sorted by n-gram hash, `keys` holds each distinct hash once and
    `key_start` where its postings begin; `totals[s, item]` is the weight of the distinct n-grams of
    span s of each item, the denominator of its score. Unweighted, each n-gram weighs 1 (the score is
    the share of the item's n-grams a row holds); `weighted`, an n-gram weighs log(1 + items / items
    holding it) in its span, so the benchmark's own boilerplate ("which of the following", "this
    package contains the") counts for little and a score is carried by the words an item does not
    share with the others.
    """

    SPANS = ("question", "answer", "both")

    def __init__(
        self,
        questions: Sequence[str],
        answers: Sequence[str] | None,
        n: int,
        filter_bits: int = 27,
        threads: int = 2,
        weighted: bool = False,
        min_ngrams: int = 1,
    ) -> None:
        self.n, self.filter_bits, self.threads = n, filter_bits, threads
        q = pa.array(questions, pa.string())
        spans = [q]
        if answers is not None:  # None: the questions alone
            a = pa.array(answers, pa.string())
            spans += [a, pc.binary_join_element_wise(q, a, "\n")]
        items = len(questions)
        counts = np.zeros((3, items), np.int64)
        parts = []
        for s, texts in enumerate(spans):
            hashes, offsets = ngram_hashes_threaded(texts, n, threads)
            item = np.repeat(np.arange(items, dtype=np.int32), np.diff(offsets))
            order = np.argsort(hashes, kind="stable")  # items were in order: now by hash, then item
            hashes, item = hashes[order], item[order]
            first = np.r_[True, (hashes[1:] != hashes[:-1]) | (item[1:] != item[:-1])][: len(hashes)]
            hashes, item = hashes[first], item[first]  # an n-gram twice in one item counts once
            counts[s] = np.bincount(item, minlength=items)
            parts.append((hashes, item, np.full(len(item), s, np.uint8)))
        # One posting per (n-gram, item, span), sorted by n-gram.
        hashes, item, span = (np.concatenate(p) for p in zip(*parts))
        order = np.argsort(hashes, kind="stable")
        hashes, self.item, self.span = hashes[order], item[order], span[order]
        self.weight = np.ones(len(hashes))
        if weighted and len(hashes):
            # Stable sorts kept each n-gram's postings in span order, then item order: runs of one (n-gram, span).
            start = np.flatnonzero(np.r_[True, (hashes[1:] != hashes[:-1]) | (self.span[1:] != self.span[:-1])])
            runs = np.diff(np.r_[start, len(hashes)])
            holders = np.repeat(runs, runs)  # per posting: the items holding its n-gram in its span
            self.weight = np.log1p((counts > 0).sum(axis=1)[self.span] / holders)
            # An n-gram in a great many items weighs little, and would cost every row holding it a
            # posting per item: left out, of the scores' numerators and denominators alike.
            keep = holders <= max(64, items // 64)
            hashes, self.item, self.span = hashes[keep], self.item[keep], self.span[keep]
            self.weight = self.weight[keep]
        first = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]][: len(hashes)])
        self.keys = hashes[first]
        self.key_start = np.r_[first, len(hashes)].astype(np.int64)
        self.totals = np.zeros((3, items))
        for s in range(3):
            mine = self.span == s
            self.totals[s] = np.bincount(self.item[mine], weights=self.weight[mine], minlength=items)
        self.totals[counts < min_ngrams] = 0  # too few n-grams to tell a copy from chance: out of reach
        self.counts = counts
        self._filter = np.zeros(1 << (filter_bits - 3), np.uint8)
        prefix = (self.keys >> np.uint64(64 - filter_bits)).astype(np.int64)
        np.bitwise_or.at(self._filter, prefix >> 3, np.left_shift(1, prefix & 7).astype(np.uint8))

    @property
    def short_items(self) -> int:
        """Items with no n-gram in any span: fewer than n words, out of reach of this method."""
        return int((self.counts.sum(axis=0) == 0).sum())

    def best(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Per text, the item whose n-grams it holds the largest share of (-1 if none) and that share."""
        rows = len(texts)
        best_item, best_score = np.full(rows, -1, np.int64), np.zeros(rows)
        if len(self.keys) == 0:
            return best_item, best_score
        hashes, offsets = ngram_hashes_threaded(texts, self.n, self.threads)
        row = np.repeat(np.arange(rows), np.diff(offsets))
        prefix = (hashes >> np.uint64(64 - self.filter_bits)).astype(np.int64)
        maybe = np.flatnonzero((self._filter[prefix >> 3] >> (prefix & 7).astype(np.uint8)) & 1)
        hashes, row = hashes[maybe], row[maybe]
        key = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        hit = self.keys[key] == hashes
        pairs = np.unique(row[hit] * np.int64(len(self.keys)) + key[hit])  # a row's repeated n-gram counts once
        if len(pairs) == 0:
            return best_item, best_score
        row, key = pairs // len(self.keys), pairs % len(self.keys)
        count = self.key_start[key + 1] - self.key_start[key]
        posting = np.repeat(self.key_start[key] - np.cumsum(count) + count, count) + np.arange(count.sum())
        row, item, span = np.repeat(row, count), self.item[posting], self.span[posting]
        found, inverse = np.unique(row * np.int64(self.totals.shape[1]) + item, return_inverse=True)
        inverse = inverse.ravel()
        f_row, f_item = found // self.totals.shape[1], found % self.totals.shape[1]
        score = np.zeros(len(found))
        for s in range(3):
            held = np.bincount(inverse, weights=(span == s) * self.weight[posting], minlength=len(found))
            total = self.totals[s, f_item]
            score = np.maximum(score, np.where(total > 0, held / np.where(total > 0, total, 1), 0.0))
        order = np.lexsort((-score, f_row))
        first = order[np.r_[True, f_row[order[1:]] != f_row[order[:-1]]]]
        best_item[f_row[first]], best_score[f_row[first]] = f_item[first], score[first]
        return best_item, best_score
