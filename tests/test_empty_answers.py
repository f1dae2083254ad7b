"""An empty answer is no answer: magpie drops it and counts it (`--keep-truncated` or not), and
`synth respond` keeps its row marked failed, never as a conversation ending in an empty turn."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Completion, Prompt, Sampling
from synth.core import from_rows
from synth.stages import Respond
from synth.templates import ChatTemplate, builtin

# By the attempt's number k mod 4: what the model answers (text, finish reason); k = 3 mod 4
# gets a whitespace-only instruction, never answered.
ANSWERS = {0: ("A whole answer.", "stop"), 1: ("", "stop"), 2: (" \n ", "length")}


@dataclass
class Blank:
    """Instructions `Question k?` (blank for k = 3 mod 4); answers by `ANSWERS`; records every call."""

    template: ChatTemplate = field(default_factory=lambda: builtin("llama3"))
    name: str = "blank"
    model: str = "blank-model"
    asked: int = 0
    calls: list[list[Prompt]] = field(default_factory=list)

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            if isinstance(prompt, str):  # Magpie's pre-query template: write an instruction
                k, self.asked = self.asked, self.asked + 1
                out.append(Completion("   " if k % 4 == 3 else f"Question {k}?", "stop", 3, 2))
            else:
                question = prompt[-1]["content"]
                text, reason = (
                    ANSWERS[int(question.split()[-1].rstrip("?")) % 4] if "Question" in question else ("", "stop")
                )
                out.append(Completion(text, reason, 3, len(text.split())))
        return out


@pytest.mark.parametrize("keep_truncated", [False, True])
def test_magpie_drops_and_counts_empty_answers(tmp_path, keep_truncated) -> None:
    llm = Blank()
    out = tmp_path / "o"
    result = recipes.magpie(llm, n=4, out=out, max_attempts=16, keep_truncated=keep_truncated)
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [r["instruction"] for r in rows] == [f"Question {k}?" for k in (0, 4, 8, 12)]
    assert all(r["response"] == "A whole answer." for r in rows)
    assert all(r["messages"][-1] == {"role": "assistant", "content": "A whole answer."} for r in rows)
    counts = result["counts"]
    tried = range(llm.asked)  # 13 or more: attempt 12 is the fourth kept row (windows follow the yield)
    assert len(tried) >= 13
    assert counts["dropped_response_empty"] == sum(k % 4 in (1, 2) for k in tried)  # empty, and whitespace cut off
    assert counts["dropped_empty"] == sum(k % 4 == 3 for k in tried)  # the blank instructions, never answered
    assert counts.get("kept_response_truncated", 0) == counts.get("dropped_response_truncated", 0) == 0
    answered = [m[-1]["content"] for call in llm.calls for m in call if not isinstance(m, str)]
    assert len(answered) == sum(k % 4 != 3 for k in tried) and all(q.startswith("Question") for q in answered)


def test_respond_marks_an_empty_answer_failed_and_does_not_send_a_blank_question(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    questions = ["Question 1?", "", "  \n", "Question 4?"]  # 1 mod 4: empty answer; 4: a whole one
    src.write_text("".join(json.dumps({"id": str(i), "instruction": q}) + "\n" for i, q in enumerate(questions)))
    llm = Blank()
    result = recipes.respond(llm, src, out=tmp_path / "o")
    rows = pq.read_table(tmp_path / "o" / "data").to_pylist()
    assert [m[-1]["content"] for call in llm.calls for m in call] == ["Question 1?", "Question 4?"]
    assert [r["response_finish_reason"] for r in rows] == ["error", "error", "error", "stop"]
    assert [r["messages"] is None for r in rows] == [True, True, True, False]
    assert rows[0]["response_error"] == "empty answer" and rows[1]["response_error"] == "instruction is empty"
    assert rows[3]["messages"][-1] == {"role": "assistant", "content": "A whole answer."}
    assert result["counts"]["response_empty"] == 1 and result["counts"]["response_no_input"] == 2


def test_respond_keeps_a_cut_off_answer_marked_never_as_a_conversation(tmp_path) -> None:
    from tests.conftest import ScriptedBackend

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "instruction": f"Question {i}?"}) + "\n" for i in range(3)))
    replies = [
        Completion("A whole answer.", "stop"),
        Completion("First, list", "length"),
        Completion("la la", "repetition"),
    ]
    result = recipes.respond(ScriptedBackend(replies=replies), src, out=tmp_path / "o")
    rows = pq.read_table(tmp_path / "o" / "data").to_pylist()
    assert [r["response_finish_reason"] for r in rows] == ["stop", "length", "repetition"]
    assert [r["messages"] is None for r in rows] == [False, True, True]
    assert [r["response_error"] for r in rows] == [None, "cut off by max tokens", "ended as looping"]
    assert result["counts"]["response_length"] == 1


def test_respond_stage_never_ends_a_conversation_in_an_empty_turn() -> None:
    stage = Respond(Blank())
    (out,) = stage([from_rows([{"id": "a", "instruction": "Question 1?"}, {"id": "b", "instruction": "Question 8?"}])])
    assert out["messages"].to_pylist()[0] is None and out["response"].to_pylist() == ["", "A whole answer."]
    assert stage.stats["response_empty"] == 1
