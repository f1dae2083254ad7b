"""Shared pieces of the `synth` command: the app, option aliases declared once, and the helpers every
command body calls (backend options, preflight checks, push, the command line for the card)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import shlex
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from synth import hub, io
from synth.backends import Backend, Sampling, load_backend
from synth.backends.defaults import from_family
from synth.core import SynthError
from synth.distributed import RayExecutor
from synth.recipes import RunSettings

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
        "Default: the embedded SmolLM2-135M-Instruct.",
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
    Optional[str],  # noqa: UP045
    typer.Option(
        metavar="auto|N",
        help="Requests in flight to a server backend: a number, or auto (adapts to the server's pace). Default auto.",
    ),
]
ServerWaitOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        min=0.0,
        help="Seconds to wait for a server that answered before and went away (or sheds load with 429/503) "
        "before the run stops short (exit 3; go on with --resume). 0 fails fast. Default 600.",
    ),
]
RpmOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.001, help="A server backend's requests a minute, at most (a hosted API's limit)."),
]
TpmOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(min=0.001, help="A server backend's prompt + completion tokens a minute, at most."),
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
    typer.Option(
        min=0.0,
        max=1.0,
        help="Stop the run short (exit 3, the rows kept stay on disk) once more than this share of requests "
        "have failed (after 50); a run whose every request failed always stops.",
    ),
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
        help="Sequences the backend decodes together, one token each per step. llama.cpp: per model by default (-v).",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--threads",
        min=1,
        help="llama.cpp: CPU threads (default: all cores). On a machine busy with other work, fewer threads than "
        "cores run faster: each step waits for its slowest thread.",
    ),
]
ConvertOpt = Annotated[
    Optional[bool],  # noqa: UP045
    typer.Option(
        "--convert/--no-convert",
        help="llama.cpp, embedded model: run its weights converted once to a type that batches well (Q8_0 "
        "for the shipped Q4_1, cached), where they pass a check against the original. Default on.",
    ),
]
ReadBatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and processed at a time.")]
ColumnOpt = Annotated[str, typer.Option("--column", "-c", help="The text column to read.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the backend's own logs.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (the summary still prints).")]
PushOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--push-to-hub", help="When done, upload to this Hub dataset repo (ORG/NAME)."),
]
PrivateOpt = Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Stop at an unreadable input document (corrupt, encrypted, cut off).")
]
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
    typer.Option(
        "--model",
        "-m",
        help="Judge model, a local .gguf path; repeat with --jury. Default: the embedded SmolLM2-135M-Instruct.",
    ),
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


@dataclasses.dataclass(frozen=True)
class Server:
    """The backend options every model-running command takes, declared once: a command names one
    parameter `server: Server = Server()` and `@shared_options` puts these in its place, from
    --backend to --verbose. Those left unset fall to each backend's default (load_backend drops
    None), and one set for a backend that lacks it is refused there."""

    backend: BackendOpt = "auto"
    base_url: BaseUrlOpt = None
    api_key_env: ApiKeyEnvOpt = None
    concurrency: ConcurrencyOpt = None
    server_wait: ServerWaitOpt = None
    rpm: RpmOpt = None
    tpm: TpmOpt = None
    tensor_parallel_size: TensorParallelOpt = None
    gpu_memory_utilization: GpuMemoryOpt = None
    max_model_len: MaxModelLenOpt = None
    batch_size: BatchOpt = None
    n_threads: ThreadsOpt = None
    convert: ConvertOpt = None
    verbose: VerboseOpt = False

    def options(self) -> dict[str, Any]:
        """What `load_backend` takes beside the model, the backend name and the template."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "backend"}

    def load(self, model: str | None, template: str | None = None) -> Backend:
        """Open `model` on these options, saying on stderr which backend, model and template run."""
        llm: Any = load_backend(model, self.backend, template=template, **self.options())  # ours: name, model, template
        reason = getattr(llm, "reason", "")
        family = getattr(llm, "template_family", None) or llm.template.family  # a server's own template: no family
        print(f"synth: backend {llm.name} ({reason}), model {llm.model}, template {family}", file=sys.stderr)
        return llm

    def loader(self, model: str | None, template: str | None = None) -> Callable[[], Backend]:
        """`load` for later and elsewhere (a Ray actor opens its own backend), without the stderr line."""
        return functools.partial(load_backend, model, self.backend, template=template, **self.options())


