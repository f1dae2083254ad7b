"""Deduplication: exact, MinHash near-duplicates and semantic, streaming with bounded memory.

Every method keeps the first row of each group in input order and matches later rows against
kept rows only, so output is deterministic, independent of batching, and no group loses all of
its members. Kept rows get `dup_cluster` = their own id; dropped rows go to `rejects` (if given)
with `dup_cluster` = the id of the kept row they duplicate and `dup_similarity`. Rows whose
column is null or not a string are never compared: they pass through with a null `dup_cluster`.
Memory holds hashes, signatures or embeddings of kept rows and their ids, never texts.

Past 500 lines on purpose: the three methods share the stream, the kept-row store and the
index, and splitting them would scatter one family over several files.
"""

from __future__ import annotations

import itertools
import mmap
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from synth.core import Batch, SynthError, add_columns
from synth.stages import similarity
from synth.stages.embed import embed, load_embedder, load_encoder  # noqa: F401  (embed: the one way to embed texts)

Rejects = Callable[[Batch], None]
# Candidates are verified before a row is dropped, so LSH false positives only cost time:
# banding weighs a missed pair four times as heavily as a spurious candidate.
FP_WEIGHT, FN_WEIGHT = 0.2, 0.8


# ---------------------------------------------------------------- the shared loop


@dataclass
class Verdict:
    """One method's decision on the checked rows of a batch (positions are within those rows)."""

    keep: np.ndarray  # bool
    prior: np.ndarray  # index in the kept-row store of the earlier-batch row matched, or -1
    owner: np.ndarray  # position in this batch of the row matched, or -1
    similarity: np.ndarray  # float, to the row matched (NaN when kept)
    extra: dict[str, pa.Array] = field(default_factory=dict)


def _stream(
    batches: Iterable[Batch],
    column: str,
    stats: Counter[str],
    rejects: Rejects | None,
    decide: Callable[[Any, pa.Array], Verdict],
    store: _Store,  # the method's own: `decide` appends the rows it keeps
    extra: tuple[str, ...] = (),
    prepare: Callable[[pa.Array], Any] | None = None,
    ahead: Callable[[], bool] | None = None,
) -> Iterator[Batch]:
    """Each batch through `decide(texts, ids)`, or `decide(prepare(texts), ids)`; `prepare` must
    not touch what `decide` keeps. With `ahead`, the stage reads a batch ahead (see `_ahead`)."""
    for batch, texts, checked, prepared in _ahead(batches, column, stats, prepare, ahead):
        ids = batch["id"].combine_chunks().filter(pa.array(checked))
        verdict = decide(prepared, ids) if len(texts) else None
        keep = np.ones(batch.num_rows, bool)
        slot = np.full(batch.num_rows, len(texts))  # unchecked rows point past the end: a null
        slot[checked] = np.arange(len(texts))
        columns: dict[str, pa.Array] = {}
        similarity = np.full(batch.num_rows, np.nan)
        if verdict is None:
            columns["dup_cluster"] = pa.nulls(batch.num_rows, pa.string())
            columns.update({name: pa.nulls(batch.num_rows, pa.float32()) for name in extra})
        else:
            keep[checked] = verdict.keep
            similarity[checked] = verdict.similarity
            cluster = _clusters(ids, verdict, store)
            columns["dup_cluster"] = pa.concat_arrays([cluster, pa.nulls(1, pa.string())]).take(slot)
            for name, values in verdict.extra.items():
                columns[name] = pa.concat_arrays([values, pa.nulls(1, values.type)]).take(slot)
        out = add_columns(batch, **columns)
        stats["kept"] += int(keep.sum())
        stats["dropped"] += int((~keep).sum())
        if rejects is not None and not keep.all():
            dropped = add_columns(out, dup_similarity=pa.array(similarity, pa.float32()))
            rejects(dropped.filter(pa.array(~keep)))
        yield out.filter(pa.array(keep))


