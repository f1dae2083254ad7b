"""Commands that judge and select rows: judge, filter, prefs, dedup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synth import io, recipes, report
from synth.backends import Backend, Sampling
from synth.cli._shared import (
    ColumnOpt,
    JudgesOpt,
    JuryOpt,
    MaxErrorRateOpt,
    ModelOpt,
    OutOpt,
    QuietOpt,
    ReadBatchOpt,
    ResponseColumnOpt,
    Saving,
    SeedOpt,
    Server,
    SourceArg,
    TemplateOpt,
    app,
    shared_options,
)
from synth.core import SynthError

PairwiseOpt = Annotated[
    bool, typer.Option("--pairwise", help="Compare two responses (A or B or tie) with a pairwise rubric.")
]
SwapOpt = Annotated[
    bool, typer.Option("--swap", help="--pairwise: judge each pair in both orders; a verdict that flips is a tie.")
]


@app.command()
@shared_options
def judge(
    source: SourceArg,
    out: OutOpt = Path("data/judged"),
    model: JudgesOpt = None,
    jury: JuryOpt = False,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    rubric: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Rubric names or .yaml files, comma-separated. Default: quality (pairwise with --pairwise)."),
    ] = None,
    column: ColumnOpt = "instruction",
    response_column: ResponseColumnOpt = "response",
    text_column: Annotated[str, typer.Option(help="Column holding the text (edu, junk).")] = "text",
    pairwise: PairwiseOpt = False,
    swap: SwapOpt = False,
    response_a_column: Annotated[str, typer.Option(help="--pairwise: the first response's column.")] = "response_a",
    response_b_column: Annotated[str, typer.Option(help="--pairwise: the second response's column.")] = "response_b",
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    temperature: float = 0.0,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
    quiet: QuietOpt = False,
) -> None:
    """Judge every row with LLM rubrics: one column per rubric field, and judge_status."""
    report.set_quiet(quiet)
    _check_swap(pairwise, swap)
    rubrics = [r.strip() for r in (rubric or ("pairwise" if pairwise else "quality")).split(",") if r.strip()]
    inputs = {
        "instruction": column,
        "response": response_column,
        "text": text_column,
        **({"response_a": response_a_column, "response_b": response_b_column} if pairwise else {}),
    }
    reads = recipes.quality.judge_columns(rubrics, inputs)
    inputs_ = tuple(r for r in rubrics if Path(r).suffix)
    save.preflight(out, source, reads, inputs=inputs_)
    recipes.judge(
        _judges(model, jury, template, server),
        source,
        out=out,
        rubrics=rubrics,
        inputs=inputs,
        params=Sampling(max_tokens=max_tokens, temperature=temperature),
        pairwise=pairwise,
        swap=swap,
        run=save.run(max_error_rate),
    )
    save.push(out)


@app.command("filter")
@shared_options
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
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Keep rows that pass the heuristic rules and every --where condition on judge columns."""
    save.preflight(out, source, inputs=(heuristics,), sides={"--rejects": rejects})
    recipes.filter_rows(
        source,
        out=out,
        where=where or [],
        heuristics=heuristics,
        rejects=rejects,
        instruction=column,
        response=response_column,
        batch_size=batch_size,
        run=save.run(),
    )
    save.push(out)


