"""Dedup by embeddings with a fake embedder whose vectors are chosen by hand, so every distance is
known: which rows are dropped at a threshold and which kept, the row each copies, the distances
written, the numbers-and-names check, the lexical confirmation, self-calibration, reading ahead,
and the vector index, exact and approximate. Milliseconds each: no model is loaded. (The name
holds no "semantic": benchmarks/mutation.py deselects those, the tests of the real embedders.)"""

from __future__ import annotations

import importlib.util
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest

from synth.core import SynthError, from_rows
from synth.stages import dedup_semantic
from synth.stages.dedup import _semantic
from synth.stages.dedup._index import _VectorIndex
from synth.stages.dedup._lexical import Lexical
from synth.stages.dedup._semantic import _match_semantic
from synth.stages.embed import Embedder

pytest.importorskip("usearch")

DIM = 8


def axis(k: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[k] = 1
    return v


def near(k: int, other: int, distance: float) -> np.ndarray:
    """A unit vector at cosine `distance` from axis k, leaning toward axis `other`."""
    cos = 1 - distance
    return cos * axis(k) + np.sqrt(1 - cos * cos) * axis(other)


def _rounding_unit() -> np.ndarray:
    """A float32 unit vector whose product with itself rounds above 1 (a distance just under 0)."""
    for seed in range(1000):
        u = np.random.default_rng(seed).standard_normal(DIM)
        u = (u / np.linalg.norm(u)).astype(np.float32)
        e = np.stack([u, u, -u])
        s = e @ e.T
        if s[0, 1] > 1 and s[0, 2] < -1:
            return u
    raise AssertionError("no such vector")


@dataclass
class Fake:
    """An embedder from a table of vectors (or a function); records each load and each encode."""

    vectors: dict[str, np.ndarray] | None = None
    function: object = None
    dim: int = DIM
    loads: list[tuple[str, str | None]] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.function is not None:
            return self.function(texts)
        return np.array([self.vectors[t] for t in texts], np.float32).reshape(len(texts), self.dim)


def fake(monkeypatch, vectors=None, function=None, quick: bool = True, dim: int = DIM) -> Fake:
    embedder = Fake(vectors, function, dim)

    def load(name: str, device: str | None = None) -> Embedder:
        embedder.loads.append((name, device))
        return Embedder(f"fake ({name})", dim, embedder.encode, quick=quick)

    monkeypatch.setattr(_semantic, "load_embedder", load)
    return embedder


def run(stage, texts: list[str | None], size: int, column: str = "instruction") -> tuple[pa.Table, pa.Table | None]:
    """The rows `stage` keeps, and those it sends to its rejects (a list's append), batches of `size`."""
    rows = [{"id": str(i), column: t} for i, t in enumerate(texts)]
    out = list(stage(from_rows(rows[s : s + size]) for s in range(0, len(rows), size)))
    sink = getattr(stage.rejects, "__self__", None)
    return pa.concat_tables(out), (pa.concat_tables(sink) if sink else None)


def kept_ids(table: pa.Table) -> list[int]:
    return [int(i) for i in table["id"].to_pylist()]


# ---------------------------------------------------------------- what is dropped, and what is written

FAMILY = {
    "alpha": axis(0),
    "beta": axis(1),
    "alpha nearly": near(0, 2, 0.099),  # just under 0.1: a copy of alpha
    "alpha further": near(0, 3, 0.101),  # just over: kept
    "beta nearly": near(1, 4, 0.05),
    "alpha further again": near(0, 3, 0.101),  # the kept "alpha further" again, distance 0
    "gamma": axis(2),  # 0.57 from the dropped "alpha nearly", 1.0 from every kept row
}


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_rows_closer_than_the_threshold_are_dropped_naming_the_kept_row_they_copy(monkeypatch, size) -> None:
    fake(monkeypatch, FAMILY)
    stage = dedup_semantic(threshold=0.1, rejects=[].append)
    out, rejects = run(stage, list(FAMILY), size)
    assert kept_ids(out) == [0, 1, 3, 6]
    assert out["dup_cluster"].to_pylist() == ["0", "1", "3", "6"]
    assert out.schema.field("min_neighbor_distance").type == pa.float32()  # as in a batch with no text
    distance = out["min_neighbor_distance"].to_pylist()
    assert distance[0] is None  # no earlier row
    np.testing.assert_allclose(distance[1:], [1.0, 0.101, 1.0], atol=1e-6)  # dropped rows are not neighbours
    assert rejects["id"].to_pylist() == ["2", "4", "5"]
    assert rejects["dup_cluster"].to_pylist() == ["0", "1", "3"]
    np.testing.assert_allclose(rejects["dup_similarity"].to_pylist(), [0.901, 0.95, 1.0], atol=1e-6)
    np.testing.assert_allclose(rejects["min_neighbor_distance"].to_pylist(), [0.099, 0.05, 0.0], atol=1e-6)
    assert (stage.stats["rows_in"], stage.stats["kept"], stage.stats["dropped"]) == (7, 4, 3)


@pytest.mark.parametrize("size", [1, 2])
def test_a_row_exactly_at_the_threshold_is_kept(monkeypatch, size) -> None:
    # 0.75 and 0.5 are exact in float32: cosine distances of exactly 0.25 and 0.5.
    vectors = {"one": axis(0), "at": 0.75 * axis(0) + np.sqrt(0.4375) * axis(1), "under": near(2, 3, 0.2499)}
    vectors["under twin"] = axis(2)
    fake(monkeypatch, vectors)
    for check_terms in (True, False):  # with the numbers-and-names check, and the threshold alone
        stage = dedup_semantic(threshold=0.25, check_terms=check_terms)
        out, _ = run(stage, list(vectors), size)
        assert kept_ids(out) == [0, 1, 2]  # "under twin" at 0.2499 of "under": dropped
        assert out["min_neighbor_distance"].to_pylist()[1] == 0.25


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_on_a_tie_the_earlier_kept_row_is_the_one_copied(monkeypatch, size) -> None:
    # Batches of 1: east and north in two chunks of the index; of 2: east in the index, north in
    # the batch; of 3: both in one chunk; of 4: all in one batch.
    half = np.float32(np.sqrt(0.5))
    vectors = {"far": axis(5), "east": axis(0), "north": axis(1), "between": half * (axis(0) + axis(1))}
    fake(monkeypatch, vectors)
    stage = dedup_semantic(threshold=0.3, rejects=[].append)
    out, rejects = run(stage, list(vectors), size)
    assert kept_ids(out) == [0, 1, 2]
    assert rejects["dup_cluster"].to_pylist() == ["1"]  # as near "north", but "east" came first


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_on_a_tie_the_earlier_kept_row_decides_the_numbers_check(monkeypatch, size) -> None:
    half = np.float32(np.sqrt(0.5))
    vectors = {"far": axis(5), "Add 2 and 3.": axis(0), "Add 7 and 6.": axis(1)}
    vectors["Add 7 and 6 now."] = half * (axis(0) + axis(1))  # tied; the earlier one holds other numbers
    fake(monkeypatch, vectors)
    stage = dedup_semantic(threshold=0.3)
    out, _ = run(stage, list(vectors), size)
    assert kept_ids(out) == [0, 1, 2, 3] and stage.stats["kept_terms_differ"] == 1


@pytest.mark.parametrize("size", [1, 3])
def test_the_nearest_close_row_not_the_first_decides_the_numbers_check(monkeypatch, size) -> None:
    vectors = {"Add 2 and 3.": axis(0), "Add 7 and 6.": 0.6 * axis(0) + 0.8 * axis(1)}  # 0.4 apart: both kept
    angle = np.radians(35)  # 0.18 from the first, 0.05 from the second, which holds the same numbers
    vectors["Add 7 and 6 now."] = np.cos(angle) * axis(0) + np.sin(angle) * axis(1)
    fake(monkeypatch, vectors)
    stage = dedup_semantic(threshold=0.3, rejects=[].append)
    out, rejects = run(stage, list(vectors), size)
    assert kept_ids(out) == [0, 1] and rejects["dup_cluster"].to_pylist() == ["1"]


def test_a_batch_past_one_block_checks_numbers_in_every_block(monkeypatch) -> None:
    base = units(1024, 64, np.random.default_rng(3))  # 1,024 rows far apart (distance over 0.3)
    texts = [f"item {i} in the list" for i in range(1024)]
    # In the second block of 1,024 rows: the first 76 again, even ones with the same number, odd ones another.
    copies = [f"Item {j} in the list" if j % 2 == 0 else f"item {j + 5000} in the list" for j in range(76)]
    fake(monkeypatch, dict(zip(texts + copies, np.concatenate([base, base[:76]]))), dim=64)
    stage = dedup_semantic(threshold=0.1, rejects=[].append)
    out, rejects = run(stage, texts + copies, 1100)
    assert out.num_rows == 1024 + 38 and stage.stats["kept_terms_differ"] == 38
    assert rejects["dup_cluster"].to_pylist() == [str(j) for j in range(0, 76, 2)]


@pytest.mark.parametrize("size", [1, 3])
def test_distances_are_bounded_by_zero_and_two(monkeypatch, size) -> None:
    u = _rounding_unit()
    vectors = {"u": u, "u again": u, "minus u": -u}
    fake(monkeypatch, vectors)
    stage = dedup_semantic(threshold=0.1, rejects=[].append)
    out, rejects = run(stage, list(vectors), size)
    assert kept_ids(out) == [0, 2]
    assert out["min_neighbor_distance"].to_pylist() == [None, 2.0]
    assert rejects["min_neighbor_distance"].to_pylist() == [0.0]


def test_the_notes_say_which_embedder_threshold_and_index(monkeypatch) -> None:
    embedder = fake(monkeypatch, FAMILY)
    stage = dedup_semantic(threshold=0.123456, model="some/model", device="cpu")
    out, _ = run(stage, list(FAMILY), 3)
    assert kept_ids(out) == [0, 1, 6]  # at 0.1235, "alpha further" (0.101) goes too
    assert embedder.loads == [("some/model", "cpu")]  # the model given, on the device given
    assert stage.notes == {
        "method": "semantic",
        "embedder": "fake (some/model)",
        "threshold": 0.1235,
        "threshold_from": "given",
        "index": "exact (numpy inner products)",
    }
    default = dedup_semantic()
    run(default, list(FAMILY), 3)
    assert embedder.loads[-1] == ("static", None)
    assert default.notes["threshold"] == 0.07
    assert default.notes["threshold_from"] == "calibrated for static on real text (filters/dedup.toml)"


def test_the_column_given_is_the_one_compared_and_null_texts_pass_unchecked(monkeypatch) -> None:
    fake(monkeypatch, FAMILY)
    stage = dedup_semantic("response", threshold=0.1)
    texts = ["alpha", None, "alpha nearly", None, "beta"]
    out, _ = run(stage, texts, 2, column="response")
    assert kept_ids(out) == [0, 1, 3, 4]
    assert out["dup_cluster"].to_pylist() == ["0", None, None, "4"]
    distance = out["min_neighbor_distance"].to_pylist()
    assert distance[1] is None and distance[2] is None and distance[3] == 1.0
    assert (stage.stats["unchecked_null"], stage.stats["kept"], stage.stats["dropped"]) == (2, 4, 1)
    only_nulls = pa.table({"id": ["a", "b"], "response": pa.array([None, None], pa.string())})
    nothing_compared = dedup_semantic("response", threshold=0.1)
    (batch,) = nothing_compared([only_nulls])
    assert batch.num_rows == 2 and batch["dup_cluster"].null_count == 2
    assert batch["min_neighbor_distance"].null_count == 2 and batch["min_neighbor_distance"].type == pa.float32()
    assert nothing_compared.notes["index"] == "exact (numpy inner products)"


def test_without_usearch_the_stage_says_what_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "usearch" else real(name, *a))
    with pytest.raises(SynthError) as refused:
        dedup_semantic(threshold=0.1)
    assert str(refused.value) == "semantic dedup needs usearch: pip install 'synth[embed]'"


