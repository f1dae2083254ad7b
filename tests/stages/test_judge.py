import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Completion, Sampling
from synth.core import SynthError, from_rows
from synth.resources import choices
from synth.stages.judge import Judge, PreferencePairs, load_rubric, overall_status, rubric_from_dict
from tests.conftest import ScriptedBackend

GOOD = json.dumps({"explanation": "clear", "input_quality": "good"})


def _rows(n: int = 1) -> pa.Table:
    return from_rows([{"id": f"r{i}", "instruction": f"What is {i}+{i}?", "response": str(2 * i)} for i in range(n)])


def _judge(replies: list) -> tuple[pa.Table, ScriptedBackend]:
    llm = ScriptedBackend(replies=replies)
    (out,) = Judge((llm,), load_rubric("quality"))([_rows()])
    return out, llm


def test_every_shipped_rubric_loads_and_renders_its_inputs() -> None:
    names = choices("filters/rubrics", ".yaml")
    assert {"quality", "difficulty", "category", "edu", "response", "junk"} <= set(names)
    for name in names:
        rubric = load_rubric(name)
        (message,) = rubric.messages({slot: f"<<{slot}>>" for slot in rubric.reads})
        for slot in rubric.reads:
            assert f"<<{slot}>>" in message["content"]
    assert load_rubric("quality").schema["properties"]["input_quality"]["enum"][-1] == "excellent"


def test_valid_json_fills_columns_and_asks_for_the_schema_at_temperature_0() -> None:
    out, llm = _judge([GOOD])
    row = out.to_pylist()[0]
    assert row["input_quality"] == "good" and row["input_quality_explanation"] == "clear"
    assert row["quality_status"] == "ok" and row["quality_raw"] is None
    assert llm.params[0].temperature == 0.0
    assert llm.params[0].json_schema["properties"]["input_quality"]["enum"][0] == "very poor"
    assert "What is 0+0?" in llm.calls[0][0][0]["content"]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Completion('{"explanation": "clear", "input_qua', "length"), "truncated"),
        ('{"explanation": "clear", "input_quality": 4}', "parse_error"),  # wrong type
        ('{"explanation": "clear", "input_quality": "superb"}', "parse_error"),  # not on the scale
        ("The query is good.", "parse_error"),  # prose
        (Completion("", "error", error="server down"), "backend_error"),
    ],
)
def test_failures_are_retried_once_then_marked_with_the_raw_text_kept(reply, status) -> None:
    out, llm = _judge([reply, reply])
    row = out.to_pylist()[0]
    assert row["quality_status"] == status
    assert row["input_quality"] is None
    raw = reply if isinstance(reply, str) else (reply.error or reply.text)
    assert row["quality_raw"] == raw
    assert len(llm.calls) == 2  # the batch, then the retry


def test_a_retry_that_succeeds_is_ok_and_only_failed_rows_are_retried() -> None:
    llm = ScriptedBackend(replies=[GOOD, "prose", "```json\n" + GOOD + "\n```"])
    (out,) = Judge((llm,), load_rubric("quality"))([_rows(2)])
    assert out["quality_status"].to_pylist() == ["ok", "ok"]
    assert [len(c) for c in llm.calls] == [2, 1]


def test_a_backend_that_raises_marks_the_batch_instead_of_crashing() -> None:
    class Broken:
        def generate(self, prompts, params):
            raise RuntimeError("connection reset")

    (out,) = Judge((Broken(),), load_rubric("quality"))([_rows(2)])
    assert out["quality_status"].to_pylist() == ["backend_error"] * 2
    assert "connection reset" in out["quality_raw"][0].as_py()


def test_jury_averages_numbers_and_takes_the_majority_label() -> None:
    def verdict(score: int) -> str:
        return json.dumps({"explanation": "x", "rating": score})

    jurors = tuple(ScriptedBackend(replies=[verdict(s)]) for s in (4, 8, 9))
    (out,) = Judge(jurors, load_rubric("response"))([_rows(1)])
    assert out["response_score"].to_pylist() == [7.0] and out["response_votes"].to_pylist() == [3]

    labels = ["good", "poor", "good"]
    jurors = tuple(ScriptedBackend(replies=[json.dumps({"explanation": "x", "input_quality": q})]) for q in labels)
    (out,) = Judge(jurors, load_rubric("quality"))([_rows(1)])
    assert out["input_quality"].to_pylist() == ["good"]


def test_jury_ignores_a_juror_whose_answer_failed() -> None:
    jurors = (ScriptedBackend(replies=["prose", "prose"]), ScriptedBackend(replies=[GOOD]))
    (out,) = Judge(jurors, load_rubric("quality"))([_rows(1)])
    assert out["quality_status"].to_pylist() == ["ok"] and out["quality_votes"].to_pylist() == [1]


def test_overall_status_is_the_worst_of_the_rubrics() -> None:
    batch = from_rows(
        [
            {"id": "a", "quality_status": "ok", "difficulty_status": "ok"},
            {"id": "b", "quality_status": "truncated", "difficulty_status": "backend_error"},
            {"id": "c", "quality_status": "parse_error", "difficulty_status": "ok"},
        ]
    )
    (out,) = overall_status(["quality", "difficulty"])([batch])
    assert out["judge_status"].to_pylist() == ["ok", "backend_error", "parse_error"]


def test_a_missing_input_column_names_the_option() -> None:
    with pytest.raises(SynthError, match="--response-column"):
        list(Judge((ScriptedBackend(replies=[]),), load_rubric("response"), inputs={"response": "answer"})([_rows()]))


