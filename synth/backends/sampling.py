"""Token sampling for many sequences at once, from a (rows x vocab) matrix of logits.

Gemma 3's vocabulary has 262k tokens, so anything done per row in Python over the whole
vocabulary costs more than the model's step. The full-vocabulary work is done once for all
rows (an argmax, and for plain temperature sampling an exp and block sums); truncating
samplers (top-k, top-p, min-p, a grammar) look at the few tokens near the best one and widen
only when those do not hold what the truncation keeps. Order as in llama-cpp-python: top-k,
top-p and min-p on the model's own distribution, then temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

# A grammar's say over candidate tokens: ids and their logits in, a keep-mask out.
Allow = Callable[[np.ndarray, np.ndarray], np.ndarray]
_BLOCK = 512
_WIDTHS = (10.0, 20.0, math.inf)  # candidate windows below the best logit, tried in turn


class Penalties(Protocol):  # read-only members, so a frozen dataclass (llamacpp_batch.Request) is one
    @property
    def repeat_penalty(self) -> float: ...
    @property
    def presence_penalty(self) -> float: ...
    @property
    def frequency_penalty(self) -> float: ...


def penalise(row: np.ndarray, recent: Sequence[int], p: Penalties) -> None:
    """Lower, in place, the logits of the tokens in `recent`, as llama.cpp's penalties sampler does:
    a positive logit divided by `repeat_penalty`, a negative one multiplied by it, then minus
    `presence_penalty` once and `frequency_penalty` per occurrence."""
    if not len(recent):
        return
    ids, counts = np.unique(np.asarray(recent, np.int64), return_counts=True)
    values = row[ids]
    if p.repeat_penalty != 1.0:
        values = np.where(values > 0, values / p.repeat_penalty, values * p.repeat_penalty)
    values = values - counts * p.frequency_penalty - p.presence_penalty
    row[ids] = values


class Settings(Protocol):  # read-only, as Penalties
    @property
    def temperature(self) -> float: ...
    @property
    def top_p(self) -> float: ...
    @property
    def top_k(self) -> int: ...
    @property
    def min_p(self) -> float: ...


def sample(
    logits: np.ndarray,
    settings: Sequence[Settings],
    rngs: Sequence[np.random.Generator | None],
    allow: Sequence[Allow | None] | None = None,
) -> list[int]:
    """One token per row; row i samples with `settings[i]` and draws from `rngs[i]`.

    -1 for a row whose grammar allows no token."""
    allow = allow or [None] * len(settings)
    tokens = logits.argmax(axis=1)
    best = logits[np.arange(len(tokens)), tokens]
    plain = [i for i, s in enumerate(settings) if s.temperature > 0 and not _truncates(s) and allow[i] is None]
    if plain:
        for i, token in zip(plain, _plain(logits, best, settings, rngs, plain)):
            tokens[i] = token
    for i, s in enumerate(settings):
        if i not in plain and (allow[i] is not None or (s.temperature > 0 and _truncates(s))):
            tokens[i] = _truncated(logits[i], best[i], s, rngs[i], allow[i])
    return [int(t) for t in tokens]


def _truncates(s: Settings) -> bool:
    return s.top_k > 0 or s.top_p < 1.0 or s.min_p > 0


def _plain(
    logits: np.ndarray,
    best: np.ndarray,
    settings: Sequence[Settings],
    rngs: Sequence[np.random.Generator | None],
    rows: list[int],
) -> list[int]:
    """Temperature sampling over the whole vocabulary: exact, one exp pass for all rows."""
    scale = np.array([1.0 / settings[i].temperature for i in rows], np.float32)[:, None]
    weights = logits[rows] if len(rows) < len(logits) else logits.copy()
    weights -= best[rows, None]
    weights *= scale
    np.exp(weights, out=weights)
    starts = np.arange(0, weights.shape[1], _BLOCK)
    blocks = np.add.reduceat(weights, starts, axis=1, dtype=np.float64).cumsum(axis=1)
    out = []
    for j, i in enumerate(rows):
        rng = rngs[i] or np.random.default_rng()
        target = rng.random() * blocks[j, -1]
        b = min(int(np.searchsorted(blocks[j], target, side="right")), len(starts) - 1)
        within = target - (blocks[j, b - 1] if b else 0.0)
        segment = np.cumsum(weights[j, starts[b] : starts[b] + _BLOCK], dtype=np.float64)
        out.append(starts[b] + min(int(np.searchsorted(segment, within, side="right")), len(segment) - 1))
    return out


def _truncated(row: np.ndarray, best: float, s: Settings, rng: np.random.Generator | None, allow: Allow | None) -> int:
    """Top-k, top-p, min-p (and a grammar) over candidates near the best token."""
    for width in _WIDTHS:
        complete = width == math.inf
        ids = np.flatnonzero(row >= best - width) if not complete else np.arange(len(row))
        values = row[ids]
        order = np.argsort(-values, kind="stable")
        ids, values = ids[order], values[order].astype(np.float64)
        if allow is not None:
            keep = allow(ids, values)
            ids, values = ids[keep], values[keep]
            if not len(ids):
                continue  # the grammar rules out every likely token: ask it about more
            complete = True  # the grammar's own distribution: close enough within the window
        if s.temperature <= 0:
            return int(ids[0])
        n = len(ids)
        if s.top_k > 0 and n >= s.top_k:
            n, complete = s.top_k, True
        if s.top_p < 1.0:
            mass = np.exp(values[:n] - values[0])
            total = mass.sum() if complete else float(np.exp(row.astype(np.float64) - best).sum())
            cut = int(np.searchsorted(np.cumsum(mass) / total, s.top_p))
            if cut < n:
                n, complete = cut + 1, True
        if s.min_p > 0:
            n = min(n, int(np.count_nonzero(values[:n] >= values[0] + math.log(s.min_p))))
            complete = complete or math.log(s.min_p) >= -width
        if complete:
            weights = np.cumsum(np.exp((values[:n] - values[0]) / s.temperature))
            draw = (rng or np.random.default_rng()).random() * weights[-1]
            return int(ids[min(int(np.searchsorted(weights, draw, side="right")), n - 1)])
    return -1  # a grammar that allows no token at all: the caller ends the sequence
