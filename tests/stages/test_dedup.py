"""Dedup stages against planted duplicates with known ground truth."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from synth.core import Batch, SynthError, from_rows, pipe
from synth.stages import dedup as dedup_module
from synth.stages import dedup_exact, dedup_minhash, dedup_semantic
from synth.stages.dedup import _Index, _words, jaccard, low_bits, lsh_params, minhash, shingle_hashes, word_lists
from synth.stages.dedup import _minhash as minhash_module  # where MinHash looks up what tests patch

ORIGINALS = {
    "o1": "How do I reverse a linked list in Python without using extra memory?",
    "o2": "What is the difference between a list and a tuple in Python?",
    "o3": "Write a Python function that checks whether a string is a palindrome.",
    "o4": "Explain how decorators work in Python with a simple example.",
    "o5": "How can I read a large CSV file in Python without running out of memory?",
    # Same topic as the others, different texts: every method must keep these.
    "t1": "Explain the difference between generators and iterators, with examples.",
    "t2": "Which Python web framework should a beginner learn first, Django or Flask?",
    "t3": "Give me a recipe for a vegetarian lasagna with spinach and ricotta.",
}
PLANTED = {  # id -> (text, the original it copies, the kind of copy)
    "d1": ("How do I reverse a linked list in Python without using extra memory?", "o1", "exact"),
    "d2": ("what is the DIFFERENCE between a list and a   tuple in python?", "o2", "case"),
    "d3": ("Write a Python function, that checks whether a string is a palindrome!", "o3", "punctuation"),
    "d4": ("Explain how decorators work in Python with a short example.", "o4", "words"),
    "d5": ("How can I read a very large CSV file in Python without running out of RAM?", "o5", "words"),
}
CATCHES = {
    "exact": {"exact", "case"},
    "exact_punct": {"exact", "case", "punctuation"},
    "minhash": {"exact", "case", "punctuation", "words"},
    "semantic": {"exact", "case", "punctuation", "words"},
}


def corpus() -> list[dict[str, str]]:
    rows = [{"id": k, "instruction": v} for k, v in ORIGINALS.items()]
    planted = [{"id": k, "instruction": text} for k, (text, _, _) in PLANTED.items()]
    return [rows[0], rows[1], planted[0], rows[2], planted[1], rows[3], rows[4], *rows[5:], *planted[2:]]


def batches(rows: list[dict], size: int) -> Iterator[Batch]:
    for start in range(0, len(rows), size):
        yield from_rows(rows[start : start + size])


def run(stage, rows: list[dict], size: int = 4) -> tuple[pa.Table, pa.Table | None]:
    rejects: list[Batch] = []
    stage = type(stage)(**{**_fields(stage), "rejects": rejects.append})
    out = pa.concat_tables(list(stage(batches(rows, size))), promote_options="permissive")
    return out, (pa.concat_tables(rejects) if rejects else None)


def _fields(stage) -> dict:
    import dataclasses

    return {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage) if f.name not in ("stats", "notes")}


@pytest.mark.parametrize(
    ("name", "stage"),
    [
        ("exact", dedup_exact()),
        ("exact_punct", dedup_exact(ignore_punctuation=True)),
        ("minhash", dedup_minhash()),
    ],
)
def test_each_method_catches_what_it_claims_and_keeps_distinct_texts(name, stage) -> None:
    out, rejects = run(stage, corpus())
    dropped = set(rejects["id"].to_pylist())
    expected = {k for k, (_, _, kind) in PLANTED.items() if kind in CATCHES[name]}
    assert dropped == expected
    assert set(ORIGINALS) <= set(out["id"].to_pylist())
    matched = dict(zip(rejects["id"].to_pylist(), rejects["dup_cluster"].to_pylist()))
    assert matched == {k: PLANTED[k][1] for k in expected}
    assert out["dup_cluster"].to_pylist() == out["id"].to_pylist()  # kept rows are their own cluster


def test_semantic_catches_paraphrase_level_copies_and_adds_distance() -> None:
    out, rejects = run(dedup_semantic(embedder="minilm"), corpus(), size=5)
    assert set(rejects["id"].to_pylist()) == set(PLANTED)
    assert set(out["id"].to_pylist()) == set(ORIGINALS)
    distance = out["min_neighbor_distance"].to_pylist()
    assert distance[0] is None  # the first row has no earlier neighbour
    assert all(d >= 0.15 for d in distance[1:])
    assert all(d < 0.15 for d in rejects["min_neighbor_distance"].to_pylist())
    assert dict(zip(rejects["id"].to_pylist(), rejects["dup_cluster"].to_pylist())) == {
        k: v[1] for k, v in PLANTED.items()
    }


def test_semantic_switches_to_an_approximate_index_and_says_so() -> None:
    stage = dedup_semantic(embedder="minilm", exact_limit=3)
    out = pa.concat_tables(list(stage(batches(corpus(), 3))))
    assert set(out["id"].to_pylist()) == set(ORIGINALS)
    assert stage.notes["index"].startswith("approximate (usearch HNSW")


@pytest.mark.parametrize("make", [dedup_exact, dedup_minhash, functools.partial(dedup_minhash, read_ahead=True)])
def test_same_output_twice_and_for_any_batching(make) -> None:
    results = [run(make(), corpus(), size)[0].to_pylist() for size in (1, 3, 13, 13)]
    assert all(r == results[0] for r in results)


def test_semantic_gives_the_same_output_twice_and_the_same_rows_for_any_batching() -> None:
    (out, rejects), (out2, rejects2) = (run(dedup_semantic(embedder="minilm"), corpus(), 4) for _ in range(2))
    assert out.to_pylist() == out2.to_pylist() and rejects.to_pylist() == rejects2.to_pylist()
    for size in (1, 13):  # other batches, other matrix shapes: the same decisions, distances to rounding
        other, other_rejects = run(dedup_semantic(embedder="minilm"), corpus(), size)
        for a, b in ((out, other), (rejects, other_rejects)):
            columns = ["id", "instruction", "dup_cluster"]
            assert a.select(columns).to_pylist() == b.select(columns).to_pylist()
            near = [x if x is None else pytest.approx(x, abs=1e-4) for x in a["min_neighbor_distance"].to_pylist()]
            assert b["min_neighbor_distance"].to_pylist() == near


def test_minhash_keeps_the_first_of_a_chain_and_never_empties_a_group() -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = [{"id": f"r{i}", "instruction": " ".join(words[i : i + 10])} for i in range(3)]
    out, rejects = run(dedup_minhash(), rows, size=1)
    # r1 is a near-copy of r0 (Jaccard 0.82); r2 is near r1 but not r0 (0.67), and r1 is gone.
    assert out["id"].to_pylist() == ["r0", "r2"]
    assert rejects["dup_cluster"].to_pylist() == ["r0"]


def test_rows_without_text_are_counted_and_kept_unchecked() -> None:
    stage = dedup_minhash()
    rows = [
        from_rows([{"id": "a", "instruction": "same text here"}, {"id": "b", "instruction": None}]),
        from_rows([{"id": "c", "instruction": None}, {"id": "d", "instruction": "same text here"}]),
        pa.table({"id": ["e", "f"], "instruction": [1, 1]}),
    ]
    out = pa.concat_tables([b.select(["id", "dup_cluster"]) for b in stage(rows)])
    assert out.to_pylist() == [
        {"id": "a", "dup_cluster": "a"},
        {"id": "b", "dup_cluster": None},
        {"id": "c", "dup_cluster": None},
        {"id": "e", "dup_cluster": None},
        {"id": "f", "dup_cluster": None},
    ]
    assert stage.stats["unchecked_null"] == 2 and stage.stats["unchecked_non_string"] == 2
    assert (stage.stats["rows_in"], stage.stats["kept"], stage.stats["dropped"]) == (6, 5, 1)


def test_missing_column_names_the_columns_there() -> None:
    with pytest.raises(SynthError, match=r"'response' is not in the input \(it has: id, instruction\)"):
        list(dedup_exact("response")(batches(corpus(), 4)))


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01])
def test_threshold_outside_zero_one_is_refused(threshold) -> None:
    with pytest.raises(SynthError, match=r"outside \(0, 1\]"):
        dedup_minhash(threshold=threshold)
    with pytest.raises(SynthError, match=r"outside \(0, 1\]"):
        dedup_semantic(threshold=threshold)


def test_empty_input_gives_an_empty_stream() -> None:
    stage = dedup_minhash()
    assert list(pipe(iter([]), stage)) == []
    empty = pa.table({"id": pa.array([], pa.string()), "instruction": pa.array([], pa.string())})
    (out,) = stage([empty])
    assert out.num_rows == 0 and "dup_cluster" in out.column_names


def test_threshold_one_drops_only_identical_word_sets() -> None:
    rows = [{"id": "a", "instruction": "one two three"}, {"id": "b", "instruction": "Three, two one!"}]
    rows.append({"id": "c", "instruction": "one two three four"})
    out, _ = run(dedup_minhash(threshold=1.0), rows)
    assert out["id"].to_pylist() == ["a", "c"]


def test_jaccard_estimate_tracks_the_true_value() -> None:
    rng = np.random.default_rng(7)
    a, b = (rng.integers(0, 2**32, 128, np.uint32) | np.uint32(1) for _ in range(2))
    vocab = [f"w{i}" for i in range(400)]
    for overlap in (10, 40, 70, 90):
        left = vocab[:100]
        right = vocab[100 - overlap : 200 - overlap]
        truth = overlap / (200 - overlap)
        sig = minhash(*shingle_hashes(*word_lists(pa.array([" ".join(left), " ".join(right)])), 1), a, b)
        est = jaccard(low_bits(sig[0]), low_bits(sig[1]))
        assert abs(est - truth) < 0.12, (overlap, est, truth)


def test_short_rows_are_compared_exactly_long_ones_by_their_signatures() -> None:
    rng = np.random.default_rng(11)
    a, b = (rng.integers(0, 2**32, 128, np.uint32) | np.uint32(1) for _ in range(2))
    vocab = [f"w{i}" for i in range(500)]
    texts, sets = [], []
    for size in [*rng.integers(1, 33, 60), 33, 40, 70]:  # 32 distinct words fit a row's 128 bytes
        words = list(rng.choice(vocab, size, replace=False))
        texts.append(" ".join(words + words[: size // 3]))  # repeated words count once
        sets.append(set(words))
    x, offsets = shingle_hashes(*word_lists(pa.array(texts)), 1)
    x = dedup_module.fold(x)
    sig = low_bits(dedup_module.minhash_folded(x, offsets, a, b))
    held = dedup_module._Held(a, b)
    rows = held.rows(x, offsets, sig)
    i, j = np.triu_indices(len(texts), 1)
    got = held.similar(rows[i], rows[j])
    for p, q, value in zip(i, j, got):
        if len(sets[p]) <= 32 and len(sets[q]) <= 32:
            assert value == len(sets[p] & sets[q]) / len(sets[p] | sets[q])
        else:  # a long row in the pair: the b-bit estimate from the signatures the rows had
            assert value == jaccard(sig[p], sig[q])


def test_minhash_keeps_rows_below_the_threshold_that_128_minimums_would_pass() -> None:
    rng = np.random.default_rng(5)
    vocab = [f"w{i}" for i in range(100_000)]
    rows, near, far = [], [], []
    for k in range(400):  # 20 words each; a copy shares 16 (Jaccard 0.67) or 18 (0.82) of them
        words = [vocab[int(w)] for w in rng.choice(len(vocab), 24, replace=False)]
        shared = 18 if k % 2 else 16
        rows.append({"id": f"o{k}", "instruction": " ".join(words[:20])})
        rows.append({"id": f"c{k}", "instruction": " ".join(words[:shared] + words[24 - (20 - shared) :])})
        (far if k % 2 else near).append(f"c{k}")
    # Words "w123" hold digits, which the numbers-and-names check reads as numbers: it is off here.
    out, rejects = run(dedup_minhash(threshold=0.7, check_terms=False), rows)
    dropped = set(rejects["id"].to_pylist())
    assert not dropped & set(near)  # estimated, 41 of these 200 went
    assert len(dropped & set(far)) >= 190


def test_five_gram_shingles_separate_documents_that_share_words() -> None:
    hashes, offsets = shingle_hashes(*word_lists(pa.array(["a b c d e f", "f e d c b a", "a b"])), 5)
    assert offsets.tolist() == [0, 2, 4, 5]  # a row shorter than n is one shingle
    assert not set(hashes[:2].tolist()) & set(hashes[2:4].tolist())


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_banding_finds_pairs_just_above_the_threshold(threshold) -> None:
    bands, rows = lsh_params(threshold, 128)
    assert bands * rows <= 128
    above, below = min(threshold + 0.1, 1.0), threshold - 0.3
    assert 1 - (1 - above**rows) ** bands > 0.95
    assert 1 - (1 - below**rows) ** bands < 0.2


@pytest.mark.parametrize(("dtype", "top"), [(np.uint32, 5000), (np.uint32, 2**32), (np.uint64, 2**64)])
def test_index_returns_the_first_value_of_each_key_across_merges(dtype, top) -> None:
    rng = np.random.default_rng(3)
    index, truth = _Index(max_run=500, filter_bits=12), {}  # a small filter: many keys share a bit
    for step in range(60):
        keys = rng.integers(1, top, 40, dtype=np.uint64) if top == 2**64 else rng.integers(1, top, 40)
        keys = np.unique(keys.astype(dtype))
        if step % 2:
            keys = keys[::-1].copy()  # unsorted adds and probes too
        found = index.get(keys)
        assert found.tolist() == [truth.get(int(k), -1) for k in keys]
        new = keys[found < 0]
        index.add(new, np.full(len(new), step))
        truth.update({int(k): step for k in new})
    assert len(index) == len(truth)
    assert len(index.runs) > 1


def test_minhash_decisions_do_not_depend_on_where_batches_fall() -> None:
    rng = np.random.default_rng(7)
    # Words without digits, and ten numbers: a copy with one number swapped for another is kept.
    words = ["w" + "".join("abcdefghij"[int(d)] for d in str(i)) for i in range(290)] + [
        str(1900 + i) for i in range(10)
    ]
    rows: list[dict] = []
    for i in range(1500):  # about a third are copies of an earlier row with one word changed
        if rows and rng.random() < 0.35:
            text = rows[int(rng.integers(len(rows)))]["instruction"].split()
            text[int(rng.integers(len(text)))] = words[int(rng.integers(300))]
        else:
            text = [words[int(j)] for j in rng.integers(0, 300, 12)]
        rows.append({"id": f"r{i}", "instruction": " ".join(text)})
    results = []
    for size, ahead in ((len(rows), False), (97, False), (7, False), (97, True), (7, True)):  # all, some, many
        out, rejects = run(dedup_minhash(read_ahead=ahead), rows, size=size)
        results.append((out.to_pylist(), rejects.to_pylist()))
    assert len(results[0][1]) > 300  # the copies are found, so the comparison means something
    assert all(r == results[0] for r in results)


def test_by_default_each_batch_is_yielded_before_the_next_is_read() -> None:
    """A pipeline's resume checkpoint counts the source rows read once a stage has yielded: a
    stage holding a batch it has read would have that batch skipped on resume."""
    events: list[str] = []

    def upstream() -> Iterator[Batch]:
        for i in range(3):
            events.append(f"read {i}")
            yield from_rows([{"id": f"r{i}", "instruction": f"w{i}a w{i}b w{i}c"}])

    for make in (dedup_minhash, dedup_exact):
        events.clear()
        for batch in make()(upstream()):
            events.append(f"out {batch['id'][0].as_py()[1:]}")
        assert events == ["read 0", "out 0", "read 1", "out 1", "read 2", "out 2"]


def test_minhash_hashes_ahead_in_a_worker_but_pulls_its_input_in_the_callers_thread() -> None:
    """With read_ahead (`synth dedup`), the next batch is hashed while this one is matched; the
    stages upstream (a reader) still run in the caller's thread, where Ctrl-C lands."""
    pulled, hashed = [], []
    stage = dedup_minhash(read_ahead=True)

    def upstream() -> Iterator[Batch]:
        for i in range(4):
            pulled.append(threading.current_thread())
            yield from_rows([{"id": f"b{i}r{j}", "instruction": f"w{i}{j}a w{i}{j}b w{i}{j}c"} for j in range(5)])

    original = minhash_module.word_lists
    try:
        minhash_module.word_lists = lambda texts: hashed.append(threading.current_thread()) or original(texts)
        out = pa.concat_tables(list(stage(upstream())))
    finally:
        minhash_module.word_lists = original
    assert out.num_rows == 20 and len(hashed) == 4
    assert set(pulled) == {threading.current_thread()}
    assert threading.current_thread() not in hashed


