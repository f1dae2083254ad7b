"""Choosing a backend, the shared request pool, and the error-rate rule."""

from __future__ import annotations

import importlib.util

import pytest

from synth.backends import Completion, Metered, Sampling, choose, load_backend
from synth.backends._pool import Failed, Pool, Retry, Retryable
from synth.core import SynthError
from tests.conftest import ScriptedBackend

NO_VLLM = importlib.util.find_spec("vllm") is None


@pytest.mark.parametrize(
    ("model", "base_url", "kind", "why"),
    [
        (None, None, "llamacpp", "embedded SmolLM2-135M-Instruct"),
        ("models/x.gguf", None, "llamacpp", "local GGUF file"),
        ("llama3:8b", None, "ollama", "Ollama name:tag"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", None, "ollama", "Ollama name:tag"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "http://127.0.0.1:8000/v1", "openai", "OpenAI-compatible"),
        (None, "http://127.0.0.1:8000/v1", "openai", "--base-url"),
    ],
)
def test_auto_picks_a_backend_and_says_why(model, base_url, kind, why) -> None:
    chosen, reason = choose(model, "auto", base_url=base_url)
    assert chosen == kind and why in reason


def test_an_explicit_backend_wins_and_a_wrong_one_is_named() -> None:
    assert choose("llama3:8b", "openai") == ("openai", "chosen with --backend openai")
    with pytest.raises(SynthError, match="unknown backend 'tgi'; pick one of auto, llamacpp"):
        choose("x", "tgi")


@pytest.mark.skipif(not NO_VLLM, reason="vllm is installed here")
def test_a_hugging_face_model_without_vllm_says_what_to_do(tmp_path) -> None:
    with pytest.raises(SynthError, match=r"Hugging Face model id, which vLLM serves, but vLLM is not installed"):
        choose("meta-llama/Meta-Llama-3-8B-Instruct")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SynthError, match="local Hugging Face model directory.*--base-url"):
        choose(str(tmp_path))


@pytest.mark.parametrize("name", ["./nope", "/abs/missing", "~/no-such-model", "models/x", "a/b/c", "model.bin"])
def test_a_missing_model_path_is_named_as_a_missing_file(tmp_path, monkeypatch, name) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # `models/x`: its folder is here, so it is a path, not a Hub id
    with pytest.raises(SynthError, match=r"^model file .*does not exist; pass the path of a local \.gguf file"):
        choose(name)


def test_a_missing_model_path_never_reaches_vllm_or_ollama(tmp_path) -> None:
    with pytest.raises(SynthError, match=f"model file {tmp_path}/nope does not exist"):
        load_backend(str(tmp_path / "nope"))
    with pytest.raises(SynthError, match="model file ./x:latest does not exist"):
        choose("./x:latest")
    with pytest.raises(SynthError, match="does not exist"):
        choose("TheBloke/Llama-2-7B-GGUF.safetensors")  # a Hub-id shape, but a model file's ending


