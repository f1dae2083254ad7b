"""The embedded model's weights in a type whose kernels batch well: converted once, checked, cached.

llama.cpp's CPU backend decodes a batch of sequences in one pass over the weights only where it
has a batched matrix kernel for their type (tinyBLAS or a repacked layout: on x86 with AVX2,
Q8_0, Q4_0, Q5_0, IQ4_NL, F16, Q4_K). Q4_1, the type SmolLM2-135M-Instruct ships in, has none,
so each extra sequence costs nearly a whole dot-product pass and batching gains little
(benchmarks/kernels.py). Q8_0 holds Q4_1's values almost exactly (8 bits per weight against 4),
so the embedded default is converted once with llama.cpp's own quantizer into synth's cache
folder, under a name carrying the source file's SHA-256 (a changed source converts anew).

The copy runs only if the conversion earns it, measured once when it is made: greedy decoding
of CHECK_PROMPTS prompts, CHECK_TOKENS tokens each, picks the same next token as the original
at >= MIN_AGREEMENT of the positions (the converted model is fed the original's tokens, so one
early near-tie does not count as a whole sequence of differences), and generates faster at the
backend's batch size. The verdict is written next to the file (a rejected copy is deleted, its
verdict kept), so later runs read it and measure nothing.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synth.core import SynthError

# GGUF types with no batched kernel on this CPU, and what to convert them to.
CONVERT_TO = {"Q4_1": "Q8_0"}
MIN_AGREEMENT = 0.99
MIN_SPEEDUP = 1.0  # the copy must decode faster than this times the original's tokens/s
CHECK_PROMPTS = 64
CHECK_TOKENS = 32
FOLDER = "weights"  # under synth's cache folder
# llama.cpp's `general.file_type` numbers (enum llama_ftype) for the types named here.
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K"}
FILE_TYPES |= {11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S"}
FILE_TYPES |= {17: "Q5_K_M", 18: "Q6_K", 25: "IQ4_NL", 32: "BF16"}

# What the check asks: real instructions of several shapes (explain, list, code, rewrite).
_TOPICS = (
    "photosynthesis, binary search, compound interest, black holes, the water cycle, vaccines, recursion, "
    "plate tectonics, inflation, DNA replication, gravity, hash tables, volcanoes, prime numbers, the printing "
    "press, antibiotics"
).split(", ")
_ASKS = (
    "Explain {} to a high-school student in a short paragraph.",
    "List three surprising facts about {}.",
    "Write a Python function that has something to do with {}, with a docstring.",
    "Summarise what an encyclopedia says about {} in two sentences.",
)
QUESTIONS = [ask.format(topic) for ask in _ASKS for topic in _TOPICS]


def cache_dir() -> Path:
    """synth's cache folder, as `synth.stages.embed.cache_dir`: `$XDG_CACHE_HOME/synth`, else `~/.cache/synth`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synth"


@dataclasses.dataclass(frozen=True)
class Weights:
    """The GGUF that runs, and why: the original, or its checked copy in another type."""

    path: Path
    type: str
    sha256: str
    original: Weights | None = None  # set where `path` is a converted copy
    verdict: dict[str, Any] | None = None  # the check's figures, converted or not
    why: str = ""

    def describe(self) -> dict[str, Any]:
        """What the card says: the file (relative to synth's cache where it lives there), type, checksum."""
        out: dict[str, Any] = {"file": _shown(self.path), "type": self.type, "sha256": self.sha256}
        if self.original is not None:
            out["converted_from"] = self.original.describe()
        if self.verdict is not None:
            shown = ("agreement", "tokens_per_s", "convert_seconds")
            out["check"] = {k: self.verdict[k] for k in shown if k in self.verdict}
        if self.why:
            out["why"] = self.why
        return out


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(cache_dir()))
    except ValueError:
        return path.name


def file_type(path: Path) -> str:
    """The GGUF's weight type (`general.file_type`) by name, read from its header (no llama.cpp)."""
    number = _header_value(path, "general.file_type")
    return FILE_TYPES.get(number, f"type {number}") if isinstance(number, int) else "unknown"