@app.command()
@shared_options
def prefs(
    source: SourceArg,
    out: OutOpt = Path("data/prefs"),
    model: ModelOpt = None,
    judge_model: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(help="Judge model(s); repeat with --jury. Default: the --model."),
    ] = None,
    jury: JuryOpt = False,
    server: Server = Server(),  # --backend ... --verbose: @shared_options
    max_error_rate: MaxErrorRateOpt = 0.05,
    template: TemplateOpt = None,
    k: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=2, help="Responses sampled per instruction. Default 4 (2 with --pairwise)."),
    ] = None,
    rubric: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Rubric that scores a response. Default: response (pairwise with --pairwise)."),
    ] = None,
    pairwise: PairwiseOpt = False,
    swap: SwapOpt = False,
    column: ColumnOpt = "instruction",
    temperature: float = 1.0,
    max_tokens: Annotated[int, typer.Option(min=1)] = 1024,
    judge_max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: SeedOpt = None,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
    quiet: QuietOpt = False,
) -> None:
    """Best-of-k preference pairs: prompt, chosen, rejected, with the judge's scores (--pairwise: its verdict)."""
    report.set_quiet(quiet)
    _check_swap(pairwise, swap)
    save.preflight(out, source, (column,), inputs=(rubric,) if rubric else ())
    llm = server.load(model, template)
    judges = _judges(judge_model, jury, template, server) if judge_model else [llm]
    recipes.prefs(
        llm,
        judges,
        source,
        out=out,
        k=k or (2 if pairwise else 4),
        rubric=rubric or ("pairwise" if pairwise else "response"),
        column=column,
        params=Sampling(max_tokens=max_tokens, temperature=temperature, seed=seed),
        judge_params=Sampling(max_tokens=judge_max_tokens, temperature=0.0),
        pairwise=pairwise,
        swap=swap,
        run=save.run(max_error_rate),
    )
    save.push(out)


def _check_swap(pairwise: bool, swap: bool) -> None:
    if swap and not pairwise:  # before any model loads
        raise SynthError("--swap judges a pair in both orders; it needs --pairwise")


def _judges(models: list[str] | None, jury: bool, template: str | None, server: Server) -> list[Backend]:
    models = models or [None]  # type: ignore[list-item]  # None: load_backend's default model
    if len(models) > 1 and not jury:
        raise SynthError(f"{len(models)} judge models given; pass --jury to combine them, or give one --model")
    return [server.load(m, template) for m in models]


@app.command()
@shared_options
def dedup(
    source: Annotated[Path, typer.Argument(help="A synth output, parquet, jsonl, csv or save_to_disk folder.")],
    out: OutOpt = Path("data/dedup"),
    column: ColumnOpt = "instruction",
    method: Annotated[str, typer.Option(help="exact, minhash or semantic.")] = "minhash",
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="minhash: Jaccard similarity to drop at (0.7); semantic: cosine distance below "
            "(the embedder's, calibrated on real text: static 0.07, minilm 0.09; see filters/dedup.toml)."
        ),
    ] = None,
    ngram: Annotated[Optional[int], typer.Option(help="minhash: words per shingle (1; 5 for documents).")] = None,  # noqa: UP045
    num_perm: Annotated[Optional[int], typer.Option(help="minhash: permutations (128).")] = None,  # noqa: UP045
    ignore_punctuation: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--ignore-punctuation", help="exact: compare texts without their punctuation."),
    ] = None,
    embedder: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="semantic: static (default; distilled from MiniLM once), minilm, or a model2vec folder."),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="semantic: sentence-transformers model name or path.")] = None,  # noqa: UP045
    rejects: Annotated[Optional[Path], typer.Option(help="Write dropped rows (and what they duplicate) here.")] = None,  # noqa: UP045
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows read and judged at once.")] = 8192,
    save: Saving = Saving(),  # --overwrite ... --private: @shared_options
) -> None:
    """Drop duplicate rows: exact, MinHash near-duplicates, or semantic (embeddings)."""
    io.jemalloc_for_arrow()  # before Arrow's first buffer: the preflight's reader would size the default pool
    save.preflight(out, source, (column,), sides={"--rejects": rejects})
    recipes.dedup(
        source,
        out=out,
        method=method,
        column=column,
        threshold=threshold,
        rejects=rejects,
        batch_size=batch_size,
        run=save.run(),
        ngram=ngram,
        num_perm=num_perm,
        ignore_punctuation=ignore_punctuation,
        embedder=embedder,
        model=model,
    )
    save.push(out)
