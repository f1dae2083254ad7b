"""vLLM in this process (GPU): whole chunks of prompts per `generate` call, prefix caching on.

Magpie prompts share one prefix (the pre-query template), so prefix caching computes it once;
handing vLLM the whole chunk at once keeps continuous batching full. Nothing here depends on
per-request logits processors, which vLLM V1 dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from synth.backends import Completion, FinishReason, Prompt, Sampling
from synth.backends._pool import strip_bos
from synth.core import SynthError
from synth.templates import ChatTemplate, resolve


@dataclass(frozen=True)
class VllmOptions:
    """Options of the vLLM backend."""

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    enable_prefix_caching: bool = True
    verbose: bool = False


class VllmBackend:
    """Generates with a Hugging Face model (hub id or local directory) through `vllm.LLM`."""

    name = "vllm"
    reason = "chosen with --backend vllm"

    def __init__(self, model: str, template: str | None = None, **options: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise SynthError(
                "the vllm backend needs vLLM, which is not installed: pip install 'synth[vllm]' on a machine with "
                "a CUDA GPU, or serve the model elsewhere and pass --base-url"
            ) from None
        if not model:
            raise SynthError("the vllm backend needs a model: pass --model with a Hugging Face id or directory")
        self.options = VllmOptions(**options)
        self.model = model
        self._vllm = vllm
        extra = {"max_model_len": self.options.max_model_len} if self.options.max_model_len else {}
        self.llm = vllm.LLM(
            model=model,
            tensor_parallel_size=self.options.tensor_parallel_size,
            gpu_memory_utilization=self.options.gpu_memory_utilization,
            dtype=self.options.dtype,
            enable_prefix_caching=self.options.enable_prefix_caching,
            **extra,
        )
        tokenizer = self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.options.max_model_len or _engine_max_model_len(self.llm)
        jinja = getattr(tokenizer, "chat_template", None)
        self.chat_tuned = bool(jinja)
        self.template: ChatTemplate = resolve(
            template,
            jinja_source=jinja,
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
            names=[model],
            origin=f"the tokenizer of {model}",
        )
        # Special tokens are skipped in the text vLLM returns, so a stop string like `<|eot_id|>`
        # never matches there; such stops are sent as token ids instead.
        self._special: dict[str, int] = dict(tokenizer.get_added_vocab())
        if tokenizer.eos_token:
            self._special[tokenizer.eos_token] = tokenizer.eos_token_id

    def describe(self) -> dict[str, Any]:
        """What the dataset card records about this backend."""
        return {
            "backend": self.name,
            "selected": self.reason,
            "model": self.model,
            "template": self.template.family,
            "chat_tuned": self.chat_tuned,
            "tensor_parallel_size": self.options.tensor_parallel_size,
            "max_model_len": self.max_model_len,
        }

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as this model counts them (no BOS or other special tokens added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        """One completion per prompt, in order, from one `generate` call; prompt i samples with seed `seed + i`."""
        if not prompts:
            return []
        texts, per_prompt = [], []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                text, stop = prompt, params.stop
            else:
                text, stop = self.template.render(prompt), params.with_stop(*self.template.response_stop).stop
            texts.append(strip_bos(text, self.template.bos_token))  # the tokenizer adds BOS itself
            per_prompt.append(self._sampling(params, stop, None if params.seed is None else params.seed + i))
        results = self.llm.generate(texts, per_prompt, use_tqdm=False)
        return [_completion(r) for r in results]

    def _sampling(self, params: Sampling, stop: tuple[str, ...], seed: int | None) -> Any:
        extra: dict[str, Any] = {}
        if params.json_schema is not None:
            extra.update(_structured(params.json_schema))
        return self._vllm.SamplingParams(
            n=1,
            max_tokens=params.max_tokens,  # vLLM's own default is 16
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            repetition_penalty=params.repeat_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            seed=seed,
            stop=[s for s in stop if s not in self._special],
            stop_token_ids=[self._special[s] for s in stop if s in self._special],
            **extra,
        )


def _engine_max_model_len(llm: Any) -> int | None:
    """The context vLLM settled on (the model's own, or what fits memory), where this version keeps it."""
    for path in (("model_config",), ("llm_engine", "model_config"), ("llm_engine", "vllm_config", "model_config")):
        config = llm
        for name in path:
            config = getattr(config, name, None)
        if isinstance(getattr(config, "max_model_len", None), int):
            return config.max_model_len
    return None


def _structured(schema: Any) -> dict[str, Any]:
    """JSON-schema decoding, under its name in the installed vLLM (renamed in 0.11)."""
    from vllm import sampling_params as sampling

    if hasattr(sampling, "StructuredOutputsParams"):
        return {"structured_outputs": sampling.StructuredOutputsParams(json=dict(schema))}
    return {"guided_decoding": sampling.GuidedDecodingParams(json=dict(schema))}


def _completion(result: Any) -> Completion:
    out = result.outputs[0]
    reasons: dict[str, FinishReason] = {"length": "length", "abort": "error"}
    reason = reasons.get(out.finish_reason or "stop", "stop")
    return Completion(
        text=out.text,
        finish_reason=reason,
        prompt_tokens=len(result.prompt_token_ids or ()),
        completion_tokens=len(out.token_ids),
        error="aborted by vLLM" if reason == "error" else None,
    )