def _ahead(
    batches: Iterable[Batch],
    column: str,
    stats: Counter[str],
    prepare: Callable[[pa.Array], Any] | None,
    ahead: Callable[[], bool] | None = None,
) -> Iterator[tuple[Batch, pa.Array, np.ndarray, Any]]:
    """(batch, its checked texts, which rows those are, `prepare(texts)` or the texts).

    Without `ahead`, each batch is yielded before the next is read: a pipeline's resume
    checkpoint (the source rows read once a stage has yielded) counts on that. With `ahead`,
    batch k + 1 is read before batch k is yielded, and while `ahead()` holds one worker thread
    prepares it while the caller decides and writes batch k (numpy and Arrow let go of the GIL
    in their loops); otherwise it is prepared here. One worker, so one `prepare` at a time (a
    tokenizer may not be shared); a short one, as Ctrl-C waits for it. A batch is counted in
    `stats` as it is yielded, not as it is read."""
    if ahead is None:
        for batch in batches:
            stats["rows_in"] += batch.num_rows
            texts, checked = _checked_texts(batch, column, stats)
            yield batch, texts, checked, prepare(texts) if prepare and len(texts) else texts
        return
    assert prepare is not None, "reading ahead is for a stage that prepares"
    with ThreadPoolExecutor(1, thread_name_prefix="synth-dedup") as pool:
        pending: tuple[Batch, pa.Array, np.ndarray, Future[Any] | None, Counter[str]] | None = None
        for batch in batches:
            counts = Counter({"rows_in": batch.num_rows})  # into `stats` as the batch is yielded
            texts, checked = _checked_texts(batch, column, counts)
            job: Future[Any] | None = None
            if len(texts) and ahead():
                job = pool.submit(prepare, texts)
            elif len(texts):
                if pending is not None and pending[3] is not None:
                    pending[3].result()  # the worker's batch first: never two `prepare` at once
                job = Future()
                job.set_result(prepare(texts))
            if pending is not None:
                stats.update(pending[4])
                yield *pending[:3], pending[3] and pending[3].result()
            pending = (batch, texts, checked, job, counts)
        if pending is not None:
            stats.update(pending[4])
            yield *pending[:3], pending[3] and pending[3].result()


def _checked_texts(batch: Batch, column: str, stats: Counter[str]) -> tuple[pa.Array, np.ndarray]:
    if column not in batch.column_names:
        names = ", ".join(batch.column_names)
        raise SynthError(f"column {column!r} is not in the input (it has: {names}); pass one of these to --column")
    values = batch[column].combine_chunks()
    nulls = values.null_count
    stats["unchecked_null"] += nulls
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        stats["unchecked_non_string"] += len(values) - nulls
        return pa.array([], pa.string()), np.zeros(len(values), bool)
    checked = values.is_valid().to_numpy(zero_copy_only=False)
    return values.filter(pa.array(checked)).cast(pa.string()), checked


def _clusters(ids: pa.Array, verdict: Verdict, store: _Store) -> pa.Array:
    """Own id for kept rows; the matched row's id (from this batch or the store) for dropped ones."""
    index = np.arange(len(ids))
    inside = verdict.owner >= 0
    index[inside] = verdict.owner[inside]
    earlier = np.flatnonzero(verdict.prior >= 0)
    index[earlier] = len(ids) + np.arange(len(earlier))
    earlier_ids = store.ids(verdict.prior[earlier]) if len(earlier) else pa.array([], pa.string())
    return pa.concat_arrays([ids, earlier_ids]).take(pa.array(index))


