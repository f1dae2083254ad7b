"""Word n-gram hashing and the benchmark n-gram index (synth/stages/_ngrams.py) against values worked
out by hand: the words a text is cut into, each n-gram's 64-bit hash from a plain-Python reference,
and each row's share of an item's n-grams, plain and weighted by rarity."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from synth.stages._ngrams import (
    NgramIndex,
    _after_fork,
    _pool,
    _Powers,
    ngram_hashes,
    ngram_hashes_threaded,
    normalised_words,
)

BASE, M = 0x9E3779B97F4A7C15, 2**64


def reference(words: list[str], n: int) -> list[int]:
    """Each window's hash as the module's docstring defines it, in Python integers."""
    tokens = [xxhash.xxh3_64_intdigest(w.encode()) for w in words]
    out = []
    for s in range(len(tokens) - n + 1):
        h = sum(tokens[s + j] * pow(BASE, j, M) for j in range(n)) % M
        h ^= h >> 31
        h = h * 0xBF58476D1CE4E5B9 % M
        out.append(h ^ (h >> 29))
    return out


def test_texts_are_cut_into_normalised_words() -> None:
    texts = pa.array(["Ｈｅｌｌｏ, WORLD!", "a-b  c", "What is 2+2?", "$5 (five) dollars", "", None, "  ¿Qué?  "])
    assert normalised_words(texts).to_pylist() == [
        ["hello", "world"],
        ["a", "b", "c"],
        ["what", "is", "2", "2"],
        ["5", "five", "dollars"],
        [],
        [],
        ["qué"],
    ]


def test_hashes_are_the_reference_polynomial_over_word_hashes() -> None:
    texts = ["The cat sat on the mat.", "one two", "", None, "a b c d e f g"]
    hashes, offsets = ngram_hashes(pa.array(texts), 3)
    words = normalised_words(pa.array(texts)).to_pylist()
    expected = [reference(w, 3) for w in words]
    assert offsets.tolist() == [0, 4, 4, 4, 4, 9]
    assert [hashes[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))] == expected
    assert hashes.dtype == np.uint64 and offsets.dtype == np.int64
    one, _ = ngram_hashes(pa.array(["word"]), 1)
    assert one.tolist() == reference(["word"], 1)


def test_no_words_anywhere_gives_empty_hashes_and_offsets_per_text() -> None:
    hashes, offsets = ngram_hashes(pa.array(["", None, "!?"]), 2)
    assert hashes.tolist() == [] and offsets.tolist() == [0, 0, 0, 0]
    hashes, offsets = ngram_hashes(pa.array(["a b c", "x", ""]), 2)  # the last texts too short
    assert hashes.tolist() == reference(["a", "b", "c"], 2) and offsets.tolist() == [0, 2, 2, 2]


def test_an_empty_text_holds_no_word_even_at_n_1() -> None:
    hashes, offsets = ngram_hashes(pa.array(["", "a", None, " ? "]), 1)
    assert offsets.tolist() == [0, 0, 1, 1, 1] and hashes.tolist() == reference(["a"], 1)
    # an item with an empty answer (IFEval's) is no match for an empty row
    index = NgramIndex(["write a haiku"], [""], 1)
    assert index.best(pa.array(["", "haiku"]))[1].tolist() == [0.0, 1 / 3]


def test_a_slice_hashes_as_the_same_texts_on_their_own() -> None:
    texts = pa.array(["zero one two", "one two three four", "x", "three four five six"])
    whole, _ = ngram_hashes(pa.array(texts.to_pylist()[1:]), 2)
    sliced, offsets = ngram_hashes(texts.slice(1), 2)
    assert sliced.tolist() == whole.tolist() and offsets.tolist() == [0, 3, 3, 6]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_hashing_on_threads_gives_the_same_hashes_and_offsets(threads) -> None:
    texts = pa.array([" ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 6)) for i in range(11)])
    hashes, offsets = ngram_hashes(texts, 2)
    split_hashes, split_offsets = ngram_hashes_threaded(texts, 2, threads)
    assert split_hashes.tolist() == hashes.tolist() and split_offsets.tolist() == offsets.tolist()
    assert split_offsets.dtype == np.int64


def test_hashing_on_threads_works_in_a_forked_child() -> None:
    """A process forked after hashing on threads (multiprocessing, a test runner's workers) has none
    of its parent's pool threads: it must make its own, not wait on threads that do not exist."""
    texts = pa.array([f"one two three {i}" for i in range(8)])
    expected, _ = ngram_hashes_threaded(texts, 2, 2)
    pool = _pool(2)
    _after_fork()  # what a child runs: a new pool and lock, hashing the same
    assert _pool(2) is not pool and ngram_hashes_threaded(texts, 2, 2)[0].tolist() == expected.tolist()
    pool.shutdown()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it hashed the same, within seconds; never return to pytest
        code = 1
        try:
            signal.alarm(10)
            code = 0 if ngram_hashes_threaded(texts, 2, 2)[0].tolist() == expected.tolist() else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung hashing on threads")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_powers_are_base_to_the_i_and_its_inverse_however_they_grew() -> None:
    for sizes in ((1, 3, 2, 9, 40), (2, 1, 5)):  # a fresh table holds one power
        powers = _Powers()
        for n in sizes:
            up, down = powers.upto(n)
            assert len(up) == len(down) == n
            assert up.tolist() == [pow(BASE, i, M) for i in range(n)]
            assert down.tolist() == [pow(BASE, -i, M) for i in range(n)]


# ---------------------------------------------------------------- the index


def test_a_row_scores_the_share_of_an_items_ngrams_in_its_best_span() -> None:
    index = NgramIndex(["a b c d e", "p q r s"], ["x y z", ""], 2)
    # item 0: question 4 pairs, answer 2, both ("a b c d e\nx y z") 7 with "e x"; item 1: question 3
    assert index.totals.tolist() == [[4, 3], [2, 0], [7, 3]]
    assert index.counts.tolist() == [[4, 3], [2, 0], [7, 3]]
    rows = ["a b c", "y z e x", "x y z", "a b a b a b", "c d e x y", "nothing here", "", "q r s p q"]
    item, score = index.best(pa.array(rows))
    assert item.tolist() == [0, 0, 0, 0, 0, -1, -1, 1]
    assert score.tolist() == [0.5, 0.5, 1.0, 0.25, 4 / 7, 0.0, 0.0, 1.0]


def test_an_ngram_twice_in_an_item_counts_once() -> None:
    index = NgramIndex(["a b a b c"], None, 2)  # "a b", "b a", "b c"
    assert index.totals[0].tolist() == [3] and index.totals[1:].sum() == 0
    item, score = index.best(pa.array(["a b", "a b c"]))
    assert item.tolist() == [0, 0] and score.tolist() == [1 / 3, 2 / 3]


def test_the_best_item_wins_and_a_tie_goes_to_the_first() -> None:
    index = NgramIndex(["a b c d", "a b x y", "c d e f g"], None, 2)
    # the last holds all of item 0 and all of item 2: a tie, the first item wins
    item, score = index.best(pa.array(["a b x y", "a b", "c d e", "zz a b c d e f g"]))
    assert item.tolist() == [1, 0, 2, 0]
    assert score.tolist() == [1.0, 1 / 3, 2 / 4, 1.0]


@pytest.mark.parametrize("bits", [3, 8, 27])
def test_the_prefix_filter_never_hides_a_match(bits) -> None:
    """With 3 bits every row n-gram passes the filter, also those hashing past the last key."""
    questions = [" ".join(f"w{i}x{j}" for j in range(6)) for i in range(40)]
    index = NgramIndex(questions, None, 3, filter_bits=bits)
    rows = [questions[7], " ".join(questions[3].split()[:4]), "w1x0 w1x1 unrelated words here and there", "zz"]
    rows += [f"other text number {i} with words" for i in range(30)]
    item, score = index.best(pa.array(rows))
    assert item[:4].tolist() == [7, 3, -1, -1] and score[:4].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert (item[4:] == -1).all()
    item, score = index.best(pa.array(questions))  # every key, the largest hash's included, is found
    assert item.tolist() == list(range(40)) and score.tolist() == [1.0] * 40


def test_weighted_ngrams_count_by_rarity_among_the_items() -> None:
    # "which of" is in three of the four questions that have pairs, each "of <animal>" in one; "one" has none
    questions = ["which of cats", "which of dogs", "which of birds", "one", "two words"]
    index = NgramIndex(questions, None, 2, weighted=True)
    common, rare = math.log1p(4 / 3), math.log1p(4 / 1)
    assert index.totals[0].tolist() == pytest.approx([common + rare] * 3 + [0, rare])
    item, score = index.best(pa.array(["which of cats", "which of", "of dogs", "birds of", "two words"]))
    assert item.tolist() == [0, 0, 1, -1, 4]
    assert score[:3] == pytest.approx([1.0, common / (common + rare), rare / (common + rare)])
    assert index.short_items == 1
    plain = NgramIndex(["which of cats", "which of dogs"], None, 2)
    assert plain.best(pa.array(["which of"]))[1].tolist() == [0.5]


@pytest.mark.parametrize(("items", "kept"), [(64, True), (65, False)])
def test_an_ngram_in_more_than_64_items_is_left_out_of_the_weighted_scores(items, kept) -> None:
    questions = [f"common phrase w{i}" for i in range(items)]
    index = NgramIndex(questions, None, 2, weighted=True)
    item, score = index.best(pa.array(["common phrase", "phrase w3"]))
    unique, shared = math.log1p(items), math.log1p(1)
    if kept:
        assert item.tolist() == [0, 3]  # the common pair: a tie among all, the first wins
        assert score == pytest.approx([shared / (shared + unique), unique / (shared + unique)])
    else:
        assert item.tolist() == [-1, 3] and score.tolist() == [0.0, 1.0]


def test_items_with_fewer_ngrams_than_the_minimum_are_out_of_reach() -> None:
    index = NgramIndex(["a b c", "d e f g"], None, 2, min_ngrams=3)  # 2 pairs, then 3
    item, score = index.best(pa.array(["a b c", "d e f g"]))
    assert score.tolist() == [0.0, 1.0] and item[1] == 1
    assert index.short_items == 0  # short_items counts items with no n-gram at all


def test_an_index_with_no_ngrams_finds_nothing() -> None:
    index = NgramIndex(["tiny", ""], ["", "no"], 3)
    assert index.short_items == 2
    item, score = index.best(pa.array(["tiny tiny tiny", "no no no"]))
    assert item.tolist() == [-1, -1] and score.tolist() == [0.0, 0.0]
    assert NgramIndex(["a b c d"], [""], 3, threads=1).short_items == 0


def test_weighted_spans_weigh_each_ngram_by_its_holders_in_that_span() -> None:
    index = NgramIndex(["which of cats", "which of dogs"], ["x", "y"], 2, weighted=True)
    # span "both" of item 0 ("which of cats\nx"): "which of" in 2 items, "of cats" and "cats x" in 1
    common, rare = math.log1p(2 / 2), math.log1p(2 / 1)
    assert index.totals[:, 0].tolist() == pytest.approx([common + rare, 0, common + 2 * rare])
    item, score = index.best(pa.array(["which of z cats x"]))
    assert item.tolist() == [0] and score.tolist() == pytest.approx([(common + rare) / (common + 2 * rare)])


def test_an_item_with_a_single_ngram_is_found() -> None:
    index = NgramIndex(["a b c"], None, 3)
    item, score = index.best(pa.array(["a b c", "x a b c y", "a b"]))
    assert item.tolist() == [0, 0, -1] and score.tolist() == [1.0, 1.0, 0.0]


def test_past_4096_items_an_ngram_in_one_item_in_64_still_counts() -> None:
    questions = [f"common phrase w{i}" if i < 65 else f"other w{i}" for i in range(64 * 65)]
    index = NgramIndex(questions, None, 2, weighted=True)  # 65 holders of "common phrase": kept
    item, score = index.best(pa.array(["common phrase"]))
    assert item.tolist() == [0] and 0 < score[0] < 0.5
