"""The `synth` command: typed options in, a recipe call out. No logic lives here.

Past 500 lines on purpose: a dozen commands, each spelling out its typed options (the help
text users read; typer needs the backend and Hub flags repeated on every command that takes
them); shared options are aliases at the top, every body is checks and one recipe call.
"""

from __future__ import annotations

import functools
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from synth import hub, io, recipes
from synth.backends import Backend, Sampling, load_backend
from synth.core import SynthError
from synth.distributed import RayExecutor
from synth.stages import persona

app = typer.Typer(
    help="Synthetic training data for language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Shared option aliases, one place.
ModelOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer reads the annotation at runtime on Python 3.10
    typer.Option(
        "--model",
        "-m",
        help="A .gguf path, an Ollama name:tag, a Hugging Face id or directory (vLLM), or a server's model name. "
        "Default: the embedded Gemma 3 270M.",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(help="auto, llamacpp, ollama, vllm or openai. Auto picks from --model and --base-url."),
]
BaseUrlOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="An OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (with --backend ollama: its host)."),
]
ApiKeyEnvOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Name of the environment variable holding the server's API key (never the key itself)."),
]
ConcurrencyOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(min=1, help="Requests in flight to a server backend. Default 4."),
]
TensorParallelOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--tensor-parallel-size", min=1, help="vLLM: GPUs to split the model over. Default 1."),
]
GpuMemoryOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--gpu-memory-utilization", min=0.01, max=1.0, help="vLLM: share of each GPU's memory to take. Default 0.9."
    ),
]
MaxModelLenOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--max-model-len", min=1, help="vLLM: context length in tokens. Default: the model's own."),
]
MaxErrorRateOpt = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Stop the run once more than this share of requests have failed."),
]
TemplateOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Chat template family (llama3, qwen2.5, chatml, gemma, phi3, phi4, mistral) or a .jinja file."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory (a Hub dataset repo layout).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace what the output directory holds.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in the output directory.")]
BatchOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--batch-size",
        min=1,
        max=255,
        help="Sequences the backend decodes together, one token each per step. Default: 16 on llama.cpp.",
    ),
]
ReadBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and processed at a time.")]
ColumnOpt = Annotated[str, typer.Option("--column", "-c", help="The text column to read.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend's own logs.")]
PushOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--push-to-hub", help="When done, upload to this Hub dataset repo (ORG/NAME)."),
]
PrivateOpt = Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")]
ExecutorOpt = Annotated[str, typer.Option(help="local, or ray: the LLM stages run in Ray actors.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster address (default: a local Ray).")]  # noqa: UP045
ActorsOpt = Annotated[int, typer.Option(min=1, help="With --executor ray: actors, each with its own backend.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed for reproducible sampling.")]  # noqa: UP045
PersonasOpt = Annotated[
    str, typer.Option("--personas", "-p", help="Persona set: starter (shipped), a file or folder, or a Hub id.")
]
PersonaColumnOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Column holding the persona text, for sets synth does not recognise."),
]
DedupOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(help="Dedup the new personas: minhash, semantic, or both (MinHash then semantic)."),
]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="Sampling temperature.")]
MaxTokensOpt = Annotated[int, typer.Option(min=1, help="Most tokens generated per row.")]
SourceArg = Annotated[Path, typer.Argument(help="Any dataset synth reads: a synth output, jsonl, parquet, csv.")]
ResponseColumnOpt = Annotated[str, typer.Option(help="Column holding the response.")]
JudgesOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--model", "-m", help="Judge model, a local .gguf path; repeat with --jury. Default: embedded."),
]
JuryOpt = Annotated[bool, typer.Option("--jury", help="Several --model judges: average scores, majority labels.")]


