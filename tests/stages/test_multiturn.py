import pytest

from synth.backends import Completion, Sampling
from synth.core import from_rows
from synth.stages import MultiTurn, Respond
from synth.templates import builtin
from tests.conftest import ScriptedBackend

FIRST = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]

# What the instructor must be sent for turn 2 and turn 3, per family.
EXPECTED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Q2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
    ),
    "chatml": (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n",
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n<|im_start|>user\n",
    ),
    "gemma": (
        "<bos><start_of_turn>user\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n<start_of_turn>user\n",
        "<bos><start_of_turn>user\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
        "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn>\n<start_of_turn>user\n",
    ),
}


@pytest.mark.parametrize("family", EXPECTED)
def test_turn_two_and_three_prompts(family) -> None:
    tmpl = builtin(family)
    asker, answerer = ScriptedBackend(replies=["Q2", "Q3"]), ScriptedBackend(replies=["A2", "A3"])
    stage = MultiTurn(asker, answerer, tmpl, turns=3, instruction=Sampling(max_tokens=16))
    (out,) = stage([from_rows([{"id": "0", "messages": FIRST}])])
    assert [c[0] for c in asker.calls] == list(EXPECTED[family])
    assert set(tmpl.instruction_stop) <= set(asker.params[0].stop)
    assert answerer.calls[0][0][-1] == {"role": "user", "content": "Q2"}
    row = out.to_pylist()[0]
    assert row["turns"] == 3
    assert [m["content"] for m in row["messages"]] == ["Q1", "A1", "Q2", "A2", "Q3", "A3"]


def test_conversations_cut_off_end_early_or_are_dropped() -> None:
    rows = [{"id": str(i), "messages": FIRST} for i in range(3)]

    def run(exact: bool):
        asker = ScriptedBackend(replies=["Q2", Completion("half", "length"), "  "])
        stage = MultiTurn(asker, ScriptedBackend(replies=["A2"]), builtin("chatml"), turns=2, exact=exact)
        return list(stage([from_rows(rows)]))[0], stage.stats

    kept, stats = run(exact=False)
    assert kept["turns"].to_pylist() == [2, 1, 1] and stats["ended_at_turn_2"] == 2
    kept, stats = run(exact=True)
    assert kept["id"].to_pylist() == ["0"] and stats["dropped_short"] == 2


def test_respond_answers_the_last_user_turn_of_a_messages_column() -> None:
    conv = [{"role": "system", "content": "S"}, *FIRST, {"role": "user", "content": "Q2"}]
    llm = ScriptedBackend(replies=["A2"])
    (out,) = Respond(llm, messages_column="messages")([from_rows([{"id": "x", "messages": conv}])])
    assert llm.calls == [[conv]]
    assert out["messages"].to_pylist()[0] == [*conv, {"role": "assistant", "content": "A2"}]


def test_a_bad_later_answer_ends_the_conversation_at_its_last_whole_exchange() -> None:
    rows = [{"id": str(i), "messages": FIRST} for i in range(4)]
    answers = ["A2", Completion("cut", "length"), Completion("  ", "stop"), Completion("", "error", error="boom")]

    def run(exact: bool):
        asker = ScriptedBackend(replies=["Q2a", "Q2b", "Q2c", "Q2d"])
        stage = MultiTurn(asker, ScriptedBackend(replies=list(answers)), builtin("chatml"), turns=2, exact=exact)
        return list(stage([from_rows(rows)]))[0], stage.stats

    kept, stats = run(exact=False)
    assert kept["turns"].to_pylist() == [2, 1, 1, 1]
    convs = kept["messages"].to_pylist()
    assert [m["content"] for m in convs[0]] == ["Q1", "A1", "Q2a", "A2"]
    assert convs[1:] == [FIRST] * 3  # the unanswered question is not kept either
    assert stats["ended_at_turn_2"] == 3
    assert stats["ended_response_truncated"] == stats["ended_response_empty"] == stats["ended_response_error"] == 1
    kept, stats = run(exact=True)
    assert kept["id"].to_pylist() == ["0"] and stats["dropped_short"] == 3


def test_a_conversation_ended_at_turn_two_is_not_asked_turn_three() -> None:
    rows = [{"id": str(i), "messages": FIRST} for i in range(2)]
    asker = ScriptedBackend(replies=["Q2", Completion("", "stop"), "Q3"])
    answerer = ScriptedBackend(replies=["A2", "A3"])
    stage = MultiTurn(asker, answerer, builtin("llama3"), turns=3)
    (out,) = stage([from_rows(rows)])
    assert [len(c) for c in asker.calls] == [2, 1] and [len(c) for c in answerer.calls] == [1, 1]
    assert out["turns"].to_pylist() == [3, 1]
    assert dict(stage.stats) == {"ended_at_turn_2": 1, "ended_instruction_empty": 1}


def test_a_row_whose_first_answer_failed_is_not_carried_on() -> None:
    rows = [{"id": "0", "messages": FIRST, "response_finish_reason": "stop"}]
    rows.append({"id": "1", "messages": FIRST, "response_finish_reason": "error"})
    asker, answerer = ScriptedBackend(replies=["Q2"]), ScriptedBackend(replies=["A2"])
    (out,) = MultiTurn(asker, answerer, builtin("gemma"), turns=2)([from_rows(rows)])
    assert [len(c) for c in asker.calls] == [1] and out["turns"].to_pylist() == [2, 1]


def test_respond_marks_rows_with_nothing_to_answer_and_sends_the_rest() -> None:
    llm = ScriptedBackend(replies=["A", Completion("", "error", error="prompt has 9000 tokens")])
    batch = from_rows([{"id": str(i), "instruction": q} for i, q in enumerate(["Q", None, "long"])])
    stage = Respond(llm, errors=True)
    (out,) = stage([batch])
    assert llm.calls == [[[{"role": "user", "content": "Q"}], [{"role": "user", "content": "long"}]]]
    assert out["response_finish_reason"].to_pylist() == ["stop", "error", "error"]
    assert out["response_error"].to_pylist() == [None, "instruction is null", "prompt has 9000 tokens"]
    assert out["messages"].to_pylist()[1] is None and out["response"].to_pylist() == ["A", "", ""]
    assert stage.stats["response_no_input"] == 1 and stage.stats["response_error"] == 2


def test_respond_without_errors_adds_no_error_column_and_checks_conversations() -> None:
    convs = [[*FIRST, {"role": "user", "content": "Q2"}], [], [{"role": "user", "content": None}], FIRST]
    llm = ScriptedBackend(replies=["A2", "A1 again"])
    stage = Respond(llm, messages_column="messages")
    (out,) = stage([from_rows([{"id": str(i), "messages": c} for i, c in enumerate(convs)])])
    assert "response_error" not in out.column_names
    assert out["response_finish_reason"].to_pylist() == ["stop", "error", "error", "stop"]
    assert llm.calls == [[convs[0], FIRST[:1]]]  # a finished exchange is answered again, from its user turn
