"""Magpie's run rules on scripted backends: cut-off answers are not rows, a hopeless run stops
and says why, the progress bar's rates and -q."""

from __future__ import annotations

import io
import re
import time
from contextlib import redirect_stderr
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest

from synth import recipes, report
from synth.backends import Completion, Prompt, Sampling, completed
from synth.core import StoppedShort, SynthError, from_rows, pipe
from synth.recipes._giveup import GiveUp
from synth.stages import DropTruncated, MultiTurn
from tests.conftest import ScriptedBackend


@dataclass
class Alternating(ScriptedBackend):
    """Instructions always stop; answers alternate between whole and cut off (`length`)."""

    def generate(self, prompts: list[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            if isinstance(prompt, str):
                out.append(Completion(f"Question {len(self.replies)}?", "stop", 3, 2))
                self.replies.append("q")
            else:
                cut = len(self.replies) % 2 == 0
                self.replies.append("a")
                out.append(Completion("An answer that", "length" if cut else "stop", 5, 3))
        return out


def _rows(out) -> list[dict]:
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_cut_off_answers_are_dropped_and_counted(tmp_path) -> None:
    result = recipes.magpie(Alternating([]), n=6, out=tmp_path / "o", max_attempts=40)
    rows = _rows(tmp_path / "o")
    assert len(rows) == 6
    assert {r["response_finish_reason"] for r in rows} == {"stop"}
    assert result["counts"]["dropped_response_truncated"] >= 6


def test_keep_truncated_keeps_them_and_counts_them(tmp_path) -> None:
    result = recipes.magpie(Alternating([]), n=6, out=tmp_path / "o", max_attempts=40, keep_truncated=True)
    rows = _rows(tmp_path / "o")
    reasons = [r["response_finish_reason"] for r in rows]
    assert len(reasons) == 6 and reasons.count("length") == 3
    assert [r["response"] for r in rows] == ["An answer that"] * 6  # a cut-off answer kept is still an answer
    assert all(r["messages"][-1] == {"role": "assistant", "content": r["response"]} for r in rows)
    assert result["counts"]["kept_response_truncated"] >= 3 and "dropped_response_truncated" not in result["counts"]


def test_drop_truncated_stage_filters_length_rows_only() -> None:
    stage = DropTruncated()
    batch = from_rows([{"id": str(i), "response_finish_reason": r} for i, r in enumerate(["stop", "length", "stop"])])
    (out,) = pipe([batch], stage)
    assert out["id"].to_pylist() == ["0", "2"] and stage.stats["dropped_response_truncated"] == 1


def test_a_later_turn_cut_off_ends_the_conversation_or_is_kept_on_request() -> None:
    first = [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "A1."}]
    rows = [{"id": "0", "messages": first, "response_finish_reason": "stop"}]
    for keep, turns in ((False, 1), (True, 2)):
        asker = ScriptedBackend(["Q2?"])
        answerer = ScriptedBackend([Completion("A2 cut", "length", 3, 9)])
        stage = MultiTurn(asker, answerer, asker.template, turns=2, keep_truncated=keep)
        (out,) = pipe([from_rows(rows)], stage)
        assert out["turns"].to_pylist() == [turns]
        assert stage.stats["ended_response_truncated" if not keep else "kept_response_truncated"] == 1


def test_a_run_that_cannot_succeed_stops_with_the_reason_and_the_fix(tmp_path) -> None:
    class NeverEnds(ScriptedBackend):
        def generate(self, prompts, params):
            self.calls.append(list(prompts))
            return [Completion("Write a", "length", 3, 24) for _ in prompts]

    llm = NeverEnds([])
    with pytest.raises(SynthError) as info:
        recipes.magpie(llm, n=4, out=tmp_path / "o", instruction=Sampling(max_tokens=24))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"0 rows kept from \d+ attempts; commonest drop: truncated \(\d+x\)", message)
    assert "--instruction-max-tokens 24: raise it" in message and "--template" in message
    tried = sum(len(c) for c in llm.calls)
    assert 64 <= tried <= 128  # it gave up after a fair number of attempts, not at the first window