@app.callback(invoke_without_command=True)  # so that `synth --version` needs no command
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Synthetic training data for language models."""
    if version:
        from synth import __version__

        print(__version__)
        raise typer.Exit()


@app.command()
def magpie(
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=1, help="Rows to keep (not attempts).")] = 1000,
    out: OutOpt = Path("data/magpie"),
    system_prompt: Annotated[Optional[str], typer.Option(help="System prompt to steer the instructions.")] = None,  # noqa: UP045
    task: Annotated[Optional[str], typer.Option(help="Steer with a shipped task prompt: math, code, ...")] = None,  # noqa: UP045
    language: Annotated[Optional[str], typer.Option(help="Ask for this language (a code like fr).")] = None,  # noqa: UP045
    turns: Annotated[int, typer.Option(min=1, help="User turns per conversation.")] = 1,
    exact_turns: Annotated[bool, typer.Option("--exact-turns", help="Drop conversations that end early.")] = False,
    response_model: Annotated[Optional[str], typer.Option(help="Another model for the responses.")] = None,  # noqa: UP045
    personas: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Put one persona per row in the system prompt: starter, a file or a Hub id."),
    ] = None,
    persona_column: PersonaColumnOpt = None,
    instruction_temperature: float = 1.0,
    instruction_max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    response_temperature: float = 0.7,
    response_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: SeedOpt = None,
    no_responses: Annotated[bool, typer.Option("--no-responses", help="Stop after the instructions.")] = False,
    batch_size: BatchOpt = None,
    max_attempts: Annotated[int, typer.Option(min=0, help="Cap on instructions tried; 0: no cap.")] = 0,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = 2,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Sample N instructions with Magpie, answer them, and write a Hugging Face dataset."""
    _preflight(out, overwrite, resume, push_to_hub)
    recipes.chat.check_magpie(None if no_responses else Sampling(), turns)
    if personas:
        persona.check_personas(personas, persona_column)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    llm = _open(model, backend, template, server)
    recipes.magpie(
        llm,
        n=n,
        out=out,
        system_prompt=system_prompt,
        task=task,
        language=language,
        instruction=Sampling(max_tokens=instruction_max_tokens, temperature=instruction_temperature, seed=seed),
        response=None
        if no_responses
        else Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed),
        response_backend=_open(response_model, backend, None, server) if response_model else None,
        turns=turns,
        exact_turns=exact_turns,
        personas=personas,
        persona_column=persona_column,
        max_attempts=max_attempts or None,
        executor=_executor(executor, ray_address, actors, llm),
        make_backend=functools.partial(load_backend, model, backend, template=template, **server),
        make_response_backend=functools.partial(load_backend, response_model, backend, **server)
        if response_model
        else None,
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@app.command()
def respond(
    source: SourceArg,
    out: OutOpt = Path("data/responses"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "instruction",
    messages_column: Annotated[Optional[str], typer.Option(help="Answer this conversation column instead.")] = None,  # noqa: UP045
    n_responses: Annotated[int, typer.Option(min=1, help="Responses per row, one row each.")] = 1,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Answer the last user turn of every row of a dataset, keeping all its columns."""
    _preflight(out, overwrite, resume, push_to_hub)
    recipes.chat.check_respond_input(source, column, messages_column)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.respond(
        _open(model, backend, template, server),
        source,
        out=out,
        column=column,
        messages_column=messages_column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        n_responses=n_responses,
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    script: Annotated[Path, typer.Argument(help="A pipeline script, e.g. pipelines/magpie_air.py.")],
) -> None:
    """Run a pipeline script; the arguments after it are the script's own (try --help)."""
    import runpy

    if not script.is_file():
        raise SynthError(f"pipeline script {script} does not exist; see the scripts in pipelines/")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="A finished synth output directory.")],
    repo: Annotated[str, typer.Option(help="The Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
) -> None:
    """Upload a dataset to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    _push(path, repo, private)


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="A dataset synth reads.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write PNG plots and report.md here.")] = None,  # noqa: UP045
    tokens: Annotated[bool, typer.Option(help="Count tokens with the embedded model's tokenizer.")] = True,
) -> None:
    """Counts, lengths, finish reasons, labels and duplicate rate of a dataset."""
    from synth import stats as stats_

    counter = None
    if tokens:
        from synth.backends.llamacpp import vocab_counter

        counter = vocab_counter()
    figures = stats_.collect(path, counter)
    print(stats_.table(figures))
    if out:
        print(f"synth: wrote {len(stats_.report(figures, out))} files to {out}", file=sys.stderr)


def _open(model: str | None, backend: str, template: str | None, server: dict[str, Any]) -> Backend:
    llm = load_backend(model, backend, template=template, **server)
    reason = getattr(llm, "reason", "")
    print(f"synth: backend {llm.name} ({reason}), model {llm.model}, template {llm.template.family}", file=sys.stderr)
    return llm


@app.command()
def judge(
    source: SourceArg,
    out: OutOpt = Path("data/judged"),
    model: JudgesOpt = None,
    jury: JuryOpt = False,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    template: TemplateOpt = None,
    rubric: Annotated[str, typer.Option(help="Rubric names or .yaml files, comma-separated.")] = "quality",
    column: ColumnOpt = "instruction",
    response_column: ResponseColumnOpt = "response",
    text_column: Annotated[str, typer.Option(help="Column holding the text (edu, junk).")] = "text",
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    temperature: float = 0.0,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Judge every row with LLM rubrics: one column per rubric field, and judge_status."""
    _preflight(out, overwrite, resume, push_to_hub)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.judge(
        _judges(model, jury, backend, template, server),
        source,
        out=out,
        rubrics=[r.strip() for r in rubric.split(",") if r.strip()],
        inputs={"instruction": column, "response": response_column, "text": text_column},
        params=Sampling(max_tokens=max_tokens, temperature=temperature),
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@app.command("filter")
def filter_(
    source: SourceArg,
    out: OutOpt = Path("data/filtered"),
    where: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help='Keep rows where this holds, e.g. "input_quality >= good"; repeatable.'),
    ] = None,
    heuristics: Annotated[str, typer.Option(help="default, none, or a .toml rules file.")] = "default",
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows here, with rejected_by.")] = None,  # noqa: UP045
    column: ColumnOpt = "instruction",
    response_column: ResponseColumnOpt = "response",
    batch_size: ReadBatchOpt = 1000,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
) -> None:
    """Keep rows that pass the heuristic rules and every --where condition on judge columns."""
    _preflight(out, overwrite, resume, push_to_hub)
    if rejects:
        io.preflight(rejects, overwrite=overwrite, resume=resume)
    recipes.filter_rows(
        source,
        out=out,
        where=where or [],
        heuristics=heuristics,
        rejects=rejects,
        instruction=column,
        response=response_column,
        batch_size=batch_size,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@app.command()
def prefs(
    source: SourceArg,
    out: OutOpt = Path("data/prefs"),
    model: ModelOpt = None,
    judge_model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Judge model(s); repeat with --jury. Default: the --model."),
    ] = None,
    jury: JuryOpt = False,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    template: TemplateOpt = None,
    k: Annotated[int, typer.Option(min=2, help="Responses sampled per instruction.")] = 4,
    rubric: Annotated[str, typer.Option(help="Rubric that scores a response.")] = "response",
    column: ColumnOpt = "instruction",
    temperature: float = 1.0,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    judge_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Best-of-k preference pairs: prompt, chosen, rejected, with the judge's scores."""
    _preflight(out, overwrite, resume, push_to_hub)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    llm = _open(model, backend, template, server)
    judges = _judges(judge_model, jury, backend, template, server) if judge_model else [llm]
    recipes.prefs(
        llm,
        judges,
        source,
        out=out,
        k=k,
        rubric=rubric,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        judge_params=Sampling(max_tokens=judge_max_tokens, temperature=0.0),
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


def _judges(
    models: list[str] | None, jury: bool, backend: str, template: str | None, server: dict[str, Any]
) -> list[Backend]:
    models = models or [None]  # type: ignore[list-item]
    if len(models) > 1 and not jury:
        raise SynthError(f"{len(models)} judge models given; pass --jury to combine them, or give one --model")
    return [_open(m, backend, template, server) for m in models]


InputArg = Annotated[
    Path, typer.Argument(help="A raw corpus: a folder of .txt/.md files, jsonl, parquet, csv, a save_to_disk folder.")
]
ContextOpt = Annotated[
    int, typer.Option("--context-tokens", min=0, help="Tokens the model's context holds; 0: ask the backend.")
]
PromptFileOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--prompt-file", exists=True, dir_okay=False, help="Your own prompt template; {text} is where the chunk goes."
    ),
]


