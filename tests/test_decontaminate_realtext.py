"""Decontamination's defaults on real text installed on the machine (tests/realtext.py), not on text
written for the test: light edits (one word in seven replaced by a random word) of a benchmark's items
caught >= 95%, other real text dropped <= 1%, for each embedder `synth decontaminate` offers; and
non-numeric benchmark items (ARC-, IFEval-, HumanEval-like) against rows on the same topic that ask
something else."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from synth.benchmarks import Benchmark, load_benchmark
from synth.stages.decontaminate import Decontaminate, calibrated
from tests import realtext

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
ITEMS, OTHERS = 150, 600  # per corpus at most: 1% of 600 other texts is 6 rows
EMBEDDERS = ["minilm", pytest.param("static", marks=pytest.mark.slow)]  # static: distilled once, in the test cache


def planted(name: str, seed: int = 0) -> tuple[Benchmark, pa.Table, int]:
    """A benchmark of ITEMS texts of a real corpus; rows: a light edit of each item, then OTHERS other texts."""
    texts = dict(realtext.iter_corpora((name,))).get(name, [])
    if len(texts) < 400:
        pytest.skip(f"the {name} corpus has {len(texts)} distinct texts on this machine, too few to measure 1%")
    size = min(ITEMS, len(texts) // 5)
    items, others = realtext.split(texts, size, min(OTHERS, len(texts) - size), seed)
    rng, vocab = random.Random(seed + 1), realtext.vocabulary(texts)
    edits = [realtext.light_edit(t, rng, vocab) for t in items]
    bench = Benchmark(name, "real text", tuple(f"{name}-{i}" for i in range(size)), tuple(items), ("",) * size)
    rows = pa.table({"instruction": edits + others, "response": [""] * len(edits + others)})
    return bench, rows, size


@pytest.fixture(scope="module", params=["docstrings", "dpkg"])
def corpus(request) -> tuple[Benchmark, pa.Table, int]:
    return planted(request.param)


def rates(found: list, edits: int) -> tuple[float, float]:
    assert len(found) > edits  # the rows were all checked: edits and others both
    caught = sum(f is not None for f in found[:edits]) / edits
    false = sum(f is not None for f in found[edits:]) / (len(found) - edits)
    return caught, false


def test_the_edit_method_alone_catches_light_edits_of_real_text(corpus) -> None:
    bench, rows, edits = corpus
    stage = Decontaminate((bench,), ("instruction",), ("ngram", "edit"))
    found = stage.check(rows).to_pylist()
    caught, false = rates(found, edits)
    assert sum(f is not None and f["method"] == "edit" for f in found) >= 0.5 * edits  # most need the edit method
    assert caught >= 0.95 and false <= 0.01, (caught, false)
    for i, f in enumerate(found[:edits]):  # a catch names the item it was made from, and its score
        if f is not None:
            assert f["item_id"] == bench.ids[i] and f["method"] in {"ngram", "edit"}  # a long text keeps a 13-gram
            assert f["score"] >= (stage.edit_threshold if f["method"] == "edit" else stage.ngram_threshold)


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_the_defaults_on_real_text(corpus, embedder) -> None:
    bench, rows, edits = corpus
    stage = Decontaminate((bench,), ("instruction", "response"), model=embedder)
    assert stage.embedding_threshold == calibrated()["embedding"][embedder]["threshold"]
    caught, false = rates(stage.check(rows).to_pylist(), edits)
    assert caught >= 0.95 and false <= 0.01, (embedder, caught, false)


def nonnumeric() -> list[tuple[Benchmark, list[str], list[str]]]:
    """(benchmark, a light edit of each item, rows on an item's topic that ask something else) per set."""
    negatives = [json.loads(line) for line in (FIXTURES / "same_topic_nonnumeric.jsonl").read_text().splitlines()]
    sets = []
    for name, file in (("arc_challenge", "arc_like"), ("ifeval", "ifeval_like"), ("humaneval", "humaneval_like")):
        bench = load_benchmark(f"{name}={FIXTURES / (file + '.jsonl')}")
        rng, vocab = random.Random(0), realtext.vocabulary(list(bench.questions))
        edits = [realtext.light_edit(q, rng, vocab) for q in bench.questions]
        sets.append((bench, edits, [n["instruction"] for n in negatives if n["benchmark"] == name]))
    return sets


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_non_numeric_benchmarks_edits_caught_same_topic_rows_kept(embedder) -> None:
    for bench, edits, others in nonnumeric():
        assert len(edits) >= 12 and len(others) >= 24
        rows = pa.table({"instruction": edits + others})
        found = Decontaminate((bench,), ("instruction",), model=embedder).check(rows).to_pylist()
        missed = [e for e, f in zip(edits, found) if f is None]
        assert len(missed) <= 0.05 * len(edits), (bench.name, embedder, missed)
        dropped = [(o, f) for o, f in zip(others, found[len(edits) :]) if f is not None]
        assert dropped == [], (bench.name, embedder, dropped)


@pytest.mark.parametrize("embedder", EMBEDDERS)
def test_a_story_about_the_ocean_at_night_is_not_the_poem_about_it(embedder) -> None:
    bench = load_benchmark(f"ifeval={FIXTURES / 'ifeval_like.jsonl'}")
    rows = pa.table(
        {
            "instruction": [
                "Write a short story about the ocean at night, told by a lighthouse keeper who hears something "
                "strange in the fog.",
                "Write a story about the ocean at night.",
                bench.questions[0],  # the poem itself, as a check that the item is there to be found
            ]
        }
    )
    found = Decontaminate((bench,), ("instruction",), model=embedder).check(rows).to_pylist()
    assert found[0] is None and found[1] is None, found
    assert found[2] is not None and found[2]["item_id"] == "1001"
