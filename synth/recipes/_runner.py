"""The run machinery every recipe shares: checkpoints, progress, the dataset card, the summary."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from synth import report
from synth.backends import Backend, Metered, Sampling
from synth.card import counts_by_stage, public_text, stage_names, stage_record
from synth.core import Batch, Stage, StoppedShort, SynthError, pipe
from synth.io import Output, Sink, open_output, write
from synth.io._writing import stopped, write_card

if TYPE_CHECKING:  # Ray is imported only where a run uses it
    from synth.distributed import RayExecutor


class Interrupted(SynthError):
    """Ctrl-C: the rows in hand were written; the message says how to go on."""

    exit_code = 130


@dataclasses.dataclass
class Cursor:
    """Wraps a source and counts the rows it has handed out (the resume checkpoint)."""

    source: Iterable[Batch]
    position: int = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.source:
            self.position += batch.num_rows
            yield batch


@dataclasses.dataclass(frozen=True)
class Asked:
    """The rows a run was asked to keep (`--n`): a run that ends with fewer stopped short, and
    says `why` it can (its source ran out) and how to go on (`fix`)."""

    rows: int
    why: str = "the input ran out"
    fix: str = "give the run more input, or ask for fewer rows"


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run goes, apart from what it makes, passed to every recipe as one `run=`: whether it
    replaces (`overwrite`) or continues (`resume`) what its output holds, the share of failed model
    requests past which it stops short (`max_error_rate`; None: only a run whose every request
    failed stops), the `command` its card records, where its LLM stages run (`executor`: None here,
    a `RayExecutor` in Ray actors, for the recipes that say so), the rows per shard (`shard_rows`)
    and whether the card ends with the diversity figures of the output's text (`diversity`, see
    `with_diversity`). The CLI builds one per command from its shared options (`Saving.run`)."""

    overwrite: bool = False
    resume: bool = False
    max_error_rate: float | None = 0.05
    command: str = ""
    executor: RayExecutor | None = None
    shard_rows: int = 10_000
    diversity: bool = True

    def meter(self, backend: Backend) -> Metered:
        """`backend`, counting its requests, failures and tokens and stopping past `max_error_rate`."""
        return Metered(backend, max_error_rate=self.max_error_rate)

    def open(
        self, out: str | Path, settings: dict[str, Any] | None = None, inputs: Iterable[str | Path | None] = ()
    ) -> Output:
        """Claim the output `out` (new, replaced or continued) for a run recording `settings`."""
        return open_output(out, settings, overwrite=self.overwrite, resume=self.resume, inputs=inputs)

    def sink(
        self, out: str | Path, settings: dict[str, Any], rows: str, inputs: Iterable[str | Path | None] = ()
    ) -> Sink:
        """A side output (a filter's rejects) at `out`, its card saying what its `rows` are."""
        card = {"command": self.command, **settings, "rows": rows}
        return Sink(self.open(out, settings, inputs), card)


def _drop_failed(column: str) -> Stage:
    """Drops rows whose `column` request failed for good (their reasons are in the card), counted."""
    stats: Counter[str] = Counter()

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            reason = f"{column}_finish_reason"
            kept = batch if reason not in batch.column_names else batch.filter(pc.not_equal(batch[reason], "error"))
            stats["dropped_failed_request"] += batch.num_rows - kept.num_rows
            yield kept

    stage.stats = stats  # type: ignore[attr-defined]  # the run's counts take every stage's `stats`
    return stage


def up_to(n: int) -> Stage:
    """`take(n)` that counts the rows made past `n` (`dropped_past_n`): the last window of a
    generating run makes more rows than it needs, and the card's funnel accounts for every row.
    `stage.left()`: the rows it still lets through (a source sizes its windows by it)."""
    stats: Counter[str] = Counter()
    state = {"left": max(n, 0)}

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        if state["left"] <= 0:
            return
        for batch in batches:
            kept = batch.slice(0, state["left"])
            if batch.num_rows > state["left"]:
                stats["dropped_past_n"] += batch.num_rows - state["left"]
            state["left"] -= kept.num_rows
            yield kept
            if state["left"] == 0:
                return  # without pulling another batch: upstream generation stops here

    stage.stats = stats  # type: ignore[attr-defined]  # a function stage's counts, as above
    stage.left = lambda: state["left"]  # type: ignore[attr-defined]
    return stage


