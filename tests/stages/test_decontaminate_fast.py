"""Decontamination's passes in milliseconds, with no model: the embedding pass on a fake embedder
whose cosines are chosen by hand, the LLM check on a scripted judge, the thresholds read from their
data file, and the settings refused. Each test names exactly which rows go and which stay."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import yaml

import synth.stages.embed as embed_module
from synth.backends import Completion, Metered
from synth.benchmarks import Benchmark
from synth.core import StoppedShort, SynthError, from_rows
from synth.resources import data_file
from synth.stages.decontaminate import (
    Decontaminate,
    default_embedding_threshold,
    embedder_key,
    load_check_rubric,
)
from tests.conftest import ScriptedBackend

OCEAN, BRIDGE = "Describe the ocean at night.", "Name a famous bridge."
ALPHA = Benchmark("alpha", "test", ("a1",), (OCEAN,), ("Dark water.",))
BETA = Benchmark("beta", "test", ("b1",), (BRIDGE,), ("Golden Gate.",))
DIM = 6  # axis 0: OCEAN, axis 1: BRIDGE, axis 5: away from every item


def toward(axis: int, cos: float) -> list[float]:
    """A unit vector at cosine `cos` to item axis `axis` and orthogonal to the other items."""
    v = [0.0] * DIM
    v[axis], v[-1] = cos, math.sqrt(1 - cos * cos)
    return v


class FakeEmbedder:
    """Embeds by table lookup, records what it was asked; a text not in the table fails the test."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = {OCEAN: toward(0, 1.0), BRIDGE: toward(1, 1.0), **table}
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, texts, embedder="static") -> np.ndarray:
        self.calls.append((list(texts), embedder))
        return np.array([self.table[t] for t in texts], np.float32).reshape(len(texts), DIM)


@pytest.fixture
def fake(monkeypatch):
    def install(table: dict[str, list[float]]) -> FakeEmbedder:
        embedder = FakeEmbedder(table)
        monkeypatch.setattr(embed_module, "embed", embedder)
        return embedder

    return install


def rows(*instructions: str) -> pa.Table:
    return from_rows([{"id": f"r{i}", "instruction": t, "response": "ok"} for i, t in enumerate(instructions)])


def described(found: pa.StructArray) -> list[tuple | None]:
    return [f and (f["benchmark"], f["item_id"], f["method"], round(f["score"], 6)) for f in found.to_pylist()]


# ---------------------------------------------------------------- the embedding pass


def test_embedding_pass_drops_rows_from_the_threshold_up_per_benchmark(fake) -> None:
    embedder = fake(
        {
            "Tell me of the sea after dark.": toward(0, 0.75),  # at the threshold: dropped
            "Describe a lake by day.": toward(0, 0.74),  # just under: kept
            "Which bridge is well known?": toward(1, 0.87654),  # beta's item
            "Bake bread.": toward(2, 1.0),  # near nothing
        }
    )
    rejected: list[pa.Table] = []
    stage = Decontaminate((ALPHA, BETA), methods=("embedding",), embedding_threshold=0.75, rejects=rejected.append)
    batch = rows(
        "Tell me of the sea after dark.", "Describe a lake by day.", "Which bridge is well known?", "Bake bread.", ""
    )
    kept = [r["id"] for b in stage([batch]) for r in b.to_pylist()]
    assert kept == ["r1", "r3", "r4"]
    gone = pa.concat_tables(rejected).to_pylist()
    assert [r["id"] for r in gone] == ["r0", "r2"]
    assert [tuple(r["contaminated_by"].values())[:3] for r in gone] == [
        ("alpha", "a1", "embedding"),
        ("beta", "b1", "embedding"),
    ]
    # the score is the cosine, rounded to 4 places
    assert [r["contaminated_by"]["score"] for r in gone] == pytest.approx([0.75, 0.8765], abs=1e-6)
    counts = {k: v for k, v in stage.stats.items() if v}
    assert counts == {
        "contamination_checked": 5,
        "dropped_contaminated_alpha_embedding": 1,
        "dropped_contaminated_beta_embedding": 1,
    }
    # the items embedded once (question, else answer), then the rows with text: the empty one never
    items, asked = embedder.calls
    assert items == ([OCEAN, BRIDGE], "minilm")
    assert asked == (
        ["Tell me of the sea after dark.", "Describe a lake by day.", "Which bridge is well known?", "Bake bread."],
        "minilm",
    )
    assert stage.notes["embedding_index"] == "exact (numpy inner products)"