def test_a_threshold_outside_zero_one_asks_for_a_cosine_distance() -> None:
    with pytest.raises(SynthError, match=r"--threshold 1.5 is outside \(0, 1\]; give a cosine distance such as 0.7"):
        dedup_semantic(threshold=1.5)


# ---------------------------------------------------------------- the numbers-and-names check

SUMS = {
    "What is 2 + 3?": axis(0),
    "What is 7 * 6?": axis(0),  # distance 0, as the static embedder nearly puts it: other numbers
    "What is 9 - 4?": axis(0),
    "what is 2 + 3?": axis(0),  # the first again, in lower case: a copy
    "What is 2 + 3 exactly?": near(0, 1, 0.05),  # the first with a word added: a copy
}


@pytest.mark.parametrize("size", [1, 2, 5])
def test_other_numbers_are_kept_even_at_distance_zero(monkeypatch, size) -> None:
    fake(monkeypatch, SUMS)
    stage = dedup_semantic(threshold=0.1, rejects=[].append)
    out, rejects = run(stage, list(SUMS), size)
    assert kept_ids(out) == [0, 1, 2]
    assert rejects["dup_cluster"].to_pylist() == ["0", "0"]
    assert stage.stats["kept_terms_differ"] == 2
    blind = dedup_semantic(threshold=0.1, check_terms=False)
    out, _ = run(blind, list(SUMS), size)
    assert kept_ids(out) == [0] and blind.stats["kept_terms_differ"] == 0