class Mode(str, Enum):
    prompt = "prompt"
    instruction_pretrain = "instruction-pretrain"


class Check(str, Enum):
    grounded = "grounded"


@app.command()
def synthesize(
    source: InputArg,
    out: OutOpt = Path("data/synthesize"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "text",
    mode: Annotated[Mode, typer.Option(help="JSON from any instruct model, or <CON> format.")] = Mode.prompt,
    rounds: Annotated[int, typer.Option(min=1, help="instruction-pretrain: few-shot chaining rounds.")] = 2,
    pairs: Annotated[int, typer.Option(min=1, help="prompt: pairs to ask for per chunk.")] = 5,
    prompt_file: PromptFileOpt = None,
    check: Annotated[Optional[Check], typer.Option(help="grounded: a judge drops unsupported answers.")] = None,  # noqa: UP045
    pretrain_out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Also write instruction-augmented pre-training text here."),
    ] = None,
    context_tokens: ContextOpt = 0,
    temperature: Optional[float] = None,  # noqa: UP045
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Instruction-response pairs grounded in each document of a raw corpus."""
    _preflight(out, overwrite, resume, push_to_hub)
    if pretrain_out:
        io.preflight(pretrain_out, overwrite=overwrite, resume=resume)
    greedy = mode is Mode.instruction_pretrain  # the released synthesizer decodes greedily
    temp = temperature if temperature is not None else (0.0 if greedy else 0.7)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.synthesize(
        _open(model, backend, template, server),
        source,
        out=out,
        mode=mode.value,
        column=column,
        rounds=rounds,
        pairs=pairs,
        prompt_file=prompt_file,
        check=check.value if check else None,
        params=Sampling(max_tokens=max_tokens, temperature=temp, seed=seed),
        pretrain_out=pretrain_out,
        context_tokens=context_tokens or None,
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@app.command()
def think(
    source: InputArg,
    out: OutOpt = Path("data/think"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    column: ColumnOpt = "text",
    prompt_file: PromptFileOpt = None,
    context_tokens: ContextOpt = 0,
    temperature: float = 0.7,
    max_tokens: Annotated[int, typer.Option(min=1)] = 2048,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Each document followed by an expert's generated thinking about it (thinking-augmented pre-training)."""
    _preflight(out, overwrite, resume, push_to_hub)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.think(
        _open(model, backend, template, server),
        source,
        out=out,
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        prompt_file=prompt_file,
        context_tokens=context_tokens or None,
        max_error_rate=max_error_rate,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


personas_app = typer.Typer(
    help="Persona sets (Persona Hub): personas from text, related personas, persona-driven data.",
    no_args_is_help=True,
)
app.add_typer(personas_app, name="personas")


@personas_app.command("from-text")
def personas_from_text(
    source: Annotated[Path, typer.Argument(help="Documents: jsonl, parquet, csv, text files or a dataset folder.")],
    out: OutOpt = Path("data/personas"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    template: TemplateOpt = None,
    column: Annotated[str, typer.Option(help="Column holding the document text.")] = "text",
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 128,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Text-to-Persona: for each document, the person most likely to read, write, like or dislike it."""
    _preflight(out, overwrite, resume, push_to_hub)
    persona.check_documents(source, column)
    persona.dedup_personas(dedup)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.personas_from_text(
        _open(model, backend, template, server),
        source,
        out=out,
        column=column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@personas_app.command("expand")
def personas_expand(
    source: Annotated[str, typer.Argument(help="Persona set: starter, a file or folder, or a Hub id.")],
    out: OutOpt = Path("data/personas-expanded"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    template: TemplateOpt = None,
    hops: Annotated[int, typer.Option(min=1, help="Rounds of expansion; each expands the last round's personas.")] = 1,
    persona_column: PersonaColumnOpt = None,
    dedup: DedupOpt = None,
    temperature: TemperatureOpt = 0.9,
    max_tokens: MaxTokensOpt = 160,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Persona-to-Persona: people in close relationship with each persona, the relation kept."""
    _preflight(out, overwrite, resume, push_to_hub)
    persona.check_personas(source, persona_column)
    persona.dedup_personas(dedup)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.personas_expand(
        _open(model, backend, template, server),
        source,
        out=out,
        hops=hops,
        persona_column=persona_column,
        dedup=dedup,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


@personas_app.command("generate")
def personas_generate(
    personas: PersonasOpt = "starter",
    task: Annotated[
        str, typer.Option(help="What to write per persona: instruction, math, reasoning, knowledge, tool or npc.")
    ] = "instruction",
    out: OutOpt = Path("data/persona-data"),
    model: ModelOpt = None,
    backend: BackendOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    tp: TensorParallelOpt = None,
    gpu_mem: GpuMemoryOpt = None,
    max_len: MaxModelLenOpt = None,
    template: TemplateOpt = None,
    n: Annotated[int, typer.Option(min=0, help="Use the first N personas; 0: all.")] = 0,
    persona_column: PersonaColumnOpt = None,
    responses: Annotated[bool, typer.Option("--responses", help="Also answer each generated prompt.")] = False,
    temperature: TemperatureOpt = 0.7,
    max_tokens: MaxTokensOpt = 512,
    response_temperature: TemperatureOpt = 0.7,
    response_max_tokens: MaxTokensOpt = 1024,
    seed: SeedOpt = None,
    batch_size: BatchOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """One prompt, problem or text per persona, from the persona-driven templates."""
    _preflight(out, overwrite, resume, push_to_hub)
    persona.load_template(task)
    persona.check_personas(personas, persona_column)
    server = _server(base_url, api_key_env, concurrency, verbose, batch_size, tp, gpu_mem, max_len)
    recipes.personas_generate(
        _open(model, backend, template, server),
        personas,
        out=out,
        task=task,
        n=n or None,
        persona_column=persona_column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        responses=Sampling(max_tokens=response_max_tokens, temperature=response_temperature, seed=seed)
        if responses
        else None,
        overwrite=overwrite,
        resume=resume,
        command=_command(),
    )
    _push(out, push_to_hub, private)


def _server(
    base_url: str | None,
    api_key_env: str | None,
    concurrency: int | None,
    verbose: bool,
    batch_size: int | None = None,
    tensor_parallel_size: int | None = None,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
) -> dict[str, Any]:
    """Backend options from the shared flags; those left unset fall to each backend's default
    (load_backend drops None), and one set for a backend that lacks it is refused there."""
    return {
        "base_url": base_url,
        "api_key_env": api_key_env,
        "concurrency": concurrency,
        "verbose": verbose,
        "batch_size": batch_size,
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "max_model_len": max_model_len,
    }


def _preflight(out: Path, overwrite: bool, resume: bool, push_to_hub: str | None) -> None:
    """Fail before any model loads: a repo id the Hub refuses, an output directory that cannot take the run."""
    _check_repo(push_to_hub)
    io.preflight(out, overwrite=overwrite, resume=resume)


def _check_repo(repo: str | None) -> None:
    if repo is not None:
        hub.check_repo(repo)


def _executor(kind: str, address: str | None, actors: int, llm: Backend) -> RayExecutor | None:
    if kind not in {"local", "ray"}:
        raise SynthError(f"unknown --executor {kind!r}; choose local or ray")
    gpus = 1.0 if getattr(llm, "name", "") == "vllm" else 0.0  # one vLLM engine per GPU
    return RayExecutor(address, actors, num_gpus=gpus, batch_size=128) if kind == "ray" else None


def _push(out: Path, repo: str | None, private: bool) -> None:
    if repo:
        print(f"synth: pushed to {hub.push(out, repo, private=private)}", file=sys.stderr)


def _command() -> str:
    return shlex.join(["synth", *sys.argv[1:]])


@app.command()
def dedup(
    source: Annotated[Path, typer.Argument(help="A synth output, parquet, jsonl, csv or save_to_disk folder.")],
    out: OutOpt = Path("data/dedup"),
    column: ColumnOpt = "instruction",
    method: Annotated[str, typer.Option(help="exact, minhash or semantic.")] = "minhash",
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="minhash: Jaccard similarity to drop at (0.7); semantic: cosine distance below (0.15)."),
    ] = None,
    ngram: Annotated[Optional[int], typer.Option(help="minhash: words per shingle (1; 5 for documents).")] = None,  # noqa: UP045
    num_perm: Annotated[Optional[int], typer.Option(help="minhash: permutations (128).")] = None,  # noqa: UP045
    ignore_punctuation: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--ignore-punctuation", help="exact: compare texts without their punctuation."),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="semantic: sentence-transformers model name or path.")] = None,  # noqa: UP045
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows (and what they duplicate) here.")] = None,  # noqa: UP045
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and judged at once.")] = 8192,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    private: PrivateOpt = False,
) -> None:
    """Drop duplicate rows: exact, MinHash near-duplicates, or semantic (embeddings)."""
    _check_repo(push_to_hub)  # the output directory is claimed by the recipe, once the input is checked
    recipes.dedup(
        source,
        out=out,
        method=method,
        column=column,
        threshold=threshold,
        rejects=rejects,
        overwrite=overwrite,
        resume=resume,
        batch_size=batch_size,
        command=_command(),
        ngram=ngram,
        num_perm=num_perm,
        ignore_punctuation=ignore_punctuation,
        model=model,
    )
    _push(out, push_to_hub, private)


def main() -> None:
    """Entry point: a `SynthError` or a bad option becomes one clear line on stderr and exit code 2;
    Ctrl-C exits 130."""
    try:
        code = app(prog_name="synth", standalone_mode=False)
    except typer.TyperException as exc:  # typer's own checks: --n 0, a missing argument, an unknown option
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `synth` or `synth personas`: the help, as before
            if exc.format_message().strip():
                print(exc.format_message(), file=sys.stderr)
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = " ".join(exc.format_message().split()).rstrip(".")
        print(f"synth: error: {message}{hint}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("synth: aborted", file=sys.stderr)
        sys.exit(1)
    except SynthError as exc:
        print(f"synth: error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    if code == 130:  # typer turns a Ctrl-C outside a run (a model loading) into exit code 130
        print("synth: interrupted", file=sys.stderr)
    if isinstance(code, int) and code:
        sys.exit(code)
