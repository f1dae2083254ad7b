"""MinHash near-duplicates: LSH band keys propose kept rows, each pair is verified as `_Held` holds
the two rows (exactly for short rows, from 8-bit signatures for long ones), in row order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

from synth.core import Batch, SynthError
from synth.stages import similarity
from synth.stages.dedup._index import _Index, _Store, key_order
from synth.stages.dedup._shingles import band_keys, fold, low_bits, minhash_folded, shingle_hashes, word_lists
from synth.stages.dedup._stream import Rejects, Verdict, _stream, check_threshold

# Candidates are verified before a row is dropped, so LSH false positives only cost time:
# banding weighs a missed pair four times as heavily as a spurious candidate.
FP_WEIGHT, FN_WEIGHT = 0.2, 0.8


@dataclass(frozen=True)
class MinHashDedup:
    """Reads `column`; adds `dup_cluster`. Drops rows whose word n-gram set has a Jaccard
    similarity of at least `threshold` with a kept row that LSH banding proposes.

    Each kept row is held in `num_perm` bytes (`_Held`): a short row (at most `num_perm // 4`
    distinct shingles, as instructions are) as its shingles, so that its pairs are verified
    exactly; a longer one as the low 8 bits of each of its minimums (b-bit MinHash, Li and König
    2010, the chance collisions corrected), so that its pairs are estimated. The exact check is
    what keeps rows at true Jaccard 0.6-0.7 whose 128 minimums happen to agree at 0.7 or more.
    With `check_terms`, a pair where each text holds a number or a name the other lacks is no
    copy at any Jaccard ("Translate ... into French" and "... into German"; `similarity.terms_differ`):
    a long text with one number or language swapped shares nearly all of its words. Each kept row
    then holds its key terms too (32 bytes).
    Each batch is judged whole, so large batches are faster: numpy and Arrow work per call (a
    regex compiled, an index run searched) then costs little against the rows it covers;
    `synth dedup` reads 8,192 rows at a time. Inside an LLM pipeline, batches stay as they come:
    no generated row waits for thousands of others before it is written.
    """

    column: str = "instruction"
    threshold: float = field(default_factory=similarity.minhash_default)  # 0.7: filters/dedup.toml
    ngram: int | None = None  # None: 1 for short texts, 5 for documents, judged on the first batch
    num_perm: int = 128
    seed: int = 0
    check_terms: bool = True
    # Hash (embed) the next batch on the second core while this one is matched: the stage then
    # holds a batch it has read and not yet yielded, which a pipeline's resume checkpoint would
    # count as done. `synth dedup` resumes by reading its input again, so it reads ahead.
    read_ahead: bool = field(default=False, repr=False, compare=False)
    rejects: Rejects | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_threshold(self.threshold, "Jaccard similarity")
        if not 16 <= self.num_perm <= 1024:
            raise SynthError(f"--num-perm {self.num_perm} is out of range; use 16 to 1024 (128 is the usual)")
        if self.ngram is not None and self.ngram < 1:
            raise SynthError(f"--ngram {self.ngram} must be at least 1 (1 for short instructions, 5 for documents)")

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        bands, rows = lsh_params(self.threshold, self.num_perm)
        rng = np.random.default_rng(self.seed)
        a, b = (rng.integers(0, 2**32, self.num_perm, np.uint32) | np.uint32(1) for _ in range(2))
        mix = rng.integers(0, 2**64, 257, np.uint64) | np.uint64(1)
        index, store = _Index(), _Store()
        self.notes.update(method="minhash", threshold=self.threshold, num_perm=self.num_perm, bands=bands)
        self.notes["rows_per_band"] = rows

        held = _Held(a, b, terms=self.check_terms)
        self.notes["check_terms"] = self.check_terms

        def prepare(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:  # no state but the first batch's ngram
            words, offsets = word_lists(texts)
            if "ngram" not in self.notes:
                self.notes["ngram"] = self.ngram or (1 if float(np.median(np.diff(offsets))) < 50 else 5)
            hashes, offsets = shingle_hashes(words, offsets, self.notes["ngram"])
            x = fold(hashes)
            sig = minhash_folded(x, offsets, a, b)
            terms = similarity.key_terms(texts) if self.check_terms else None
            return held.rows(x, offsets, low_bits(sig), terms), band_keys(sig, bands, rows, mix)

        def decide(prepared: tuple[np.ndarray, np.ndarray], ids: pa.Array) -> Verdict:
            rows_held, keys = prepared
            return _match_minhash(rows_held, keys, ids, index, store, self.threshold, held.similar)

        ahead = (lambda: True) if self.read_ahead else None
        return _stream(batches, self.column, self.stats, self.rejects, decide, store, prepare=prepare, ahead=ahead)


Similar = Callable[[np.ndarray, np.ndarray], np.ndarray]  # rows of two held arrays, pairwise -> Jaccard


def _match_minhash(
    sig: np.ndarray,
    keys: np.ndarray,
    ids: pa.Array,
    index: _Index,
    store: _Store,
    threshold: float,
    similar: Similar | None = None,
) -> Verdict:
    """`sig`: the batch's rows as held (`_Held.rows`), or bare 8-bit signatures with `similar` None."""
    similar = similar or jaccard
    n = len(sig)
    hit = index.get(keys.ravel()).reshape(keys.shape)
    best, prior = _best_prior(sig, hit, store, similar)
    owner = np.full(n, -1)
    keep = best < threshold
    # Keys no kept row owns yet but two rows of this batch share: settle those rows in order,
    # each against the first kept row of the batch holding the key, as if batches were rows.
    free = hit < 0
    free_rows, free_keys = np.nonzero(free)[0], keys[free]
    by_key = key_order(free_keys)  # by key, then row
    sorted_keys = free_keys[by_key]
    group = np.cumsum(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) - 1
    shared = np.empty(len(free_keys), bool)
    shared[by_key] = np.bincount(group)[group] > 1
    _settle_within(sig, free_rows[shared], free_keys[shared], threshold, best, owner, prior, keep, similar=similar)
    prior[keep], owner[keep] = -1, -1
    kept = by_key[keep[free_rows[by_key]]]  # kept rows' new keys, by key then row: each key's first
    first = kept[np.r_[True, free_keys[kept[1:]] != free_keys[kept[:-1]]]] if len(kept) else kept
    anchor = len(store) + np.cumsum(keep) - 1
    index.add(free_keys[first], anchor[free_rows[first]])
    store.append(ids.filter(pa.array(keep)), sig[keep])
    return Verdict(keep, prior, owner, np.where(keep, np.nan, best))


