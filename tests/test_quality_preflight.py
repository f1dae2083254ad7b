"""The quality recipes check the input's columns before they claim an output directory."""

import json

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.core import SynthError
from tests.conftest import ScriptedBackend


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "What is the capital of France?"}))
    return src


def test_judge_with_a_missing_input_column_makes_no_output_and_asks_nothing(tmp_path, source) -> None:
    llm = ScriptedBackend(replies=[])
    with pytest.raises(SynthError, match=r"reads the instruction from column 'instruction'.*it has id, prompt"):
        recipes.judge([llm], source, out=tmp_path / "o")
    assert not (tmp_path / "o").exists() and llm.calls == []
    reply = json.dumps({"explanation": "Clear.", "input_quality": "good"})
    recipes.judge([ScriptedBackend(replies=[reply])], source, out=tmp_path / "o", inputs={"instruction": "prompt"})
    (row,) = pq.read_table(tmp_path / "o/data").to_pylist()
    assert (row["id"], row["input_quality"], row["judge_status"]) == ("a", "good", "ok")


def test_prefs_with_a_missing_column_makes_no_output(tmp_path, source) -> None:
    llm = ScriptedBackend(replies=[])
    with pytest.raises(SynthError, match=r"no column 'instruction' \(it has id, prompt\)"):
        recipes.prefs(llm, [llm], source, out=tmp_path / "o", k=2)
    assert not (tmp_path / "o").exists() and llm.calls == []


def test_filter_with_a_bad_where_makes_no_output_or_rejects(tmp_path, source) -> None:
    with pytest.raises(SynthError, match=r"no column 'score'; it has id, prompt"):
        recipes.filter_rows(source, out=tmp_path / "o", where=["score > 3"], rejects=tmp_path / "r")
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()
    recipes.filter_rows(source, out=tmp_path / "o", where=["prompt != x"], rejects=tmp_path / "r")
    assert pq.read_table(tmp_path / "o/data")["id"].to_pylist() == ["a"]
