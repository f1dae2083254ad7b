"""Diversity you can measure and steer: the figures (`measure`), a novelty gate before answers
(`NoveltyGate`) and closed-loop spreading of Magpie's attempts over a taxonomy (`Spread`).

The figures, on unit embeddings X (n rows):
- Vendi score (Friedman and Dieng, 2023): exp of the entropy of the eigenvalues of K/n, K = X Xᵀ
  the cosine kernel. It is the effective number of distinct rows: 1 for identical rows, n for
  orthogonal ones. K/n and XᵀX/n share their non-zero eigenvalues, so it costs a d x d
  eigen-decomposition however many rows there are, and XᵀX adds up row by row (`VendiMeter`).
- mean nearest-neighbour cosine similarity; distinct-1/2 (unique word n-grams over all n-grams);
  the entropy of the rows' shares over k clusters (spherical k-means), each cluster labelled by
  its most typical row (the nearest its centroid); with a reference, the share of one set's
  clusters the other covers.

Past a `sample` of rows the figures are taken on a uniform sample, with bootstrap intervals
(multinomial row weights; the Vendi score's shifted by the bootstrap's own bias).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from synth.core import Batch, SynthError, add_columns
from synth.stages.dedup import SemanticDedup
from synth.stages.embed import STATIC, load_embedder

SAMPLE = 10_000  # rows the figures are taken on; past it a uniform sample
CLUSTERS = 20
BOOTSTRAP = 200
BLOCKS = 100  # the bootstrap's resampling unit: the sample in 100 blocks
NEAREST = 2_000  # rows whose nearest neighbour in the sample is found (all of them, if fewer)
_WORD = re.compile(r"\w+")


# ---------------------------------------------------------------- the figures


def vendi_from_kernel(kernel: np.ndarray) -> float:
    """The Vendi score of a similarity kernel (n x n, ones on the diagonal): exp of the Shannon
    entropy of the eigenvalues of kernel / n."""
    n = len(kernel)
    if n == 0:
        return 0.0
    return _exp_entropy(np.linalg.eigvalsh(np.asarray(kernel, np.float64) / n))


def vendi_score(emb: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The Vendi score of unit rows `emb` under the cosine kernel, through the d x d matrix XᵀX/n
    (same non-zero eigenvalues as K/n). `weights` (summing to 1) weigh rows, as a bootstrap does."""
    if len(emb) == 0:
        return 0.0
    x = np.asarray(emb, np.float64)
    w = np.full(len(x), 1 / len(x)) if weights is None else np.asarray(weights, np.float64)
    return _exp_entropy(np.linalg.eigvalsh((x * w[:, None]).T @ x))


def _exp_entropy(eigenvalues: np.ndarray) -> float:
    p = np.clip(eigenvalues, 0, None)
    p = p[p > 1e-12] / p.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass
class VendiMeter:
    """The Vendi score of every row added so far, kept as the running sum of x xᵀ: memory and
    cost stay at d x d however many rows come."""

    dim: int
    rows: int = 0
    moment: np.ndarray | None = field(default=None, repr=False)  # None until the first add

    def add(self, emb: np.ndarray) -> None:
        """Count unit rows `emb` in."""
        if self.moment is None:
            self.moment = np.zeros((self.dim, self.dim))
        x = np.asarray(emb, np.float64)
        self.moment += x.T @ x
        self.rows += len(x)

    def score(self) -> float:
        """The Vendi score of the rows so far (0 before any)."""
        if not self.rows or self.moment is None:
            return 0.0
        return _exp_entropy(np.linalg.eigvalsh(self.moment / self.rows))