def test_an_item_without_a_question_is_embedded_by_its_answer(fake) -> None:
    answer_only = Benchmark("gamma", "test", ("g1",), ("",), ("Golden Gate.",))
    embedder = fake({"Golden Gate.": toward(1, 1.0), "The Golden Gate bridge.": toward(1, 0.9)})
    found = Decontaminate((answer_only,), methods=("embedding",), embedding_threshold=0.8).check(
        rows("The Golden Gate bridge.")
    )
    assert described(found) == [("gamma", "g1", "embedding", pytest.approx(0.9, abs=1e-6))]
    assert embedder.calls[0][0] == ["Golden Gate."]


def test_rows_caught_by_ngrams_are_not_embedded(fake) -> None:
    embedder = fake({"Describe a lake by day.": toward(0, 0.2)})
    stage = Decontaminate((ALPHA,), methods=("ngram", "embedding"), ngram=2, embedding_threshold=0.75)
    found = stage.check(rows(OCEAN, "Describe a lake by day."))
    assert described(found) == [("alpha", "a1", "ngram", 1.0), None]
    assert [c[0] for c in embedder.calls] == [[OCEAN], ["Describe a lake by day."]]
    embedder.calls.clear()
    assert described(stage.check(rows(OCEAN))) == [("alpha", "a1", "ngram", 1.0)]
    assert embedder.calls == []  # nothing left to embed: the embedder is not called at all


TRAIN = "A train goes 60 miles in 2 hours, stops 3 times and runs 5 days. How far does it go?"
TRAINS = Benchmark("trains", "test", ("t1",), (TRAIN,), ("900",))


def test_a_rephrased_problem_keeps_at_least_half_of_its_numbers(fake) -> None:
    table = {TRAIN: toward(0, 1.0)}
    texts = [
        "Going 60 miles in 2 hours, how far will the train get?",  # 2 of 4: half, dropped
        "A train goes 60 miles an hour. How far does it go?",  # 1 of 4: a new problem, kept
        "A train goes 70 miles in 4 hours, stops 1 time and runs 6 days.",  # none: kept
    ]
    table |= {t: toward(0, 0.95) for t in texts}
    fake(table)
    found = Decontaminate((TRAINS,), methods=("embedding",), embedding_threshold=0.8).check(rows(*texts))
    assert [f and f["method"] for f in found.to_pylist()] == ["embedding", None, None]
    loose = Decontaminate((TRAINS,), methods=("embedding",), embedding_threshold=0.8, match_numbers=False)
    assert [f and f["method"] for f in loose.check(rows(*texts)).to_pylist()] == ["embedding"] * 3


def test_a_question_with_one_number_is_not_held_to_it(fake) -> None:
    one = Benchmark("one", "test", ("o1",), ("Why is 7 a lucky number?",), ("",))
    fake({"Why is 7 a lucky number?": toward(0, 1.0), "Why do people call seven lucky?": toward(0, 0.9)})
    found = Decontaminate((one,), methods=("embedding",), embedding_threshold=0.8).check(
        rows("Why do people call seven lucky?")
    )
    assert [f and f["item_id"] for f in found.to_pylist()] == ["o1"]