@dataclasses.dataclass(frozen=True)
class Saving:
    """The output options every writing command takes, declared once like `Server`: a command names
    `save: Saving = Saving()` and `@shared_options` puts --overwrite, --resume, --push-to-hub,
    --private, --strict and --no-diversity in its place (`--out` stays the command's own: each has
    its default folder)."""

    overwrite: OverwriteOpt = False
    resume: ResumeOpt = False
    push_to_hub: PushOpt = None
    private: PrivateOpt = False
    strict: StrictOpt = False
    diversity: Annotated[
        bool,
        typer.Option(
            "--diversity/--no-diversity",
            help="End by measuring the output's text (instruction, text, prompt, persona or response: the first "
            "it has) as `synth diversity` does, on at most 10,000 rows with the static embedder, into the card.",
        ),
    ] = True

    def preflight(
        self,
        out: Path,
        source: Path | None = None,
        columns: tuple[str, ...] = (),
        inputs: tuple[str | Path | None, ...] = (),
        sides: dict[str, Path | None] | None = None,
    ) -> None:
        """`preflight` with these options; --strict holds for every read of the input from here on."""
        io.strict_reading(self.strict)
        preflight(out, self.overwrite, self.resume, self.push_to_hub, source, columns, inputs, sides, self.private)

    def run(self, max_error_rate: float | None = None, executor: RayExecutor | None = None) -> RunSettings:
        """The recipe's `run=`: these options, the command line for the card, and the command's own
        --max-error-rate (None where it has none: then only a run whose every request failed stops)."""
        return RunSettings(
            overwrite=self.overwrite,
            resume=self.resume,
            max_error_rate=max_error_rate,
            command=command_line(),
            executor=executor,
            diversity=self.diversity,
        )

    def push(self, out: Path) -> None:
        """Upload `out` where --push-to-hub says, if it says."""
        push_out(out, self.push_to_hub, self.private)