def test_batches_are_prepared_one_at_a_time_in_order_whether_ahead_or_not() -> None:
    """Switching between ahead and here (semantic dedup does, when its index turns to HNSW) never
    runs two `prepare` at once: a tokenizer shared by two threads fails ("Already borrowed")."""
    running, most, lock = [0], [0], threading.Lock()

    def prepare(texts: pa.Array) -> list[str]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return texts.to_pylist()

    switches = iter([True, False, True, True, False, False, True] * 2)
    batches = [from_rows([{"id": f"r{i}", "instruction": f"text {i}"}]) for i in range(12)]
    out = list(dedup_module._ahead(iter(batches), "instruction", Counter(), prepare, lambda: next(switches)))
    assert [prepared for *_, prepared in out] == [[f"text {i}"] for i in range(12)]
    assert most[0] == 1


def test_an_error_while_hashing_ahead_reaches_the_caller() -> None:
    stage = dedup_minhash(read_ahead=True)
    batches = [from_rows([{"id": f"r{i}", "instruction": f"text {i}"}]) for i in range(3)]
    original = minhash_module.word_lists
    try:
        minhash_module.word_lists = lambda texts: (_ for _ in ()).throw(SynthError("hashing failed"))
        with pytest.raises(SynthError, match="hashing failed"):
            list(stage(iter(batches)))
    finally:
        minhash_module.word_lists = original


