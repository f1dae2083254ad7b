"""The backend seam: one method, `generate(prompts, sampling) -> list[Completion]`.

A `str` prompt is sent raw, token for token (Magpie needs this); a list of
`{"role", "content"}` messages goes through the model's chat template.
Heavy imports (llama_cpp, vllm, ...) live inside each backend's constructor.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, Union

from synth.core import StoppedShort, SynthError
from synth.templates import ChatTemplate

Message = Mapping[str, str]
Prompt = Union[str, Sequence[Message]]  # noqa: UP007 - a runtime alias, kept readable on 3.10
FinishReason = Literal["stop", "length", "repetition", "error"]  # repetition: cut off as looping


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
    # Repetition controls, as llama.cpp defines them (1.0 and 0.0: off), where the backend has them:
    repeat_penalty: float = 1.0  # a token among the last 64 has its logit divided by this (times if negative)
    presence_penalty: float = 0.0  # ... and lowered by this once
    frequency_penalty: float = 0.0  # ... and by this times how often it occurs there
    loop_stop: bool = True  # end a generation found looping, finish reason `repetition` (synth.backends.loops)

    def with_stop(self, *stop: str) -> Sampling:
        """A copy with `stop` strings added (duplicates dropped, order kept)."""
        merged = tuple(dict.fromkeys((*self.stop, *stop)))
        return Sampling(**{**self.__dict__, "stop": merged})


@dataclass(frozen=True)
class Completion:
    """One generated text; `finish_reason` is `length` when `max_tokens` cut it off, `repetition`
    when it was ended as looping (neither is a training row)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


_WATCHERS: list[Callable[[Completion], None]] = []


@contextmanager
def watching(callback: Callable[[Completion], None]) -> Iterator[None]:
    """While inside, `callback` sees each completion as it is ready: mid-call where the backend
    can tell (llama.cpp, as each sequence ends), else as its `Metered` wrapper's call returns.
    Progress bars use it to move as rows finish, not once per window."""
    _WATCHERS.append(callback)
    try:
        yield
    finally:
        _WATCHERS.remove(callback)


def completed(completion: Completion) -> None:
    """Backends call this as each completion is ready (see `watching`)."""
    for callback in tuple(_WATCHERS):
        callback(completion)


class Backend(Protocol):
    """Anything with this one method is a backend."""

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]: ...


@dataclass
class Metered:
    """Wraps a backend and counts generated tokens and failed requests, for progress bars and
    the dataset card.

    Failed rows are dropped downstream, so a few are tolerated; once more than `max_error_rate`
    of the requests (after `min_requests`) have failed, something is wrong for good and the run
    stops short (`StoppedShort`, exit code 3) with the commonest reason; so does a run whose
    every request failed, at `finish()`.
    """

    inner: Backend
    max_error_rate: float | None = None
    min_requests: int = 50
    completion_tokens: int = 0
    prompt_tokens: int = 0
    calls: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    live_completions: ClassVar[bool] = True  # announced here if the inner backend does not

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        out = self.inner.generate(prompts, params)
        if not getattr(self.inner, "live_completions", False):
            for completion in out:
                completed(completion)
        with self._lock:
            self.calls += 1
            self.requests += len(out)
            self.completion_tokens += sum(c.completion_tokens for c in out)
            self.prompt_tokens += sum(c.prompt_tokens for c in out)
            self.errors.update(c.error or "unknown error" for c in out if c.finish_reason == "error")
        self._check_error_rate()
        return out

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def _check_error_rate(self) -> None:
        if self.max_error_rate is None or self.requests < self.min_requests:
            return
        rate = self.failed / self.requests
        if rate > self.max_error_rate:
            reason, count = self.errors.most_common(1)[0]
            raise StoppedShort(
                f"{self.failed} of {self.requests} requests failed ({rate:.1%}), over the allowed "
                f"{self.max_error_rate:.1%}; commonest reason ({count}x): {reason}. Fix the cause "
                "(the server's log will say more), or raise --max-error-rate to carry on regardless"
            )

    def finish(self) -> None:
        """At the end of a run: one too short for the rate rule still fails if every request failed."""
        self._check_error_rate()
        if self.requests and self.failed == self.requests:
            reason, count = self.errors.most_common(1)[0]
            raise StoppedShort(
                f"all {self.requests} requests failed; commonest reason ({count}x): {reason}. "
                "Fix the cause (the server's log will say more) and run again"
            )

    def __getattr__(self, name: str) -> Any:  # template, model, describe() of the wrapped backend
        return getattr(self.inner, name)


def template_of(backend: Backend) -> ChatTemplate:
    """The chat template a backend formats messages with (Magpie needs its pre-query part)."""
    template = getattr(backend, "template", None)
    if template is None:
        raise SynthError(f"{type(backend).__name__} exposes no chat template; pass one with --template FAMILY")
    return template


BACKENDS = ("llamacpp", "ollama", "openai", "vllm")


FLAGS = {"n_threads": "--threads", "host": "--base-url"}  # options whose flag is not their name


