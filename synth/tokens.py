"""Counting tokens with the backend's own tokenizer, for stages that must fit a context window.

A backend may expose `count_tokens(text) -> int` (llama.cpp, vLLM and Ollama can count) and its
context size (`context_size`, or llama.cpp's `llm.n_ctx()`, or `n_ctx` in `describe()`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from synth.core import SynthError


def token_counter(backend: Any) -> Callable[[str], int]:
    """The backend's own token count, or a documented upper bound when it cannot count.

    The fallback counts UTF-8 bytes: byte-level BPE and SentencePiece with byte fallback never
    spend less than one byte per token, so the bound never under-counts (it wastes context
    instead, by about 4x on English text). It is announced once on stderr.
    """
    count = getattr(backend, "count_tokens", None)
    if callable(count):
        return count
    print(
        f"synth: {type(backend).__name__} cannot count tokens; budgeting with UTF-8 bytes, "
        "an upper bound that leaves most of the context unused",
        file=sys.stderr,
    )
    return lambda text: len(text.encode("utf-8"))


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
        size = backend.describe().get("n_ctx")
    if not size:
        raise SynthError(
            f"cannot tell the context size of {type(backend).__name__}; pass --context-tokens N "
            "with the number of tokens the model's context holds"
        )
    return int(size)
