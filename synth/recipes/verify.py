"""Verified data: run the code in responses, check math answers against a reference or by agreement."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from synth.backends import Backend, Metered, Sampling
from synth.core import Stage, SynthError
from synth.recipes._runner import RunSettings, _constants, _describe, _plain, _resumable, _run
from synth.recipes.quality import _peek
from synth.resources import data_file
from synth.sandbox import Sandbox
from synth.stages.filters import Filter, Rule
from synth.stages.verify import CheckAnswer, SelfConsistency, VerifyCode, passed


def verify_code(
    source: str | Path,
    *,
    out: str | Path,
    sandbox: Sandbox,
    column: str = "response",
    tests_column: str | None = None,
    rejects: str | Path | None = None,
    require_tests: bool = False,
    batch_size: int = 256,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Keep the rows of `source` whose code runs and passes its tests; the rest go to `rejects`.

    Code that runs clean but tests nothing (`verify_status` untested) is kept, and counted apart
    from the passes; with `require_tests` it is dropped too."""
    stage = VerifyCode(column, tests_column, sandbox)
    settings: dict[str, Any] = {"input": str(source), "verify": repr(stage), "sandbox_notes": list(sandbox.notes)}
    settings["require_tests"] = require_tests
    first, batches = _peek(source, batch_size)
    if first is not None:  # a wrong --column fails before any output directory is made
        next(stage([first.slice(0, 0)]))
    for note in sandbox.notes:  # what the sandbox cannot do here, said once
        print(f"synth: sandbox: {note}", file=sys.stderr)
    keep = passed(untested=not require_tests)
    return _filtered(batches, [stage], out, rejects, settings, run, keep)


def verify_math(
    source: str | Path,
    *,
    out: str | Path,
    backend: Backend | None = None,
    samples: int = 0,
    column: str = "response",
    problem_column: str = "instruction",
    reference_column: str | None = None,
    min_agreement: float = 0.5,
    prompt: str | Path | None = None,
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7),
    rejects: str | Path | None = None,
    batch_size: int = 64,
    run: RunSettings = RunSettings(),
) -> dict[str, Any]:
    """Keep the rows whose final answer checks out: equal to `reference_column`'s, or (with
    `samples` K) the answer at least `min_agreement` of K fresh solutions agree on; the model's
    failed requests stop the run past `run.max_error_rate`."""
    if not samples and not reference_column:
        raise SynthError("nothing to check the answers against: pass --reference-column COL, or --samples K")
    if samples and backend is None:
        raise SynthError("--samples needs a model to ask")
    stages: list[Stage] = []
    settings: dict[str, Any] = {"input": str(source), "reference_column": reference_column}
    if samples and backend is not None:  # not None: refused above
        llm = run.meter(backend)
        text = load_prompt(prompt)
        stages.append(SelfConsistency(llm, samples, params, problem_column, min_agreement, text))
        settings.update(_describe(backend), samples=samples, min_agreement=min_agreement, prompt=text)
        settings["sampling"] = _plain(params)
        stages.append(_constants({"model": str(settings["model"])}))
    if reference_column:  # with samples, the majority answer is what is compared
        stages.append(CheckAnswer("answer" if samples else column, reference_column))
    first, batches = _peek(source, batch_size)
    if first is not None:  # a missing column fails before any output directory is made
        for name in [reference_column] + ([problem_column] if samples else [column]):
            if name and name not in first.column_names:
                names = ", ".join(first.column_names)
                raise SynthError(f"{source} has no column {name!r} (it has: {names}); name the right one")
    return _filtered(batches, stages, out, rejects, settings, run)


def load_prompt(prompt: str | Path | None) -> str:
    """The self-consistency prompt: the shipped `pipelines/verify/math.txt`, or a file with `{problem}`."""
    path = Path(prompt) if prompt else data_file("pipelines/verify/math.txt")
    if not path.is_file():
        raise SynthError(f"prompt file {path} does not exist; pass a text file holding {{problem}}")
    text = path.read_text(encoding="utf-8").strip()
    if "{problem}" not in text:
        raise SynthError(f"prompt file {path} has no {{problem}} slot; add one where the problem goes")
    return text


def _filtered(
    batches: Any,
    stages: list[Stage],
    out: str | Path,
    rejects: str | Path | None,
    settings: dict[str, Any],
    run: RunSettings,
    keep: Rule | None = None,
) -> dict[str, Any]:
    """Run `stages`, then keep only the rows `keep` (default: `verify_status == pass`) does not
    drop; the others go to `rejects` with their status."""
    if rejects is not None and Path(rejects).resolve() == Path(out).resolve():
        raise SynthError("--rejects must be a different directory from --out")
    output = run.open(out, settings)
    meters = tuple(m for s in stages for m in vars(s).values() if isinstance(m, Metered))
    with contextlib.ExitStack() as stack:
        side = None
        if rejects:
            side = stack.enter_context(run.sink(rejects, settings, "failed verification; `verify_status` says how"))
        checked = Filter((keep or passed(untested=False),), side)
        return _run(_resumable(batches, output), [*stages, checked], output, settings, run, meters=meters)
