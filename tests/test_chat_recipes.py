"""The chat recipes' own rules: what they refuse, how much they hand a backend, what runs in a Ray actor."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Completion, Sampling
from synth.core import SynthError, from_rows, pipe
from synth.distributed import RayExecutor
from synth.recipes import chat
from tests.conftest import ScriptedBackend


@dataclass
class BatchingBackend(ScriptedBackend):
    """A scripted backend that says it decodes `batch_size` sequences together, as llama.cpp does."""

    batch_size: int = 16


@dataclass
class BaseModel(ScriptedBackend):
    """A scripted base model: no chat template of its own, so it never ends a turn."""

    chat_tuned: bool = False


def test_more_turns_without_responses_is_refused_before_the_output_is_claimed(tmp_path) -> None:
    with pytest.raises(SynthError, match=r"^--turns 3 needs responses .*drop --no-responses"):
        recipes.magpie(ScriptedBackend([]), n=1, out=tmp_path / "o", response=None, turns=3)
    assert not (tmp_path / "o").exists()


def test_a_response_model_under_ray_needs_its_own_factory(tmp_path) -> None:
    llm = ScriptedBackend([])
    with pytest.raises(SynthError, match="make_response_backend"):
        ray = recipes.RunSettings(executor=RayExecutor())
        recipes.magpie(llm, n=1, out=tmp_path / "o", response_backend=llm, make_backend=lambda: llm, run=ray)
    assert not (tmp_path / "o").exists()


def test_the_ray_actor_answers_with_the_response_model() -> None:
    asker, answerer = ScriptedBackend(["Q?", "Q2?"]), ScriptedBackend(["A!", "A2!"])
    talk = functools.partial(
        chat._conversations,
        template=asker.template,
        instruction=Sampling(),
        response=Sampling(),
        turns=2,
        exact_turns=False,
        seen=set(),
    )
    stage = chat._remote(talk, lambda: asker, lambda: answerer)
    (out,) = pipe([from_rows([{"id": "0"}])], stage)
    assert [len(c) for c in asker.calls] == [1, 1] and [len(c) for c in answerer.calls] == [1, 1]
    assert [m["content"] for m in out["messages"].to_pylist()[0]] == ["Q?", "A!", "Q2?", "A2!"]


def test_the_read_window_keeps_a_batching_backend_busy() -> None:
    assert chat.read_window(128, BatchingBackend([], batch_size=16)) == 128
    assert chat.read_window(128, BatchingBackend([], batch_size=64)) == 256
    assert chat.read_window(64, ScriptedBackend([]), None, BatchingBackend([], batch_size=200)) == 800
    assert chat.read_window(4, ScriptedBackend([])) == 4


def test_magpie_hands_the_backend_four_times_its_batch_size(tmp_path) -> None:
    llm = BatchingBackend([f"Q{i}?" for i in range(320)], batch_size=64)
    recipes.magpie(llm, n=320, out=tmp_path / "o", response=None, max_attempts=320)  # every attempt a row
    assert [len(c) for c in llm.calls] == [64, 256]  # a quarter window first: rows within seconds
    assert pq.read_table(tmp_path / "o/data")["instruction"].to_pylist() == [f"Q{i}?" for i in range(320)]


def test_magpie_asks_for_no_more_than_a_few_times_the_rows_wanted(tmp_path) -> None:
    llm = BatchingBackend([f"Q{i}?" for i in range(256)], batch_size=64)
    recipes.magpie(llm, n=3, out=tmp_path / "o", response=None)
    assert [len(c) for c in llm.calls] == [4]  # not 256 instructions for three (a quarter of a 16 window)
    assert pq.read_table(tmp_path / "o/data")["instruction"].to_pylist() == ["Q0?", "Q1?", "Q2?"]


def test_respond_reads_four_times_the_backend_batch_size(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"instruction": f"Q{i}"}) for i in range(200)))
    llm = BatchingBackend(["a"] * 200, batch_size=32)
    recipes.respond(llm, src, out=tmp_path / "o")
    assert [len(c) for c in llm.calls] == [128, 72]
    assert pq.read_table(tmp_path / "o/data")["response"].to_pylist() == ["a"] * 200


def test_a_base_model_ends_its_answers_at_a_line_break_only_in_multi_turn_runs(tmp_path) -> None:
    answer = Sampling(max_tokens=8)
    base = BaseModel(["Q?", "A", "Q2?", "A2"])
    recipes.magpie(base, n=1, out=tmp_path / "two", turns=2, batch_size=1, response=answer)
    assert [("\n\n" in p.stop, "\n" in p.stop) for p in base.params] == [(True, False), (False, True)] * 2
    (two,) = pq.read_table(tmp_path / "two/data").to_pylist()
    assert [m["content"] for m in two["messages"]] == ["Q?", "A", "Q2?", "A2"]
    base = BaseModel(["Q?", "A"])
    recipes.magpie(base, n=1, out=tmp_path / "one", batch_size=1, response=answer)
    assert [("\n\n" in p.stop, "\n" in p.stop) for p in base.params] == [(True, False), (False, False)]
    assert pq.read_table(tmp_path / "one/data")["response"].to_pylist() == ["A"]


def test_respond_refuses_bad_input_before_the_output_is_claimed(tmp_path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "o"
    src.write_text(json.dumps({"q": "hi", "conv": "not a list"}))
    for kwargs, words in [
        ({}, "has no column 'instruction' (it has id, q, conv); name the right one with --column"),
        ({"messages_column": "conv"}, "holds string, not conversations"),
    ]:
        with pytest.raises(SynthError, match=re.escape(words)):
            recipes.respond(ScriptedBackend([]), src, out=out, **kwargs)
    with pytest.raises(SynthError, match="does not exist"):
        recipes.respond(ScriptedBackend([]), tmp_path / "none.jsonl", out=out)
    assert not out.exists()


def test_respond_keeps_failed_rows_with_their_reason(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"instruction": q}) for q in ["Q", "too long", None]))
    failed = Completion("", "error", error="prompt has 5000 tokens, over the per-sequence context of 4096")
    result = recipes.respond(ScriptedBackend(["A", failed]), src, out=tmp_path / "o")
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["response_error"] for r in rows] == [None, failed.error, "instruction is null"]
    assert [r["response_finish_reason"] for r in rows] == ["stop", "error", "error"]
    # a failed row never looks like a training row: null messages, not a conversation ending in ""
    assert [r["messages"] for r in rows] == [
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        None,
        None,
    ]
    assert result["counts"]["response_no_input"] == 1 and result["counts"]["response_error"] == 2


def test_magpie_sizes_its_next_window_by_the_yield_so_far(tmp_path) -> None:
    # Every other instruction runs to its cap. A fixed window of 100 after the first 25 would try
    # 125 and make 12 rows past --n 50; sized by the yield so far, the run tries about what 50 rows take.
    replies = [f"Q{i}?" if i % 2 == 0 else Completion("Q...", "length", 3, 256) for i in range(400)]
    llm = BatchingBackend(replies, batch_size=8)
    card = recipes.magpie(llm, n=50, out=tmp_path / "o", response=None)
    sizes = [len(c) for c in llm.calls]
    assert sizes[0] == 25 and all(8 <= s <= 100 for s in sizes[1:]), sizes
    assert sum(sizes) < 125 and card["counts"].get("dropped_past_n", 0) <= 8, (sizes, card["counts"])
    # the same rows as any windowing: ids are consecutive and each row's seed comes from its id
    assert pq.read_table(tmp_path / "o/data")["instruction"].to_pylist() == [f"Q{i}?" for i in range(0, 100, 2)]


def test_a_window_that_kept_nothing_asks_for_a_whole_window_not_an_endless_one() -> None:
    assert chat._next_window(100, 8, kept=0, tried=25, left=50) == 100
    assert chat._next_window(100, 8, kept=24, tried=25, left=1) == 8  # never under the backend's slots
    assert chat._next_window(100, 8, kept=12, tried=25, left=38) == 87  # 38 / (13 / 27) x 1.1
