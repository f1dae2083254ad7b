import json

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Sampling
from synth.core import SynthError
from tests.conftest import ScriptedBackend


def test_task_and_language_go_into_the_system_prompt_and_each_row(tmp_path) -> None:
    llm = ScriptedBackend(replies=["Solve 2x=4.", "x=2"])
    recipes.magpie(llm, n=1, out=tmp_path / "o", task="math", language="fr", batch_size=1)
    system = llm.calls[0][0]
    assert "math problems" in system and "Always write in French." in system
    row = pq.read_table(tmp_path / "o/data").to_pylist()[0]
    assert row["task"] == "math" and row["language"] == "fr" and "French" in row["system_prompt"]
    assert row["messages"][0] == {"role": "system", "content": row["system_prompt"]}


def test_unknown_task_lists_the_shipped_ones() -> None:
    with pytest.raises(SynthError, match="unknown task 'poetry'.*code.*math"):
        recipes.steering(task="poetry")


def test_response_model_answers_and_is_recorded(tmp_path) -> None:
    asker = ScriptedBackend(replies=["Q?"], model="asker")
    answerer = ScriptedBackend(replies=["A!"], model="answerer")
    recipes.magpie(asker, n=1, out=tmp_path / "o", response_backend=answerer, batch_size=1)
    assert answerer.calls == [[[{"role": "user", "content": "Q?"}]]]
    (row,) = pq.read_table(tmp_path / "o/data").to_pylist()
    assert (row["instruction"], row["response"]) == ("Q?", "A!")
    card = (tmp_path / "o/README.md").read_text()
    prov = json.loads(card[card.index("```json") + 7 : card.rindex("```")])
    assert prov["model"] == "asker" and prov["response_model"]["model"] == "answerer"


def test_respond_keeps_input_columns_and_writes_k_responses(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "instruction": f"Q{i}", "topic": "t"}) for i in range(2)))
    llm = ScriptedBackend(replies=["a", "b", "c", "d"])
    recipes.respond(llm, src, out=tmp_path / "o", n_responses=2, params=Sampling(seed=3))
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["id"] for r in rows] == ["q0-0", "q0-1", "q1-0", "q1-1"]
    assert [r["source_id"] for r in rows] == ["q0", "q0", "q1", "q1"]
    assert {r["topic"] for r in rows} == {"t"} and [r["response"] for r in rows] == ["a", "b", "c", "d"]


def test_respond_on_a_missing_column_names_the_columns(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "hi"}))
    with pytest.raises(SynthError, match="no column 'instruction'.*prompt"):
        recipes.respond(ScriptedBackend(replies=[]), src, out=tmp_path / "o")