def test_the_edit_method_holds_a_copy_to_the_numbers_of_its_item() -> None:
    question = "A farmer keeps 17 cows and 23 sheep on the green hill by the old river and counts them every morning"
    farm = Benchmark("farm", "test", ("f1",), (question,), ("40",))
    copy = question.replace("17", "31").replace("23", "12")
    same = question.replace("by the old river", "near a river")
    stage = Decontaminate((farm,), methods=("edit",))
    assert [f and f["method"] for f in stage.check(rows(copy, same, "Count the sheep.")).to_pylist()] == [
        None,
        "edit",
        None,
    ]
    loose = Decontaminate((farm,), methods=("edit",), match_numbers=False).check(rows(copy)).to_pylist()
    assert loose[0]["method"] == "edit" and 0.6 <= loose[0]["score"] < 1


def test_the_edit_method_leaves_items_with_too_few_word_pairs_out_of_reach() -> None:
    minimum = yaml.safe_load(data_file("filters/decontamination/thresholds.yaml").read_text())["edit"]["min_ngrams"]
    words = [f"word{i}" for i in range(minimum + 1)]
    short, long = " ".join(words[:minimum]), " ".join(words)  # minimum - 1 word pairs, and minimum
    # out of reach even verbatim; one word more, caught
    out_of_reach = Decontaminate((Benchmark("s", "test", ("short",), (short,), ("",)),), methods=("edit",))
    assert out_of_reach.check(rows(short)).to_pylist() == [None]
    caught = Decontaminate((Benchmark("s", "test", ("long",), (long,), ("",)),), methods=("edit",))
    assert [f and f["item_id"] for f in caught.check(rows(long)).to_pylist()] == ["long"]


# ---------------------------------------------------------------- the n-gram pass through the stage


def test_ngram_threshold_is_inclusive_and_counts_the_share_of_the_item() -> None:
    five = Benchmark("five", "test", ("v1",), ("alpha beta gamma delta epsilon",), ("",))
    stage = Decontaminate((five,), methods=("ngram",), ngram=2, ngram_threshold=0.5)
    found = stage.check(rows("alpha beta gamma", "alpha beta", "zeta eta")).to_pylist()
    assert [f and (f["method"], f["score"]) for f in found] == [("ngram", 0.5), None, None]
    assert stage.notes["items_without_ngrams"] == 0


def test_columns_are_joined_by_a_line_break_so_an_item_may_span_them() -> None:
    question, answer = "one two three four five six seven", "eight nine ten eleven twelve thirteen fourteen"
    split = Benchmark("split", "test", ("x1",), (question,), (answer,))
    stage = Decontaminate((split,), methods=("ngram",))
    table = pa.Table.from_pylist(
        [{"instruction": question, "response": answer}, {"instruction": question, "response": "no"}]
    )
    assert [f and f["score"] for f in stage.check(table).to_pylist()] == [1.0, None]
    assert stage.notes["items_without_ngrams"] == 0  # question + answer hold two 13-grams
    big = table.cast(pa.schema([("instruction", pa.large_string()), ("response", pa.large_string())]))
    assert stage.check(big).to_pylist()[0]["item_id"] == "x1"
    alone = Decontaminate((split,), methods=("ngram",), columns=("instruction",))
    assert alone.check(table).to_pylist() == [None, None]
    assert alone.notes["items_without_ngrams"] == 0


def test_columns_that_cannot_be_read_are_refused_with_the_fix() -> None:
    stage = Decontaminate((ALPHA,), methods=("ngram",))
    with pytest.raises(SynthError, match=r"none of the columns instruction, response \(it has text\).*--column"):
        stage.check(pa.Table.from_pylist([{"text": "x"}]))
    with pytest.raises(SynthError, match=r"column 'instruction' holds int64, not text"):
        stage.check(pa.Table.from_pylist([{"instruction": 3}]))
    nulls = pa.Table.from_pylist([{"instruction": None, "response": OCEAN}, {"instruction": "hi", "response": None}])
    found = Decontaminate((ALPHA,), methods=("ngram",), ngram=2).check(nulls).to_pylist()
    assert found[0]["item_id"] == "a1" and found[1] is None


