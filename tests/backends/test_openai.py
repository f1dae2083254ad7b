"""The OpenAI-compatible backend against `python -m llama_cpp.server` serving Gemma 3 270M base on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from synth.backends import Sampling, load_backend
from synth.core import SynthError

ALIAS = "gemma-3-270m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server, started once and stopped at the end."""
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    from synth.backends.llamacpp import base_model_path

    port = _free_port()
    # `python -m llama_cpp.server`, after synth's guard against ggml's AMX kernels (see avoid_amx_kernels)
    launch = "from synth.backends.llamacpp import avoid_amx_kernels as a; a(); import runpy; "
    launch += "runpy.run_module('llama_cpp.server', run_name='__main__')"
    cmd = [sys.executable, "-c", launch, "--model", str(base_model_path()), "--model_alias", ALIAS]
    # The GGUF carries no chat template, so the server is told the format for /v1/chat/completions.
    cmd += ["--chat_format", "gemma", "--n_ctx", "512", "--n_threads", "2", "--verbose", "False"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("llama_cpp_server") / "log.txt"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))  # a file: a pipe could fill
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1).read()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}") from exc
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_served_model_and_its_template_come_from_the_server(openai_server) -> None:
    llm = load_backend(None, base_url=openai_server)
    assert (llm.name, llm.model, llm.template.family) == ("openai", ALIAS, "gemma")
    assert "--base-url" in llm.reason and llm.describe()["base_url"] == openai_server


def test_raw_prompts_go_to_completions_with_stops_and_counts(openai_server) -> None:
    llm = load_backend(ALIAS, base_url=openai_server, concurrency=2)
    prompts = ["1, 2, 3, 4, 5, 6,", "Once upon a time"]
    stop = llm.generate(prompts[:1], Sampling(max_tokens=12, temperature=0.0, stop=(",",)))[0]
    cut = llm.generate(prompts[1:], Sampling(max_tokens=3, temperature=0.0))[0]
    assert stop.finish_reason == "stop" and "," not in stop.text and stop.text.strip()
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 3)
    assert stop.prompt_tokens > 0


def test_order_is_kept_with_requests_in_flight(openai_server) -> None:
    llm = load_backend(ALIAS, base_url=openai_server, concurrency=3)
    params = Sampling(max_tokens=8, temperature=0.0)
    prompts = ["The capital of France is", "Water boils at", "1, 2, 3, 4,"]
    together = [c.text for c in llm.generate(prompts, params)]
    alone = [llm.generate([p], params)[0].text for p in prompts]
    assert together == alone  # greedy, so each prompt's text is its own, wherever it lands


def test_messages_go_to_chat_completions(openai_server) -> None:
    llm = load_backend(ALIAS, base_url=openai_server)
    (out,) = llm.generate([[{"role": "user", "content": "Say hi."}]], Sampling(max_tokens=8, temperature=0.0))
    assert out.finish_reason in ("stop", "length") and out.completion_tokens > 0


def test_no_server_says_so(dead_url) -> None:
    with pytest.raises(SynthError, match=f"no server answers at {dead_url}/v1"):
        load_backend(None, base_url=f"{dead_url}/v1")


def test_tokens_are_counted_by_the_servers_tokenize_endpoint(openai_server, base_model) -> None:
    from synth.tokens import context_size, token_counter

    llm = load_backend(ALIAS, base_url=openai_server)
    assert token_counter(llm).count == llm.count_tokens  # its own count, not the byte bound
    text = "Photosynthesis turns light, water and carbon dioxide into sugar."
    # llama-cpp-python's /extras/tokenize/count counts the BOS it adds
    assert llm.count_tokens(text) == base_model.count_tokens(text) + 1
    with pytest.raises(SynthError, match="pass --context-tokens N"):  # this server does not say its context
        context_size(llm)