@pytest.mark.parametrize(
    "name", ["meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "microsoft/Phi-3.5-mini-instruct"]
)
def test_hugging_face_ids_still_go_to_vllm(tmp_path, monkeypatch, name) -> None:
    monkeypatch.chdir(tmp_path)  # no folder named like the owner here
    if NO_VLLM:
        with pytest.raises(SynthError, match="Hugging Face model id, which vLLM serves"):
            choose(name)
    else:
        assert choose(name)[0] == "vllm"


def test_ollama_tags_are_not_taken_for_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert choose("qwen2.5:7b")[0] == "ollama"
    assert choose("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")[0] == "ollama"


def test_a_folder_that_is_no_model_says_so(tmp_path) -> None:
    with pytest.raises(SynthError, match="is a folder but not a Hugging Face model"):
        choose(str(tmp_path))


def test_an_unrecognisable_model_names_the_shapes_it_could_take() -> None:
    with pytest.raises(SynthError, match="cannot tell which backend serves model 'mystery'.*Ollama name:tag"):
        choose("mystery")


def test_an_option_of_another_backend_is_refused_by_name() -> None:
    with pytest.raises(SynthError, match=r"option 'concurrency' \(--concurrency\) does not apply to the llamacpp"):
        load_backend(None, concurrency=4)
    with pytest.raises(SynthError, match=r"option 'n_threads' \(--threads\) does not apply to the openai backend"):
        load_backend("m", "openai", base_url="http://127.0.0.1:9", n_threads=2)


def test_threads_reach_llama_cpp(monkeypatch) -> None:
    """--threads: the embedded backend's llama.cpp threads (a busy machine runs faster on fewer)."""
    from synth.cli._shared import Server

    seen = {}

    class Stub:
        def __init__(self, model, template=None, **options):  # type: ignore[no-untyped-def]
            seen.update(options)

    monkeypatch.setattr("synth.backends.llamacpp.LlamaCppBackend", Stub)
    load_backend(None, **Server(n_threads=1).options())
    assert seen["n_threads"] == 1
    assert "n_threads" not in Server().options() or Server().options()["n_threads"] is None


def test_the_openai_backend_needs_an_address_and_a_set_key_variable(monkeypatch) -> None:
    with pytest.raises(SynthError, match="--base-url"):
        load_backend("m", "openai")
    monkeypatch.delenv("SYNTH_TEST_KEY", raising=False)
    with pytest.raises(SynthError, match="SYNTH_TEST_KEY, but that environment variable is not set"):
        load_backend("m", base_url="http://127.0.0.1:9/v1", api_key_env="SYNTH_TEST_KEY")


def test_the_pool_retries_keeps_order_and_records_failures() -> None:
    tries: dict[int, int] = {}

    def send(i: int, item: str) -> Completion:
        tries[i] = tries.get(i, 0) + 1
        if item == "flaky" and tries[i] == 1:
            raise Retryable("503")
        if item == "broken":
            raise Retryable("timed out")
        if item == "bad":
            raise Failed("400: prompt too long")
        return Completion(item, "stop")

    pool = Pool(send, concurrency=3, retry=Retry(attempts=3, base_delay=0.001))
    out = pool.map(["a", "flaky", "broken", "bad", "b"])
    assert [c.text for c in out] == ["a", "flaky", "", "", "b"]
    assert out[2].error == "timed out (gave up after 3 attempts)" and out[3].error == "400: prompt too long"
    assert tries == {0: 1, 1: 2, 2: 3, 3: 1, 4: 1}


def test_the_pool_stops_the_run_when_the_server_stays_away() -> None:
    def send(i: int, item: str) -> Completion:
        raise Retryable("no answer", final=SynthError("no server answers at X"))

    with pytest.raises(SynthError, match="no server answers at X"):
        Pool(send, concurrency=2, retry=Retry(attempts=2, base_delay=0.001)).map(["a", "b", "c"])


def test_backoff_delays_stay_under_their_cap() -> None:
    retry = Retry(attempts=6, base_delay=0.5, max_delay=2.0)
    assert all(0 <= retry.delay(k) <= min(2.0, 0.5 * 2**k) for k in range(6) for _ in range(50))


def test_failures_past_the_error_rate_stop_the_run() -> None:
    fail = Completion("", "error", error="server answered 500: boom (gave up after 4 attempts)")
    llm = Metered(ScriptedBackend([*(["ok"] * 19), fail, *(["ok"] * 18), fail, fail]), 0.05, min_requests=20)
    llm.generate(["p"] * 20, Sampling())  # 1 in 20: at the limit, not over it
    with pytest.raises(SynthError, match=r"3 of 40 requests failed \(7.5%\), over the allowed 5.0%.*\(3x\).*boom"):
        llm.generate(["p"] * 20, Sampling())


def test_magpie_recipe_stops_past_the_error_rate(tmp_path) -> None:
    from synth import recipes

    fail = Completion("", "error", error="server answered 500: boom")
    llm = ScriptedBackend([fail] * 128)
    with pytest.raises(SynthError, match="--max-error-rate"):
        run = recipes.RunSettings(max_error_rate=0.05)
        recipes.magpie(llm, n=10, out=tmp_path / "o", response=None, batch_size=64, run=run)
