"""The vLLM adapter against a recording stand-in of `vllm.LLM` / `SamplingParams`; real runs are `gpu` tests."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from synth.backends import Sampling, load_backend
from synth.templates import builtin
from synth.tokens import context_size, token_counter

LLAMA3 = builtin("llama3")


@dataclass
class Tokenizer:
    chat_template: str | None = LLAMA3.source
    bos_token: str = "<|begin_of_text|>"
    eos_token: str = "<|end_of_text|>"
    eos_token_id: int = 128001

    def get_added_vocab(self) -> dict[str, int]:
        return {"<|begin_of_text|>": 128000, "<|eot_id|>": 128009, "<|start_header_id|>": 128006}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """One token per word, BOS first unless told not to (as Hugging Face tokenizers do)."""
        return [128000] * add_special_tokens + list(range(len(text.split())))


@dataclass
class Params:
    kwargs: dict[str, Any]


@dataclass
class FakeLLM:
    """Records its construction and each generate call; answers `out<i>` per prompt."""

    kwargs: dict[str, Any]
    calls: list[tuple[list[str], list[Params]]] = field(default_factory=list)
    # where vLLM keeps the context it settled on: the model's own, or --max-model-len
    llm_engine: Any = field(default_factory=lambda: types.SimpleNamespace(model_config=types.SimpleNamespace()))

    def __post_init__(self) -> None:
        self.llm_engine.model_config.max_model_len = self.kwargs.get("max_model_len", 8192)

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), list(sampling_params)))
        outs = []
        for i, (p, sp) in enumerate(zip(prompts, sampling_params)):
            reason = "length" if sp.kwargs["max_tokens"] <= 2 else "stop"
            out = types.SimpleNamespace(text=f"out{i}", finish_reason=reason, token_ids=[1, 2])
            outs.append(types.SimpleNamespace(outputs=[out], prompt_token_ids=list(range(len(p.split())))))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # so auto selection finds it installed
    module.LLM = lambda **kw: FakeLLM(kw)
    module.SamplingParams = lambda **kw: Params(kw)
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda **kw: ("structured", kw)
    module.sampling_params = sampling
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return module


def test_vllm_is_built_with_prefix_caching_and_the_template_from_the_tokenizer(fake_vllm) -> None:
    llm = load_backend("meta-llama/Meta-Llama-3-8B-Instruct", tensor_parallel_size=2, max_model_len=4096)
    assert llm.name == "vllm" and "Hugging Face model id" in llm.reason
    assert llm.llm.kwargs == {
        "model": "meta-llama/Meta-Llama-3-8B-Instruct",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
        "dtype": "auto",
        "enable_prefix_caching": True,
        "max_model_len": 4096,
    }
    assert llm.template.family == "llama3" and llm.chat_tuned
    assert llm.describe()["tensor_parallel_size"] == 2


def test_a_chunk_goes_to_vllm_in_one_call_with_per_prompt_seeds(fake_vllm) -> None:
    llm = load_backend("org/llama-3-model", "vllm")
    pre = llm.template.pre_query()
    params = Sampling(max_tokens=64, temperature=1.0, seed=10, stop=("\n\n", *llm.template.instruction_stop))
    out = llm.generate([pre, pre, pre], params)
    assert [c.text for c in out] == ["out0", "out1", "out2"]
    assert [c.completion_tokens for c in out] == [2, 2, 2]
    ((prompts, sps),) = llm.llm.calls  # one generate call for the whole chunk
    assert prompts == ["<|start_header_id|>user<|end_header_id|>\n\n"] * 3  # BOS left to the tokenizer
    assert [sp.kwargs["seed"] for sp in sps] == [10, 11, 12]
    first = sps[0].kwargs
    assert (first["n"], first["max_tokens"], first["temperature"]) == (1, 64, 1.0)
    # special tokens never show in vLLM's text, so they stop as token ids
    assert first["stop"] == ["\n\n", "<|start_header_id|>assistant<|end_header_id|>"]
    assert first["stop_token_ids"] == [128009, 128001]  # end of turn, then EOS


def test_messages_are_rendered_with_response_stops_and_schema(fake_vllm) -> None:
    llm = load_backend("org/llama-3-model", "vllm")
    schema = {"type": "object"}
    (out,) = llm.generate([[{"role": "user", "content": "hi"}]], Sampling(max_tokens=2, json_schema=schema))
    ((prompts, sps),) = llm.llm.calls
    assert prompts == [LLAMA3.render([{"role": "user", "content": "hi"}]).removeprefix("<|begin_of_text|>")]
    assert sps[0].kwargs["stop_token_ids"] == [128009, 128001] and sps[0].kwargs["seed"] is None
    assert sps[0].kwargs["structured_outputs"] == ("structured", {"json": schema})
    assert out.finish_reason == "length"


def test_tokens_are_counted_with_the_model_tokenizer(fake_vllm) -> None:
    llm = load_backend("org/llama-3-model", "vllm")
    assert token_counter(llm).count == llm.count_tokens  # its own count, not the byte bound
    assert llm.count_tokens("three short words") == 3  # no BOS: the text alone, as llama.cpp counts it


def test_context_size_is_what_vllm_settled_on(fake_vllm) -> None:
    llm = load_backend("org/llama-3-model", "vllm")
    assert llm.describe()["max_model_len"] == 8192 and context_size(llm) == 8192  # the model's own
    assert context_size(load_backend("org/llama-3-model", "vllm", max_model_len=2048)) == 2048


@pytest.mark.gpu
def test_real_vllm_generates_on_a_gpu() -> None:
    pytest.importorskip("vllm")
    model = os.environ.get("SYNTH_VLLM_MODEL")
    if not model:
        pytest.skip("set SYNTH_VLLM_MODEL to a local Hugging Face model directory or cached id")
    llm = load_backend(model, "vllm", gpu_memory_utilization=0.5, max_model_len=2048)
    pre = llm.template.pre_query()
    out = llm.generate([pre] * 4, Sampling(max_tokens=48, seed=1, stop=llm.template.instruction_stop))
    assert len(out) == 4 and all(c.completion_tokens > 0 for c in out)
    assert all(c.finish_reason in ("stop", "length") for c in out)
    (reply,) = llm.generate([[{"role": "user", "content": "Say hello."}]], Sampling(max_tokens=32, temperature=0))
    assert reply.text.strip()
    assert 0 < llm.count_tokens("Say hello to the world.") < 10
    assert context_size(llm) == 2048