# ---------------------------------------------------------------- the lexical confirmation (minilm's table)

KEY = "Lists all of the versions within the given key."
LEXICAL = {
    KEY: axis(0),
    "Lists vineyard of the versions within the given key.": near(0, 1, 0.2),  # words 7/9 shared: a copy
    "Explain in plain words what this means: the route applies to every protocol version.": near(0, 2, 0.2),
    "the given key: lists all of the versions within": near(0, 3, 0.41),  # the same words, past `within`
    "Sort a list of 10 numbers in Python.": axis(4),
    "Sort a list of 25 numbers in Python.": near(4, 6, 0.2),  # 7/9 words shared, another number
    "within the given key, lists all of the versions": near(0, 5, 0.39),  # the same words, inside `within`
}


@pytest.mark.parametrize("size", [1, 7])
def test_at_its_calibrated_default_a_near_row_sharing_most_words_is_a_copy(monkeypatch, size) -> None:
    fake(monkeypatch, LEXICAL)
    stage = dedup_semantic(embedder="minilm", rejects=[].append)
    out, rejects = run(stage, list(LEXICAL), size)
    assert kept_ids(out) == [0, 2, 3, 4, 5]
    assert rejects["id"].to_pylist() == ["1", "6"] and rejects["dup_cluster"].to_pylist() == ["0", "0"]
    assert stage.stats["dropped_lexical"] == 2 and stage.stats["kept_terms_differ"] == 1
    assert (stage.notes["threshold"], stage.notes["lexical_within"], stage.notes["lexical_jaccard"]) == (
        0.09,
        0.4,
        0.75,
    )
    assert stage.notes["threshold_from"] == "calibrated for minilm on real text (filters/dedup.toml)"
    np.testing.assert_allclose(out["min_neighbor_distance"].to_pylist()[1:3], [0.2, 0.41], atol=1e-6)
    # Without the numbers-and-names check, the other number is a copy on its words too.
    blind = dedup_semantic(embedder="minilm", check_terms=False)
    assert kept_ids(run(blind, list(LEXICAL), size)[0]) == [0, 2, 3, 4]
    assert blind.stats["dropped_lexical"] == 3 and blind.stats["kept_terms_differ"] == 0


