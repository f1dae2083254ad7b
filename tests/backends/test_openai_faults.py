"""The OpenAI-compatible backend's retry and error rules, against a fault-injecting server on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from synth import recipes
from synth.backends import Sampling, load_backend
from synth.core import StoppedShort, SynthError
from synth.io import read
from synth.tokens import context_size, token_counter
from tests.backends.fault_proxy import FaultProxy
from tests.backends.openai_server import serve

FAST = {"retry_delay": 0.001}  # backoff in milliseconds, so the retries take no time


@pytest.fixture
def server():
    with serve() as state:
        yield state


def test_a_500_then_success_is_retried(server) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, **FAST)
    server.fail_next(500)
    (out,) = llm.generate(["again"], Sampling())
    assert (out.text, out.finish_reason, out.error) == ("echo: again", "stop", None)
    assert len(server.completions()) == 2


def test_a_429_and_chat_prompts_are_retried_too(server) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, template="chatml", **FAST)
    server.fail_next(429, 502)
    (out,) = llm.generate([[{"role": "user", "content": "hi"}]], Sampling())
    assert out.text == "echo: hi" and len(server.completions()) == 3


def test_a_persistent_5xx_fails_the_row_not_the_run(server) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, attempts=3, concurrency=1, **FAST)
    server.fail_next(500, 500, 500)
    bad, good = llm.generate(["a", "b"], Sampling())
    assert bad.finish_reason == "error" and "500" in bad.error and "3 attempts" in bad.error
    assert good.text == "echo: b"
    assert len(server.completions()) == 4


def test_503s_are_waited_out_past_the_attempts_within_server_wait(server) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, attempts=3, concurrency=1, **FAST)
    server.fail_next(503, 502, 503, 504, 429, 503)  # a server shedding load, or restarting behind a proxy
    (out,) = llm.generate(["a"], Sampling())
    assert out.text == "echo: a" and len(server.completions()) == 7
    assert llm.describe()["server_requests"] == {"retries": 6, "retried": {"busy": 6}}  # the card's count
    fast = load_backend("fake-chatml", base_url=server.url, attempts=3, concurrency=1, server_wait=0, **FAST)
    server.fail_next(503, 503, 503)
    (out,) = fast.generate(["b"], Sampling())  # --server-wait 0: the attempts count at once
    assert out.finish_reason == "error" and "503" in out.error and "3 attempts" in out.error


def test_a_bad_request_fails_the_row_without_retries(server) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, **FAST)
    server.fail_next(400)
    (out,) = llm.generate(["a"], Sampling())
    assert out.finish_reason == "error" and "400" in out.error
    assert len(server.completions()) == 1


def _questions(path, n: int):
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"question {i}"}) + "\n" for i in range(n)))
    return path


def test_failed_rows_are_kept_and_counted_under_the_max_error_rate(server, tmp_path) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, attempts=2, concurrency=1, **FAST)
    server.fail_next(500, 500, 500, 500)  # the first two rows, two attempts each
    source = _questions(tmp_path / "q.jsonl", 60)
    run = recipes.RunSettings(max_error_rate=0.05)
    result = recipes.respond(llm, source, out=tmp_path / "out", run=run)  # 2 of 60 failed: 3.3%
    rows = {r["id"]: r for b in read(tmp_path / "out") for r in b.to_pylist()}
    assert result["rows"] == len(rows) == 60
    failed = [r for r in rows.values() if r["response_finish_reason"] == "error"]
    assert sorted(r["id"] for r in failed) == ["q0", "q1"]
    assert all("500" in r["response_error"] for r in failed)
    card = (tmp_path / "out" / "README.md").read_text()
    assert '"failed_requests"' in card and "gave up after 2 attempts" in card


def test_the_run_stops_with_one_line_past_the_max_error_rate(server, tmp_path) -> None:
    llm = load_backend("fake-chatml", base_url=server.url, attempts=2, **FAST)
    server.fail_all = 500
    source = _questions(tmp_path / "q.jsonl", 60)
    with pytest.raises(SynthError) as caught:
        recipes.respond(llm, source, out=tmp_path / "out", run=recipes.RunSettings(max_error_rate=0.05))
    message = str(caught.value)
    assert "\n" not in message
    assert "60 of 60 requests failed (100.0%), over the allowed 5.0%" in message
    assert "500" in message and "--max-error-rate" in message


def test_a_missing_model_says_which_models_there_are(server) -> None:
    llm = load_backend("nosuch-model", base_url=server.url, template="chatml", **FAST)
    with pytest.raises(SynthError) as caught:
        llm.generate(["a", "b"], Sampling())
    message = str(caught.value)
    assert f"the server at {server.url} does not serve model 'nosuch-model'" in message
    assert "pass --model with a name from its /v1/models" in message and "\n" not in message
    assert len(server.completions()) <= 2  # no retries: a missing model is not a passing fault


def test_the_served_model_is_the_default(server) -> None:
    assert load_backend(None, base_url=server.url).model == "fake-chatml"


def test_a_server_never_reached_stops_the_run_at_once(tmp_path) -> None:
    """Only a server that answered before is waited for: one never reached is a wrong address."""
    with serve() as state:
        llm = load_backend("fake-chatml", base_url=state.url, attempts=2, **FAST)  # --model given: nothing asked yet
    with pytest.raises(SynthError, match=f"no server answers at {state.url}; start your OpenAI-compatible server"):
        llm.generate(["a", "b", "c"], Sampling())


def test_a_server_that_goes_away_mid_run_is_waited_for_then_stops_short(server) -> None:
    proxy = FaultProxy(server.url.removesuffix("/v1")).up()  # its down() resets the connections kept alive too
    llm = load_backend("fake-chatml", base_url=f"{proxy.url}/v1", server_wait=0.3, **FAST)
    assert llm.generate(["a"], Sampling())[0].text == "echo: a"
    proxy.down()
    with pytest.raises(StoppedShort, match=r"stopped answering .* did not come back for 0.3 s .*--resume") as caught:
        llm.generate(["b", "c"], Sampling())
    assert caught.value.exit_code == 3


def test_connection_refused_is_one_line_from_the_command(dead_url, tmp_path) -> None:
    source = _questions(tmp_path / "q.jsonl", 2)
    argv = [sys.executable, "-m", "synth", "respond", str(source), "--base-url", f"{dead_url}/v1"]
    done = subprocess.run([*argv, "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"synth: error: no server answers at {dead_url}/v1; start your OpenAI-compatible server "
        "(e.g. `vllm serve MODEL` or `python -m llama_cpp.server --model FILE.gguf`) or fix --base-url"
    ]


def test_tokens_are_counted_by_vllms_tokenize_endpoint() -> None:
    with serve(tokenize=True, max_model_len=32768) as state:
        llm = load_backend("fake-chatml", base_url=state.url)
        count = token_counter(llm)
        assert count.count == llm.count_tokens  # the server's own count, with a fallback should it stop
        assert count("four words of text") == 4
        path, body = state.requests[-1]
        assert path == "/tokenize"  # at the server's root, beside /v1
        assert body == {"model": "fake-chatml", "prompt": "four words of text", "add_special_tokens": False}
        assert context_size(llm) == 32768


def test_a_server_without_tokenize_falls_back_to_the_byte_bound(server, capsys) -> None:
    llm = load_backend("fake-chatml", base_url=server.url)
    count = token_counter(llm)
    assert count("four words of text") == len(b"four words of text")
    err = capsys.readouterr().err
    assert f"OpenAIBackend cannot count tokens (the server at {server.url.removesuffix('/v1')} answers none of" in err
    with pytest.raises(SynthError, match="pass --context-tokens N"):
        context_size(llm)
