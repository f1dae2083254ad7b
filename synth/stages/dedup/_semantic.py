"""Semantic dedup: each row's embedding against kept rows' (the vector index) and against the
rows of its own batch before it."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from synth.core import Batch, SynthError
from synth.stages import similarity
from synth.stages.dedup._index import _Store, _VectorIndex
from synth.stages.dedup._lexical import CopyCheck, calibrated_lexical, word_sketches
from synth.stages.dedup._readahead import _checked_texts
from synth.stages.dedup._stream import Rejects, Verdict, _stream, check_threshold
from synth.stages.embed import load_embedder


@dataclass(frozen=True)
class SemanticDedup:
    """Reads `column`; adds `dup_cluster` and `min_neighbor_distance` (cosine distance to the
    nearest earlier kept row, Magpie's filter column). Drops rows closer than `threshold` to the
    nearest earlier kept row, unless each of the two holds a number the other lacks
    (`check_terms`: "What is 2 + 3?" is not a copy of "What is 7 * 6?", `synth.stages.similarity`).
    `lexical`: an embedder calibrated with a lexical confirmation (minilm) also drops a row a
    little further off when it shares most of its words with that kept row (`_lexical`).

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
    lexical: bool = True
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
        lexical = calibrated_lexical(name) if self.lexical else None
        if lexical is not None and lexical.within > threshold:
            self.notes.update(lexical_within=lexical.within, lexical_jaccard=lexical.jaccard)
        else:
            lexical = None
        held = similarity.TERMS_HELD

        def prepare(texts: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
            terms = similarity.key_terms(texts) if self.check_terms else None
            return encoder.encode(texts.to_pylist()), terms, word_sketches(texts) if lexical else None

        def decide(prepared: tuple[np.ndarray, np.ndarray | None, np.ndarray | None], ids: pa.Array) -> Verdict:
            emb, terms, sketches = prepared
            guard = None
            if terms is not None or sketches is not None:  # the store holds kept rows' terms, then their words
                stored = store.sigs if sketches is None else (lambda i: store.sigs(i)[:, :held])
                terms_guard = None if terms is None else similarity.TermsGuard(terms, stored, len(store))
                guard = CopyCheck(threshold, lexical, sketches, lambda i: store.sigs(i)[:, held:], terms_guard)
            verdict = _match_semantic(emb, index, threshold, guard=guard)
            self.stats["kept_terms_differ"] += guard.terms_kept if guard else 0
            if lexical is not None and guard is not None:
                self.stats["dropped_lexical"] += guard.lexical_dropped
            index.add(emb[verdict.keep])
            store.append(ids.filter(pa.array(verdict.keep)), _held(terms, sketches, verdict.keep))
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
    guard: CopyCheck | None = None,
) -> Verdict:
    """Each row against kept rows of earlier batches (the index) and of its own batch before it,
    in row order: dropped when the nearest is closer than `threshold`, and `guard` (where given)
    finds the two copies (the terms check; the lexical confirmation, out to `guard.within`). The
    batch meets itself a block of rows at a time (a `block` x rows similarity matrix, not rows x
    rows); within a block, only rows that have an earlier row of the block closer than that are
    settled one by one, in order. The rest is whole-array work."""
    n = len(emb)
    within = threshold if guard is None else max(threshold, guard.within)  # candidates for the guard
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
        kept = 1 - best[start:stop] >= within
        if guard is not None and not kept.all():
            near = start + np.flatnonzero(~kept)
            kept[near - start] = guard.differ(near, owner[near], prior[near], best[near])
        close = 1 - sims[:, start:] < within
        for r in np.flatnonzero(close.any(axis=1)):  # ascending: the rows before r are settled
            candidates = np.flatnonzero(close[r, :r] & kept[:r])
            if len(candidates) == 0:
                continue
            j = candidates[np.argmax(sims[r, start + candidates])]
            if sims[r, start + j] > best[start + r]:  # the nearest kept row is this block's row j
                kept[r] = guard is not None and guard.pair(start + r, start + j, sims[r, start + j])
        sims[:, start:][:, ~kept] = -np.inf
        _closer(sims[:, start:], rows, start, start, best, owner, prior)
        keep[start:stop] = kept
    distance = np.where(np.isfinite(best), np.clip(1 - best, 0, 2), np.nan)  # NaN: no earlier row
    if guard is not None:
        guard.settle(keep)
    prior[keep], owner[keep] = -1, -1
    column = pa.array(distance, pa.float32(), from_pandas=True)
    return Verdict(keep, prior, owner, np.where(keep, np.nan, best), {"min_neighbor_distance": column})


def _held(terms: np.ndarray | None, sketches: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    """What the store keeps of the rows kept: their terms (zeros without the check), then their word sketches."""
    if sketches is None:
        return None if terms is None else terms[keep]
    terms = np.zeros((len(sketches), similarity.TERMS_HELD), np.uint32) if terms is None else terms
    return np.concatenate([terms[keep], sketches[keep]], axis=1)


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