def test_an_explicit_max_attempts_cap_is_honoured_without_giving_up(tmp_path) -> None:
    class NeverEnds(ScriptedBackend):
        def generate(self, prompts, params):
            self.calls.append(list(prompts))
            return [Completion("Write a", "length", 3, 24) for _ in prompts]

    llm = NeverEnds([])
    with pytest.raises(StoppedShort, match=r"--max-attempts 100 reached; 0 of 4 rows are in") as info:
        recipes.magpie(llm, n=4, out=tmp_path / "o", max_attempts=100)
    result = info.value.result  # what the run did, on the exception a short run raises
    assert result["rows"] == 0 and result["counts"]["attempts"] == 100


def test_give_up_waits_for_enough_attempts_and_a_yield_near_zero() -> None:
    state = {"attempts": 10}
    stage = GiveUp(lambda: state["attempts"], lambda: {"dropped_response_truncated": 9}, {"response_truncated": "X"})
    stage.check()  # 10 attempts: too early to judge
    state["attempts"] = 64
    stage.kept = 2  # 2 of 64 is above 2%
    stage.check()
    stage.kept = 1
    with pytest.raises(SynthError, match=r"commonest drop: response_truncated \(9x\)\. Fix: X"):
        stage.check()


class _SlowCounter:
    """A meter whose tokens grow while the stream is between batches, as llama.cpp's do mid-call."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.completion_tokens = 0

    def live_tokens(self) -> int:
        return int((time.monotonic() - self.start) * 1000)


def test_the_bar_shows_live_rates_and_an_eta_before_the_run_ends() -> None:
    def slow():
        for i in range(2):
            time.sleep(0.35)
            yield from_rows([{"id": str(i)}])

    err = io.StringIO()
    with redirect_stderr(err):
        stats = {"attempts": 4, "kept": 2}
        list(pipe(slow(), report.progress(10, _SlowCounter(), stats=stats, tick=0.1)))
    text = err.getvalue()
    assert re.search(r"[1-9]\d* tok/s", text) and "rows/s" in text and "ETA" in text and "yield" in text
    # the ticker redrew the line while the first batch was still coming: more draws than batches
    assert text.count("tok/s") > 3


def test_quiet_silences_the_bar() -> None:
    err = io.StringIO()
    report.set_quiet(True)
    try:
        with redirect_stderr(err):
            out = list(pipe([from_rows([{"id": "0"}])], report.progress(1, _SlowCounter())))
    finally:
        report.set_quiet(False)
    assert len(out) == 1 and err.getvalue() == ""


@dataclass
class LiveAnswers(ScriptedBackend):
    """Instructions at once; answers one by one, each announced as it ends (as llama.cpp does)."""

    live_completions = True

    def generate(self, prompts: list[Prompt], params: Sampling) -> list[Completion]:
        out = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                out.append(Completion(f"Question {len(self.calls)}-{i}?", "stop", 3, 2))
                continue
            time.sleep(0.12)
            out.append(Completion("An answer.", "stop", 3, 2))
            completed(out[-1])
        self.calls.append(list(prompts))
        return out


def test_the_bar_moves_as_rows_finish_not_once_per_window(tmp_path) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        result = recipes.magpie(LiveAnswers([]), n=8, out=tmp_path / "o", batch_size=16)
    assert result["rows"] == 8
    # windows of 4 then 16 attempts: the counts in between come from answers ending mid-window
    shown = {int(n) for n in re.findall(r"\| *(\d+)/8", err.getvalue())}
    assert {1, 2, 3, 5, 6, 7} <= shown, err.getvalue()
    assert max(shown) == 8


def test_a_batch_sets_the_bar_to_the_rows_really_kept() -> None:
    err = io.StringIO()

    def stream():
        report.row_finished(3)  # three answers ended, but one of their rows is then dropped
        time.sleep(0.15)
        yield from_rows([{"id": "0"}, {"id": "1"}])

    with redirect_stderr(err):
        list(pipe(stream(), report.progress(10, _SlowCounter(), tick=0.05)))
    text = err.getvalue()
    assert re.search(r"\| *3/10", text) and re.findall(r"\| *(\d+)/10", text)[-1] == "2"
