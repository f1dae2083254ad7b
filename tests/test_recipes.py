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


RUN_FIELDS = {"overwrite", "resume", "max_error_rate", "command", "executor", "shard_rows"}


def test_every_recipe_takes_how_it_runs_as_one_object() -> None:
    import inspect

    from synth.recipes.diversity import topics

    writers = [getattr(recipes, name) for name in recipes.__all__ if name not in {"steering", "dedup_stage"}]
    writers = [f for f in writers if inspect.isfunction(f)] + [topics]
    assert len(writers) >= 15
    for recipe in writers:
        params = inspect.signature(recipe).parameters
        assert isinstance(params["run"].default, recipes.RunSettings), recipe.__name__
        assert not RUN_FIELDS & set(params), f"{recipe.__name__} takes {RUN_FIELDS & set(params)} one by one"


def test_run_settings_reach_the_output_the_card_and_the_shards(tmp_path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "o"
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "instruction": f"Q{i}"}) for i in range(3)))
    run = recipes.RunSettings(command="synth respond in.jsonl", shard_rows=1)
    recipes.respond(ScriptedBackend(replies=["a", "b", "c"]), src, out=out, batch_size=1, run=run)
    assert len(list((out / "data").glob("*.parquet"))) == 3  # one row a shard
    card = (out / "README.md").read_text()
    assert json.loads(card[card.index("```json") + 7 : card.rindex("```")])["command"] == "synth respond in.jsonl"
    with pytest.raises(SynthError, match="--overwrite"):  # what the output holds is the user's: not replaced unasked
        recipes.respond(ScriptedBackend(replies=["x"] * 3), src, out=out, run=recipes.RunSettings())
    again = recipes.RunSettings(overwrite=True)
    recipes.respond(ScriptedBackend(replies=["x", "y", "z"]), src, out=out, run=again)
    assert [r["response"] for r in pq.read_table(out / "data").to_pylist()] == ["x", "y", "z"]


def test_the_max_error_rate_of_the_run_settings_stops_the_run(tmp_path) -> None:
    from synth.backends import Completion

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "instruction": f"Q{i}"}) for i in range(60)))
    replies = [Completion("", "error", error="refused") if i % 6 == 0 else "ok" for i in range(60)]  # 10 of 60
    with pytest.raises(SynthError, match="over the allowed 5.0%"):
        recipes.respond(ScriptedBackend(list(replies)), src, out=tmp_path / "a", run=recipes.RunSettings())
    lenient = recipes.RunSettings(max_error_rate=0.5)
    assert recipes.respond(ScriptedBackend(list(replies)), src, out=tmp_path / "b", run=lenient)["rows"] == 60


def test_topics_refuse_to_resume_before_claiming_the_output(tmp_path) -> None:
    from synth.recipes.diversity import topics

    with pytest.raises(SynthError, match="cannot resume"):
        topics(ScriptedBackend(replies=[]), n=4, out=tmp_path / "t", run=recipes.RunSettings(resume=True))
    assert not (tmp_path / "t").exists()


def test_the_cli_builds_the_run_settings_from_its_options(monkeypatch) -> None:
    from synth.cli._shared import Saving

    monkeypatch.setattr("sys.argv", ["synth", "respond", "in.jsonl", "--resume"])
    assert Saving(resume=True).run(0.2) == recipes.RunSettings(
        resume=True, max_error_rate=0.2, command="synth respond in.jsonl --resume"
    )
    assert Saving(overwrite=True).run().max_error_rate is None  # a command without --max-error-rate