@pytest.mark.parametrize("size", [1, 7])
def test_a_given_threshold_or_lexical_off_is_the_whole_rule(monkeypatch, size) -> None:
    fake(monkeypatch, LEXICAL)
    for stage in (dedup_semantic(embedder="minilm", threshold=0.09), dedup_semantic(embedder="minilm", lexical=False)):
        out, _ = run(stage, list(LEXICAL), size)
        assert kept_ids(out) == list(range(7))
        assert stage.stats["dropped_lexical"] == 0 and "lexical_within" not in stage.notes
        assert stage.notes["threshold"] == 0.09
    # Given, 0.45 takes the rows inside 0.45 alone, whatever their words: row 3 (0.41) and row 6 too.
    wide = dedup_semantic(embedder="minilm", threshold=0.45)
    out, _ = run(wide, list(LEXICAL), size)
    assert kept_ids(out) == [0, 4, 5] and wide.notes["threshold_from"] == "given"


def test_a_confirmation_no_wider_than_the_threshold_is_not_used(monkeypatch) -> None:
    fake(monkeypatch, LEXICAL)
    monkeypatch.setattr(_semantic, "calibrated_lexical", lambda name: Lexical(0.09, 0.75))
    stage = dedup_semantic(embedder="minilm")
    assert kept_ids(run(stage, list(LEXICAL), 7)[0]) == list(range(7))
    assert "lexical_within" not in stage.notes and stage.stats["dropped_lexical"] == 0