def test_each_dropped_row_is_counted() -> None:
    stage = Decontaminate((ALPHA, BETA), methods=("ngram",), ngram=2)
    kept = [r["id"] for b in stage([rows(OCEAN, BRIDGE, "Sing.", OCEAN), rows(OCEAN)]) for r in b.to_pylist()]
    assert kept == ["r2"]
    assert {k: v for k, v in stage.stats.items() if k.startswith("dropped_")} == {
        "dropped_contaminated_alpha_ngram": 3,
        "dropped_contaminated_beta_ngram": 1,
    }


def test_a_batch_with_nothing_dropped_sends_nothing_to_rejects() -> None:
    rejected: list = []
    stage = Decontaminate((ALPHA,), methods=("ngram",), ngram=2, rejects=rejected.append)
    out = list(stage([rows("Bake bread.", "Sing.")]))
    assert [b.num_rows for b in out] == [2] and rejected == []
    assert stage.stats["contamination_checked"] == 2 and sum(stage.stats.values()) == 2


# ---------------------------------------------------------------- the LLM check


YES, NO, UNSURE = '{"rephrase": true}', '{"rephrase": false}', "it depends"
CANDIDATES = {
    "close, judge says yes": toward(0, 0.9),
    "asked, judge says no": toward(0, 0.7),
    "close, judge says no": toward(0, 0.9),
    "asked, judge says yes": toward(0, 0.65),
    "far, never asked": toward(0, 0.5),
    "close, judge unsure": toward(0, 0.8),
    "asked, judge unsure": toward(0, 0.7),
}


def test_the_judge_decides_between_the_floor_and_the_embedding_rule(fake) -> None:
    fake(CANDIDATES)
    judge = ScriptedBackend([YES, NO, NO, YES, UNSURE, UNSURE, UNSURE, "still unsure"])
    stage = Decontaminate((ALPHA,), methods=("embedding", "llm"), judge=judge, embedding_threshold=0.75)
    found = stage.check(rows(*CANDIDATES)).to_pylist()
    # the judge's yes drops (even under the threshold), its no keeps (even over it); a row it gave no
    # usable answer for falls to the embedding rule; a row under the floor is never asked
    assert [f and (f["method"], round(f["score"], 4)) for f in found] == [
        ("llm", 0.9),
        None,
        None,
        ("llm", 0.65),
        None,
        ("embedding", 0.8),
        None,
    ]
    assert [len(c) for c in judge.calls] == [6, 2]  # the six over the floor, then the two unanswered again
    first = judge.calls[0][0][-1]["content"]
    assert "close, judge says yes\nok" in first and f"{OCEAN}\nDark water." in first
    assert judge.params[0].json_schema == load_check_rubric().schema
    assert (judge.params[0].max_tokens, judge.params[0].temperature) == (32, 0.0)
    assert (stage.stats["llm_asked"], stage.stats["llm_failed"]) == (6, 2)
    assert stage.failures == {"parse_error: still unsure": 1, "parse_error: it depends": 1}


def test_a_row_at_the_floor_is_asked_and_one_under_it_is_not(fake) -> None:
    fake({"at the floor": toward(0, 0.5), "just under": toward(0, 0.49)})
    judge = ScriptedBackend([YES])
    stage = Decontaminate(
        (ALPHA,), methods=("embedding", "llm"), judge=judge, embedding_threshold=0.75, judge_floor=0.5
    )
    found = stage.check(rows("at the floor", "just under")).to_pylist()
    assert [f and f["method"] for f in found] == ["llm", None]
    assert [len(c) for c in judge.calls] == [1]


