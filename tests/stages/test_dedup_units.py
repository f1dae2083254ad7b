"""Dedup's parts where a slip changes what is dropped or what the card says: exact keys, the
MinHash estimate, rows held long and short, shingles of short rows, the key index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from synth.core import from_rows
from synth.stages import dedup_exact, dedup_minhash
from synth.stages.dedup import exact_key, jaccard, shingle_hashes, word_lists


def run(stage, texts: list[str], size: int = 64) -> tuple[list[int], pa.Table | None]:
    """The ids `stage` keeps, and the rows it sends to its `rejects` (a list's append, or None)."""
    rows = [{"id": str(i), "instruction": t} for i, t in enumerate(texts)]
    out = list(stage(from_rows(rows[start : start + size]) for start in range(0, len(rows), size)))
    kept = sorted(int(i) for b in out for i in b["id"].to_pylist())
    sink = getattr(stage.rejects, "__self__", None)
    return kept, (pa.concat_tables(sink) if sink else None)


def test_exact_keys_keep_punctuation_unless_asked() -> None:
    assert exact_key("Hello   WORLD") == exact_key("hello world")  # case and spaces only
    assert exact_key("Hello, world") != exact_key("Hello world")
    assert exact_key("Hello, world", ignore_punctuation=True) == exact_key("Hello world", ignore_punctuation=True)


def test_exact_rejects_hold_similarity_one_and_the_kept_row_they_copy() -> None:
    texts = ["Sort a list in Python.", "Reverse a string.", "sort a LIST in python.", "Reverse a string."]
    stage = dedup_exact(rejects=[].append)
    kept, rejects = run(stage, texts, size=3)  # one copy in the batch of its original, one in the next
    assert kept == [0, 1]
    assert rejects["id"].to_pylist() == ["2", "3"] and rejects["dup_cluster"].to_pylist() == ["0", "1"]
    assert rejects["dup_similarity"].to_pylist() == [1.0, 1.0]
    assert stage.notes == {"method": "exact", "ignore_punctuation": False}


def test_minhash_notes_say_how_it_matched() -> None:
    stage = dedup_minhash()
    run(stage, ["one two three four", "five six seven eight"])
    notes = stage.notes
    assert (notes["method"], notes["threshold"], notes["num_perm"], notes["ngram"]) == ("minhash", 0.7, 128, 1)
    assert notes["bands"] * notes["rows_per_band"] <= 128 and notes["bands"] > 1


def test_the_estimate_is_one_for_equal_signatures_and_zero_for_chance_agreement() -> None:
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 256, 128 * 256, np.uint8).reshape(256, 128)
    assert jaccard(sig[0], sig[0]) == 1.0
    # 8-bit minimums of unrelated sets agree at random, 1 in 256: the estimate removes that.
    chance = jaccard(sig[:-1], sig[1:])
    assert abs(float(chance.mean())) < 0.003


def test_a_short_copy_of_a_long_row_is_found_across_the_two_ways_rows_are_held() -> None:
    words = ["".join(w) for w in zip("abcdefghijklmnopqrstuvwxyzabcdefghijk", "qwertyuiopasdfghjklzxcvbnmmnbvcxzlkj")]
    long = " ".join(f"{w}x{w}" for w in words[:36])  # 36 distinct words: held as a signature
    short = " ".join(f"{w}x{w}" for w in words[:32])  # 32: held as its words; Jaccard 32/36
    other = " ".join(f"{w}y{w}" for w in words[:32])
    for texts, size in (([long, short, other], 64), ([long, short, other], 1), ([short, long, other], 1)):
        kept, rejects = run(dedup_minhash(rejects=[].append), texts, size=size)
        assert kept == [0, 2]
        assert 0.75 <= rejects["dup_similarity"][0].as_py() <= 1.0


def test_rows_sharing_band_keys_leave_one_index_entry_per_key() -> None:
    from synth.stages.dedup import _Index, _match_minhash, _Store

    rng = np.random.default_rng(1)
    sig = rng.integers(0, 256, (6, 128), np.uint8)
    keys = rng.integers(1, 2**32, (6, 4), np.uint32).astype(np.uint32)
    keys[1, 0] = keys[0, 0]  # rows 0, 1, 2 share a key; unlike signatures, so all are kept
    keys[2, 0] = keys[0, 0]
    keys[4, 3] = keys[3, 3]
    index, store = _Index(), _Store()
    verdict = _match_minhash(sig, keys, pa.array([str(i) for i in range(6)]), index, store, 0.7)
    assert verdict.keep.all()
    assert len(index) == len(np.unique(keys))
    assert index.get(keys[:, 0]).tolist() == [0, 0, 0, 3, 4, 5]  # a shared key points at its first row


def test_a_row_shorter_than_n_is_one_shingle_of_its_own_words() -> None:
    def shingles(texts: list[str]) -> list[list[int]]:
        hashes, offsets = shingle_hashes(*word_lists(pa.array(texts)), 5)
        return [hashes[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))]

    alone = shingles(["red fox"])[0]
    assert len(alone) == 1
    assert shingles(["red fox", "jumps over the lazy dog today"])[0] == alone  # not the next row's words
    assert shingles(["fox"])[0] != alone and shingles(["red"])[0] != alone


def test_words_of_non_ascii_texts_start_at_each_row() -> None:
    words, offsets = word_lists(pa.array(["Ça va, très bien", "Grüße aus Köln"]))
    assert offsets.tolist() == [0, 4, 7]
    assert words.to_pylist() == ["ça", "va", "très", "bien", "grüße", "aus", "köln"]


def test_a_column_of_numbers_with_gaps_counts_each_row_once() -> None:
    stage = dedup_minhash()
    out = list(stage([pa.table({"id": ["e", "f", "g"], "instruction": [1, None, 1]})]))
    assert out[0]["id"].to_pylist() == ["e", "f", "g"]
    assert (stage.stats["unchecked_null"], stage.stats["unchecked_non_string"]) == (1, 2)


def test_the_store_gives_back_ids_and_signatures_after_merging_many_small_batches() -> None:
    from synth.stages.dedup import _Store

    store, rng = _Store(), np.random.default_rng(2)
    sizes = rng.integers(1, 3000, 60)  # about 90,000 rows: small chunks merged past 65,536 rows
    for start, size in zip(np.r_[0, np.cumsum(sizes)[:-1]], sizes):
        rows = np.arange(start, start + size)
        store.append(pa.array([f"r{i}" for i in rows]), (rows[:, None] % np.arange(1, 131)).astype(np.uint8))
    total = int(sizes.sum())
    assert len(store) == total and len(store._ids) < len(sizes) // 2  # merged
    pick = rng.integers(0, total, 5000)
    assert store.ids(pick).to_pylist() == [f"r{i}" for i in pick]
    assert (store.sigs(pick) == (pick[:, None] % np.arange(1, 131)).astype(np.uint8)).all()


def test_the_key_filter_grows_with_the_index_and_still_finds_every_key() -> None:
    from synth.stages.dedup import _Index

    index, rng = _Index(), np.random.default_rng(4)
    keys = np.unique(rng.integers(1, 2**32, 1_100_000).astype(np.uint32))
    for part in np.array_split(keys, 4):
        index.add(part, np.arange(len(part)))
    assert index.filter_bits == 25  # a bit per 8 entries past 1 MB: fourfold, once
    probe = keys[:: len(keys) // 5000]
    assert (index.get(probe) >= 0).all()
    absent = np.setdiff1d(rng.integers(1, 2**32, 5000).astype(np.uint32), keys)
    assert (index.get(absent) == -1).all()