def _settle_within(
    sig: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    threshold: float,
    best: np.ndarray,
    owner: np.ndarray,
    prior: np.ndarray,
    keep: np.ndarray,
    rounds: int = 16,
    similar: Similar | None = None,  # None: `jaccard`, for bare 8-bit signatures
) -> None:
    """Settle the rows holding new keys that other rows of the batch share (`rows` ascending,
    `keys` beside them) as if in row order: each against the first kept row of the batch that
    holds one of its keys, the most similar winning. Updates the last four arrays in place.

    Whole-array rounds: guess which rows are kept, decide every row against that guess, and
    repeat until the decisions reproduce the guess. Row i's decision depends on rows before it
    only, so the one self-consistent answer is the in-order one. A long chain of copies of
    copies would need a round per link: after `rounds`, the rest is settled row by row.
    """
    if len(rows) == 0:
        return
    similar = similar or jaccard
    order = key_order(keys)  # by key, then row (`rows` ascend)
    row, key = rows[order], keys[order]
    group = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    member = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
    position, unique_rows = np.arange(len(row)), np.unique(rows)
    start_best, start_keep = best.copy(), keep.copy()
    alive = keep.copy()
    for _ in range(rounds):
        first = np.minimum.reduceat(np.where(alive[row], position, len(row)), group)[member]
        has = first < len(row)
        has[has] = row[first[has]] < row[has]  # a kept row of the group before this one
        pairs = np.unique(row[has] * np.int64(len(sig)) + row[first[has]])
        i, holder = pairs // len(sig), pairs % len(sig)
        sims = similar(sig[i], sig[holder])
        pick = np.lexsort((-sims, i))  # per row: most similar, then earliest (pairs are sorted)
        pick = pick[np.r_[True, i[pick[1:]] != i[pick[:-1]]]] if len(pick) else pick
        new_best, new_owner = start_best.copy(), owner.copy()
        better = sims[pick] > start_best[i[pick]]  # strict: on a tie the earlier batch's row wins
        new_best[i[pick][better]], new_owner[i[pick][better]] = sims[pick][better], holder[pick][better]
        decided = start_keep & (new_best < threshold)
        if np.array_equal(decided[unique_rows], alive[unique_rows]):
            moved = new_owner != owner
            prior[moved] = -1
            best[:], owner[:], keep[:] = new_best, new_owner, decided
            return
        alive = decided
    _settle_in_order(sig, rows, keys, threshold, best, owner, prior, keep, similar)