def test_the_judge_is_shown_at_most_4000_characters_of_each_side(fake) -> None:
    long = "x" * 3990 + "0123456789ABCDEF"
    fake({long: toward(0, 0.9)})
    judge = ScriptedBackend([YES])
    Decontaminate((ALPHA,), methods=("embedding", "llm"), judge=judge, embedding_threshold=0.75).check(rows(long))
    content = judge.calls[0][0][-1]["content"]
    assert "x" * 3990 + "0123456789" in content and "0123456789A" not in content


def test_a_judge_that_never_answers_stops_the_run_before_the_batch_is_kept(fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9), "asked, judge says no": toward(0, 0.7)})
    down = Completion("", "error", error="ConnectionError: the judge's server is down")
    meter = Metered(ScriptedBackend([down] * 4), max_error_rate=0.05)
    stage = Decontaminate((ALPHA,), methods=("embedding", "llm"), judge=meter, embedding_threshold=0.75)
    kept = []
    said = r"no usable answer for 2 of the 2 rows it asked about \(commonest, 2x: backend_error: ConnectionError: "
    with pytest.raises(StoppedShort, match=said + r"the judge's server is down\); the batch in hand was not kept"):
        kept += list(stage([rows("close, judge says yes", "asked, judge says no")]))
    assert kept == []
    assert (meter.requests, meter.failed) == (4, 4)  # each asked, then once again: all metered
    assert (stage.stats["llm_asked"], stage.stats["llm_failed"]) == (2, 2)
    assert "dropped_contaminated_alpha_embedding" not in stage.stats


def test_a_failure_with_no_message_is_named_by_its_status(fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9)})
    silent = ScriptedBackend([Completion("", "error")] * 2)
    stage = Decontaminate((ALPHA,), methods=("embedding", "llm"), judge=silent, embedding_threshold=0.75)
    with pytest.raises(StoppedShort, match=r"for 1 of the 1 rows it asked about \(commonest, 1x: backend_error\); "):
        stage.check(rows("close, judge says yes"))
    assert stage.failures == {"backend_error": 1}


def test_one_usable_answer_is_enough_below_fifty_asked(fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9), "asked, judge says no": toward(0, 0.7)})
    stage = Decontaminate(
        (ALPHA,), methods=("embedding", "llm"), judge=ScriptedBackend([YES, UNSURE, UNSURE]), embedding_threshold=0.75
    )
    found = stage.check(rows("close, judge says yes", "asked, judge says no")).to_pylist()
    assert [f and f["method"] for f in found] == ["llm", None]


def judged(fake, n: int, failing: int, **options) -> tuple[Decontaminate, pa.Table]:
    """A stage that asks about `n` close rows and gets no usable answer for the last `failing`."""
    texts = [f"copy {i}" for i in range(n)]
    fake({t: toward(0, 0.9) for t in texts})
    replies = [YES] * (n - failing) + [UNSURE] * (2 * failing)
    stage = Decontaminate(
        (ALPHA,), methods=("embedding", "llm"), judge=ScriptedBackend(replies), embedding_threshold=0.75, **options
    )
    return stage, rows(*texts)


@pytest.mark.parametrize(
    ("n", "failing", "rate", "stops"),
    [
        (60, 4, 0.05, True),  # 6.7% of 60: over
        (60, 3, 0.05, False),  # 5.0% exactly: not over
        (49, 3, 0.05, False),  # 6.1%, but under 50 asked
        (50, 3, 0.05, True),  # 6.0% of 50
        (60, 4, 0.1, False),
        (60, 59, None, False),  # no rate: only a judge with no usable answer stops
    ],
)
def test_the_error_rate_stop_counts_unusable_answers_after_fifty(fake, n, failing, rate, stops) -> None:
    stage, batch = judged(fake, n, failing, max_error_rate=rate)
    if stops:
        with pytest.raises(StoppedShort, match=rf"no usable answer for {failing} of the {n} rows.*over the allowed"):
            stage.check(batch)
        return
    found = stage.check(batch).to_pylist()
    # every row is close: the judge's yes drops it, and so does the embedding rule where it failed
    assert [f["method"] for f in found] == ["llm"] * (n - failing) + ["embedding"] * failing