@pytest.mark.parametrize("seed", range(6))
def test_settling_a_batch_in_whole_array_rounds_matches_row_by_row(seed, monkeypatch) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    sig = rng.integers(0, 256, (n, 128)).astype(np.uint8)
    for i in range(1, n):  # chains of copies of copies, and rows sharing keys by chance
        if rng.random() < 0.5:
            source = i - 1 if rng.random() < 0.5 else int(rng.integers(i))
            sig[i] = np.where(rng.random(128) < 0.15, rng.integers(0, 256, 128), sig[source])
    rows = np.sort(rng.integers(0, n, 3000))
    keys = rng.integers(1, 60, len(rows)).astype(np.uint32)
    # earlier-batch matches on the similarity grid, so that ties with this batch's rows happen
    on_grid = jaccard(np.zeros((n, 128)), (np.arange(128) >= rng.integers(104, 115, n)[:, None]).astype(float))
    prior_best = np.where(rng.random(n) < 0.3, on_grid, -np.inf)
    in_order = dedup_module._settle_in_order

    def no_way_out(*args: object) -> None:
        raise AssertionError("the whole-array rounds did not settle")

    results = []
    for settle, way_out in (
        (dedup_module._settle_within, no_way_out),
        (functools.partial(dedup_module._settle_within, rounds=1), in_order),  # the row-by-row way out
        (in_order, in_order),
    ):
        monkeypatch.setattr(minhash_module, "_settle_in_order", way_out)
        best, owner, prior = prior_best.copy(), np.full(n, -1), np.where(np.isfinite(prior_best), 7, -1)
        keep = best < 0.7
        settle(sig, rows, keys, 0.7, best, owner, prior, keep)
        results.append((best.tolist(), owner.tolist(), prior.tolist(), keep.tolist()))
    assert results[0] == results[1] == results[2]
    assert 0 < sum(results[0][3]) < n and max(results[0][1]) >= 0  # some rows dropped within the batch


def test_ascii_words_are_the_unicode_kernels_words() -> None:
    rng = np.random.default_rng(3)
    alphabet = [chr(c) for c in range(128)]
    texts = [
        "",
        "   ",
        "Hello, World!",
        "a_b-c",
        "x\x1fy\x07z",
        *("".join(rng.choice(alphabet, 30)) for _ in range(300)),
    ]
    words, offsets = word_lists(pa.array(texts[5:8] + texts))  # an offset into the buffers too
    expected = _words(pa.array(texts[5:8] + texts))
    assert offsets.tolist() == (expected.offsets.to_numpy() - expected.offsets[0].as_py()).tolist()
    assert words.to_pylist() == expected.flatten().to_pylist()
    sliced = pa.array(["pad", *texts]).slice(1)
    assert word_lists(sliced)[0].to_pylist() == _words(pa.array(texts)).flatten().to_pylist()
    assert word_lists(pa.array(["Ünïcode, TEXT"]))[0].to_pylist() == ["ünïcode", "text"]
