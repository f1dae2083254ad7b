"""MinHash's text side, vectorised per batch: words, shingle hashes, signatures and LSH band keys."""

from __future__ import annotations

import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash


def _words(texts: pa.Array) -> pa.Array:
    norm = pc.utf8_lower(pc.utf8_normalize(texts, form="NFKC"))
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"[\p{P}\p{S}]+", " "))
    return pc.utf8_split_whitespace(norm)


def _ascii_table() -> np.ndarray:
    """Byte -> byte for ASCII text: what `_words` does to it, with 32 for a separator (Unicode
    punctuation, symbols and whitespace, as Arrow's kernels class them), upper case lowered."""
    table = np.arange(256, dtype=np.uint8)
    table[65:91] += 32
    for c in range(128):
        if chr(c) in string.punctuation or c in (9, 10, 11, 12, 13, 28, 29, 30, 31, 32):
            table[c] = 32
    return table


_ASCII = _ascii_table()


def word_lists(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each row's words as `_words` splits them, flat, and each row's offsets into them.

    All-ASCII batches (the usual case) go through a byte table in numpy instead of Arrow's
    Unicode kernels: the same words, in a fifth of the time.
    """
    texts = texts.cast(pa.string())
    if texts.null_count == 0 and len(texts) and pc.all(pc.string_is_ascii(texts)).as_py():
        return _ascii_words(texts)
    words = _words(texts)
    offsets = words.offsets.to_numpy().astype(np.int64)
    return words.flatten(), offsets - offsets[0]


def _ascii_words(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]] if data_buffer else np.zeros(0, np.uint8)
    offsets -= offsets[0]
    mapped = _ASCII[data]
    inside = mapped != 32
    edge = np.zeros(len(data) + 1, bool)  # a word starts or ends at a change, and where a row starts
    edge[1:-1] = inside[1:] != inside[:-1]
    edge[0] = edge[-1] = True
    edge[offsets] = True
    cut = np.flatnonzero(edge)  # runs between cuts are all word or all separator bytes
    word_runs = np.flatnonzero(inside[cut[:-1]]) if len(data) else cut[:0]
    runs, ends = cut[word_runs], cut[word_runs + 1]
    starts = np.concatenate([[0], np.cumsum(ends - runs)])  # each word's start in the words laid end to end
    row_offsets = np.searchsorted(runs, offsets)
    # A row with no words has one empty word, as Arrow's split gives it: an empty text is a shingle.
    counts = np.diff(row_offsets)
    empty = counts == 0
    new_offsets = np.concatenate([[0], np.cumsum(counts + empty)])
    word_offsets = np.empty(new_offsets[-1] + 1, np.int32)
    word_offsets[np.arange(len(starts) - 1) + np.repeat(np.cumsum(empty) - empty, counts)] = starts[:-1]
    word_offsets[new_offsets[:-1][empty]] = starts[row_offsets[:-1][empty]]
    word_offsets[-1] = starts[-1]
    data = pa.py_buffer(np.ascontiguousarray(mapped[inside]))
    return pa.StringArray.from_buffers(len(word_offsets) - 1, pa.py_buffer(word_offsets), data), new_offsets


def shingle_hashes(words: pa.Array, offsets: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each row's word n-grams (a row shorter than n is one shingle), and row offsets.

    `words` is every row's words end to end, `offsets` where each row's begin (`word_lists`).
    """
    encoded = pc.dictionary_encode(words)  # hash each distinct word of the batch once
    vocab = np.fromiter((xxhash.xxh3_64_intdigest(w.encode()) for w in encoded.dictionary.to_pylist()), np.uint64)
    tokens = vocab[encoded.indices.to_numpy(zero_copy_only=False)]
    if ngram == 1:
        return tokens, offsets
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(len(lengths)), lengths)
    pos, end = np.arange(len(tokens)), offsets[1:][row]
    acc = np.zeros(len(tokens), np.uint64)
    for j, mult in enumerate(_odd_constants(ngram)):
        inside = pos + j < end
        acc += np.where(inside, tokens[np.minimum(pos + j, len(tokens) - 1)], np.uint64(0)) * mult
    start = (pos + ngram <= end) | ((lengths[row] < ngram) & (pos == offsets[:-1][row]))
    counts = np.bincount(row[start], minlength=len(lengths))
    return acc[start], np.concatenate([[0], np.cumsum(counts)])


def _odd_constants(k: int) -> np.ndarray:
    return np.random.default_rng(12345).integers(0, 2**64, k, np.uint64) | np.uint64(1)


def fold(hashes: np.ndarray) -> np.ndarray:
    """64-bit shingle hashes folded to the 32 bits MinHash permutes (and `_Held` keeps); never 0
    or all-ones, the values `_Held` pads sets with."""
    x = (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)
    return np.clip(x, 1, 0xFFFFFFFE, out=x)


def minhash(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, len(a)) uint32 MinHash signatures of 64-bit shingle hashes: `minhash_folded` of `fold`."""
    return minhash_folded(fold(hashes), offsets, a, b)


def minhash_folded(x: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, len(a)) uint32 MinHash signatures: a*x + b mod 2**32 over each row's 32-bit
    shingle hashes x (row i's are x[offsets[i]:offsets[i + 1]]), vectorised in chunks. 32-bit
    lanes: twice the values per SIMD step and half the memory traffic of 64-bit ones (2.3x
    faster); the order, which is all a minimum needs, comes from the high bits, where
    multiplication mixes every bit of x.

    A row with no shingles (an empty text) gets all-ones: equal to other empty texts only.
    """
    n = len(offsets) - 1
    sig = np.full((n, len(a)), np.iinfo(np.uint32).max, np.uint32)
    rows = np.repeat(np.arange(n), np.diff(offsets))
    step = 8192  # bounds the temporary to 4 MB at 128 permutations
    h = np.empty((len(a), min(len(x), step)), np.uint32)
    for start in range(0, len(x), step):
        xs, rs = x[start : start + step], rows[start : start + step]
        part = h[:, : len(xs)]
        np.multiply.outer(a, xs, out=part)  # permutations as rows: each text's shingles lie contiguous
        part += b[:, None]
        seg = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
        r = rs[seg]
        sig[r] = np.minimum(sig[r], np.minimum.reduceat(part, seg, axis=1).T)
    return sig


def low_bits(sig: np.ndarray) -> np.ndarray:
    """8 bits of each minimum for b-bit MinHash, from a multiply that mixes all 32 of its bits:
    the low bits of a*x + b depend on the low bits of x only."""
    return ((sig * np.uint32(0x9E3779B1)) >> np.uint32(24)).astype(np.uint8)


def band_keys(sig: np.ndarray, bands: int, rows: int, mix: np.ndarray) -> np.ndarray:
    """(rows of sig, bands) uint32 hashes of each band's values; never 0."""
    acc = np.broadcast_to(mix[rows : rows + bands] * np.uint64(2), (len(sig), bands)).copy()
    for r in range(rows):  # element r of every band at once: temporaries of (rows of sig, bands)
        acc += sig[:, r : bands * rows : rows].astype(np.uint64) * mix[r]
    acc ^= acc >> np.uint64(33)
    acc *= np.uint64(0xFF51AFD7ED558CCD)
    acc ^= acc >> np.uint64(33)
    keys = (acc >> np.uint64(32)).astype(np.uint32)
    keys[keys == 0] = 1
    return keys