def test_the_error_rate_adds_up_across_batches(fake) -> None:
    stage, batch = judged(fake, 30, 2)
    stage.check(batch)
    stage.judge.replies[:] = [YES] * 28 + [UNSURE] * 4  # type: ignore[union-attr]
    with pytest.raises(
        StoppedShort, match="no usable answer for 4 of the 60 rows it asked about, over the allowed 5.0%"
    ):
        stage.check(batch)


# ---------------------------------------------------------------- settings and their defaults


def shipped() -> dict:
    return yaml.safe_load(data_file("filters/decontamination/thresholds.yaml").read_text(encoding="utf-8"))


def test_embedding_thresholds_come_from_the_data_file_per_embedder(fake) -> None:
    known = shipped()["embedding"]
    assert default_embedding_threshold(None) == default_embedding_threshold("minilm") == known["minilm"]["threshold"]
    assert default_embedding_threshold("static") == known["static"]["threshold"] != known["minilm"]["threshold"]
    assert (embedder_key(None), embedder_key("minilm"), embedder_key("static")) == ("minilm", "minilm", "static")
    assert embedder_key("/models/mine") == "/models/mine"
    with pytest.raises(SynthError, match=r"embedder '/models/mine' \(synth has them for minilm, static\); pass"):
        default_embedding_threshold("/models/mine")
    stage = Decontaminate((ALPHA,), methods=("embedding",), model="static")
    assert stage.embedding_threshold == known["static"]["threshold"]
    embedder = fake({"Bake bread.": toward(2, 1.0)})
    stage.check(rows("Bake bread."))
    assert {model for _, model in embedder.calls} == {"static"}
    assert (
        Decontaminate((ALPHA,), methods=("llm",), judge=ScriptedBackend([])).embedding_threshold
        == (known["minilm"]["threshold"])
    )
    assert Decontaminate((ALPHA,), methods=("ngram", "edit")).embedding_threshold is None
    edit = shipped()["edit"]
    assert Decontaminate((ALPHA,), methods=("edit",))._edits.n == edit["ngram"]
    stage = Decontaminate((ALPHA,), methods=("edit",))
    assert (stage.edit_ngram, stage.edit_threshold) == (edit["ngram"], edit["threshold"])
    given = Decontaminate((ALPHA,), methods=("edit",), edit_ngram=3, edit_threshold=0.9, embedding_threshold=0.7)
    assert (given.edit_ngram, given.edit_threshold, given.embedding_threshold) == (3, 0.9, 0.7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ("ngram", "fuzzy")}, r"unknown decontamination method\(s\) \['fuzzy'\]"),
        ({"methods": ()}, r"unknown decontamination method\(s\) \[\]; use ngram, edit, embedding, llm"),
        ({"methods": ("llm",)}, "the llm method needs a model to ask"),
        ({"benchmarks": ()}, "nothing to decontaminate against"),
        ({"ngram": 0}, "--ngram 0 must be at least 1"),
        ({"edit_ngram": 0}, "--edit-ngram 0 must be at least 1"),
        ({"ngram_threshold": 0.0}, r"--ngram-threshold 0.0 is outside \(0, 1\]"),
        ({"ngram_threshold": 1.01}, r"--ngram-threshold 1.01 is outside"),
        ({"edit_threshold": 1.5}, r"--edit-threshold 1.5 is outside"),
        ({"embedding_threshold": 0.0, "methods": ("embedding",)}, r"--embedding-threshold 0.0 is outside"),
        ({"judge_floor": 2.0}, r"--judge-floor 2.0 is outside"),
        ({"methods": ("llm",), "rubric": "/nonexistent/rubric.yaml", "judge": "J"}, "does not exist"),
    ],
)
def test_settings_that_cannot_work_are_refused(options, message) -> None:
    options = {"benchmarks": (ALPHA,), **options}
    if options.get("judge") == "J":
        options["judge"] = ScriptedBackend([])
    with pytest.raises(SynthError, match=message):
        Decontaminate(**options)


