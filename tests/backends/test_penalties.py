"""Repetition penalties reach each server backend's request: Ollama's options, the OpenAI-compatible body."""

from __future__ import annotations

from synth.backends import Sampling, load_backend
from tests.backends.test_openai import ALIAS, openai_server  # noqa: F401 - the session's server fixture
from tests.backends.test_vllm import fake_vllm  # noqa: F401 - vLLM's recording stand-in


def test_penalties_reach_ollama_options(ollama) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    params = Sampling(max_tokens=4, seed=1, repeat_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25)
    llm.generate(["1, 2, 3,"], params)
    (sent,) = ollama.generations()
    options = sent["options"]
    assert (options["repeat_penalty"], options["presence_penalty"], options["frequency_penalty"]) == (1.3, 0.5, 0.25)
    llm.generate(["1, 2, 3,"], Sampling(max_tokens=4, seed=1))
    assert not {"repeat_penalty", "presence_penalty", "frequency_penalty"} & set(ollama.generations()[-1]["options"])


def test_penalties_reach_the_openai_compatible_request(openai_server, monkeypatch) -> None:  # noqa: F811
    llm = load_backend(ALIAS, base_url=openai_server)
    sent = []
    create = llm.client.completions.create
    monkeypatch.setattr(llm.client.completions, "create", lambda **body: sent.append(body) or create(**body))
    params = Sampling(max_tokens=4, temperature=0.0, repeat_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25)
    (out,) = llm.generate(["1, 2, 3,"], params)
    assert out.finish_reason in ("stop", "length")  # the server took the fields
    (body,) = sent
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert body["extra_body"]["repetition_penalty"] == 1.3 == body["extra_body"]["repeat_penalty"]


def test_penalties_reach_vllm_sampling_params(fake_vllm) -> None:  # noqa: F811
    llm = load_backend("org/llama-3-model", "vllm")
    llm.generate(["hi"], Sampling(max_tokens=8, repeat_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25))
    llm.generate(["hi"], Sampling(max_tokens=8))
    (_, (set_,)), (_, (unset,)) = llm.llm.calls
    wanted = ("repetition_penalty", "presence_penalty", "frequency_penalty")
    assert tuple(set_.kwargs[k] for k in wanted) == (1.3, 0.5, 0.25)
    assert tuple(unset.kwargs[k] for k in wanted) == (1.0, 0.0, 0.0)  # vLLM's own "off"
