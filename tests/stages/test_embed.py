"""The static embedder: distilled once into the cache, numpy-only at run time, the semantic default.

The distillation is the real model2vec one, on a one-layer BERT with random weights and
all-MiniLM-L6-v2's tokenizer (seconds, not the minutes the real model takes); the slow test
distils the real model and checks it against MiniLM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from synth.stages import dedup_semantic
from synth.stages import embed as embed_module

from .test_dedup import ORIGINALS, PLANTED, corpus, run

pytest.importorskip("model2vec.distill")
pytest.importorskip("usearch")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """An XDG cache whose synth folder holds a static model distilled from a tiny random BERT."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("embed")
    tokenizer = AutoTokenizer.from_pretrained(embed_module._packaged_minilm(), local_files_only=True)
    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    config = BertConfig(vocab_size=tokenizer.vocab_size, **sizes)
    source = root / "tiny-bert"
    BertModel(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    cache = root / "cache"
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        distilled = embed_module.static_model(str(source))
    finally:
        os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.__setitem__("XDG_CACHE_HOME", old)
    assert distilled == cache / "synth" / "model2vec-tiny-bert"
    distilled.rename(cache / "synth" / embed_module.STATIC_DIR)  # stands in for the distilled MiniLM
    return cache


@pytest.fixture
def static_default(tiny_cache, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny_cache))
    embed_module.load_embedder.cache_clear()
    yield tiny_cache / "synth" / embed_module.STATIC_DIR
    embed_module.load_embedder.cache_clear()


def test_the_static_model_is_distilled_once_then_read_from_the_cache(static_default, monkeypatch) -> None:
    config = json.loads((static_default / "config.json").read_text())
    assert config["model_type"] == "model2vec"
    monkeypatch.setattr(embed_module, "distill", lambda *a, **k: pytest.fail("distilled again"))
    assert embed_module.static_model() == static_default


def test_embed_gives_unit_float32_rows_and_never_imports_torch(static_default, tiny_cache) -> None:
    code = (
        "import sys, numpy as np\n"
        "from synth.stages.dedup import embed\n"
        "e = embed(['Write a haiku about rain.', 'WRITE a haiku about rain.', 'Sort a list in Go.'])\n"
        "print(e.dtype, e.shape, np.round(np.linalg.norm(e, axis=1), 4).tolist(), round(float(e[0] @ e[1]), 4),"
        " 'torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tiny_cache), "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "float32 (3, 32) [1.0, 1.0, 1.0] 1.0 False False"  # the tiny model: 32 wide


def test_semantic_dedup_defaults_to_the_static_embedder(static_default) -> None:
    out, rejects = run(dedup_semantic(), corpus(), size=5)
    dropped = dict(zip(rejects["id"].to_pylist(), rejects["dup_cluster"].to_pylist()))
    # Exact and case copies embed identically (the tokenizer lowercases): caught by any model.
    assert dropped["d1"] == "o1" and dropped["d2"] == "o2"
    assert set(out["id"].to_pylist()) <= set(ORIGINALS) | set(PLANTED)
    assert len(out) + len(rejects) == len(corpus())


def test_an_empty_batch_embeds_to_no_rows(static_default) -> None:
    assert embed_module.embed([]).shape == (0, 32)
    empty = pa.table({"id": pa.array([], pa.string()), "instruction": pa.array([], pa.string())})
    stage = dedup_semantic(threshold=0.05)
    (out,) = list(stage([empty]))
    assert out.num_rows == 0 and "dup_cluster" in out.column_names
    assert stage.stats["rows_in"] == 0 and stage.stats["dropped"] == 0


@pytest.mark.slow
def test_the_distilled_minilm_finds_the_pairs_minilm_finds_and_few_others(real_static) -> None:
    """The real distillation, in a fresh cache (the `real_static` fixture), against MiniLM on the
    planted corpus: the pairs MiniLM finds, and no pair of the distinct texts it keeps apart."""
    assert (real_static / "model.safetensors").is_file()
    texts = [r["instruction"] for r in corpus()]
    static, minilm = embed_module.embed(texts), embed_module.embed(texts, "minilm")
    pairs = {tuple(p) for p in np.argwhere(np.triu(minilm @ minilm.T, 1) > 0.85)}
    found = {tuple(p) for p in np.argwhere(np.triu(static @ static.T, 1) > 0.85)}
    assert pairs and len(pairs & found) / len(pairs) >= 0.8
    out, rejects = run(dedup_semantic(), corpus(), size=5)  # the default threshold and numbers check
    assert {"d1", "d2", "d3"} <= set(rejects["id"].to_pylist()) <= set(PLANTED)
    assert set(ORIGINALS) <= set(out["id"].to_pylist())  # no extra drops: every distinct text kept
