"""Counting tokens with the backend's own tokenizer, for stages that must fit a context window.

A backend may expose `count_tokens(text) -> int` (llama.cpp, vLLM and Ollama count with the
model's tokenizer; the OpenAI-compatible backend asks the server's tokenize endpoint, and raises
NotImplementedError where there is none) and its context size (`context_size`, a number or a
method; or llama.cpp's `llm.n_ctx()`; or in `describe()`: `n_ctx` (llama.cpp), `max_model_len`
(vLLM), `num_ctx` or `context_length` (Ollama)).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synth.core import SynthError


def token_counter(backend: Any) -> Callable[[str], int]:
    """The backend's own token count, or a documented upper bound when it cannot count.

    The fallback counts UTF-8 bytes: byte-level BPE and SentencePiece with byte fallback never
    spend less than one byte per token, so the bound never under-counts (it wastes context
    instead, by about 4x on English text). It is announced once on stderr, also when a server
    stops reporting counts mid-run (Ollama leaving out `prompt_eval_count`).
    """
    count = getattr(backend, "count_tokens", None)
    name = type(getattr(backend, "inner", backend)).__name__  # through Metered, name the real one
    why = "cannot count tokens"
    if callable(count):
        try:
            count("Count me.")  # a server backend learns here whether its server can count
            return _Fallback(count, name)
        except NotImplementedError as exc:
            why = f"cannot count tokens ({exc})"
    print(f"synth: {name} {why}; {_BOUND}", file=sys.stderr)
    return utf8_bytes


_BOUND = "budgeting with UTF-8 bytes, an upper bound that leaves most of the context unused"


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


@dataclass
class _Fallback:
    """`count`, until it cannot count any more: then UTF-8 bytes, said once."""

    count: Callable[[str], int]
    name: str
    stopped: bool = False

    def __call__(self, text: str) -> int:
        if not self.stopped:
            try:
                return self.count(text)
            except NotImplementedError as exc:
                self.stopped = True
                print(f"synth: {self.name} stopped counting tokens ({exc}); from here on {_BOUND}", file=sys.stderr)
        return utf8_bytes(text)


_CONTEXT_KEYS = ("n_ctx", "max_model_len", "num_ctx", "context_length")


def context_size(backend: Any, override: int | None = None) -> int:
    """Tokens the backend's context holds: `override`, else what the backend reports."""
    if override:
        return override
    size = getattr(backend, "context_size", None)
    if callable(size):
        size = size()
    if size is None and hasattr(backend, "llm") and hasattr(backend.llm, "n_ctx"):
        size = backend.llm.n_ctx()  # llama.cpp
    if size is None and callable(getattr(backend, "describe", None)):
        described = backend.describe()
        size = next((described[k] for k in _CONTEXT_KEYS if described.get(k)), None)
    if not size:
        raise SynthError(
            f"cannot tell the context size of {type(backend).__name__}; pass --context-tokens N "
            "with the number of tokens the model's context holds"
        )
    return int(size)
