"""MinHash's text side where a slip changes which texts meet: the ASCII byte table against Arrow's
Unicode kernels, empty texts, a one-word row, and `fold`'s promise never to give the values `_Held`
pads sets with."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synth.stages.dedup._shingles import _ascii_table, _words, fold, shingle_hashes, word_lists


def test_the_ascii_table_maps_each_byte_as_the_unicode_kernels_split_and_lower_it() -> None:
    table = _ascii_table()  # built afresh: `_ASCII` is built once, at import
    texts = [f"a{chr(c)}b" for c in range(128)]
    words = _words(pa.array(texts)).to_pylist()
    want = [32 if w == ["a", "b"] else ord(w[0][1]) for w in words]
    assert want.count(32) == 42  # 32 punctuation and symbols, 10 kinds of white space
    assert table[:128].tolist() == want
    assert table[65] == ord("a") and table[ord("!")] == 32


def test_a_batch_of_empty_texts_is_one_empty_word_each_on_either_path() -> None:
    words, offsets = word_lists(pa.array(["", ""]))  # ASCII path, with an empty data buffer
    assert words.to_pylist() == ["", ""] and offsets.tolist() == [0, 1, 2]
    unicode_words, unicode_offsets = word_lists(pa.array(["", "", "é"]))
    assert unicode_words.to_pylist()[:2] == ["", ""] and unicode_offsets.tolist()[:3] == [0, 1, 2]
    hashes, offsets = shingle_hashes(words, offsets, 5)
    assert offsets.tolist() == [0, 1, 2] and hashes[0] == hashes[1]  # two empty texts: one equal shingle


def test_a_one_word_row_is_one_shingle_of_that_word() -> None:
    def shingles(texts: list[str]) -> list[list[int]]:
        hashes, offsets = shingle_hashes(*word_lists(pa.array(texts)), 5)
        return [hashes[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))]

    fox, red_fox = shingles(["fox", "red fox"])
    assert len(fox) == 1 and len(red_fox) == 1
    assert fox != red_fox  # the short row's shingle holds all its words, from the first
    assert shingles(["fox", "a b c d e f"])[0] == fox


def test_fold_xors_the_halves_and_never_gives_zero_or_all_ones() -> None:
    hashes = np.array([0, 0xFFFFFFFF, 0xFFFFFFFF00000000, 0x0000000500000003, 0x1234567800000000], np.uint64)
    assert fold(hashes).tolist() == [1, 0xFFFFFFFE, 0xFFFFFFFE, 6, 0x12345678]
    assert fold(hashes).dtype == np.uint32