def nearest_similarity(emb: np.ndarray, block: int = 1024, queries: np.ndarray | None = None) -> np.ndarray:
    """Each row's (or each of the rows `queries`') cosine similarity to its nearest other row
    (NaN for a lone row)."""
    n = len(emb)
    rows = np.arange(n) if queries is None else np.asarray(queries)
    out = np.full(len(rows), np.nan)
    if n < 2:
        return out
    x = np.asarray(emb, np.float32)
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        sims = x[part] @ x.T
        sims[np.arange(len(part)), part] = -np.inf
        out[start : start + block] = sims.max(axis=1)
    return out


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct word n-grams over all word n-grams (lower-cased `\\w+` words), 0 with none."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = _WORD.findall((text or "").lower())
        grams = list(zip(*(words[i:] for i in range(n))))
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def kmeans(emb: np.ndarray, k: int, seed: int = 0, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine), k-means++ start: (unit centroids, each row's cluster)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(emb, np.float32)
    k = max(1, min(k, len(x)))
    centres = [x[rng.integers(len(x))]]
    closest = 1 - x @ centres[0]
    for _ in range(1, k):
        weight = np.clip(closest, 0, None) ** 2
        pick = rng.choice(len(x), p=weight / weight.sum()) if weight.sum() > 0 else rng.integers(len(x))
        centres.append(x[pick])
        closest = np.minimum(closest, 1 - x @ x[pick])
    c = np.stack(centres)
    assign = np.zeros(len(x), int)
    for _ in range(iterations):
        assign_new = np.argmax(x @ c.T, axis=1)
        if _ and np.array_equal(assign_new, assign):
            break
        assign = assign_new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                mean = members.sum(axis=0)
                c[j] = mean / max(np.linalg.norm(mean), 1e-12)
    return c, np.argmax(x @ c.T, axis=1)


def clusters(emb: np.ndarray, texts: Sequence[str], k: int, seed: int = 0) -> dict[str, Any]:
    """Entropy (bits) of the rows' shares over k clusters, normalised by log2 k, and each
    cluster's size, share and label (its most typical row: the nearest its centroid)."""
    centres, assign = kmeans(emb, k, seed)
    sizes = np.bincount(assign, minlength=len(centres))
    share = sizes / max(sizes.sum(), 1)
    p = share[share > 0]
    entropy = float(-(p * np.log2(p)).sum())
    listed = []
    for j in np.argsort(-sizes):
        members = np.flatnonzero(assign == j)
        if not len(members):
            continue
        typical = members[np.argmax(emb[members] @ centres[j])]
        listed.append({"size": int(sizes[j]), "share": float(share[j]), "label": _short(texts[typical])})
    k = len(centres)
    return {
        "k": k,
        "entropy_bits": entropy,
        "entropy_normalised": entropy / np.log2(k) if k > 1 else 0.0,
        "clusters": listed,
    }


def coverage(of: np.ndarray, by: np.ndarray, k: int, seed: int = 0) -> float:
    """Share of `of`'s k clusters that `by` covers: a cluster is covered when some row of `by` is
    nearest its centroid and at least as close to it as the cluster's own median member."""
    centres, assign = kmeans(of, k, seed)
    sims_of = np.max(of @ centres.T, axis=1)
    bar = np.array([np.median(sims_of[assign == j]) if (assign == j).any() else np.inf for j in range(len(centres))])
    sims = by @ centres.T
    nearest = np.argmax(sims, axis=1)
    close = sims[np.arange(len(by)), nearest] >= bar[nearest]
    return len(set(nearest[close].tolist())) / len(centres)


def _short(text: str, width: int = 100) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a uniform sample of `size` of `n` rows (all of them if fewer)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def measure(
    texts: Sequence[str],
    embedder: str = STATIC,
    *,
    k: int = CLUSTERS,
    seed: int = 0,
    reference: Sequence[str] | None = None,
    rows: int | None = None,
    bootstrap: int = BOOTSTRAP,
) -> dict[str, Any]:
    """The diversity figures of `texts` (already sampled if the set is large: `rows` says how many
    it had), with 95% bootstrap intervals for the Vendi score and the nearest-neighbour similarity;
    with `reference`, the share of each set's clusters the other covers."""
    if not texts:
        raise SynthError("no text to measure; name a column with text in it with --column")
    model = load_embedder(embedder)
    emb = model.encode(list(texts))
    m = len(texts)
    rng = np.random.default_rng(seed)
    # The bootstrap resamples blocks of rows (in random order): each block's sum of x xᵀ is made
    # once, so a resample is a weighted sum of `blocks` d x d matrices (all of them one product),
    # not a pass over the rows; the blocks' sum is XᵀX, the whole set's.
    blocks = np.array_split(rng.permutation(m), min(m, BLOCKS))
    sizes = np.array([len(b) for b in blocks], np.float64)
    draws = rng.multinomial(len(blocks), np.full(len(blocks), 1 / len(blocks)), size=bootstrap)
    with (
        _one_thread()
    ):  # small products and 256 x 256 eigen-decompositions: 25x faster on one BLAS thread of a busy machine
        x = np.asarray(emb, np.float64)
        moments = np.stack([x[b].T @ x[b] for b in blocks])
        vendi = _exp_entropy(np.linalg.eigvalsh(moments.sum(axis=0) / m))
        flat = moments.reshape(len(blocks), -1)
        scores: list[float] = []
        for part in np.array_split(draws, max(1, bootstrap // 50)):  # 50 resamples at a time: 26 MB
            sums = (part @ flat).reshape(len(part), *moments.shape[1:]) / (part @ sizes)[:, None, None]
            scores += [_exp_entropy(v) for v in np.linalg.eigvalsh(sums.astype(np.float32))]  # float32: 2x faster
        vendis = np.array(scores)
    queries = np.sort(rng.choice(m, NEAREST, replace=False)) if m > NEAREST else np.arange(m)
    near = nearest_similarity(emb, queries=queries)
    boot = rng.multinomial(len(near), np.full(len(near), 1 / len(near)), size=bootstrap)
    nears = np.array([np.nansum(w * near) / max(w[~np.isnan(near)].sum(), 1e-12) for w in boot])
    figures: dict[str, Any] = {
        "rows": rows if rows is not None else m,
        "sample": m,
        "embedder": model.name,
        "vendi": vendi,
        "vendi_interval": _interval(vendis, vendi),
        "vendi_per_row": vendi / m,
        "vendi_per_row_interval": [v / m for v in _interval(vendis, vendi)],
        "nn_similarity": float(np.nanmean(near)) if m > 1 else float("nan"),
        "nn_rows": len(queries),
        "nn_similarity_interval": _interval(nears),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        **clusters(emb, texts, k, seed),
    }
    if reference is not None:
        ref = model.encode(list(reference))
        figures["reference"] = {
            "sample": len(ref),
            "covers_reference": coverage(ref, emb, k, seed),
            "covered_by_reference": coverage(emb, ref, k, seed),
        }
    return figures


def _one_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def _interval(values: np.ndarray, estimate: float | None = None) -> list[float]:
    """The 95% percentile bootstrap interval; with `estimate`, shifted by the bootstrap's bias
    (a resample repeats rows, which lowers a Vendi score: more so the smaller the sample)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    shift = 0.0 if estimate is None else estimate - float(np.median(values))
    return [float(np.percentile(values, 2.5)) + shift, float(np.percentile(values, 97.5)) + shift]


def table(figures: dict[str, Any], name: str = "") -> str:
    """The figures as plain-text lines (the terminal and report.md)."""
    head = f"{name} " if name else ""
    sampled = f" (a uniform sample of {figures['sample']})" if figures["sample"] < figures["rows"] else ""
    lo, hi = figures["vendi_interval"]
    plo, phi = figures["vendi_per_row_interval"]
    nlo, nhi = figures["nn_similarity_interval"]
    lines = [
        f"{head}rows: {figures['rows']}{sampled}; embedder {figures['embedder']}",
        f"{head}Vendi score: {figures['vendi']:.2f} (95% interval {lo:.2f}-{hi:.2f}); "
        f"per row {figures['vendi_per_row']:.4f} ({plo:.4f}-{phi:.4f})",
        f"{head}mean nearest-neighbour similarity: {figures['nn_similarity']:.3f} ({nlo:.3f}-{nhi:.3f})",
        f"{head}distinct-1: {figures['distinct_1']:.3f}, distinct-2: {figures['distinct_2']:.3f}",
        f"{head}cluster entropy: {figures['entropy_bits']:.2f} bits over {figures['k']} clusters "
        f"({figures['entropy_normalised']:.2f} of the most)",
    ]
    if "reference" in figures:
        ref = figures["reference"]
        lines.append(
            f"{head}covers {ref['covers_reference']:.0%} of the reference's clusters; "
            f"the reference covers {ref['covered_by_reference']:.0%} of its clusters"
        )
    for c in figures["clusters"]:
        lines.append(f"  {c['share']:6.1%}  {c['label']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the novelty gate


@dataclass(frozen=True)
class NoveltyGate:
    """Reads `column`; drops a row whose nearest earlier kept row is closer than `distance`
    (cosine distance), counted as `dropped_similar`: placed before the answers, no response
    tokens are spent on a near-repeat. Online and batch-independent: it is the semantic dedup
    stage (`SemanticDedup`, its index and its order) with its own counts."""

    distance: float | None = SemanticDedup.threshold  # None: the embedder's calibrated default
    column: str = "instruction"
    embedder: str = STATIC
    stats: Counter[str] = field(default_factory=Counter, compare=False, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        dedup = SemanticDedup(column=self.column, threshold=self.distance, embedder=self.embedder)
        counted = 0
        for batch in dedup(batches):
            self.stats["dropped_similar"] += dedup.stats["dropped"] - counted
            counted = dedup.stats["dropped"]
            yield batch.drop_columns([c for c in ("dup_cluster", "min_neighbor_distance") if c in batch.column_names])


# ---------------------------------------------------------------- spreading


@dataclass
class Spread:
    """Reads `system_prompt` if present; adds `spread_item` and a per-row `system_prompt`: the
    item drawn, put into `template` (`{item}`), then any steering prompt already there.

    Items belong to clusters (`cluster` per item: a taxonomy's macro topics, else k-means over the
    items' embeddings). Each draw picks a cluster with weight exp(-(c - min c)), c the mean of the
    rows kept so far whose instruction lies nearest the cluster (fed back by `observe()`, placed
    after the run's last drop; this batch's draws count as kept until then) and the draws made
    from it; then the least-drawn item in it. So draws move toward the clusters the kept rows
    leave empty, and a cluster the model never writes into is still filled up by its draws
    rather than drawn forever. `describe()` (the card) lists
    each cluster's draws and kept rows.
    """

    kind: str
    items: list[str]
    template: str = "{item}"
    cluster: list[int] | None = None
    names: list[str] | None = None
    embedder: str = STATIC
    seed: int = 0
    column: str = "instruction"
    stats: Counter[str] = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        if not self.items:
            raise SynthError(f"--spread {self.kind} has no items to draw from")
        model = load_embedder(self.embedder)
        self._encode = model.encode
        emb = model.encode(self.items)
        if self.cluster is None:
            _, assign = kmeans(emb, min(16, len(self.items)), self.seed)
            self.cluster = assign.tolist()
        labels = np.asarray(self.cluster)
        k = int(labels.max()) + 1
        centres = np.stack([emb[labels == j].sum(axis=0) for j in range(k)])
        self._centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        self._members = [np.flatnonzero(labels == j) for j in range(k)]
        if self.names is None:
            self.names = [self.items[m[np.argmax(emb[m] @ self._centres[j])]] for j, m in enumerate(self._members)]
        self.kept = np.zeros(k, int)
        self.drawn = np.zeros(k, int)
        self._item_draws = np.zeros(len(self.items), int)
        self.meter = VendiMeter(model.dim)

    def weights(self, extra: np.ndarray | None = None) -> np.ndarray:
        """Each cluster's chance of the next draw."""
        counts = (self.kept + (0 if extra is None else extra) + self.drawn) / 2
        w = np.exp(-(counts - counts.min()))
        w[[len(m) == 0 for m in self._members]] = 0
        return w / w.sum()

    def draw(self, rows: int, rng: np.random.Generator) -> list[int]:
        """`rows` item positions, each cluster counted as drawn once picked (within the batch too)."""
        pending = np.zeros(len(self.kept), int)
        picks = []
        for _ in range(rows):
            j = int(rng.choice(len(self.kept), p=self.weights(pending)))
            members = self._members[j]
            least = members[self._item_draws[members] == self._item_draws[members].min()]
            item = int(rng.choice(least))
            pending[j] += 1
            self._item_draws[item] += 1
            self.drawn[j] += 1
            picks.append(item)
        return picks

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            first = batch["id"][0].as_py() if batch.num_rows else ""
            rng = np.random.default_rng([self.seed, _number(first)])
            picks = self.draw(batch.num_rows, rng)
            steer = batch["system_prompt"].to_pylist() if "system_prompt" in batch.column_names else [None] * len(picks)
            items = [self.items[i] for i in picks]
            systems = [self.template.format(item=it) + (f"\n\n{s}" if s else "") for it, s in zip(items, steer)]
            self.stats["spread_draws"] += len(picks)
            yield add_columns(
                batch, spread_item=pa.array(items, pa.string()), system_prompt=pa.array(systems, pa.string())
            )

    def observe(self) -> Any:
        """A pass-through stage that counts kept rows into their nearest cluster."""

        def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
            for batch in batches:
                texts = [t for t in batch[self.column].to_pylist() if isinstance(t, str)] if batch.num_rows else []
                if texts:
                    emb = self._encode(texts)
                    self.meter.add(emb)
                    np.add.at(self.kept, np.argmax(emb @ self._centres.T, axis=1), 1)
                yield batch

        stage.__qualname__ = "spread_feedback"
        return stage

    def describe(self) -> dict[str, Any]:
        """The card's record: the source, and each cluster's draws and kept rows."""
        rows = self.meter.rows
        return {
            "stage": "Spread",
            "kind": self.kind,
            "items": len(self.items),
            "kept_vendi": round(self.meter.score(), 3),
            "kept_vendi_per_row": round(self.meter.score() / rows, 4) if rows else None,
            "clusters": [
                {"name": _short(str(name), 60), "drawn": int(d), "kept": int(k)}
                for name, d, k in zip(self.names or [], self.drawn, self.kept)
            ],
        }


def spread_rows(
    batches: Iterable[Batch], column: str, n: int, *, k: int = 16, seed: int = 0, cap: int = 10_000, size: int = 64
) -> Iterator[Batch]:
    """`n` rows of the first `cap`, spread over the set: `column` embedded, clustered (k-means, at
    most `k` clusters), and the rows taken in turn from each cluster (each cluster's rows in their
    order), so the n rows cover every cluster rather than the head of the set. The rows keep
    their order in the set (all of them if there are no more than `n`), in batches of `size`."""
    tables, held = [], 0
    for batch in batches:
        tables.append(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch)
        held += batch.num_rows
        if held >= cap:
            break
    if not tables:
        return
    table = pa.concat_tables(tables, promote_options="default").slice(0, cap)
    if table.num_rows > n:
        _, assign = kmeans(load_embedder().encode(table[column].to_pylist()), min(k, n), seed)
        queues = [list(np.flatnonzero(assign == j)) for j in range(int(assign.max()) + 1)]
        picked: list[int] = []
        while len(picked) < n:
            for queue in queues:
                if queue and len(picked) < n:
                    picked.append(int(queue.pop(0)))
        table = table.take(pa.array(sorted(picked)))
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def _number(text: str) -> int:
    digits = re.search(r"(\d+)$", text)
    return int(digits.group(1)) if digits else sum(map(ord, text))