def test_bad_rubrics_are_clear_errors(tmp_path) -> None:
    with pytest.raises(SynthError, match="unknown rubric 'qualty'.*quality"):
        load_rubric("qualty")
    with pytest.raises(SynthError, match="lacks prompt"):
        rubric_from_dict({"name": "x", "reads": ["text"], "schema": {}, "columns": {}})
    with pytest.raises(SynthError, match="field 'score'"):
        spec = {"name": "x", "reads": ["text"], "prompt": "{{ text }}", "schema": {}, "columns": {"score": "s"}}
        rubric_from_dict(spec)


def test_a_rubric_file_by_path(tmp_path) -> None:
    spec = {
        "name": "tone",
        "reads": ["text"],
        "prompt": "Tone of: {{ text }}",
        "schema": {"type": "object", "properties": {"tone": {"type": "string"}}, "required": ["tone"]},
        "scales": {"tone": ["rude", "neutral", "kind"]},
        "columns": {"tone": "tone"},
    }
    path = tmp_path / "tone.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    llm = ScriptedBackend(replies=['{"tone": "kind"}'])
    (out,) = Judge((llm,), load_rubric(path))([from_rows([{"id": "a", "text": "hi"}])])
    assert out["tone"].to_pylist() == ["kind"] and llm.calls[0][0][0]["content"] == "Tone of: hi"


def test_preference_pairs_take_the_best_and_worst_and_drop_ties() -> None:
    rows = [
        {"id": f"{s}-{j}", "source_id": s, "instruction": f"Q{s}", "response": f"{s}{j}", "response_score": score}
        for s, scores in (("a", [3, 9, 5]), ("b", [6, 6, None]), ("c", [None, 2, None]))
        for j, score in enumerate(scores)
    ]
    stage = PreferencePairs("response_score")
    (out,) = stage([from_rows(rows)])
    assert out.to_pylist() == [
        {"id": "a", "prompt": "Qa", "chosen": "a1", "rejected": "a0", "chosen_score": 9, "rejected_score": 3}
    ]
    assert stage.stats["dropped_tie"] == 1 and stage.stats["dropped_unscored"] == 1


def test_preference_pairs_never_choose_or_reject_a_cut_off_answer() -> None:
    # a0 scores best but was cut off by max tokens, a2 worst but looped: neither is a DPO text
    answers = [("a0", 9, "length"), ("a1", 7, "stop"), ("a2", 1, "repetition"), ("a3", 4, "stop")]
    rows = [
        {
            "id": f"a-{j}",
            "source_id": "a",
            "instruction": "Qa",
            "response": text,
            "response_score": score,
            "response_finish_reason": reason,
        }
        for j, (text, score, reason) in enumerate(answers)
    ]
    stage = PreferencePairs("response_score")
    (out,) = stage([from_rows(rows)])
    assert [(r["chosen"], r["rejected"]) for r in out.to_pylist()] == [("a1", "a3")]
    assert stage.stats["dropped_response_truncated"] == 1 and stage.stats["dropped_response_repetition"] == 1


def test_judge_recipe_writes_rubric_columns_and_judge_status(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"q{i}", "instruction": f"Q{i}"}) for i in range(3)))
    difficulty = json.dumps({"intent": "i", "knowledge": "k", "difficulty": "hard"})
    llm = ScriptedBackend(replies=[GOOD, GOOD, "oops", "oops again", difficulty, difficulty, difficulty])
    recipes.judge([llm], src, out=tmp_path / "o", rubrics=["quality", "difficulty"], batch_size=3)
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["judge_status"] for r in rows] == ["ok", "ok", "parse_error"]
    assert [r["quality_raw"] for r in rows] == [None, None, "oops again"]
    assert {r["difficulty"] for r in rows} == {"hard"} and rows[0]["judge_model"] == "scripted-model"
    assert [len(c) for c in llm.calls] == [3, 1, 3]  # whole batches, one retry call


def test_prefs_recipe_writes_dpo_pairs(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "q", "instruction": "Name a colour."}))
    answerer = ScriptedBackend(replies=["red", "blue"], model="policy")
    judge = ScriptedBackend(replies=[json.dumps({"explanation": "", "rating": r}) for r in (2, 8)], model="judge")
    recipes.prefs(answerer, [judge], src, out=tmp_path / "o", k=2, params=Sampling(max_tokens=8))
    (row,) = pq.read_table(tmp_path / "o/data").to_pylist()
    assert row["prompt"] == "Name a colour." and (row["chosen"], row["rejected"]) == ("blue", "red")
    assert (row["chosen_score"], row["rejected_score"]) == (8, 2) and row["judge_model"] == "judge"
    assert len(answerer.calls) == 1 and len(judge.calls) == 1


def test_an_answer_cut_off_in_its_trailing_explanation_keeps_its_label() -> None:
    cut = Completion('{"input_quality": "good", "explanation": "The query is clear but it la', "length")
    out, llm = _judge([cut])
    row = out.to_pylist()[0]
    assert row["quality_status"] == "ok" and row["input_quality"] == "good"
    assert row["input_quality_explanation"] == "The query is clear but it la" and row["quality_raw"] == cut.text
    assert len(llm.calls) == 1


def test_shipped_rubrics_ask_for_the_label_before_the_free_text() -> None:
    # A small model's explanation runs to the token cap; asked first, it would cut off the label.
    for name in ("quality", "response", "junk", "edu", "difficulty"):
        rubric = load_rubric(name)
        first = next(iter(rubric.schema["properties"]))
        assert rubric.columns[first] == rubric.score, name
        assert rubric.schema["required"][0] == first