def test_the_edges_of_each_setting_are_accepted() -> None:
    stage = Decontaminate((ALPHA,), methods=("ngram",), ngram=1, edit_ngram=1, ngram_threshold=1.0, judge_floor=1.0)
    assert (stage.ngram, stage.edit_ngram, stage.ngram_threshold) == (1, 1, 1.0)
    assert Decontaminate((ALPHA,), methods=("embedding",), embedding_threshold=1.0).embedding_threshold == 1.0


@pytest.mark.parametrize(("model", "package"), [(None, "sentence_transformers"), ("static", "model2vec")])
def test_a_missing_embedder_package_is_named(monkeypatch, model, package) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(SynthError, match=f"the embedding method needs {package}: pip install"):
        Decontaminate((ALPHA,), methods=("embedding",), model=model)
    with pytest.raises(SynthError, match=f"needs {package}"):
        Decontaminate((ALPHA,), methods=("llm",), model=model, judge=ScriptedBackend([]))
    assert Decontaminate((ALPHA,), methods=("ngram",), model=model).methods == ("ngram",)


@pytest.mark.parametrize(
    "schema",
    [
        "{properties: {rephrase: {type: string, enum: ['yes', 'no']}}, required: [rephrase]}",  # "no" reads as true
        "{properties: {rephrase: {type: boolean}}}",  # a valid answer may lack it
        "{properties: {rephrase: {type: boolean}}, required: }",
        "{properties: {rephrase: true}, required: [rephrase]}",
        "[rephrase]",
    ],
)
def test_a_check_rubric_must_require_a_boolean_rephrase(tmp_path, schema) -> None:
    path = tmp_path / "rubric.yaml"
    path.write_text(f"name: mine\nprompt: '{{{{ text }}}} {{{{ benchmark }}}}'\nschema: {schema}\n")
    with pytest.raises(SynthError, match="must define a boolean `rephrase` and list it in `required`"):
        load_check_rubric(path)
    good = "{properties: {rephrase: {type: boolean}}, required: [rephrase]}"
    path.write_text(f"name: mine\nprompt: x\nschema: {good}\n")
    assert load_check_rubric(path).name == "mine"


def test_a_loose_check_rubric_is_refused_before_any_row_is_read(tmp_path) -> None:
    loose = tmp_path / "loose.yaml"
    loose.write_text(
        "name: loose\nprompt: '{{ text }} {{ benchmark }}'\nschema: {properties: {rephrase: {type: boolean}}}\n"
    )
    with pytest.raises(SynthError, match="list it in `required`"):
        Decontaminate((ALPHA,), methods=("llm",), judge=ScriptedBackend(["{}"]), rubric=str(loose))


def test_rows_with_no_first_column_are_not_embedded_and_one_character_is_enough(fake) -> None:
    embedder = fake({"?": toward(0, 0.8)})
    table = from_rows(
        [
            {"id": "null", "instruction": None, "response": OCEAN},
            {"id": "empty", "instruction": "", "response": OCEAN},
            {"id": "short", "instruction": "?", "response": "x"},
        ]
    )
    found = Decontaminate((ALPHA,), methods=("embedding",), embedding_threshold=0.75).check(table).to_pylist()
    assert [f and f["method"] for f in found] == [None, None, "embedding"]
    assert embedder.calls[1][0] == ["?"]


def test_the_llm_method_alone_asks_about_the_embedding_candidates(fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9), "far, never asked": toward(0, 0.3)})
    judge = ScriptedBackend([YES])
    stage = Decontaminate((ALPHA,), methods=("llm",), judge=judge, embedding_threshold=0.75)
    found = stage.check(rows("close, judge says yes", "far, never asked")).to_pylist()
    assert [f and f["method"] for f in found] == ["llm", None] and len(judge.calls) == 1


