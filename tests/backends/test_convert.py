"""The embedded default's weights converted once to a type that batches well: cached under the
source's checksum, checked against the original, reused, refused, and named in the card.

The check is cut to a few prompts and tokens here (the real one: 64 prompts of 32 tokens); the
thresholds are lowered only where a test is about caching, not about the check's verdict."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synth.backends import llamacpp_convert as convert
from synth.backends.llamacpp import LlamaCppBackend, default_model_path

SMALL = {"n_ctx": 256, "n_threads": 1, "batch_size": 2, "convert_check_prompts": 2}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder, conversion on, a short check."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNTH_NO_CONVERT", raising=False)
    monkeypatch.setattr(convert, "CHECK_TOKENS", 8)
    return tmp_path / "cache" / "synth"


@pytest.fixture
def lenient(monkeypatch) -> None:
    """Any agreement and speed pass: for tests of the caching, where a noisy timing must not decide."""
    monkeypatch.setattr(convert, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(convert, "MIN_SPEEDUP", 0.0)


def _no_more_converting(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("converted or checked again")

    monkeypatch.setattr(convert, "quantize", refuse)
    monkeypatch.setattr(convert, "compare", refuse)


def test_the_shipped_q4_1_is_converted_once_named_by_its_checksum_and_reused(cache, lenient, monkeypatch) -> None:
    shipped = default_model_path()
    source_sha = _sha256(shipped)
    backend = LlamaCppBackend(**SMALL)
    copy = cache / "weights" / f"{shipped.stem}-{source_sha[:16]}.Q8_0.gguf"
    assert backend.path == copy and copy.is_file()
    assert convert.file_type(copy) == "Q8_0" and convert.file_type(shipped) == "Q4_1"
    verdict = json.loads(copy.with_suffix(".json").read_text())
    assert verdict["use"] and verdict["source_sha256"] == source_sha and verdict["sha256"] == _sha256(copy)
    assert verdict["agreement"]["compared"] == 2 * 8 and verdict["agreement"]["prompts"] == 2
    assert 0.5 <= verdict["agreement"]["share"] <= 1.0  # a real comparison: Q8_0 mostly picks Q4_1's tokens
    assert not list(copy.parent.glob(".*.tmp"))  # written whole, nothing left half-done
    out = backend.generate(["The capital of France is"], convert_sampling())
    assert out[0].completion_tokens > 0  # the copy runs

    _no_more_converting(monkeypatch)
    again = LlamaCppBackend(**SMALL)
    assert again.path == copy


def convert_sampling():
    from synth.backends import Sampling

    return Sampling(max_tokens=4, temperature=0.0)


def test_no_convert_runs_the_shipped_file(cache, lenient, monkeypatch) -> None:
    _no_more_converting(monkeypatch)
    backend = LlamaCppBackend(**SMALL, convert=False)
    assert backend.path == default_model_path()
    weights = backend.describe()["weights"]
    assert weights == {"file": default_model_path().name, "type": "Q4_1", "sha256": _sha256(default_model_path()),
                       "why": "--no-convert"}  # fmt: skip
    assert not (cache / "weights").exists()


def test_a_conversion_that_disagrees_is_refused_and_the_original_runs(cache, monkeypatch) -> None:
    """Q2_K changes the model: its greedy tokens part from Q4_1's well under 99% of the time."""
    monkeypatch.setattr(convert, "CONVERT_TO", {"Q4_1": "Q2_K"})
    monkeypatch.setattr(convert, "MIN_SPEEDUP", 0.0)  # the agreement alone must refuse it
    backend = LlamaCppBackend(**SMALL)
    assert backend.path == default_model_path()
    verdicts = list((cache / "weights").glob("*.Q2_K.json"))
    assert len(verdicts) == 1 and not list((cache / "weights").glob("*.gguf"))  # the refused copy is deleted
    verdict = json.loads(verdicts[0].read_text())
    assert not verdict["use"] and verdict["agreement"]["share"] < 0.99 and verdict["agreement"]["compared"] == 16
    card = backend.describe()["weights"]
    assert card["type"] == "Q4_1" and "not used, the original runs" in card["why"]

    _no_more_converting(monkeypatch)  # the verdict is kept: the next load measures nothing
    assert LlamaCppBackend(**SMALL).path == default_model_path()


def test_a_changed_source_converts_anew(cache, lenient, tmp_path) -> None:
    source = tmp_path / "model.gguf"
    shutil.copyfile(default_model_path(), source)
    prompts = lambda llm, questions: [llm.tokenize(q.encode(), add_bos=True) for q in questions]  # noqa: E731
    first = convert.weights(source, prompts=prompts, batch_size=2, threads=1, check_prompts=1)
    with open(source, "ab") as f:
        f.write(b"\0" * 64)  # a changed file (llama.cpp ignores bytes past the tensors)
    second = convert.weights(source, prompts=prompts, batch_size=2, threads=1, check_prompts=1)
    assert first.path != second.path and first.path.is_file() and second.path.is_file()
    assert second.original.sha256 == _sha256(source) != first.original.sha256
    assert second.path.name == f"model-{_sha256(source)[:16]}.Q8_0.gguf"


def test_the_card_names_the_file_that_ran(cache, lenient, tmp_path) -> None:
    LlamaCppBackend(**SMALL)  # converts into the cache the commands below find
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"instruction": "Name a colour."}) + "\n")
    cards = {}
    for name, flags in {"converted": [], "shipped": ["--no-convert"]}.items():
        out = tmp_path / name
        args = ["respond", str(source), "--out", str(out), "--max-tokens", "4", "--batch-size", "1", *flags]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "synth", *args], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        card = (out / "README.md").read_text()
        assert str(Path.home()) not in card
        cards[name] = json.loads(card[card.index("```json") + 7 : card.rindex("```")])
    converted, shipped = cards["converted"]["weights"], cards["shipped"]["weights"]
    copy = next((cache / "weights").glob("*.Q8_0.gguf"))
    assert converted["file"] == f"weights/{copy.name}" and converted["type"] == "Q8_0"
    assert converted["sha256"] == _sha256(copy) and converted["converted_from"]["sha256"] == _sha256(
        default_model_path()
    )
    assert cards["converted"]["model_path"]["file"] == copy.name
    assert shipped["type"] == "Q4_1" and shipped["file"] == default_model_path().name
    assert cards["shipped"]["model_path"]["file"] == default_model_path().name


def test_a_cache_that_cannot_be_written_leaves_the_shipped_file_running(cache, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # synth's cache would be a folder inside a file
    backend = LlamaCppBackend(**SMALL)
    assert backend.path == default_model_path()
    assert backend.describe()["weights"]["why"].startswith("conversion failed")