class _Store:
    """Ids (and MinHash signatures) of kept rows, appended per batch and gathered by position.

    Trailing small chunks are merged once they hold 65,536 rows, so gathering touches few
    chunks and no merge copies much at once.
    """

    def __init__(self) -> None:
        self._ids: list[pa.Array] = []
        self._sigs: list[np.ndarray] = []
        self._starts: list[int] = [0]

    def __len__(self) -> int:
        return self._starts[-1]

    def append(self, ids: pa.Array, sigs: np.ndarray | None = None) -> None:
        if len(ids) == 0:
            return
        self._ids.append(ids)
        if sigs is not None:
            self._sigs.append(sigs)
        self._starts.append(self._starts[-1] + len(ids))
        first = len(self._ids)
        while first and len(self._ids[first - 1]) < 65_536:
            first -= 1
        if len(self._ids) - first > 1 and self._starts[-1] - self._starts[first] >= 65_536:
            self._ids[first:] = [pa.concat_arrays(self._ids[first:])]
            if self._sigs:
                tail = self._sigs[first:]
                merged = _empty(sum(len(x) for x in tail), tail[0].dtype, tail[0].shape[1])
                self._sigs[first:] = [np.concatenate(tail, out=merged)]
            self._starts[first + 1 :] = [self._starts[-1]]

    def _chunks(self, index: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        chunk = np.searchsorted(self._starts, index, side="right") - 1
        for c in np.unique(chunk):
            where = np.flatnonzero(chunk == c)
            yield int(c), where, index[where] - self._starts[c]

    def ids(self, index: np.ndarray) -> pa.Array:
        pieces, order = [], []
        for c, where, local in self._chunks(index):
            pieces.append(self._ids[c].take(pa.array(local)))
            order.append(where)
        inverse = np.empty(len(index), np.int64)
        inverse[np.concatenate(order)] = np.arange(len(index))
        return pa.concat_arrays(pieces).take(pa.array(inverse))

    def sigs(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self._sigs[0].shape[1]), self._sigs[0].dtype)
        for c, where, local in self._chunks(index):
            out[where] = self._sigs[c][local]
        return out