# GGUF value types: struct formats of the scalars; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _header_value(path: Path, key: str) -> Any:
    """One key's value from a GGUF header (None if absent): keys are read in order until it comes."""
    import struct

    def read(fmt: str) -> Any:
        return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

    def value(kind: int) -> Any:
        if kind == 8:
            return f.read(read("Q")).decode("utf-8", errors="replace")
        if kind == 9:
            inner, count = read("I"), read("Q")
            if inner in _SCALARS:  # skipped whole
                f.seek(count * struct.calcsize(_SCALARS[inner]), 1)
            elif inner == 8:
                for _ in range(count):
                    f.seek(read("Q"), 1)
            else:
                for _ in range(count):
                    value(inner)
            return None
        return read(_SCALARS[kind])

    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SynthError(f"{path.name} is not a GGUF file; pass a .gguf to --model")
        read("I")  # version
        read("Q")  # tensors
        for _ in range(read("Q")):
            name = f.read(read("Q")).decode("utf-8", errors="replace")
            found = value(read("I"))
            if name == key:
                return found
    return None


@functools.lru_cache(maxsize=8)
def sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime key the memo: a changed file hashes anew
    digest = hashlib.sha256()  # hashlib.file_digest is Python 3.11+; synth supports 3.10
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum(path: Path) -> str:
    stat = path.stat()
    return sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def original(path: Path, why: str) -> Weights:
    return Weights(path, file_type(path), checksum(path), why=why)


def weights(
    path: Path,
    *,
    prompts: Callable[[Any, Sequence[str]], list[list[int]]],
    batch_size: int | None,
    threads: int,
    check_prompts: int = CHECK_PROMPTS,
    say: Callable[[str], None] = lambda line: print(f"synth: {line}", file=sys.stderr),
) -> Weights:
    """The weights to run for `path`: its cached, checked copy in a type that batches well where
    there is one, else `path` itself. Converts and checks the first time (`say` tells the user).

    `prompts(llama, questions)` renders questions into token lists the way the backend would."""
    kind = file_type(path)
    target = CONVERT_TO.get(kind)
    if target is None:
        return Weights(path, kind, checksum(path))
    source = Weights(path, kind, checksum(path))
    copy = cache_dir() / FOLDER / f"{path.stem}-{source.sha256[:16]}.{target}.gguf"
    verdict_file = copy.with_suffix(".json")
    verdict = _read(verdict_file)
    lost = verdict is not None and verdict.get("use") and not _intact(copy, verdict)
    if verdict is None or verdict.get("source_sha256") != source.sha256 or lost:
        say(
            f"{kind} weights have no batched kernel on this CPU: converting {path.name} to {target} once, "
            f"then checking it against the original on {check_prompts} prompts"
        )
        try:
            verdict = convert_and_check(path, copy, target, prompts, batch_size, threads, check_prompts)
            _write_json(verdict_file, verdict)
        except (OSError, SynthError) as exc:  # a cache that cannot be written, a quantizer that fails
            say(f"the {target} copy could not be made ({exc}); the shipped file runs")
            return dataclasses.replace(source, why=f"conversion failed: {exc}")
        say(verdict["why"])
    if not verdict["use"]:
        return dataclasses.replace(source, verdict=verdict, why=verdict["why"])
    return Weights(copy, target, verdict["sha256"], original=source, verdict=verdict, why=verdict["why"])


def convert_and_check(
    source: Path,
    copy: Path,
    target: str,
    prompts: Callable[[Any, Sequence[str]], list[list[int]]],
    batch_size: int | None,
    threads: int,
    check_prompts: int = CHECK_PROMPTS,
) -> dict[str, Any]:
    """Convert `source` into `copy` (written whole or not at all), check it, and return the verdict;
    a copy that fails the check is deleted."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    partial = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    try:
        quantize(source, partial, target, threads)
        seconds = time.perf_counter() - started
        check = compare(source, partial, prompts, batch_size, threads, check_prompts)
        os.replace(partial, copy)
    finally:
        partial.unlink(missing_ok=True)
    agreement, speed = check["agreement"], check["tokens_per_s"]
    agrees = agreement["share"] >= MIN_AGREEMENT
    faster = speed["converted"] > speed["original"] * MIN_SPEEDUP
    verdict = {
        "source": source.name,
        "source_sha256": checksum(source),
        "type": target,
        "sha256": checksum(copy),
        "bytes": copy.stat().st_size,
        "source_bytes": source.stat().st_size,
        "convert_seconds": round(seconds, 2),
        **check,
        "use": agrees and faster,
    }
    verdict["why"] = (
        f"{target} copy: greedy tokens agree {agreement['share']:.2%} with the original ({agreement['agreeing']} of "
        f"{agreement['compared']}, needs {MIN_AGREEMENT:.0%}), {speed['converted']:.0f} against "
        f"{speed['original']:.0f} tokens/s at batch {speed['batch_size']}: "
        + ("runs instead of the original" if verdict["use"] else "not used, the original runs")
    )
    if not verdict["use"]:
        copy.unlink(missing_ok=True)
    return verdict


def quantize(source: Path, target_file: Path, target: str, threads: int) -> None:
    """llama.cpp's own quantizer, `source` to the type named `target` (requantizing allowed)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{target}")
    params.allow_requantize, params.nthread = True, threads
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target_file).encode(), ctypes.byref(params)):
        raise SynthError(f"llama.cpp could not convert {source.name} to {target}")


