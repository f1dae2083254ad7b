"""Find the data files synth ships: prompts, rubrics, personas, task system prompts.

In a wheel they live under `synth/_data/`; in a source checkout, at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

from synth.core import SynthError

_PACKAGE = Path(__file__).parent
_ROOTS = (_PACKAGE / "_data", _PACKAGE.parent)


def data_file(relative: str) -> Path:
    """The shipped file at `relative` (e.g. `pipelines/tasks/math.txt`)."""
    for root in _ROOTS:
        path = root / relative
        if path.is_file():
            return path
    raise SynthError(f"synth's data file {relative} is missing; reinstall synth")


def choices(folder: str, suffix: str = ".txt") -> list[str]:
    """Names of the shipped files in `folder`, without their suffix."""
    for root in _ROOTS:
        if (root / folder).is_dir():
            return sorted(p.stem for p in (root / folder).glob(f"*{suffix}"))
    return []


def read_choice(folder: str, name: str, what: str, suffix: str = ".txt") -> str:
    """The text of `folder/name.suffix`, or a message listing what there is."""
    known = choices(folder, suffix)
    if name not in known:
        raise SynthError(f"unknown {what} {name!r}; choose one of: {', '.join(known)}")
    return data_file(f"{folder}/{name}{suffix}").read_text(encoding="utf-8").strip()