def _settle_in_order(
    sig: np.ndarray,
    rows: np.ndarray,
    keys: np.ndarray,
    threshold: float,
    best: np.ndarray,
    owner: np.ndarray,
    prior: np.ndarray,
    keep: np.ndarray,
    similar: Similar | None = None,
) -> None:
    """`_settle_within` one row at a time: the reference, and the way out of long chains."""
    similar = similar or jaccard
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]).tolist() + [len(rows)]
    keys_list, order = keys.tolist(), rows[starts[:-1]].tolist()
    best_list = best.tolist()
    holder: dict[int, int] = {}
    for n, i in enumerate(order):
        row_keys = keys_list[starts[n] : starts[n + 1]]
        candidates = sorted({holder[k] for k in row_keys if k in holder})
        if candidates:
            sims = similar(sig[np.full(len(candidates), i)], sig[candidates])
            j = int(sims.argmax())
            if sims[j] > best_list[i]:  # strict: on a tie the earlier row (a previous batch's) wins
                best_list[i], owner[i], prior[i] = float(sims[j]), candidates[j], -1
        keep[i] = best_list[i] < threshold
        if keep[i]:
            for k in row_keys:
                holder.setdefault(k, i)
    best[:] = best_list


def _best_prior(sig: np.ndarray, hit: np.ndarray, store: _Store, similar: Similar) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the most similar kept row of earlier batches among its LSH candidates."""
    best, prior = np.full(len(sig), -np.inf), np.full(len(sig), -1)
    rows, bands = np.nonzero(hit >= 0)
    if len(rows):
        stride = np.int64(hit.max() + 1)
        pairs = np.unique(rows * stride + hit[rows, bands])  # (row, kept row) pairs, sorted
        row, kept = pairs // stride, pairs % stride
        sims = np.empty(len(pairs))
        for start in range(0, len(pairs), 8192):  # in pieces: a chunk can have 100,000 candidate pairs
            part = slice(start, start + 8192)
            sims[part] = similar(sig[row[part]], store.sigs(kept[part]))
        order = np.lexsort((-sims, row))  # stable, per row: most similar, then earliest
        first = order[np.r_[True, row[order[1:]] != row[order[:-1]]]]
        best[row[first]], prior[row[first]] = sims[first], kept[first]
    return best, prior


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity from 8-bit MinHash signatures, corrected for chance collisions."""
    agree = (np.asarray(a) == np.asarray(b)).mean(axis=-1)
    return (agree - 1 / 256) / (1 - 1 / 256)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band minimising the weighted areas of missed and spurious candidates."""
    s = np.linspace(0, 1, 1001)
    below, above = s < threshold, s >= threshold
    best = (np.inf, 1, num_perm)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - s**rows) ** bands
            cost = FP_WEIGHT * p[below].sum() + FN_WEIGHT * (1 - p[above]).sum()
            best = min(best, (cost / len(s), bands, rows))
    return best[1], best[2]


class _Held:
    """How MinHash holds a row and compares two: `num_perm` bytes and a 2-byte count a row (and,
    with `terms`, its key terms: `similarity.TERMS_HELD` 32-bit hashes).

    A row of at most `num_perm // 4` distinct shingles holds them (32-bit, sorted) and its count;
    a longer one holds its 8-bit signature and count 0. Two short rows are compared exactly (the
    Jaccard similarity of their shingle sets); a pair with a long row is estimated from 8-bit
    signatures, a short row's made again from its shingles, the very signature it had. So a
    short row costs the bytes of a signature, and the same pair gets the same figure whichever
    batch either row came in. A pair whose rows hold different key terms (`terms_differ`) has
    similarity 0: it is never a copy.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, terms: bool = False) -> None:
        self.a, self.b = a, b
        self.width = len(a) // 4  # shingles a row's bytes hold
        self.terms = terms

    def rows(self, x: np.ndarray, offsets: np.ndarray, sig8: np.ndarray, terms: np.ndarray | None = None) -> np.ndarray:
        """(rows, num_perm + 2 [+ 4 * TERMS_HELD]) uint8: each row as held, from its folded shingle
        hashes and signature (and its `similarity.key_terms`, which a `_Held` with `terms` needs)."""
        n, perms = len(offsets) - 1, len(self.a)
        row = np.repeat(np.arange(n, dtype=np.uint64), np.diff(offsets))
        distinct = np.sort((row << np.uint64(32)) | x)  # by row, then value (np.unique: 100x slower here)
        distinct = distinct[np.r_[True, distinct[1:] != distinct[:-1]]]
        urow, value = (distinct >> np.uint64(32)).astype(np.intp), distinct.astype(np.uint32)
        counts = np.bincount(urow, minlength=n)
        short = counts <= self.width
        sets = np.zeros((n, self.width), np.uint32)
        place = np.arange(len(urow)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[urow]
        take = short[urow]
        sets[urow[take], place[take]] = value[take]
        if self.terms and terms is None:
            raise ValueError("this _Held compares key terms: give each row's (similarity.key_terms)")
        extra = 4 * similarity.TERMS_HELD if self.terms else 0
        out = np.zeros((n, perms + 2 + extra), np.uint8)
        out[~short, :perms] = sig8[~short]
        out[short, : 4 * self.width] = sets[short].view(np.uint8)
        out[:, perms : perms + 2] = np.where(short, counts, 0).astype("<u2").view(np.uint8).reshape(n, 2)
        if self.terms:
            out[:, perms + 2 :] = np.ascontiguousarray(terms, np.uint32).view(np.uint8)
        return out

    def similar(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Jaccard similarity of each row of `left` with the row of `right` beside it."""
        cl, cr = self._count(left), self._count(right)
        both = (cl > 0) & (cr > 0)
        sims = np.empty(len(left))
        if both.any():
            sims[both] = self._exact(left[both], cl[both], right[both], cr[both])
        if not both.all():
            sims[~both] = jaccard(self._sig(left[~both], cl[~both]), self._sig(right[~both], cr[~both]))
        if self.terms and len(sims):
            sims[similarity.terms_differ(self._terms(left), self._terms(right))] = 0.0
        return sims

    def _count(self, held: np.ndarray) -> np.ndarray:
        perms = len(self.a)
        return np.ascontiguousarray(held[:, perms : perms + 2]).view("<u2").ravel().astype(np.int64)

    def _terms(self, held: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(held[:, len(self.a) + 2 :]).view(np.uint32)

    def _sets(self, held: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(held[:, : 4 * self.width]).view(np.uint32)

    def _sig(self, held: np.ndarray, counts: np.ndarray) -> np.ndarray:
        sig = held[:, : len(self.a)].copy()
        short = np.flatnonzero(counts > 0)
        if len(short):
            n = counts[short]
            values = self._sets(held[short])[np.arange(self.width) < n[:, None]]
            sig[short] = low_bits(minhash_folded(values, np.concatenate([[0], np.cumsum(n)]), self.a, self.b))
        return sig

    def _exact(self, left: np.ndarray, cl: np.ndarray, right: np.ndarray, cr: np.ndarray) -> np.ndarray:
        # Each pair's two sets side by side, sorted along the row: a shared shingle is two equal
        # neighbours. Padding is 0 on the left and all-ones on the right (no shingle is either,
        # see `fold`), so it only meets itself, and those neighbours are taken off.
        width = int(max(cl.max(), cr.max()))
        a = self._sets(left)[:, :width]
        b = np.where(np.arange(width) < cr[:, None], self._sets(right)[:, :width], np.uint32(0xFFFFFFFF))
        both = np.concatenate([a, b], axis=1)
        both.sort(axis=1)
        inter = (
            (both[:, 1:] == both[:, :-1]).sum(axis=1) - np.maximum(width - cl - 1, 0) - np.maximum(width - cr - 1, 0)
        )
        return inter / (cl + cr - inter)
