"""synth/stages/similarity.py beyond tests/stages/test_similarity.py: the thresholds read from
filters/dedup.toml, the near-copies self-calibration plants, its word-overlap rule and its
reproducibility, and the numbers-and-names check on each side of a pair."""

from __future__ import annotations

import random
import sys

import numpy as np
import pyarrow as pa
import pytest

import synth.stages.similarity as similarity
from synth.resources import data_file
from synth.stages.similarity import (
    TERMS_HELD,
    TermsGuard,
    _edit,
    key_terms,
    minhash_default,
    self_calibrate,
    semantic_default,
    terms_differ,
)
from tests.stages.test_similarity import bag_of_words, texts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def test_thresholds_are_read_from_the_data_file(monkeypatch) -> None:
    shipped = tomllib.loads(data_file("filters/dedup.toml").read_text(encoding="utf-8"))
    assert semantic_default("static") == shipped["semantic"]["static"]["threshold"]
    assert semantic_default("minilm") == shipped["semantic"]["minilm"]["threshold"] != semantic_default("static")
    assert minhash_default() == shipped["minhash"]["threshold"]
    assert semantic_default("/models/mine") is None
    monkeypatch.setattr(similarity, "calibrated", lambda: {"minhash": {"threshold": 0.5}})
    assert semantic_default("static") is None  # a file with no semantic section: none calibrated


# ---------------------------------------------------------------- self-calibration


def test_planted_edits_change_or_add_one_word_never_the_first() -> None:
    text = "alpha beta gamma delta epsilon"
    vocabulary = ["zulu"]
    replaced, added, places = 0, set(), set()
    for seed in range(400):
        words, out = text.split(), _edit(text, random.Random(seed), vocabulary).split()
        assert out[0] == "alpha"
        if len(out) == len(words):
            diff = [i for i, (a, b) in enumerate(zip(words, out)) if a != b]
            assert len(diff) == 1 and out[diff[0]] == "zulu"
            replaced += 1
            places.add(diff[0])
        else:
            (i,) = [i for i in range(len(words)) if out[:i] + out[i + 1 :] == words][:1]
            added.add(out[i])
            places.add(i)
    assert added == {"really", "very", "quite", "short"}
    assert places == {1, 2, 3, 4}
    assert 0.5 < replaced / 400 < 0.7  # six in ten replace a word, the rest add one


def test_calibration_is_the_same_run_after_run() -> None:
    asked: list[list[str]] = []

    def encode(batch: list[str]) -> np.ndarray:
        asked.append(list(batch))
        return bag_of_words(batch)

    many = texts(2100, seed=5)
    first = self_calibrate(many, encode, "bow")
    second = self_calibrate(many, encode, "bow")
    assert first == second
    sample, copies, again, copies_again = asked
    assert len(sample) == 2000 and len(set(sample)) == 2000 and set(sample) <= set(many)
    assert again == sample and copies_again == copies  # the same rows, the same edits of them
    assert all(len(c.split()) - len(s.split()) in (0, 1) for s, c in zip(sample, copies))


def test_texts_of_three_words_count_and_shorter_ones_do_not() -> None:
    threshold, how = self_calibrate(texts(199) + ["three short words", "two words"] * 3, bag_of_words, "bow")
    assert how.startswith("self-calibrated on 200 rows")


def test_a_neighbour_holding_half_the_words_of_a_text_is_its_copy_not_a_distinct_row() -> None:
    base = texts(400)
    half = " ".join(base[0].split()[:5])  # word-set overlap (Jaccard) 5/10: left out of the distinct neighbours
    assert self_calibrate(base + [half], bag_of_words, "bow")[0] == self_calibrate(base, bag_of_words, "bow")[0]
    fewer = " ".join(base[0].split()[:4])  # 4/10: a distinct row, at cosine distance 1 - 4/sqrt(40)
    threshold, _ = self_calibrate(base + [fewer], bag_of_words, "bow")
    assert threshold == pytest.approx(1 - 4 / np.sqrt(40))


# ---------------------------------------------------------------- the numbers-and-names check


def test_key_terms_are_uint32_the_smallest_eight_of_a_text() -> None:
    many = "Ships leave " + ", ".join(str(n) for n in range(100, 112)) + " times."
    terms = key_terms(pa.array([many, "no terms here", None]))
    assert terms.dtype == np.uint32 and terms.shape == (3, TERMS_HELD)
    each = sorted(int(key_terms(pa.array([f"at {n}"]))[0, 0]) for n in range(100, 112))
    assert terms[0].tolist() == each[:TERMS_HELD]
    assert terms[1:].tolist() == [[0] * TERMS_HELD] * 2


def test_terms_differ_needs_a_term_of_its_own_on_each_side() -> None:
    paris, rome, both, none = (key_terms(pa.array([t]))[0] for t in ("to Paris", "to Rome", "to Paris and Rome", "x"))
    pairs = [(paris, rome), (paris, both), (both, rome), (none, rome), (none, none), (paris, paris)]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    assert terms_differ(a, b).tolist() == [True, False, False, False, False, False]
    assert terms_differ(b, a).tolist() == [True, False, False, False, False, False]
    assert bool(terms_differ(paris, rome)[0])  # one row each, as 1-d arrays


def test_the_guard_compares_with_the_batch_row_else_the_stored_row() -> None:
    paris, rome, none = (key_terms(pa.array([t]))[0] for t in ("to Paris", "to Rome", "x"))
    stored = np.stack([rome, paris])
    guard = TermsGuard(np.stack([paris, rome, paris]), lambda idx: stored[idx], 2)
    # row 1 against batch row 0 (Paris/Rome); row 2 against batch row 0 though a stored row is named
    # too (the batch wins); row 2 against stored row 1 (Paris/Paris); row 0 with no match at all
    out = guard.differ(np.array([1, 2, 2, 0]), np.array([0, 0, -1, -1]), np.array([-1, 0, 1, -1]))
    assert out.dtype == bool and out.tolist() == [True, False, False, False]
    assert guard.differ(np.array([2]), np.array([-1]), np.array([0])).tolist() == [True]  # stored Rome


def test_the_guard_never_reads_an_empty_store() -> None:
    def nothing(idx):
        raise AssertionError("read an empty store")

    guard = TermsGuard(np.stack([key_terms(pa.array(["to Paris"]))[0]] * 2), nothing, 0)
    assert guard.differ(np.array([0, 1]), np.array([-1, -1]), np.array([0, 3])).tolist() == [False, False]


def test_one_close_pair_in_a_thousand_does_not_set_the_threshold() -> None:
    """0.2% of rows may have a distinct neighbour under the threshold: one pair of 1,001 rows does."""
    base = texts(1000, seed=7)
    pair = " ".join(base[0].split()[:6] + ["qqa", "qqb", "qqc", "qqd"])  # 6 of 14 words shared: distinct
    emb = bag_of_words([base[0], pair])
    assert 1 - emb[0] @ emb[1] == pytest.approx(0.4)
    threshold, how = self_calibrate(base + [pair], bag_of_words, "bow")
    assert threshold > 0.45 and how.startswith("self-calibrated on 1001 rows")