def pipeline(
    source: Iterable[Batch],
    *stages: Stage,
    out: str | Path,
    settings: dict[str, Any] | None = None,
    n: int | None = None,
    run: RunSettings = RunSettings(),
    inputs: Iterable[str | Path | None] = (),
) -> dict[str, Any]:
    """Run any chain of stages into a dataset directory, with the card, progress and resume
    that the built-in commands get. `settings` (models, prompts, sampling) go into the card and
    must match on `--resume`; each stage's name, settings and counters are recorded too. `run`:
    overwrite or resume, the command for the card (default: this script's command line). `inputs`:
    the paths `source` reads, which the output may not overlap.
    """
    settings = {"stages": [stage_record(s) for s in stages], **(settings or {})}
    output = run.open(out, settings, inputs)
    rows = _resumable(source, output)
    meters = tuple(m for s in stages for m in getattr(s, "__dict__", {}).values() if isinstance(m, Metered))
    tail = [up_to(n - output.rows)] if n else []
    why = f"the source ran out (its input, or a cap on attempts) before {n} rows were kept"
    more = "run it again with --resume and more input or attempts, or ask for fewer rows"
    asked = Asked(n, why, more) if n else None
    run = dataclasses.replace(run, command=run.command or _argv())
    return _run(rows, [*stages, *tail], output, settings, run, n, meters, asked=asked)


def read_window(batch_size: int, *backends: Backend | None) -> int:
    """Rows to read per backend call: `batch_size`, or 4x a batching backend's own batch size
    if that is more, so finished sequences always have a waiting prompt to take their slot."""
    own = [getattr(b, "batch_size", None) for b in backends if b is not None]
    return max([batch_size, *(4 * k for k in own if isinstance(k, int))])


def _argv() -> str:
    import shlex

    return shlex.join([sys.argv[0], *sys.argv[1:]])


def _run(
    source: Cursor,
    stages: list[Stage],
    output: Output,
    settings: dict[str, Any],
    run: RunSettings,
    total: int | None = None,
    meters: tuple[Metered, ...] = (),
    progress_stats: Counter[str] | None = None,
    notes: Callable[[dict[str, int]], dict[str, Any]] | None = None,
    asked: Asked | None = None,
) -> dict[str, Any]:
    """Stream `source` through `stages` into `output` with progress, card, checkpoints and a summary.

    `notes(counts)` adds figures of the run to the card (a judge's swap consistency, a jury's agreement).
    The card keeps each stage's counters under the stage's name (`counts`: {stage: {counter: n}}),
    so a `kept` counted by three stages stays three figures; the totals it gives are the ones that
    add up: `input_rows` and `rows` (on disk). The summary and the returned `counts` add counters
    of one name over the stages (drops by reason, for a glance).
    The work is done when the source is used up and, if `asked` says how many rows, the output holds
    them; else the run stopped short (a give-up, an error-rate stop, or too few rows): the card says
    `incomplete` with the reason and the way on, the summary ends `stopped short`, and `StoppedShort`
    (exit code 3) goes up with the rows kept on disk.
    """
    previous = counts_by_stage(output.checkpoint.get("stats", {}))  # a resumed run's counts so far
    names = stage_names([stage_record(s) for s in stages])

    def by_stage() -> dict[str, dict[str, int]]:
        counts = {name: Counter(c) for name, c in previous.items()}
        for name, stage in zip(names, stages):
            counts.setdefault(name, Counter()).update(getattr(stage, "stats", {}))
        return {name: dict(c) for name, c in counts.items() if c}

    def stats() -> dict[str, int]:
        merged: Counter[str] = Counter()
        for counts in by_stage().values():
            merged.update(counts)
        return dict(merged)

    def tokens() -> int:
        return sum(m.completion_tokens for m in {id(m): m for m in meters}.values())

    def card() -> dict[str, Any]:
        return {
            "command": run.command,
            **settings,
            "stages": [stage_record(s) for s in stages],
            "counts": by_stage(),
            "input_rows": handled["rows"],
            "generated_tokens": tokens(),
            "failed_requests": _failures(meters),
            **(notes(stats()) if notes is not None else {}),
        }

    sides = _sides(stages)
    recorded = output.checkpoint.get("sides", [])
    for i, side in enumerate(sides):  # a killed run's side rows past its last checkpoint come again
        side.rewind(recorded[i]["shards"] if i < len(recorded) else 0)

    handled = {"rows": source.position}

    def delivered(batches: Iterable[Batch]) -> Iterator[Batch]:
        # Source rows count as handled once the stages have emitted what came after them: a batch
        # still inside a stage when Ctrl-C lands is not in the checkpoint, and comes again on resume.
        for batch in batches:
            handled["rows"] = source.position
            yield batch

    def checkpoint() -> dict[str, Any]:
        # The side outputs commit first: the main state only records side rows already on disk.
        marks = {"sides": [side.commit() for side in sides]} if sides else {}
        return {"attempts": handled["rows"], "stats": by_stage(), **marks}

    bar = report.progress(total, _Tokens(tokens, meters), initial=output.rows, stats=progress_stats)
    started = time.monotonic()
    try:
        stream = delivered(pipe(source, *stages, bar))
        write(stream, output, card=card, shard_rows=run.shard_rows, checkpoint=checkpoint)
        short = _shortfall(output, meters, asked)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {output.rows} rows are safe in {output.path}; run the same command with --resume to go on"
        ) from None
    except StoppedShort as exc:  # a give-up or an error-rate stop, in the stream or at its end
        short = _short(output, str(exc).rstrip("."), AGAIN, asked)
    if short is not None:
        stopped(output, str(short), card)
    with_diversity(output, card, run)
    seconds = time.monotonic() - started
    result = {"rows": output.rows, "counts": stats(), "seconds": seconds, "tokens": tokens()}
    ending = None if short is None else f"stopped short: {output.rows}{f' of {asked.rows}' if asked else ''} rows."
    print(report.summary(output.rows, output.path, seconds, stats(), tokens(), ending), file=sys.stderr)
    if short is not None:
        short.result = result  # type: ignore[attr-defined]  # for a caller in Python: what the run did
        raise short
    return result


