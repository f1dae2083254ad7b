"""Decontamination as a stage in a pipeline, on its fast methods (n-grams, edits), and the LLM
check's rubric refused before any row is read when it cannot be used."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.benchmarks import Benchmark
from synth.core import SynthError, from_rows
from synth.stages.decontaminate import Decontaminate, load_check_rubric, numbers

QUESTION = "A baker makes 24 loaves a day and sells each for 3 dollars. How much does she earn in a week?"
BENCH = Benchmark("bake", "test", ("b1", "b2"), (QUESTION, "Name the capital of Peru."), ("504", "Lima"))


def test_the_stage_drops_copies_counts_them_per_method_and_sends_them_to_rejects() -> None:
    rejected: list = []
    stage = Decontaminate((BENCH,), methods=("ngram", "edit"), rejects=rejected.append)
    batches = [
        from_rows([{"id": "copy", "instruction": QUESTION, "response": "504"}, {"id": "ok", "instruction": "Hi"}]),
        from_rows([{"id": "ok2", "instruction": "Write a poem about bread.", "response": "Loaves rise."}]),
    ]
    kept = [i for b in stage(batches) for i in b["id"].to_pylist()]
    assert kept == ["ok", "ok2"]
    gone = pa.concat_tables(rejected).to_pylist()
    assert [r["id"] for r in gone] == ["copy"]
    assert gone[0]["contaminated_by"]["item_id"] == "b1" and gone[0]["contaminated_by"]["benchmark"] == "bake"
    assert stage.stats["contamination_checked"] == 3
    assert sum(v for k, v in stage.stats.items() if k.startswith("dropped_contaminated_bake_")) == 1
    assert (stage.notes["benchmarks"], stage.notes["methods"]) == ({"bake": 2}, ["ngram", "edit"])


def test_numbers_are_read_alike_whatever_their_form() -> None:
    assert numbers("It costs 1,240 dollars, or 4.50 a day, for 3 days.") == {"1240", "4.5", "3"}
    assert numbers("20 and 20.0 and 100") == {"20", "100"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nprompt: y\n", "needs name, prompt and schema"),
        ("name: x\nprompt: y\nschema: {properties: {same: {type: boolean}}}\n", "must define a boolean `rephrase`"),
        ("name: [x\n", "is not valid YAML"),
    ],
)
def test_a_check_rubric_that_cannot_be_used_is_refused(tmp_path, text, message) -> None:
    path = tmp_path / "rubric.yaml"
    path.write_text(text)
    with pytest.raises(SynthError, match=message):
        load_check_rubric(path)
    with pytest.raises(SynthError, match="does not exist"):
        load_check_rubric(tmp_path / "none.yaml")


def test_the_shipped_check_rubric_asks_about_the_text_and_the_item() -> None:
    rubric = load_check_rubric()
    assert rubric.name == "rephrase" and rubric.reads == ("text", "benchmark")
    assert rubric.columns == {"rephrase": "rephrase"} and "rephrase" in rubric.schema["properties"]
