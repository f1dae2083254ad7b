"""When two texts are copies: dedup's thresholds, calibrated on real text, and the terms check.

Thresholds are data (`filters/dedup.toml`): one cosine distance per embedder synth ships, chosen
from precision/recall curves on real text installed on any Debian machine with Python (standard
library docstrings, package descriptions, man pages) and on template instructions, with near-copies
planted (`benchmarks/dedup.py --calibrate` measures them again). An embedder with no entry (a
model2vec folder, a sentence-transformers model) calibrates itself on the input (`self_calibrate`)
or refuses, asking for a threshold.

The terms check: a near pair where each text holds a number or a name the other lacks ("What is
2 + 3?" and "What is 7 * 6?"; "Translate this into French: ..." and "... into German: ...") is two
requests, whatever the embedder says. A static embedder averages token vectors, and digits weigh
almost nothing in that average (cosine distance 0.002 for the first pair); one word in a long
request weighs little in any embedder. A planted copy never trips it: case noise keeps every
name, and a changed or added word takes a term away or adds a lower-case one, on one side only.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from synth.core import SynthError
from synth.resources import data_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

THRESHOLDS = "filters/dedup.toml"
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# A name: a capitalised word that does not open the text or a sentence (after . ! ? : ; or a quote).
NAME = re.compile(r"(?<=[^\s.!?:;\"'(\[])\s+(\w+)")
TERMS_HELD = 8  # a row's distinct terms held (the smallest hashes): 32 bytes a row


@lru_cache(maxsize=1)
def calibrated() -> dict[str, Any]:
    """`filters/dedup.toml`, parsed."""
    return tomllib.loads(data_file(THRESHOLDS).read_text(encoding="utf-8"))


def semantic_default(embedder: str) -> float | None:
    """The calibrated cosine distance for `embedder` ("static", "minilm"); None where there is none."""
    entry = calibrated().get("semantic", {}).get(embedder)
    return None if entry is None else float(entry["threshold"])


def minhash_default() -> float:
    """The calibrated Jaccard similarity for MinHash."""
    return float(calibrated()["minhash"]["threshold"])


# ---------------------------------------------------------------- the names-and-numbers check


def key_terms(texts: pa.Array) -> np.ndarray:
    """(rows, TERMS_HELD) uint32: hashes of each text's distinct numbers ("1,000" as "1000") and
    names (words capitalised inside a sentence, case-folded; not words in capitals, which case
    noise makes), smallest first, 0 for none."""
    out = np.zeros((len(texts), TERMS_HELD), np.uint32)
    some = np.flatnonzero(pc.match_substring_regex(texts, r".\s*\p{Lu}|\d").to_numpy(zero_copy_only=False))
    for i, text in zip(some.tolist(), texts.take(pa.array(some, pa.int64())).to_pylist()):
        terms = [n.replace(",", "") for n in NUMBER.findall(text)]
        terms += [w.casefold() for w in NAME.findall(text) if w[0].isupper() and not w.isupper()]
        keys = sorted({xxhash.xxh32_intdigest(t.encode()) or 1 for t in terms})
        out[i, : min(len(keys), TERMS_HELD)] = keys[:TERMS_HELD]
    return out


def terms_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row: each of the two texts holds a key term (`key_terms`) the other lacks.

    A copy that drops or adds a number or a name, or changes a case, is still a copy; one that
    swaps one for another ("into French", "into German") is not. Past TERMS_HELD terms a text is
    judged on the smallest hashes it holds, as a sketch."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    shared = (a[:, :, None] == b[:, None, :]) & (a[:, :, None] != 0)
    a_lacks = ((a != 0) & ~shared.any(axis=2)).any(axis=1)
    b_lacks = ((b != 0) & ~shared.any(axis=1)).any(axis=1)
    return a_lacks & b_lacks


@dataclass
class TermsGuard:
    """Whether a row and the kept row nearest it hold different numbers or names (`terms_differ`):
    the batch's `key_terms`, and the kept rows' of earlier batches by their index in the store.
    `kept`: rows the check kept, set by the caller once the batch is settled."""

    terms: np.ndarray
    stored: Callable[[np.ndarray], np.ndarray]
    stored_rows: int
    kept: int = 0

    def differ(self, rows: np.ndarray, owner: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """For each of `rows`: its match (`owner` in the batch, else `prior` in the store) holds other terms."""
        out = np.zeros(len(rows), bool)
        inside, earlier = owner >= 0, (owner < 0) & (prior >= 0)
        if inside.any():
            out[inside] = terms_differ(self.terms[rows[inside]], self.terms[owner[inside]])
        if earlier.any() and self.stored_rows:
            out[earlier] = terms_differ(self.terms[rows[earlier]], self.stored(prior[earlier]))
        return out

    def pair(self, i: int, j: int) -> bool:
        """Rows i and j of the batch hold different terms."""
        return bool(terms_differ(self.terms[i], self.terms[j])[0])


# ---------------------------------------------------------------- self-calibration

CALIBRATION_ROWS = 200  # fewer distinct rows than this give no usable distribution
CALIBRATION_SAMPLE = 2000
FALSE_NEIGHBOURS = 0.002  # share of distinct rows whose nearest neighbour may fall under the threshold


def self_calibrate(texts: list[str], encode: Callable[[list[str]], np.ndarray], name: str) -> tuple[float, str]:
    """A cosine distance for an embedder with no calibrated entry, from its own distances on `texts`.

    Two distributions on up to CALIBRATION_SAMPLE of the texts: each text's distance to its
    nearest other text (texts whose words are a copy of another's left out), and each text's
    distance to a near-copy of itself made as the benchmark makes them (one word changed or
    added). The threshold is the largest distance that at most FALSE_NEIGHBOURS of the texts
    have their nearest other text under, so long as it catches most edited copies; when it
    cannot (too few rows, or the two distributions overlap), this refuses and asks for a
    threshold, saying why. Returns the threshold and how it was found.
    """
    unique = list(dict.fromkeys(t for t in texts if len(t.split()) >= 3))
    sample = random.Random(0).sample(unique, min(len(unique), CALIBRATION_SAMPLE))
    ask = f"pass --threshold (a cosine distance) for embedder {name!r}"
    if len(sample) < CALIBRATION_ROWS:
        raise SynthError(
            f"embedder {name!r} has no calibrated threshold and the first batch has {len(sample)} distinct texts of "
            f"3+ words, too few to calibrate one on ({CALIBRATION_ROWS} needed); {ask}"
        )
    emb = encode(sample)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    words = [frozenset(t.lower().split()) for t in sample]
    nearest = np.argmax(sims, axis=1)
    lexical = np.array([len(words[i] & words[j]) / len(words[i] | words[j]) >= 0.5 for i, j in enumerate(nearest)])
    neighbour = np.sort(1 - sims[np.arange(len(sample)), nearest][~lexical])
    rng = random.Random(1)
    vocabulary = [w for t in sample for w in t.split()]
    copies = encode([_edit(t, rng, vocabulary) for t in sample])
    copy = np.sort(1 - np.einsum("ij,ij->i", emb, copies))
    threshold = float(neighbour[int(FALSE_NEIGHBOURS * len(neighbour))])
    caught = float(np.searchsorted(copy, threshold) / len(copy))
    if caught < 0.5:
        raise SynthError(
            f"embedder {name!r} has no calibrated threshold, and on this input it cannot tell edited copies from "
            f"distinct rows (at distance {threshold:.3f}, {FALSE_NEIGHBOURS:.1%} of rows have a distinct neighbour "
            f"closer, and it catches {caught:.0%} of one-word edits); {ask}"
        )
    how = (
        f"self-calibrated on {len(sample)} rows: {FALSE_NEIGHBOURS:.1%} of rows have a distinct neighbour closer, "
        f"{caught:.0%} of one-word edits closer"
    )
    return threshold, how


def _edit(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """One word of `text` changed to a word of another text, or one word added."""
    words = text.split()
    i = rng.randrange(1, len(words))
    if rng.random() < 0.6:
        words[i] = rng.choice(vocabulary)
    else:
        words.insert(i, rng.choice(["really", "very", "quite", "short"]))
    return " ".join(words)
