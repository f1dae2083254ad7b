import pytest

from synth import read
from synth.backends import Completion, Sampling
from synth.core import StoppedShort, counter_source, from_rows, pipe, take
from synth.stages import Magpie, Respond
from synth.templates import builtin
from tests.conftest import ScriptedBackend


def test_magpie_sends_only_the_pre_query_template_with_turn_stops() -> None:
    llm = ScriptedBackend(replies=["Write a haiku."])
    tmpl = builtin("llama3")
    (out,) = Magpie(llm, tmpl, Sampling(max_tokens=32))([from_rows([{"id": "0"}])])
    assert llm.calls == [["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"]]
    assert "<|eot_id|>" in llm.params[0].stop
    assert out["instruction"].to_pylist() == ["Write a haiku."]


def test_magpie_drops_and_counts_by_reason() -> None:
    replies = [
        Completion("  Keep me.  ", "stop"),
        Completion("   ", "stop"),
        Completion("Cut off mid", "length"),
        Completion("keep   ME.", "stop"),  # same after normalisation
        Completion("", "error", error="boom"),
        Completion("Another one", "stop"),
    ]
    stage = Magpie(ScriptedBackend(replies=replies), builtin("chatml"))
    out = list(pipe(counter_source(batch_size=6), take(6), stage))
    assert [i for b in out for i in b["instruction"].to_pylist()] == ["Keep me.", "Another one"]
    assert dict(stage.stats) == {
        "attempts": 6,
        "kept": 2,
        "dropped_empty": 1,
        "dropped_truncated": 1,
        "dropped_duplicate": 1,
        "dropped_error": 1,
    }


def test_attempts_are_counted_before_their_instructions_end() -> None:
    """The progress line reads the yield as rows end, mid-batch: the batch's attempts must be
    counted by then (it showed "yield 400%" when they were counted after the batch)."""
    seen = []

    class Watching(ScriptedBackend):
        def generate(self, prompts, params):  # type: ignore[no-untyped-def]
            seen.append(stage.stats["attempts"])
            return super().generate(prompts, params)

    stage = Magpie(Watching(replies=["One.", "Two.", "Three.", "Four."]), builtin("chatml"))
    out = list(pipe(counter_source(batch_size=2), take(4), stage))
    assert sum(b.num_rows for b in out) == 4
    assert seen == [2, 4]
    assert stage.stats["attempts"] == 4


def test_magpie_system_prompt_goes_into_the_pre_query() -> None:
    llm = ScriptedBackend(replies=["Solve x+1=2."])
    list(Magpie(llm, builtin("qwen2.5"), system_prompt="You are a math tutor.")([from_rows([{"id": "0"}])]))
    assert llm.calls[0][0] == "<|im_start|>system\nYou are a math tutor.<|im_end|>\n<|im_start|>user\n"


def test_seeds_follow_row_position_not_batching() -> None:
    llm = ScriptedBackend(replies=["a", "b", "c", "d"])
    stage = Magpie(llm, builtin("gemma"), Sampling(seed=100))
    list(pipe(counter_source(batch_size=2, start=10), take(4), stage))
    assert [p.seed for p in llm.params] == [110, 112]


def test_respond_adds_response_and_messages() -> None:
    llm = ScriptedBackend(replies=["4"])
    batch = from_rows([{"id": "a", "instruction": "2+2?", "system_prompt": "Be terse."}])
    (out,) = Respond(llm)([batch])
    assert llm.calls == [[[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]]]
    row = out.to_pylist()[0]
    assert row["response"] == "4" and row["response_finish_reason"] == "stop"
    assert row["messages"][-1] == {"role": "assistant", "content": "4"}
    assert row["messages"][1] == {"role": "user", "content": "2+2?"}


def test_max_attempts_caps_the_run_even_when_nothing_is_kept(tmp_path) -> None:
    from synth.recipes import magpie

    llm = ScriptedBackend(replies=[Completion("x", "length")] * 12)
    with pytest.raises(StoppedShort, match="--max-attempts 12 reached") as stopped:
        magpie(llm, n=5, out=tmp_path / "o", response=None, batch_size=4, max_attempts=12)
    result = stopped.value.result  # what the run did, on the error
    assert result["rows"] == 0 and result["counts"]["attempts"] == 12
    assert sum(len(c) for c in llm.calls) == 12
    assert sum(b.num_rows for b in read(tmp_path / "o")) == 0  # an empty dataset on disk, not a missing one