@pytest.mark.parametrize("size", [1, 2])
def test_a_copy_that_adds_a_number_is_still_a_copy_beside_the_word_sketches(monkeypatch, size) -> None:
    # minilm's default keeps each kept row's terms and word sketch side by side in the store.
    vectors = {"sort the list of numbers": axis(0), "sort the list of 10 numbers": near(0, 1, 0.05)}
    vectors |= {"sort the list of 10 numbers quickly": near(0, 2, 0.05)}
    fake(monkeypatch, vectors)
    stage = dedup_semantic(embedder="minilm", rejects=[].append)
    out, rejects = run(stage, list(vectors), size)
    assert kept_ids(out) == [0] and rejects["dup_cluster"].to_pylist() == ["0", "0"]
    assert stage.stats["kept_terms_differ"] == 0 and stage.stats["dropped_lexical"] == 0


# ---------------------------------------------------------------- an embedder without a calibrated threshold

WORDS = [f"{a}{b}{c}" for a in "bcdfgklmnp" for b in "aeiou" for c in "rstvz"]  # 250 lower-case words


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Word counts hashed into DIM x 64 slots: a one-word edit of ten words lies at distance about 0.1."""
    out = np.zeros((len(texts), 64 * DIM), np.float32)
    for i, t in enumerate(texts):
        for w in t.split():
            out[i, zlib.crc32(w.encode()) % (64 * DIM)] += 1
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norm > 0, norm, 1)


def test_an_uncalibrated_embedder_calibrates_on_the_first_batch(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 10, replace=False)) for _ in range(240)]
    edits = [" ".join(t.split()[:9] + ["zzz"]) for t in texts[:3]]  # one word of ten changed
    embedder = fake(monkeypatch, function=bag_of_words, dim=64 * DIM)
    stage = dedup_semantic(embedder="my-bow", rejects=[].append)
    out, rejects = run(stage, texts + edits, 230)  # two batches: the edits of the first in the second
    assert kept_ids(out) == list(range(240))  # the first batch is written too
    assert rejects["dup_cluster"].to_pylist() == ["0", "1", "2"]
    assert stage.notes["threshold_from"].startswith("self-calibrated on 230 rows")
    assert 0.1 < stage.notes["threshold"] < 0.6
    assert embedder.loads == [("my-bow", None)]
    with pytest.raises(SynthError, match=r"'my-bow' has no calibrated threshold .* 100 distinct texts"):
        run(dedup_semantic(embedder="my-bow"), texts, 100)
    calls = len(embedder.threads)
    assert list(dedup_semantic(embedder="my-bow")(iter([]))) == [] and len(embedder.threads) == calls


# ---------------------------------------------------------------- reading ahead, and the index switch

CHAIN = {f"row {i}": axis(i) for i in range(6)} | {"row 0 again": near(0, 7, 0.01)}


@pytest.mark.parametrize("quick", [True, False])
def test_a_quick_embedder_reads_ahead_in_a_worker_until_the_index_turns_approximate(monkeypatch, quick) -> None:
    embedder = fake(monkeypatch, CHAIN, quick=quick)
    stage = dedup_semantic(threshold=0.1, exact_limit=2, read_ahead=True, rejects=[].append)
    out, rejects = run(stage, list(CHAIN), 1)
    assert kept_ids(out) == [0, 1, 2, 3, 4, 5]  # the copy of row 0 found in the HNSW graph too
    assert rejects["dup_cluster"].to_pylist() == ["0"]
    assert stage.notes["index"] == "approximate (usearch HNSW, 8-bit, from kept row 3)"
    # Batches 0-3 are read before the third kept row turns the index approximate; then no worker.
    worker = [name.startswith("synth-dedup") for name in embedder.threads]
    assert worker == ([True] * 4 + [False] * 3 if quick else [False] * 7)
    embedder.threads.clear()
    run(dedup_semantic(threshold=0.1), list(CHAIN), 1)  # without read_ahead: all in the caller's thread
    assert embedder.threads == ["MainThread"] * 7


# ---------------------------------------------------------------- the matcher against a row-by-row reference


def reference(prior: np.ndarray, emb: np.ndarray, threshold: float):
    """Row by row: the nearest earlier kept row (the index first, the earliest on a tie), dropped when closer."""
    kept_rows = [("prior", i, v) for i, v in enumerate(prior)]
    keep, owner, where, distance = [], [], [], []
    for r, v in enumerate(emb):
        sims = [np.float32(np.dot(v, k[2])) for k in kept_rows]
        j = int(np.argmax(sims)) if sims else -1
        d = 1 - float(sims[j]) if sims else np.inf
        distance.append(min(max(d, 0), 2) if sims else np.nan)
        copy = d < threshold
        keep.append(not copy)
        owner.append(kept_rows[j][1] if copy and kept_rows[j][0] == "batch" else -1)
        where.append(kept_rows[j][1] if copy and kept_rows[j][0] == "prior" else -1)
        if not copy:
            kept_rows.append(("batch", r, v))
    return np.array(keep), np.array(where), np.array(owner), np.array(distance)


def planted(n: int, earlier: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n unit rows in 16 dimensions: a third new, the rest noisy copies of an earlier row (distance 0 to 0.3)."""
    rows: list[np.ndarray] = []
    for _ in range(n):
        pool = list(earlier) + rows
        v = (
            rng.standard_normal(16)
            if rng.random() < 0.3
            else pool[rng.integers(len(pool))] + rng.uniform(0, 0.2) * rng.standard_normal(16)
        )
        rows.append(v / np.linalg.norm(v))
    return np.array(rows, np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_matcher_settles_rows_as_one_by_one_for_any_block(seed) -> None:
    rng = np.random.default_rng(seed)
    prior = planted(10, rng.standard_normal((3, 16)), rng)
    emb = planted(60, prior, rng)
    keep, where, owner, distance = reference(prior, emb, 0.1)
    assert (~keep & (where >= 0)).sum() > 3 and (~keep & (owner >= 0)).sum() > 3 and keep.sum() > 10
    for block in (1, 2, 5, 1024):
        index = _VectorIndex(16, 1000)
        index.add(prior[:6])
        index.add(prior[6:])
        verdict = _match_semantic(emb, index, 0.1, block=block)
        np.testing.assert_array_equal(verdict.keep, keep)
        np.testing.assert_array_equal(verdict.prior, where)
        np.testing.assert_array_equal(verdict.owner, owner)
        got = verdict.extra["min_neighbor_distance"].to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(got, distance, atol=1e-6)
        np.testing.assert_allclose(verdict.similarity[~keep], 1 - distance[~keep], atol=1e-6)
        assert np.isnan(verdict.similarity[keep]).all()
    first = _match_semantic(emb[:1], _VectorIndex(16, 1000), 0.1)  # no earlier row at all
    assert first.keep.tolist() == [True] and first.extra["min_neighbor_distance"].null_count == 1


# ---------------------------------------------------------------- the vector index


def units(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def nearest_as_numpy_finds_it(index: _VectorIndex, rows: np.ndarray, queries: np.ndarray) -> None:
    best, found = index.search(queries)
    sims = queries.astype(np.float64) @ rows.T.astype(np.float64)
    top = np.sort(sims, axis=1)[:, -2:]
    clear = top[:, 1] - top[:, 0] > 1e-5  # not a near tie, where float32 rounding may pick either
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(found[clear], np.argmax(sims, axis=1)[clear])
    np.testing.assert_allclose(sims[np.arange(len(queries)), found], top[:, 1], atol=1e-5)
    np.testing.assert_allclose(best, top[:, 1], atol=1e-5)


def test_exact_search_finds_the_nearest_row_across_chunks_and_blocks() -> None:
    rng = np.random.default_rng(0)
    rows, queries = units(4500, 4, rng), units(60, 4, rng)
    index = _VectorIndex(4, 10_000)
    empty = index.search(queries[:2])
    assert empty[0].tolist() == [-np.inf, -np.inf] and empty[1].tolist() == [-1, -1]
    index.add(rows[:4200].astype(np.float64))  # past one 4096-row block
    index.add(rows[:0])
    index.add(rows[4200:])
    assert index.ntotal == 4500 and index.graph is None
    assert [c.dtype for c in index.exact] == [np.float32, np.float32]  # 4 bytes a dimension, whatever came in
    nearest_as_numpy_finds_it(index, rows, queries)
    assert index.search(rows[4096:4097])[1].tolist() == [4096]  # the first row of the second block
    none = index.search(queries[:0])
    assert none[0].shape == (0,) and none[1].shape == (0,)
    few = _VectorIndex(4, 10_000)
    few.add(rows[:5])
    nearest_as_numpy_finds_it(few, rows[:5], units(2100, 4, rng))  # past two 1024-query blocks


def test_exact_search_gives_the_earliest_of_equal_rows() -> None:
    index = _VectorIndex(DIM, 100)
    index.add(np.array([axis(1), axis(0)], np.float32))
    index.add(np.array([axis(0), axis(0)], np.float32))
    best, found = index.search(np.array([axis(0), axis(1)], np.float32))
    assert found.tolist() == [1, 0] and best.tolist() == [1.0, 1.0]


def test_past_exact_limit_the_graph_still_finds_rows_added_before_and_after() -> None:
    from usearch.index import ScalarKind

    rng = np.random.default_rng(0)
    index = _VectorIndex(DIM, 3)
    rows = np.eye(DIM, dtype=np.float32)[:7]
    index.add(rows[:2])
    index.add(rows[2:3])
    assert index.graph is None and index.kind == "exact (numpy inner products)"  # 3 rows: at the limit
    index.add(rows[3:5])
    assert index.graph is not None and index.kind == "approximate (usearch HNSW, 8-bit, from kept row 4)"
    assert index.graph.dtype == ScalarKind.I8  # as the notes say: 8-bit vectors
    index.add(rows[5:])
    assert index.ntotal == 7 and index.exact == []
    queries = rows + 0.4 * units(7, DIM, rng)  # cosine about 0.9 to its row, under 0.4 to the others
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    best, found = index.search(queries)
    assert found.tolist() == list(range(7))
    np.testing.assert_allclose(best, np.einsum("ij,ij->i", queries, rows), atol=0.03)
    one_best, one = index.search(queries[4:5])  # one query: usearch answers without counts
    assert one.tolist() == [4] and abs(one_best[0] - best[4]) < 1e-6
