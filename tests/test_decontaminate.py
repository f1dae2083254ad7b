"""Decontamination against a planted pool: tests/fixtures/benchmarks/pool.jsonl holds verbatim copies,
light edits (one word in seven changed), hand-written rephrasings, same-topic rows and unrelated rows
planted from gsm8k_test.jsonl, a hand-written set in GSM8K's format (see make_pool.py there)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from synth import stats
from synth.backends import Completion
from synth.benchmarks import catalogue, catalogue_names, load_benchmark
from synth.cli import main
from synth.core import StoppedShort, SynthError, from_rows
from synth.io import read, read_provenance
from synth.stages._ngrams import NgramIndex, ngram_hashes
from synth.stages.decontaminate import Decontaminate, calibrated, numbers
from tests.cards import flat
from tests.conftest import ScriptedBackend

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
GSM8K = f"gsm8k={FIXTURES / 'gsm8k_test.jsonl'}"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark(GSM8K)


@pytest.fixture(scope="module")
def pool() -> pa.Table:
    return pa.Table.from_pylist([json.loads(line) for line in (FIXTURES / "pool.jsonl").read_text().splitlines()])


def caught(stage: Decontaminate, pool: pa.Table, bench) -> dict[str, list[dict | None]]:
    """Per kind of planted row, what each row was caught by (None: kept); a catch must name the right item."""
    by_kind = defaultdict(list)
    for row, found in zip(pool.to_pylist(), stage.check(pool).to_pylist()):
        if found is not None and row["item"] is not None:
            assert found["item_id"] == bench.ids[row["item"]], (row, found)
        by_kind[row["kind"]].append(found)
    return by_kind


def recall(found: list) -> float:
    return sum(f is not None for f in found) / len(found)


def test_ngrams_catch_every_verbatim_copy_and_nothing_else(pool, bench) -> None:
    found = caught(Decontaminate((bench,), methods=("ngram",)), pool, bench)
    assert recall(found["verbatim"]) == 1.0
    assert all(f["method"] == "ngram" and f["score"] == 1.0 for f in found["verbatim"])
    assert recall(found["same_topic"]) == 0 and recall(found["unrelated"]) == 0
    assert recall(found["rephrase"]) == 0  # what n-grams cannot see: the reason for embeddings


def test_all_methods_on_the_planted_pool(pool, bench) -> None:
    found = caught(Decontaminate((bench,)), pool, bench)
    assert recall(found["verbatim"]) == 1.0
    assert recall(found["light_edit"]) >= 0.95
    assert recall(found["rephrase"]) >= 0.9
    assert all(f["method"] == "embedding" for f in found["rephrase"] if f)
    assert recall(found["same_topic"]) <= 0.05
    assert recall(found["unrelated"]) == 0


def test_ngram_spans_question_alone_answer_alone_and_partial_copies(bench) -> None:
    q, a = bench.questions[3], bench.answers[3]
    rows = from_rows(
        [
            {"id": "q", "instruction": f"Please help. {q}", "response": "Sure."},
            {"id": "a", "instruction": "What is the answer?", "response": a},
            {"id": "half", "instruction": " ".join(q.split()[: len(q.split()) // 2]), "response": ""},
        ]
    )
    found = Decontaminate((bench,), methods=("ngram",), ngram=8).check(rows).to_pylist()
    assert found[0]["score"] == 1.0 and found[1]["score"] == 1.0
    assert found[2] is None  # under half of the question: below the 0.5 threshold
    loose = Decontaminate((bench,), methods=("ngram",), ngram=8, ngram_threshold=0.2).check(rows).to_pylist()
    assert 0.2 <= loose[2]["score"] < 0.5


def test_ngram_hashes_are_positional_free_and_batch_independent() -> None:
    hashes, offsets = ngram_hashes(pa.array(["a b c d", "x a b c d", "a b", None]), 3)
    assert offsets.tolist() == [0, 2, 5, 5, 5]
    assert hashes[0] == hashes[3] and hashes[1] == hashes[4]  # "a b c" and "b c d" wherever they stand
    alone, _ = ngram_hashes(pa.array(["x a b c d"]), 3)
    assert alone.tolist() == hashes[2:5].tolist()
    index = NgramIndex(["one two three four"], [""], 3)
    assert index.short_items == 0 and NgramIndex(["tiny"], [""], 3).short_items == 1


def test_numbers_are_read_alike() -> None:
    assert numbers("It costs $1,240.50 or 4.50 for 3 items") == {"1240.5", "4.5", "3"}


def test_rejects_carry_contaminated_by_and_the_card_counts_them(pool, bench, tmp_path, monkeypatch, capsys) -> None:
    source = tmp_path / "pool.jsonl"
    source.write_text((FIXTURES / "pool.jsonl").read_text())
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    assert synth(["decontaminate", source, "--against", GSM8K, "--out", out, "--rejects", rejects], monkeypatch) == 0
    kept = [r for b in read(out) for r in b.to_pylist()]
    dropped = [r for b in read(rejects) for r in b.to_pylist()]
    rows = pool.to_pylist()
    # Exactly the planted copies go, every one with the item it was made from; every other row stays.
    # But one: pool-065 ("a fifty-dollar bill" for "$50") sits at cosine 0.82 to its item, under MiniLM's
    # calibrated 0.83, the price of dropping <= 0.5% of real text that is no copy.
    missed = {"pool-065"}
    planted = {r["id"] for r in rows if r["kind"] in {"verbatim", "light_edit", "rephrase"}}
    assert sorted(r["id"] for r in dropped) == sorted(planted - missed)
    assert sorted(r["id"] for r in kept) == sorted(
        {r["id"] for r in rows if r["kind"] in {"same_topic", "unrelated"}} | missed
    )
    assert len(kept) == 51 and len(dropped) == 74
    assert all(r["contaminated_by"]["item_id"] == bench.ids[r["item"]] for r in dropped)
    assert all(0 < r["contaminated_by"]["score"] <= 1 for r in dropped)
    assert "contaminated_by" not in kept[0]
    assert all(r["contaminated_by"]["benchmark"] == "gsm8k" for r in dropped)
    card = read_provenance(out)
    counts = flat(card["counts"])
    by_method = {m: counts.get(f"dropped_contaminated_gsm8k_{m}", 0) for m in ("ngram", "edit", "embedding", "llm")}
    assert by_method == {"ngram": 30, "edit": 30, "embedding": 14, "llm": 0}
    assert sum(by_method.values()) == len(dropped)
    assert card["embedder"] == "minilm"
    assert card["thresholds"]["embedding"]["threshold"] == calibrated()["embedding"]["minilm"]["threshold"]
    assert card["thresholds"]["edit"]["threshold"] == calibrated()["edit"]["threshold"]
    assert "contaminated_gsm8k_ngram" in capsys.readouterr().err
    for path in (out, rejects):  # `synth stats` reads the card of the one, the column of the other
        table = stats.table(stats.collect(path))
        assert f"gsm8k ngram {counts['dropped_contaminated_gsm8k_ngram']}" in table


def test_llm_check_decides_on_the_embedding_candidates(pool, bench) -> None:
    rephrased = pool.filter(pa.compute.equal(pool["kind"], "rephrase")).slice(0, 3)
    judge = ScriptedBackend(['{"rephrase": true}', '{"rephrase": false}', "no idea", "still no idea"])
    stage = Decontaminate((bench,), methods=("embedding", "llm"), judge=judge)
    found = stage.check(rephrased).to_pylist()
    # the last: no usable answer, so the embedding method decides
    assert [f and f["method"] for f in found] == ["llm", None, "embedding"]
    assert len(judge.calls[0]) == 3 and rephrased["instruction"][0].as_py() in judge.calls[0][0][-1]["content"]
    assert stage.stats["llm_asked"] == 3 and stage.stats["llm_failed"] == 1


def test_a_local_copy_of_a_catalogue_set_with_nested_choices(tmp_path) -> None:
    arc = tmp_path / "arc.jsonl"
    item = {"id": "Mercury_7", "question": "Which gas do plants take in from the air to make their food?"}
    item |= {"choices": {"text": ["oxygen", "carbon dioxide", "nitrogen", "helium"], "label": list("ABCD")}}
    arc.write_text(json.dumps(item) + "\n")
    (loaded,) = [load_benchmark(f"arc_challenge={arc}")]
    assert loaded.ids == ("Mercury_7",) and "carbon dioxide" in loaded.answers[0]


def test_hub_benchmarks_stream_with_their_config_and_split(monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    asked = []

    def fake(path, name=None, split=None, streaming=False):
        asked.append((path, name, split, streaming))
        return iter([{"question": "How many legs do three spiders have in total?", "answer": "24"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    loaded = load_benchmark("gsm8k")
    assert asked == [("openai/gsm8k", "main", "test", True)] and loaded.ids == ("0",)
    load_benchmark("openai/gsm8k:socratic@train")
    assert asked[-1] == ("openai/gsm8k", "socratic", "train", True)


def test_the_help_lists_the_catalogue_without_parsing_it() -> None:
    assert catalogue_names() == list(catalogue())


def test_every_catalogue_entry_names_its_hub_split_and_text() -> None:
    entries = catalogue()
    expected = {"gsm8k", "math", "math500", "humaneval", "mbpp", "mmlu", "mmlu_pro", "gpqa", "ifeval"}
    assert expected | {"arc_challenge", "alpaca_eval", "mt_bench", "bbh", "truthfulqa"} <= set(entries)
    for name, entry in entries.items():
        assert "/" in entry["hub"] and entry["split"] and entry["question"], name


def synth(args: list, monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["synth", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize(
    ("against", "extra", "message"),
    [
        ("nosuchbench", [], "unknown benchmark 'nosuchbench'"),
        ("nosuchbench=PATH", [], "unknown benchmark 'nosuchbench' in"),
        ("gsm8k=PATH", ["--question-field", "problem"], "has no field 'problem' (it has: id, question, answer"),
        ("EMPTY", [], "is empty; give a file with at least one item"),
        ("gsm8k=PATH", ["--methods", "ngram,fuzzy"], "unknown decontamination method(s) ['fuzzy']"),
        ("gsm8k=PATH", ["--methods", "llm"], "--methods llm needs --model"),
        ("gsm8k=PATH", ["--column", "text"], "the input has none of the columns text"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, against, extra, message) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    against = against.replace("PATH", str(FIXTURES / "gsm8k_test.jsonl"))
    against = against.replace("EMPTY", str(tmp_path / "empty.jsonl"))
    out = tmp_path / "out"
    code = synth(["decontaminate", FIXTURES / "pool.jsonl", "--against", against, "--out", out, *extra], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_empty_benchmark_from_the_library_is_an_error(tmp_path) -> None:
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    with pytest.raises(SynthError, match="has no items"):
        load_benchmark(f"gsm8k={empty}")


def test_an_unreachable_hub_set_is_one_line_naming_the_way_around(monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SynthError, match=r"cannot read openai/gsm8k \(main, split test\).*pass NAME=PATH") as caught:
        load_benchmark("gsm8k")
    assert "\n" not in str(caught.value)


def test_the_llm_check_from_the_command_line(tmp_path, monkeypatch) -> None:
    import synth.cli._shared as shared

    judge = ScriptedBackend(['{"rephrase": true}'] * 200)
    monkeypatch.setattr(shared, "load_backend", lambda *a, **k: judge)
    source = tmp_path / "rows.jsonl"
    rows = [json.loads(line) for line in (FIXTURES / "pool.jsonl").read_text().splitlines()]
    source.write_text("\n".join(json.dumps(r) for r in rows if r["kind"] in {"rephrase", "unrelated"}))
    out = tmp_path / "out"
    args = ["decontaminate", source, "--against", GSM8K, "--out", out, "--model", "judge", "--methods", "embedding"]
    assert synth(args, monkeypatch) == 0
    kept = [r for b in read(out) for r in b.to_pylist()]
    assert {r["kind"] for r in kept} == {"unrelated"} and len(kept) == 20  # unrelated rows are never asked about
    assert flat(read_provenance(out)["counts"])["dropped_contaminated_gsm8k_llm"] == 15
    assert sum(len(c) for c in judge.calls) == 15


def failing(reason: str = "ConnectionError: the judge's server is down") -> Completion:
    return Completion("", "error", error=reason)


def pool_rows(tmp_path: Path, kinds: set[str]) -> tuple[Path, list[dict]]:
    rows = [json.loads(line) for line in (FIXTURES / "pool.jsonl").read_text().splitlines()]
    chosen = [r for r in rows if r["kind"] in kinds]
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in chosen))
    return source, chosen


def test_a_judge_that_fails_every_request_stops_the_run_and_keeps_nothing(tmp_path, monkeypatch, capsys) -> None:
    import synth.cli._shared as shared

    judge = ScriptedBackend([failing() for _ in range(200)])
    monkeypatch.setattr(shared, "load_backend", lambda *a, **k: judge)
    source, rows = pool_rows(tmp_path, {"rephrase", "unrelated"})
    out = tmp_path / "out"
    args = ["decontaminate", source, "--against", GSM8K, "--out", out, "--model", "judge", "--methods", "embedding"]
    assert synth(args, monkeypatch) == 3
    err = capsys.readouterr().err
    assert "no usable answer for 15 of the 15 rows" in err and "the judge's server is down" in err
    assert sum(len(c) for c in judge.calls) == 30  # each candidate asked, then once again
    assert [r for b in read(out) for r in b.to_pylist()] == []  # not one row kept unchecked
    card = read_provenance(out)
    assert card["status"] != "complete"
    assert card["failed_requests"]["count"] == 30 and card["failed_requests"]["of"] == 30


def test_the_stage_stops_at_the_first_batch_a_dead_judge_leaves_unchecked(pool, bench) -> None:
    rephrased = pool.filter(pa.compute.equal(pool["kind"], "rephrase"))
    stage = Decontaminate((bench,), methods=("embedding", "llm"), judge=ScriptedBackend(["no idea"] * 40))
    with pytest.raises(StoppedShort, match="no usable answer for 15 of the 15 rows"):
        list(stage([rephrased]))
    assert stage.stats["llm_failed"] == 15


def test_some_judge_failures_are_counted_in_the_card(tmp_path, monkeypatch) -> None:
    import synth.cli._shared as shared

    # 15 candidates: 12 answered, 3 failed twice (the batch, then the retry of the three).
    judge = ScriptedBackend(['{"rephrase": true}'] * 12 + [failing()] * 3 + [failing("HTTP 503")] * 3)
    monkeypatch.setattr(shared, "load_backend", lambda *a, **k: judge)
    source, rows = pool_rows(tmp_path, {"rephrase", "unrelated"})
    out = tmp_path / "out"
    args = ["decontaminate", source, "--against", GSM8K, "--out", out, "--model", "judge", "--methods", "embedding"]
    assert synth(args, monkeypatch) == 0
    card = read_provenance(out)
    assert flat(card["counts"])["llm_asked"] == 15 and flat(card["counts"])["llm_failed"] == 3
    assert card["failed_requests"]["count"] == 6 and card["failed_requests"]["of"] == 18
    assert card["failed_requests"]["reasons"] == {"ConnectionError: the judge's server is down": 3, "HTTP 503": 3}
    counts = flat(card["counts"])
    # the 12 answered rows by the judge; the 3 it failed on by the embedding rule (close enough), none kept unchecked
    assert counts["dropped_contaminated_gsm8k_llm"] == 12
    assert counts["dropped_contaminated_gsm8k_llm"] + counts.get("dropped_contaminated_gsm8k_embedding", 0) == 15
    kept = [r for b in read(out) for r in b.to_pylist()]
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in rows if r["kind"] == "unrelated")


def test_the_judge_error_rate_stop_uses_max_error_rate(pool, bench) -> None:
    rows = pa.concat_tables([pool.filter(pa.compute.equal(pool["kind"], "rephrase"))] * 4)  # 60 candidates
    replies = ['{"rephrase": true}'] * 55 + ["no idea"] * 5 + ["no idea"] * 5  # 5 of 60 unusable: 8.3%
    strict = Decontaminate((bench,), methods=("embedding", "llm"), judge=ScriptedBackend(list(replies)))
    with pytest.raises(StoppedShort, match="over the allowed 5.0%"):
        strict.check(rows)
    lenient = Decontaminate(
        (bench,), methods=("embedding", "llm"), judge=ScriptedBackend(list(replies)), max_error_rate=0.1
    )
    assert sum(f is not None for f in lenient.check(rows).to_pylist()) == 60
    assert lenient.stats["llm_failed"] == 5


def test_an_embedder_without_a_calibrated_threshold_asks_for_one(bench) -> None:
    with pytest.raises(SynthError, match="no calibrated --embedding-threshold for embedder '/models/mine'"):
        Decontaminate((bench,), model="/models/mine")
    stage = Decontaminate((bench,), methods=("ngram", "edit"), model="/models/mine")  # no embedding: no threshold
    assert stage.embedding_threshold is None