class _Index:
    """Integer key -> value of the first row stored with it, as sorted runs (an LSM tree).

    Exact memory per entry (no hash-table load factor); runs merge while they are of similar
    size, up to `max_run` entries, so an append costs amortised O(log n) and no merge doubles
    the memory held. A bitmap of key prefixes (2**`filter_bits` bits) turns most absent keys
    away before any run is searched: most probes are misses, since most rows are new. The bitmap
    starts at 1 MB and grows fourfold, up to `filter_bits`, whenever it holds a bit per 8 entries:
    small runs stay small, and a large one stays about 1 in 8 full.
    """

    def __init__(self, max_run: int = 1 << 21, filter_bits: int = 27) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.max_run = max_run
        self.max_filter_bits = filter_bits
        self.filter_bits = min(23, filter_bits)
        self._filter = np.zeros(1 << (self.filter_bits - 3), np.uint8)
        self._entries = 0

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.runs)

    def _prefix(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prefix = keys >> keys.dtype.type(keys.dtype.itemsize * 8 - self.filter_bits)
        return (prefix >> 3).astype(np.intp), (prefix & 7).astype(np.uint8)

    def get(self, keys: np.ndarray) -> np.ndarray:
        found = np.full(len(keys), -1, np.int64)
        if not self.runs or len(keys) == 0:
            return found
        byte, bit = self._prefix(keys)
        maybe = np.flatnonzero((self._filter[byte] >> bit) & 1)
        if len(maybe) == 0:
            return found
        order = maybe[key_order(keys[maybe])]  # sorted probes walk each run in order: fewer cache misses
        probes, values = keys[order], np.full(len(order), -1, np.int64)
        for run, run_values in self.runs:
            pos = np.minimum(np.searchsorted(run, probes), len(run) - 1)
            hit = run[pos] == probes
            values[hit] = run_values[pos[hit]]
        found[order] = values
        return found

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Store keys that are unique and absent from the index."""
        if len(keys) == 0:
            return
        if np.any(keys[1:] < keys[:-1]):
            order = key_order(keys)
            keys, values = keys[order], values[order]
        self._entries += len(keys)
        if self._entries * 8 > 1 << self.filter_bits and self.filter_bits < self.max_filter_bits:
            self.filter_bits = min(self.filter_bits + 2, self.max_filter_bits)
            self._filter = np.zeros(1 << (self.filter_bits - 3), np.uint8)
            for run, _ in self.runs:
                self._mark(run)
        self._mark(keys)
        self.runs.append((keys, values.astype(np.int32)))
        while len(self.runs) > 1:
            (k1, v1), (k2, v2) = self.runs[-2], self.runs[-1]
            if len(k1) > 2 * len(k2) or len(k1) + len(k2) > self.max_run:
                break
            self.runs[-2:] = [_merge(k1, v1, k2, v2)]

    def _mark(self, keys: np.ndarray) -> None:
        byte, bit = self._prefix(keys)  # sorted, as the keys are: each byte's bits OR-ed in one go
        starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
        self._filter[byte[starts]] |= np.bitwise_or.reduceat(np.left_shift(np.uint8(1), bit), starts)


def key_order(keys: np.ndarray) -> np.ndarray:
    """A stable argsort of 32-bit keys: each key and its position packed in one 64-bit value and
    sorted by numpy's SIMD sort, 4x faster than a stable argsort here."""
    if keys.dtype.itemsize > 4 or len(keys) >= 1 << 32:
        return np.argsort(keys, kind="stable")
    packed = (keys.astype(np.uint64) << np.uint64(32)) | np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _merge(k1: np.ndarray, v1: np.ndarray, k2: np.ndarray, v2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, placed by binary search: no argsort index over both (the peak)."""
    at = np.searchsorted(k1, k2) + np.arange(len(k2))  # where each of run 2 lands in the merged run
    keys, values = _empty(len(k1) + len(k2), k1.dtype), _empty(len(k1) + len(k2), v1.dtype)
    mine = np.ones(len(keys), bool)
    mine[at] = False
    keys[at], values[at] = k2, v2
    keys[mine], values[mine] = k1, v1
    return keys, values


def _empty(n: int, dtype: Any, width: int = 1) -> np.ndarray:
    """An uninitialised (n,) or (n, width) array; past 1 MB, an anonymous mapping of its own.

    The index and store replace their large arrays as they grow: from the heap, the freed ones
    leave holes the process keeps (tens of MB at a million rows); a mapping goes back whole.
    """
    dtype = np.dtype(dtype)
    shape = (n,) if width == 1 else (n, width)
    if n * width * dtype.itemsize < 1 << 20:
        return np.empty(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, n * width * dtype.itemsize), dtype).reshape(shape)


# ---------------------------------------------------------------- exact


@dataclass(frozen=True)
class ExactDedup:
    """Reads `column`; adds `dup_cluster`. Drops rows whose normalised text (NFKC, case-folded,
    whitespace collapsed, punctuation dropped if asked) has the 64-bit hash of a kept row's."""

    column: str = "instruction"
    ignore_punctuation: bool = False
    rejects: Rejects | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        index, store = _Index(), _Store()
        self.notes.update(method="exact", ignore_punctuation=self.ignore_punctuation)

        def decide(texts: pa.Array, ids: pa.Array) -> Verdict:
            keys = np.fromiter((exact_key(t, self.ignore_punctuation) for t in texts.to_pylist()), np.uint64)
            prior = index.get(keys)
            owner = np.full(len(keys), -1)
            free = np.flatnonzero(prior < 0)
            _, first, inverse = np.unique(keys[free], return_index=True, return_inverse=True)
            owner[free] = free[first][inverse]
            keep = np.zeros(len(keys), bool)
            keep[free] = owner[free] == free
            owner[keep] = -1
            index.add(keys[keep], len(store) + np.arange(int(keep.sum())))
            store.append(ids.filter(pa.array(keep)))
            return Verdict(keep, prior, owner, np.where(keep, np.nan, 1.0))

        return _stream(batches, self.column, self.stats, self.rejects, decide, store)


def exact_key(text: str, ignore_punctuation: bool = False) -> int:
    """A 64-bit hash of `text` after NFKC, case folding and whitespace collapsing (never 0)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    if ignore_punctuation:
        norm = norm.translate(_punctuation())
    return xxhash.xxh3_64_intdigest(" ".join(norm.split()).encode()) or 1


@lru_cache(maxsize=1)
def _punctuation() -> dict[int, None]:
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")}


# ---------------------------------------------------------------- minhash


@dataclass(frozen=True)
class MinHashDedup:
    """Reads `column`; adds `dup_cluster`. Drops rows whose word n-gram set has a Jaccard
    similarity of at least `threshold` with a kept row that LSH banding proposes.

    Each kept row is held in `num_perm` bytes (`_Held`): a short row (at most `num_perm // 4`
    distinct shingles, as instructions are) as its shingles, so that its pairs are verified
    exactly; a longer one as the low 8 bits of each of its minimums (b-bit MinHash, Li and König
    2010, the chance collisions corrected), so that its pairs are estimated. The exact check is
    what keeps rows at true Jaccard 0.6-0.7 whose 128 minimums happen to agree at 0.7 or more.
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

        held = _Held(a, b)

        def prepare(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:  # no state but the first batch's ngram
            words, offsets = word_lists(texts)
            if "ngram" not in self.notes:
                self.notes["ngram"] = self.ngram or (1 if float(np.median(np.diff(offsets))) < 50 else 5)
            hashes, offsets = shingle_hashes(words, offsets, self.notes["ngram"])
            x = fold(hashes)
            sig = minhash_folded(x, offsets, a, b)
            return held.rows(x, offsets, low_bits(sig)), band_keys(sig, bands, rows, mix)

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


class _Held:
    """How MinHash holds a row and compares two: `num_perm` bytes and a 2-byte count a row.

    A row of at most `num_perm // 4` distinct shingles holds them (32-bit, sorted) and its count;
    a longer one holds its 8-bit signature and count 0. Two short rows are compared exactly (the
    Jaccard similarity of their shingle sets); a pair with a long row is estimated from 8-bit
    signatures, a short row's made again from its shingles, the very signature it had. So a
    short row costs the bytes of a signature, and the same pair gets the same figure whichever
    batch either row came in.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a, self.b = a, b
        self.width = len(a) // 4  # shingles a row's bytes hold

    def rows(self, x: np.ndarray, offsets: np.ndarray, sig8: np.ndarray) -> np.ndarray:
        """(rows, num_perm + 2) uint8: each row as held, from its folded shingle hashes and signature."""
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
        out = np.zeros((n, perms + 2), np.uint8)
        out[~short, :perms] = sig8[~short]
        out[short, : 4 * self.width] = sets[short].view(np.uint8)
        out[:, perms:] = np.where(short, counts, 0).astype("<u2").view(np.uint8).reshape(n, 2)
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
        return sims

    def _count(self, held: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(held[:, len(self.a) :]).view("<u2").ravel().astype(np.int64)

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


def check_threshold(threshold: float, what: str) -> None:
    """A threshold must lie in (0, 1]."""
    if not 0 < threshold <= 1:
        raise SynthError(f"--threshold {threshold} is outside (0, 1]; give a {what} such as 0.7")


# ---------------------------------------------------------------- semantic


@dataclass(frozen=True)
class SemanticDedup:
    """Reads `column`; adds `dup_cluster` and `min_neighbor_distance` (cosine distance to the
    nearest earlier kept row, Magpie's filter column). Drops rows closer than `threshold` to the
    nearest earlier kept row, unless each of the two holds a number the other lacks
    (`check_terms`: "What is 2 + 3?" is not a copy of "What is 7 * 6?", `synth.stages.similarity`).

    `embedder`: "static" (default: a model2vec model distilled once from all-MiniLM-L6-v2,
    numpy only at run time), "minilm" (all-MiniLM-L6-v2 through sentence-transformers), or a
    model name or path (`synth.stages.embed`). `threshold` None: the embedder's default,
    calibrated on real text (`filters/dedup.toml`); an embedder with none calibrates one on the
    first batch or refuses (`similarity.self_calibrate`). Search is exact up to `exact_limit`
    kept rows, then HNSW (usearch): approximate, and no longer bit-for-bit reproducible.
    `notes` says which threshold and index were used.
    """

    column: str = "instruction"
    threshold: float | None = None
    embedder: str = "static"
    model: str | None = None  # a sentence-transformers name or path: the embedder, if given
    exact_limit: int = 50_000
    device: str | None = None
    check_terms: bool = True
    read_ahead: bool = field(default=False, repr=False, compare=False)  # as MinHashDedup's
    rejects: Rejects | None = field(default=None, repr=False, compare=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.threshold is not None:
            check_threshold(self.threshold, "cosine distance")
        import importlib.util

        if importlib.util.find_spec("usearch") is None:
            raise SynthError("semantic dedup needs usearch: pip install 'synth[embed]'")

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        name = self.model or self.embedder
        encoder = load_embedder(name, self.device)
        index, store = _VectorIndex(encoder.dim, self.exact_limit), _Store()
        threshold, how = self.threshold, "given"
        if threshold is None and (threshold := similarity.semantic_default(name)) is not None:
            how = f"calibrated for {name} on real text ({similarity.THRESHOLDS})"
        if threshold is None:
            batches = iter(batches)
            first = next(batches, None)
            if first is None:
                return iter(())
            texts, _ = _checked_texts(first, self.column, Counter())
            threshold, how = similarity.self_calibrate(texts.to_pylist(), encoder.encode, name)
            batches = itertools.chain([first], batches)
        self.notes.update(method="semantic", embedder=encoder.name, threshold=round(threshold, 4))
        self.notes.update(threshold_from=how, index=index.kind)

        def prepare(texts: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
            return encoder.encode(texts.to_pylist()), similarity.key_terms(texts) if self.check_terms else None

        def decide(prepared: tuple[np.ndarray, np.ndarray | None], ids: pa.Array) -> Verdict:
            emb, terms = prepared
            guard = None if terms is None else similarity.TermsGuard(terms, store.sigs, len(store))
            verdict = _match_semantic(emb, index, threshold, guard=guard)
            self.stats["kept_terms_differ"] += guard.kept if guard else 0
            index.add(emb[verdict.keep])
            store.append(ids.filter(pa.array(verdict.keep)), None if terms is None else terms[verdict.keep])
            self.notes["index"] = index.kind
            return verdict

        def in_worker() -> bool:
            # Not for a transformer, which already uses every core (and whose minute-long batch
            # would hold up Ctrl-C), nor beside the HNSW graph's threads, where it gained nothing.
            return encoder.quick and index.graph is None

        extra, ahead = ("min_neighbor_distance",), in_worker if self.read_ahead else None
        return _stream(batches, self.column, self.stats, self.rejects, decide, store, extra, prepare, ahead)


def _match_semantic(
    emb: np.ndarray,
    index: _VectorIndex,
    threshold: float,
    block: int = 1024,
    guard: similarity.TermsGuard | None = None,
) -> Verdict:
    """Each row against kept rows of earlier batches (the index) and of its own batch before it,
    in row order: dropped when the nearest is closer than `threshold` (and `guard` finds no
    difference between the two). The batch meets itself a block of rows at a time (a `block` x
    rows similarity matrix, not rows x rows); within a block, only rows that have an earlier row
    of the block closer than `threshold` are settled one by one, in order. The rest is whole-array work."""
    n = len(emb)
    best, prior = index.search(emb)
    owner = np.full(n, -1)
    keep = np.zeros(n, bool)
    for start in range(0, n, block):
        stop = min(n, start + block)
        rows = np.arange(stop - start)
        sims = emb[start:stop] @ emb[:stop].T
        sims[:, start:][np.triu_indices(stop - start)] = -np.inf  # a row meets only the rows before it
        sims[:, :start][:, ~keep[:start]] = -np.inf  # earlier blocks are settled: their kept rows only
        _closer(sims[:, :start], rows, start, 0, best, owner, prior)
        kept = 1 - best[start:stop] >= threshold
        if guard is not None and not kept.all():
            near = start + np.flatnonzero(~kept)
            kept[near - start] = guard.differ(near, owner[near], prior[near])
        close = 1 - sims[:, start:] < threshold
        for r in np.flatnonzero(close.any(axis=1)):  # ascending: the rows before r are settled
            candidates = np.flatnonzero(close[r, :r] & kept[:r])
            if len(candidates) == 0:
                continue
            j = candidates[np.argmax(sims[r, start + candidates])]
            if sims[r, start + j] > best[start + r]:  # the nearest kept row is this block's row j
                kept[r] = guard is not None and guard.pair(start + r, start + j)
        sims[:, start:][:, ~kept] = -np.inf
        _closer(sims[:, start:], rows, start, start, best, owner, prior)
        keep[start:stop] = kept
    distance = np.where(np.isfinite(best), np.clip(1 - best, 0, 2), np.nan)  # NaN: no earlier row
    if guard is not None:
        guard.kept = int((keep & (distance < threshold)).sum())
    prior[keep], owner[keep] = -1, -1
    column = pa.array(distance, pa.float32(), from_pandas=True)
    return Verdict(keep, prior, owner, np.where(keep, np.nan, best), {"min_neighbor_distance": column})


def _closer(
    sims: np.ndarray, rows: np.ndarray, start: int, offset: int, best: np.ndarray, owner: np.ndarray, prior: np.ndarray
) -> None:
    """Where the most similar column of `sims` beats a row's best so far (strictly: on a tie
    the earlier row wins), it becomes the row's match."""
    if sims.shape[1] == 0:
        return
    j = np.argmax(sims, axis=1)
    s = sims[rows, j]
    better = np.flatnonzero(s > best[start : start + len(rows)])
    best[start + better], owner[start + better], prior[start + better] = s[better], offset + j[better], -1


class _VectorIndex:
    """Kept rows' unit embeddings: exact search (numpy inner products, in blocks) up to
    `exact_limit` rows, then an HNSW graph over 8-bit vectors (usearch): approximate, with
    similarities within a few hundredths, and no longer bit-for-bit reproducible.

    numpy's BLAS, not FAISS's flat index, for the exact part: 5x faster on the same two cores.
    """

    def __init__(self, dim: int, exact_limit: int) -> None:
        self.dim, self.exact_limit = dim, exact_limit
        self.exact: list[np.ndarray] = []
        self.ntotal = 0
        self.graph: Any = None
        self.kind = "exact (numpy inner products)"

    def search(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best, found = np.full(len(emb), -np.inf), np.full(len(emb), -1)
        if self.ntotal == 0 or len(emb) == 0:
            return best, found
        if self.graph is not None:
            matches = self.graph.search(emb, 1, threads=0)
            counts = getattr(matches, "counts", None)  # one query gives a Matches, without counts
            hit = np.asarray(counts).reshape(-1) > 0 if counts is not None else np.array([len(matches.keys) > 0])
            if hit.any():
                keys = np.asarray(matches.keys).reshape(len(emb), -1)[:, 0]
                sims = 1 - np.asarray(matches.distances, np.float64).reshape(len(emb), -1)[:, 0]
                best[hit], found[hit] = sims[hit], keys[hit]
            return best, found
        start = 0
        for chunk in self.exact:
            for q in range(0, len(emb), 1024):  # (1024, 4096) blocks: 16 MB of similarities at a time
                for c in range(0, len(chunk), 4096):
                    sims = emb[q : q + 1024] @ chunk[c : c + 4096].T
                    j = np.argmax(sims, axis=1)
                    s = sims[np.arange(len(j)), j].astype(np.float64)
                    better = s > best[q : q + 1024]  # strict: the earliest row wins a tie
                    best[q : q + 1024][better] = s[better]
                    found[q : q + 1024][better] = start + c + j[better]
            start += len(chunk)
        return best, found

    def add(self, emb: np.ndarray) -> None:
        if len(emb) == 0:
            return
        if self.graph is None and self.ntotal + len(emb) > self.exact_limit:
            from usearch.index import Index

            self.graph = Index(ndim=self.dim, metric="cos", dtype="i8", connectivity=16, expansion_add=64)
            self.graph.expansion_search = 64
            for start, chunk in zip(np.cumsum([0] + [len(c) for c in self.exact]), self.exact):
                self.graph.add(np.arange(start, start + len(chunk)), chunk, threads=0)
            self.exact = []
            self.kind = f"approximate (usearch HNSW, 8-bit, from kept row {self.exact_limit + 1})"
        emb = np.ascontiguousarray(emb, np.float32)
        if self.graph is not None:
            self.graph.add(np.arange(self.ntotal, self.ntotal + len(emb)), emb, threads=0)
        else:
            self.exact.append(emb)
        self.ntotal += len(emb)


dedup_exact = ExactDedup  # the names the docs use: from synth.stages import dedup_exact
dedup_minhash = MinHashDedup
dedup_semantic = SemanticDedup