@dataclasses.dataclass(frozen=True)
class Repetition:
    """The repetition controls every generating command takes, declared once like `Server`: a
    command names `repetition: Repetition = Repetition()` and `@shared_options` puts the penalties
    and --no-loop-stop in its place; `apply` sets them on each of its `Sampling`s. A penalty left
    unset (None) comes from the model family's file (synth.backends.defaults), else is off."""

    repeat_penalty: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            min=0.0,
            help="Divide the logit of a token among the last 64 by this (1.0: off). " + from_family(1.0),
        ),
    ] = None
    presence_penalty: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Lower the logit of a token among the last 64 by this (0.0: off). " + from_family(0.0)),
    ] = None
    frequency_penalty: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Lower it by this for each time it occurs there (0.0: off). " + from_family(0.0)),
    ] = None
    loop_stop: Annotated[
        bool,
        typer.Option(
            "--loop-stop/--no-loop-stop",
            help="End a generation that loops (finish reason repetition; dropped like a cut-off one).",
        ),
    ] = True

    def apply(self, sampling: Sampling) -> Sampling:
        """`sampling` with the controls given set (a penalty left unset keeps `sampling`'s)."""
        return dataclasses.replace(sampling, **self.given())

    def given(self) -> dict[str, Any]:
        """The controls set on the command line: they win over a model family's file."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


GROUPS = {"server": Server, "save": Saving, "repetition": Repetition}


def shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Replace `command`'s `server` and `save` parameters with the fields of `Server` and `Saving` as
    options (in their place, so `--help` lists them together), and call it with one of each."""
    signature = inspect.signature(command, eval_str=True)
    keyword = inspect.Parameter.KEYWORD_ONLY
    fields: dict[str, list[str]] = {}
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        group = GROUPS.get(param.name)
        if group is None:
            params.append(param.replace(kind=keyword))
            continue
        hints = typing.get_type_hints(group, include_extras=True)
        fields[param.name] = [f.name for f in dataclasses.fields(group)]
        params += [
            inspect.Parameter(n, keyword, default=getattr(group, n), annotation=hints[n]) for n in fields[param.name]
        ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        groups = {name: GROUPS[name](**{n: kwargs.pop(n) for n in names}) for name, names in fields.items()}
        return command(**groups, **kwargs)

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # what typer reads
    return run


def preflight(
    out: Path,
    overwrite: bool,
    resume: bool,
    push_to_hub: str | None,
    source: Path | None = None,
    columns: tuple[str, ...] = (),
    inputs: tuple[str | Path | None, ...] = (),
    sides: dict[str, Path | None] | None = None,
    private: bool = False,
) -> None:
    """Every writing command's checks, before any model loads or anything is written: a repo id the
    Hub refuses; an output (`out` and each side output, e.g. `{"--rejects": path}`) that overlaps an
    input (`source` and `inputs`), another output, or cannot be claimed; a `source` synth cannot
    read, without rows, or lacking one of the text `columns`; a public repo for `--private`."""
    check_repo(push_to_hub, private)
    reads = (source, *inputs)
    outs = {"--out": out, **{flag: side for flag, side in (sides or {}).items() if side is not None}}
    for flag, path in outs.items():
        io.check_apart(path, reads, flag)
        for other_flag, other in outs.items():
            relation = io.overlap(path, other) if other_flag != flag else None
            if relation:
                raise SynthError(f"{flag} {path} {relation} {other_flag} {other}; give each output its own directory")
    if source is not None:
        io.check_input(source, columns)
    for flag, path in outs.items():
        io.preflight(path, overwrite=overwrite, resume=resume, inputs=reads, flag=flag)


def check_repo(repo: str | None, private: bool = False) -> None:
    if repo is not None:
        hub.check_repo(repo)
        if private:
            hub.refuse_public(repo)


def make_executor(kind: str, address: str | None, actors: int, llm: Backend) -> RayExecutor | None:
    if kind not in {"local", "ray"}:
        raise SynthError(f"unknown --executor {kind!r}; choose local or ray")
    gpus = 1.0 if getattr(llm, "name", "") == "vllm" else 0.0  # one vLLM engine per GPU
    return RayExecutor(address, actors, num_gpus=gpus, batch_size=128) if kind == "ray" else None


def push_out(out: Path, repo: str | None, private: bool) -> None:
    if repo:
        print(f"synth: pushed to {hub.push(out, repo, private=private)}", file=sys.stderr)


def command_line() -> str:
    return shlex.join(["synth", *sys.argv[1:]])


def invoked(argv: list[str]) -> typer.Typer:
    """The app with only the command `argv` names (the first word not an option; `synth`'s own
    options are flags) when it names one: typer then reads one command's signature and help, not
    every command's, 0.035 s of each start. Otherwise, or for `synth --help`, the whole app."""
    name = next((word for word in argv if not word.startswith("-")), None)
    commands = [c for c in app.registered_commands if (c.name or _command_name(c.callback)) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not (commands or groups):
        return app
    narrow = copy.copy(app)  # the app itself stays whole
    narrow.registered_commands, narrow.registered_groups = commands, groups
    return narrow


def _command_name(callback: Callable[..., Any] | None) -> str | None:
    return typer.main.get_command_name(callback.__name__) if callback else None


def main() -> None:
    """Entry point: a `SynthError` or a bad option becomes one clear line on stderr and exit code 2;
    a run that stopped short (`StoppedShort`) exits 3; Ctrl-C exits 130."""
    try:
        code = invoked(sys.argv[1:])(prog_name="synth", standalone_mode=False)
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
