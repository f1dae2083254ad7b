"""The numbers-and-names check and self-calibration, with a bag-of-words embedder whose distances
are known: a one-word edit of a ten-word text lies near it, a text of other words far away."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest

from synth.core import SynthError
from synth.stages.similarity import TermsGuard, key_terms, self_calibrate, terms_differ

WORDS = [f"{a}{b}{c}" for a in "bcdfgklmnp" for b in "aeiou" for c in "rstvz"]  # 250 lower-case words


def bag_of_words(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 512))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 512] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 10, replace=False)) for _ in range(n)]


def test_self_calibration_puts_the_threshold_between_edits_and_other_texts() -> None:
    threshold, how = self_calibrate(texts(400), bag_of_words, "bow")
    # One word of ten changed: cosine 0.9, distance 0.1; texts of other words: distance 0.5 or more.
    assert 0.1 < threshold < 0.6
    assert how.startswith("self-calibrated on 400 rows") and "100% of one-word edits closer" in how


def test_self_calibration_refuses_few_rows_and_an_embedder_that_cannot_tell() -> None:
    with pytest.raises(SynthError, match=r"199 distinct texts of 3\+ words, too few .*pass --threshold"):
        self_calibrate(texts(199) + ["two words"] * 50, bag_of_words, "bow")

    def blind(batch: list[str]) -> np.ndarray:  # a random vector per text: an edit lands anywhere
        v = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(4) for t in batch])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with pytest.raises(SynthError, match="cannot tell edited copies from distinct rows"):
        self_calibrate(texts(300), blind, "blind")


def test_key_terms_hold_numbers_alike_and_names_but_not_sentence_openers_or_capitals() -> None:
    terms = key_terms(pa.array(["Ship 1,000 boxes to Lyon.", "ship 1000 boxes to lyon", "The NASA report. Then Oslo"]))
    lyon, ship, then = (key_terms(pa.array([f"go to {w}"]))[0, 0] for w in ("Lyon", "Ship", "Then"))
    row0 = set(terms[0][terms[0] > 0].tolist())
    assert len(row0) == 2 and lyon in row0 and ship not in row0  # 1000 and Lyon; not the opener
    assert set(terms[1][terms[1] > 0].tolist()) < row0  # the same number; no name in lower case
    row2 = set(terms[2][terms[2] > 0].tolist())
    assert then not in row2 and len(row2) == 1  # Oslo only: NASA is capitals, Then opens a sentence


def test_terms_differ_only_when_each_side_has_its_own() -> None:
    a, b, c, none = (key_terms(pa.array([t]))[0] for t in ("into French 2", "into German 2", "into French", "x"))
    assert terms_differ(np.stack([a, a, a, none]), np.stack([b, c, a, b])).tolist() == [True, False, False, False]
    guard = TermsGuard(np.stack([a, b, c]), lambda idx: np.stack([a, c])[idx], 2)
    # Row 0 against row 1 of the batch, row 2 against stored row 1 (c), row 1 against stored row 0 (a).
    out = guard.differ(np.array([0, 2, 1]), np.array([1, -1, -1]), np.array([-1, 1, 0]))
    assert out.tolist() == [True, False, True] and guard.pair(0, 1) and not guard.pair(0, 2)