def compare(
    source: Path,
    copy: Path,
    prompts: Callable[[Any, Sequence[str]], list[list[int]]],
    batch_size: int | None,
    threads: int,
    count: int = CHECK_PROMPTS,
) -> dict[str, Any]:
    """Greedy decoding of `count` prompts on both files, wave by wave (original, then copy, so the
    machine's load changes both alike): the copy is fed the original's tokens and its own choice at
    each position is compared; tokens/s is each side's decoding time over the same work."""
    import llama_cpp

    from synth.backends.llamacpp import default_batch_size

    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    old = llama_cpp.Llama(str(source), n_ctx=64, verbose=False)
    new = llama_cpp.Llama(str(copy), n_ctx=64, verbose=False)
    tokens = prompts(old, questions)
    batch_size = batch_size or default_batch_size(old.metadata, threads)[0]
    agreeing = compared = 0
    seconds = {"original": 0.0, "converted": 0.0}
    with _Greedy(old, batch_size, threads, tokens) as a, _Greedy(new, batch_size, threads, tokens) as b:
        for wave in range(0, len(tokens), batch_size):
            group = tokens[wave : wave + batch_size]
            chosen, took = a.run(group)
            seconds["original"] += took
            picked, took = b.run(group, forced=chosen)
            seconds["converted"] += took
            for mine, theirs in zip(chosen, picked):
                agreeing += sum(x == y for x, y in zip(mine, theirs))
                compared += len(mine)
    del old, new
    made = compared or 1
    return {
        "agreement": {"share": round(agreeing / made, 4), "agreeing": agreeing, "compared": compared, "prompts": count},
        "tokens_per_s": {
            "original": round(made / max(seconds["original"], 1e-9), 1),
            "converted": round(made / max(seconds["converted"], 1e-9), 1),
            "batch_size": batch_size,
            "threads": threads,
        },
    }


class _Greedy:
    """Greedy decoding of a wave of prompts together through llama.cpp's low-level API."""

    def __init__(self, llama: Any, batch_size: int, threads: int, prompts: list[list[int]]) -> None:
        import llama_cpp as lib

        self.lib, self.llama = lib, llama
        self.n_vocab = llama.n_vocab()
        params = lib.llama_context_default_params()
        longest = max(map(len, prompts)) + CHECK_TOKENS
        params.n_ctx = -(-batch_size * longest // 256) * 256
        params.n_batch = params.n_ubatch = max(512, longest)
        params.n_seq_max = params.n_outputs_max = batch_size
        params.kv_unified, params.swa_full = True, False
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_init_from_model(llama._model.model, params)
        if not self.ctx:
            raise SynthError("llama.cpp could not open a context to check the converted weights; run with --no-convert")
        self.batch = lib.llama_batch_init(params.n_batch, 0, 1)

    def __enter__(self) -> _Greedy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    def run(self, group: list[list[int]], forced: list[list[int]] | None = None) -> tuple[list[list[int]], float]:
        """CHECK_TOKENS greedy choices per prompt (fed `forced`'s tokens instead where given), and seconds."""
        import numpy as np

        started = time.perf_counter()
        picks: list[list[int]] = [[] for _ in group]
        for s, prompt in enumerate(group):
            picks[s].append(int(self._decode([(t, i, s, i == len(prompt) - 1) for i, t in enumerate(prompt)]).argmax()))
        for k in range(CHECK_TOKENS - 1):
            fed = [(forced or picks)[s][k] for s in range(len(group))]
            logits = self._decode([(t, len(p) + k, s, True) for s, (t, p) in enumerate(zip(fed, group))])
            for s, token in enumerate(np.argmax(logits, axis=1)):
                picks[s].append(int(token))
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        return picks, time.perf_counter() - started

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> Any:
        import numpy as np

        batch = self.batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        if self.lib.llama_decode(self.ctx, batch) != 0:
            raise SynthError("llama.cpp failed decoding the check of the converted weights; run with --no-convert")
        rows = sum(e[3] for e in entries)
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), (rows * self.n_vocab,)).reshape(rows, -1)


def _intact(copy: Path, verdict: dict[str, Any]) -> bool:
    """Whether the copy the verdict describes is still there, whole (its size; hashing it would cost each load)."""
    try:
        return copy.stat().st_size == verdict.get("bytes")
    except OSError:
        return False


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)
