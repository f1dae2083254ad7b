"""The backend seam: one method, `generate(prompts, sampling) -> list[Completion]`.

A `str` prompt is sent raw, token for token (Magpie needs this); a list of
`{"role", "content"}` messages goes through the model's chat template.
Heavy imports (llama_cpp, vllm, ...) live inside each backend's constructor.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union

from synth.core import SynthError
from synth.templates import ChatTemplate

Message = Mapping[str, str]
Prompt = Union[str, Sequence[Message]]  # noqa: UP007 - a runtime alias, kept readable on 3.10
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings every backend maps to its own options."""

    max_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_schema: Mapping[str, Any] | None = None  # structured output, where the backend can

    def with_stop(self, *stop: str) -> Sampling:
        """A copy with `stop` strings added (duplicates dropped, order kept)."""
        merged = tuple(dict.fromkeys((*self.stop, *stop)))
        return Sampling(**{**self.__dict__, "stop": merged})


@dataclass(frozen=True)
class Completion:
    """One generated text; `finish_reason` is `length` when `max_tokens` cut it off."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Backend(Protocol):
    """Anything with this one method is a backend."""

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]: ...


@dataclass
class Metered:
    """Wraps a backend and counts generated tokens, for progress bars and the dataset card."""

    inner: Backend
    completion_tokens: int = 0
    prompt_tokens: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        out = self.inner.generate(prompts, params)
        with self._lock:
            self.calls += 1
            self.completion_tokens += sum(c.completion_tokens for c in out)
            self.prompt_tokens += sum(c.prompt_tokens for c in out)
        return out

    def __getattr__(self, name: str) -> Any:  # template, model, describe() of the wrapped backend
        return getattr(self.inner, name)


def template_of(backend: Backend) -> ChatTemplate:
    """The chat template a backend formats messages with (Magpie needs its pre-query part)."""
    template = getattr(backend, "template", None)
    if template is None:
        raise SynthError(f"{type(backend).__name__} exposes no chat template; pass one with --template FAMILY")
    return template


def load_backend(
    model: str | Path | None = None,
    backend: str = "auto",
    *,
    template: str | None = None,
    **options: Any,
) -> Backend:
    """Open a backend. No `model` means the embedded Gemma 3 270M GGUF through llama.cpp."""
    kind = backend
    if kind == "auto":
        kind = _auto_kind(model)
    if kind == "llamacpp":
        from synth.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, template=template, **options)
    raise SynthError(
        f"backend {kind!r} is not available in this version of synth; "
        "use --backend llamacpp with a local .gguf file, or no --model for the embedded default"
    )


def _auto_kind(model: str | Path | None) -> str:
    if model is None or str(model).endswith(".gguf"):
        return "llamacpp"
    if Path(model).is_file():
        return "llamacpp"  # a GGUF under another name: llama.cpp checks the magic bytes
    raise SynthError(
        f"cannot tell which backend serves model {str(model)!r}: "
        "pass a local .gguf file path (llama.cpp), or leave --model out for the embedded default"
    )
