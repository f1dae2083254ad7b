"""Shared test doubles and fixtures. The scripted backend lives here: tests only, never a default."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from synth.backends import Completion, Prompt, Sampling
from synth.templates import ChatTemplate, builtin

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The embedded model runs its shipped Q4_1 file in tests, as they were written for: converting it
# (and checking the copy, a minute on two cores) is tested on its own in tests/backends/test_convert.py.
os.environ.setdefault("SYNTH_NO_CONVERT", "1")


def pytest_configure(config) -> None:
    """Every test, and every command a test starts, caches in a fresh folder, never the user's
    (`XDG_CACHE_HOME`: synth's verify results and static embedder, matplotlib's fonts, the Hub's
    cache): what the tests use from outside comes from installed packages (the GGUFs, MiniLM)."""
    config._synth_user_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = config._synth_cache = tempfile.mkdtemp(prefix="synth-test-cache-")


def pytest_unconfigure(config) -> None:
    if getattr(config, "_synth_cache", None):
        shutil.rmtree(config._synth_cache, ignore_errors=True)
        os.environ.pop("XDG_CACHE_HOME")
        if config._synth_user_cache is not None:
            os.environ["XDG_CACHE_HOME"] = config._synth_user_cache


@dataclass
class ScriptedBackend:
    """Replies from a script, in order; records every call and its sampling settings."""

    replies: list[str | Completion]
    template: ChatTemplate = field(default_factory=lambda: builtin("llama3"))
    calls: list[list[Prompt]] = field(default_factory=list)
    params: list[Sampling] = field(default_factory=list)
    name: str = "scripted"
    model: str = "scripted-model"

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        self.params.append(params)
        out = []
        for _ in prompts:
            reply = self.replies.pop(0)
            out.append(reply if isinstance(reply, Completion) else Completion(reply, "stop", 3, len(reply.split())))
        return out


@pytest.fixture(autouse=True)
def _loud_progress(monkeypatch):
    """`-q` on a command run in this process turns progress bars off for the process: each test
    starts with them on, whichever ran before it."""
    from synth import report

    monkeypatch.setitem(report._QUIET, "on", False)


@pytest.fixture(scope="session")
def embedded():
    """The real embedded default, SmolLM2-135M-Instruct (a chat model), through llama.cpp, loaded once per session."""
    from synth.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(n_ctx=2048)


@pytest.fixture(scope="session")
def base_model():
    """A real base model, Gemma 3 270M (its GGUF has no chat template, and it never ends a turn), once per session."""
    from synth.backends.llamacpp import LlamaCppBackend, base_model_path

    return LlamaCppBackend(base_model_path(), n_ctx=2048)


@pytest.fixture(scope="session")
def distilled_static(pytestconfig):
    """The session's fresh cache folder, holding the real static embedder distilled from the packaged
    all-MiniLM-L6-v2 (1-2 minutes on two idle cores). The one distillation of the session: the
    commands the tests start cache in the same folder, so they find it there; see `real_static`."""
    pytest.importorskip("model2vec.distill")
    from pathlib import Path

    from synth.stages import embed

    cache = Path(pytestconfig._synth_cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        embed.static_model()
    return cache


@pytest.fixture
def real_static(distilled_static, monkeypatch):
    """The real static embedder as the default: XDG_CACHE_HOME at the session's distilled copy."""
    from synth.stages import embed

    monkeypatch.setenv("XDG_CACHE_HOME", str(distilled_static))
    embed.load_embedder.cache_clear()
    yield distilled_static / "synth" / embed.STATIC_DIR
    embed.load_embedder.cache_clear()


def pytest_collection_modifyitems(config, items):
    try:
        import torch  # noqa: F401 - only to ask whether a GPU is here

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU and vllm")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)