def load_backend(
    model: str | Path | None = None,
    backend: str = "auto",
    *,
    template: str | None = None,
    **options: Any,
) -> Backend:
    """Open a backend. No `model` means the embedded SmolLM2-135M-Instruct GGUF through llama.cpp.

    `backend="auto"` picks one from the model's shape (see `choose`); options left at None
    are dropped, so callers can pass every option they have and each backend gets its own.
    The backend's `reason` says why it was chosen; it goes into the dataset card.
    """
    options = {k: v for k, v in options.items() if v is not None}
    kind, reason = choose(model, backend, base_url=options.get("base_url"))
    cls: Callable[..., Any]  # one of four classes, each with its own options
    if kind == "llamacpp":
        from synth.backends.llamacpp import LlamaCppBackend as cls
    elif kind == "ollama":
        from synth.backends.ollama import OllamaBackend as cls

        if "base_url" in options:
            options["host"] = options.pop("base_url")
    elif kind == "openai":
        from synth.backends.openai import OpenAIBackend as cls
    else:
        from synth.backends.vllm import VllmBackend as cls
    try:
        llm = cls(None if model is None else str(model), template=template, **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        bad = str(exc).rsplit(" ", 1)[-1].strip("'")
        flag = FLAGS.get(bad, "--" + bad.replace("_", "-"))
        raise SynthError(f"option {bad!r} ({flag}) does not apply to the {kind} backend; leave it out") from None
    llm.reason = reason
    return llm


def choose(model: str | Path | None, backend: str = "auto", base_url: str | None = None) -> tuple[str, str]:
    """Which backend serves `model`, and why, as one line for the user and the dataset card."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise SynthError(f"unknown backend {backend!r}; pick one of auto, {', '.join(BACKENDS)}")
        return backend, f"chosen with --backend {backend}"
    return _auto_kind(model, base_url)


_OLLAMA_TAG = re.compile(r"^[\w.\-/]+:[\w.\-]+$")  # llama3:8b, qwen2.5:7b-instruct, hf.co/org/repo:Q4_K_M
_HF_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")  # meta-llama/Meta-Llama-3-8B-Instruct


def _auto_kind(model: str | Path | None, base_url: str | None = None) -> tuple[str, str]:
    if base_url:
        return "openai", f"--base-url {base_url} names an OpenAI-compatible server"
    if model is None:
        return "llamacpp", "no --model: the embedded SmolLM2-135M-Instruct runs in-process with llama.cpp"
    name = str(model)
    path = Path(name).expanduser()
    if name.endswith(".gguf") or path.is_file():
        # a GGUF under another name too: llama.cpp checks the magic bytes
        return "llamacpp", f"{name} is a local GGUF file, run in-process with llama.cpp"
    if path.is_dir():
        if (path / "config.json").is_file():
            return _vllm_or_explain(name, f"{name} is a local Hugging Face model directory")
        raise SynthError(
            f"{name} is a folder but not a Hugging Face model (it has no config.json); "
            "pass a .gguf file or a model folder to --model"
        )
    if _looks_like_a_path(name, path):
        shown = f"{name} ({path})" if name.startswith("~") else name
        raise SynthError(
            f"model file {shown} does not exist; pass the path of a local .gguf file or Hugging Face model "
            "folder to --model, or a Hugging Face id such as meta-llama/Meta-Llama-3-8B-Instruct"
        )
    if _OLLAMA_TAG.match(name):
        return "ollama", f"{name} is an Ollama name:tag"
    if _HF_ID.match(name):
        return _vllm_or_explain(name, f"{name} is a Hugging Face model id")
    raise SynthError(
        f"cannot tell which backend serves model {name!r}: pass a local .gguf file (llama.cpp), an Ollama "
        "name:tag such as llama3:8b, a Hugging Face id with vLLM installed, or --base-url for an "
        "OpenAI-compatible server; or name one with --backend"
    )


_MODEL_FILE = re.compile(r"\.(bin|safetensors|pt|pth|ggml|onnx|llamafile)$", re.IGNORECASE)
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}$")  # .bin, .model; not Qwen2.5's ".5"


def _looks_like_a_path(name: str, path: Path) -> bool:
    """Whether `name`, which names nothing on disk, was meant as a local file or folder.

    `owner/name` is a Hugging Face id unless its `owner` folder is here or it ends like a
    model file; an Ollama `name:tag` (`hf.co/org/repo:Q4_K_M` too) is not a path.
    """
    if name.startswith((".", "/", "~")):
        return True
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    if any(sep in name for sep in separators):
        if _HF_ID.match(name):
            return path.parent.is_dir() or bool(_MODEL_FILE.search(name))
        return not _OLLAMA_TAG.match(name)
    return not _OLLAMA_TAG.match(name) and bool(_EXTENSION.search(name))


def _vllm_or_explain(name: str, why: str) -> tuple[str, str]:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise SynthError(
            f"{why}, which vLLM serves, but vLLM is not installed: pip install 'synth[vllm]' on a GPU "
            f"machine; or serve it with any OpenAI-compatible server and pass --base-url; "
            f"or use an Ollama tag or a GGUF file"
        )
    return "vllm", f"{why}, run in-process with vLLM"
