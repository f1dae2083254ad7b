"""Semantic dedup's lexical confirmation (`synth.stages.dedup._lexical`): word sketches, their
Jaccard similarity, and MiniLM's copies one word apart that its threshold alone misses."""

from __future__ import annotations

import random
import re

import numpy as np
import pyarrow as pa
import pytest

from synth.core import from_rows
from synth.stages import dedup_semantic
from synth.stages.dedup._lexical import WORDS_HELD, calibrated_lexical, sketch_jaccard, word_sketches

pytest.importorskip("usearch")

SENTENCES = [  # man-page and docstring sentences (real text), some past WORDS_HELD distinct words
    "Lists all of the versions within the given key.",
    "Internet protocol versions that this policy-based route applies to.",
    "To set an entry's maximum lifetime, use max-cache-ttl.",
    "Return the number of items in the queue, counting only those that are not yet done.",
    "This means that using this command to read in an encrypted key with no encryption option can be used to "
    "remove the pass phrase from a key, or by setting the encryption options it can be used to add or change it.",
    "Mounting and unmounting filesystems will not affect the rest of the system, except for filesystems which are "
    "explicitly marked as shared (with mount --make-shared; see /proc/self/mountinfo or findmnt for the flags).",
    "Ünïcode wörds stay wörds.",
    "",
]


def words(text: str) -> set[str]:
    return set(re.findall(r"[^\W_]+", text.lower())) or {""}


def test_sketches_give_the_jaccard_of_word_sets() -> None:
    rng = random.Random(0)
    texts = SENTENCES + [" ".join(rng.sample(s.split(), len(s.split()))) for s in SENTENCES[:6]]
    texts += [s.replace(s.split()[2], "vineyard") for s in SENTENCES[:6]]  # one word changed
    sketches = word_sketches(pa.array(texts))
    assert sketches.shape == (len(texts), WORDS_HELD) and sketches.dtype == np.uint32
    pairs = [(i, j) for i in range(len(texts)) for j in range(len(texts))]
    a, b = np.array(pairs).T
    got = sketch_jaccard(sketches[a], sketches[b])
    want = np.array([len(words(texts[i]) & words(texts[j])) / len(words(texts[i]) | words(texts[j])) for i, j in pairs])
    small = np.array([len(words(texts[i]) | words(texts[j])) <= WORDS_HELD for i, j in pairs])
    assert small.sum() > 50 and (~small).sum() > 20
    np.testing.assert_allclose(got[small], want[small])  # exact while both sets fit
    assert np.abs(got - want).max() <= 0.1  # an estimate past that
    assert got[a == b].min() == 1.0


def test_minilm_has_a_calibrated_confirmation_and_static_none() -> None:
    lexical = calibrated_lexical("minilm")
    assert lexical is not None and 0.5 <= lexical.jaccard < 1 and lexical.within > 0.09
    assert calibrated_lexical("static") is None and calibrated_lexical("some/model") is None


def dropped(stage, texts: list[str]) -> set[int]:
    kept = {
        int(i)
        for b in stage([from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])])
        for i in b["id"].to_pylist()
    }
    return set(range(len(texts))) - kept


def test_minilm_drops_a_copy_one_word_apart_past_its_threshold() -> None:
    rows = [
        "Lists all of the versions within the given key.",
        "Lists vineyard of the versions within the given key.",  # one word swapped: MiniLM distance 0.1-0.2
        "Internet protocol versions that this policy-based route applies to.",
        "Explain in plain words what this means: the route applies to every protocol version.",
        "Sort a list of 10 numbers in Python.",
        "Sort a list of 25 numbers in Python.",  # one word apart, but another number: kept
    ]
    stage = dedup_semantic(embedder="minilm")
    assert dropped(stage, rows) == {1}
    assert stage.stats["dropped_lexical"] == 1 and stage.stats["kept_terms_differ"] == 1
    assert stage.notes["lexical_jaccard"] == calibrated_lexical("minilm").jaccard
    without = dedup_semantic(embedder="minilm", lexical=False)
    assert dropped(without, rows) == set() and "lexical_jaccard" not in without.notes