def test_the_judge_reads_the_users_rubric(tmp_path, fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9)})
    mine = tmp_path / "mine.yaml"
    schema = "{properties: {rephrase: {type: boolean}}, required: [rephrase]}"
    mine.write_text(f"name: mine\nprompt: 'MY CHECK: {{{{ text }}}} against {{{{ benchmark }}}}'\nschema: {schema}\n")
    judge = ScriptedBackend([YES])
    Decontaminate((ALPHA,), methods=("llm",), judge=judge, embedding_threshold=0.75, rubric=str(mine)).check(
        rows("close, judge says yes")
    )
    assert judge.calls[0][0][-1]["content"] == f"MY CHECK: close, judge says yes\nok against {OCEAN}\nDark water."


def test_the_judge_sees_at_most_4000_characters_of_the_item_and_80_of_a_failure(fake) -> None:
    long = "y" * 3990 + "0123456789ABCDEF"
    fake({long: toward(0, 1.0), "a copy": toward(0, 0.9)})
    judge = ScriptedBackend(["z" * 100, "z" * 100 + "!"])
    stage = Decontaminate(
        (Benchmark("big", "test", ("g1",), (long,), ("",)),), methods=("llm",), judge=judge, embedding_threshold=0.75
    )
    with pytest.raises(StoppedShort):
        stage.check(rows("a copy"))
    content = judge.calls[0][0][-1]["content"]
    assert "y" * 3990 + "0123456789" in content and "0123456789A" not in content
    assert stage.failures == {"parse_error: " + "z" * 80: 1}


def test_a_third_of_the_numbers_is_not_enough(fake) -> None:
    three = Benchmark("three", "test", ("n1",), ("Add 12, 45 and 78.",), ("135",))
    fake({"Add 12, 45 and 78.": toward(0, 1.0), "Add 12 to some numbers.": toward(0, 0.95)})
    found = Decontaminate((three,), methods=("embedding",), embedding_threshold=0.8).check(
        rows("Add 12 to some numbers.")
    )
    assert found.to_pylist() == [None]


def test_an_edit_at_exactly_the_threshold_is_caught() -> None:
    question = "one two three four five six seven eight nine ten eleven"  # ten word pairs
    row = "one two three four five six seven"  # six of them
    bench = Benchmark("e", "test", ("e1",), (question,), ("",))
    share = Decontaminate((bench,), methods=("edit",), edit_threshold=0.1).check(rows(row)).to_pylist()[0]["score"]
    exact = float(Decontaminate((bench,), methods=("edit",))._edits.best(pa.array([row]))[1][0])
    assert share == pytest.approx(0.6, abs=1e-6)
    assert Decontaminate((bench,), methods=("edit",), edit_threshold=exact).check(rows(row)).to_pylist()[0]
    assert Decontaminate((bench,), methods=("edit",), edit_threshold=exact + 1e-9).check(rows(row)).to_pylist() == [
        None
    ]


def test_a_batch_without_the_columns_is_told_what_it_has() -> None:
    with pytest.raises(SynthError, match=r"\(it has text, other\)"):
        Decontaminate((ALPHA,), methods=("ngram",)).check(pa.Table.from_pylist([{"text": "x", "other": "y"}]))


def test_a_close_row_under_a_high_floor_is_dropped_by_the_embedding_rule_unasked(fake) -> None:
    fake({"close, judge says yes": toward(0, 0.9), "asked, judge says no": toward(0, 0.8)})
    judge = ScriptedBackend([YES])
    stage = Decontaminate(
        (ALPHA,), methods=("embedding", "llm"), judge=judge, embedding_threshold=0.75, judge_floor=0.85
    )
    found = stage.check(rows("close, judge says yes", "asked, judge says no")).to_pylist()
    assert [f and f["method"] for f in found] == ["llm", "embedding"] and [len(c) for c in judge.calls] == [1]
