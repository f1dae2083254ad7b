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