def with_diversity(
    output: Output, card: Callable[[], dict[str, Any]], run: RunSettings, column: str | None = None
) -> None:
    """Write `output`'s card again with a `diversity` block: the figures of its text `column`
    (default: the first of instruction, text, prompt, persona, response it has) on a sample of at
    most 10,000 rows with the static embedder, or `absent` and why (`run.diversity` off, no
    embedder, no text); one line on stderr says them. Seconds, not minutes, whatever the rows."""
    from synth.recipes.diversity import card_diversity

    if run.diversity:
        block = card_diversity([output.path / "data" / s["file"] for s in output.shards], column)
    else:
        block = {"column": column, "absent": "not measured (--no-diversity)"}
    write_card(output, {**card(), "diversity": block})
    if "vendi" in block:
        lo, hi = block["vendi_per_row_interval"]
        print(
            f"synth: diversity of {block['column']} ({block['sample']} of {block['rows']} rows): "
            f"Vendi score {block['vendi']:.1f}, per row {block['vendi_per_row']:.3f} ({lo:.3f}-{hi:.3f}), "
            f"distinct-2 {block['distinct_2']:.2f}; in the card",
            file=sys.stderr,
        )
    elif run.diversity:
        print(f"synth: no diversity figures in the card: {block['absent']}", file=sys.stderr)


AGAIN = "run the same command with --resume (with --overwrite instead, if the fix changes a setting)"


def _shortfall(output: Output, meters: tuple[Metered, ...], asked: Asked | None) -> StoppedShort | None:
    """After the stream ended: a run whose every request failed, or with fewer rows than asked, is short."""
    for meter in {id(m): m for m in meters}.values():
        meter.finish()  # a run whose every request failed never ends as a success
    if asked is not None and output.rows < asked.rows:
        return _short(output, asked.why, asked.fix, asked)
    return None


def _short(output: Output, cause: str, fix: str, asked: Asked | None) -> StoppedShort:
    """The one line a short run ends with: why, what is on disk, and how to go on."""
    kept = f"{output.rows} of {asked.rows}" if asked else f"{output.rows}"
    return StoppedShort(
        f"stopped short: {cause}; {kept} rows are in {output.path}, its card marked incomplete. To go on, {fix}"
    )


def _sides(stages: Iterable[Stage]) -> list[Sink]:
    """The side outputs the stages write to (a `tee`, a filter's rejects), in stage order."""
    found: dict[int, Sink] = {}
    for stage in stages:
        for value in getattr(stage, "__dict__", {}).values():
            if isinstance(value, Sink):
                found.setdefault(id(value), value)
    return list(found.values())


def _failures(meters: tuple[Metered, ...]) -> dict[str, Any]:
    unique = {id(m): m for m in meters}.values()
    reasons: Counter[str] = Counter()
    for meter in unique:
        reasons.update(meter.errors)
    return {
        "count": sum(reasons.values()),
        "of": sum(m.requests for m in unique),
        "reasons": dict(reasons.most_common(10)),
    }


@dataclasses.dataclass
class _Tokens:
    count: Callable[[], int]
    meters: tuple[Metered, ...] = ()

    @property
    def completion_tokens(self) -> int:
        return self.count()

    def live_tokens(self) -> int:
        """Tokens generated so far, within calls still running where a backend counts them live
        (llama.cpp does, per token); elsewhere as each call returns."""
        total = 0
        for meter in {id(getattr(m, "inner", m)): m for m in self.meters}.values():
            live = getattr(getattr(meter, "inner", meter), "live_tokens", None)
            total += live() if callable(live) else meter.completion_tokens
        return total


def _describe(backend: Backend) -> dict[str, Any]:
    describe = getattr(backend, "describe", None)
    info = describe() if describe else {"backend": type(backend).__name__}
    info.setdefault("model", getattr(backend, "model", "unknown"))
    info["model"] = public_text(str(info["model"]))  # a model folder's path would land in every row
    return info


# Sampling settings added later, recorded only where they differ from these defaults: an output
# written before them still resumes (its settings compare equal), and a card shows them when set.
_LATER = {"repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "loop_stop": True}


def _plain(params: Sampling | None) -> dict[str, Any] | None:
    if params is None:
        return None
    fields = dataclasses.asdict(params).items()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields if k not in _LATER or v != _LATER[k]}


def _constants(values: dict[str, Any]) -> Stage:
    """Adds a column per item, the same value on every row."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            for name, value in values.items():
                batch = batch.append_column(name, pa.array([value] * batch.num_rows, pa.string()))
            yield batch

    stage.__qualname__ = f"constants({', '.join(values)})"
    return stage


def _require(column: str) -> Stage:
    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if column not in batch.column_names:
                raise SynthError(
                    f"the input has no column {column!r} (it has {', '.join(batch.column_names)}); "
                    "name the right one with --column or --messages-column"
                )
            yield batch

    return stage


def _repeat(k: int) -> Stage:
    """Each row k times, ids `{id}-{j}` and `source_id` kept (for best-of-k and preference pairs)."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if k == 1:
                yield batch
                continue
            index = pa.array([i for i in range(batch.num_rows) for _ in range(k)])
            copies = batch.take(index)
            ids = [f"{i}-{j}" for i in batch["id"].to_pylist() for j in range(k)]
            copies = copies.set_column(copies.column_names.index("id"), "id", pa.array(ids, pa.string()))
            yield copies.append_column("source_id", batch["id"].take(index)).append_column(
                "response_index", pa.array([j for _ in range(batch.num_rows) for j in range(k)], pa.int32())
            )

    return stage


def _skip(batches: Iterable[Batch], rows: int) -> Iterator[Batch]:
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows)
        rows = 0


def _resumable(batches: Iterable[Batch], output: Output) -> Cursor:
    """`batches` minus the rows a resumed run already handled, counted for the next checkpoint."""
    done = output.checkpoint.get("attempts", 0)
    return Cursor(_skip(batches, done), position=done)


@dataclasses.dataclass(frozen=True)
class Primed:
    """`stage` with its memory restored on resume: the rows in `seed()` (those the output already
    holds) pass through it first and their output is dropped, so a dedup stage still knows them.

    Fits stages that yield a batch's rows before reading the next batch, as the dedup family does.
    """

    stage: Stage
    seed: Callable[[], Iterable[Batch]] = dataclasses.field(repr=False)

    def describe(self) -> Any:
        return stage_record(self.stage)  # the card names the stage, primed or not

    @property
    def stats(self) -> Counter[str]:
        stats = getattr(self.stage, "stats", None)
        return stats if stats is not None else Counter()

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        seeding = [True]

        def feed() -> Iterator[Batch]:
            yield from self.seed()
            seeding[0] = False
            self.stats.clear()  # the seed rows were counted by the run that wrote them
            yield from batches

        for batch in self.stage(feed()):
            if not seeding[0]:
                yield batch


def _written(output: Output, batch_size: int = 1000) -> Iterator[Batch]:
    """The rows of `output`'s finished shards, in order (not a shard the state does not list)."""
    import pyarrow.parquet as pq

    for shard in list(output.shards):  # a snapshot: the run appends shards as it goes
        for record_batch in pq.ParquetFile(output.path / "data" / shard["file"]).iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([record_batch])
