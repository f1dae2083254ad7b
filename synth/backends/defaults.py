"""Sampling defaults per model family, kept as data: one TOML file per family in `filters/models/`
(`synth/_data/filters/models/` in the wheel), chosen by measurement (benchmarks/sweep_defaults.py).

A file names the models it is for and the settings of each role (`instruction`: Magpie's
instructions; `response`: answers, in `synth magpie` and `synth respond`):

    [match]
    names = ["smollm2"]        # any of these in the model's name (lower case)
    base = false               # optional: true for base models only, false for chat models only
    [instruction]
    max_tokens = 128
    [response]
    temperature = 0.4

A setting resolves as: the user's flag, else the family file's value, else synth's generic
default. A model no file matches runs on the generic defaults alone.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.backends import Sampling
from synth.core import SynthError
from synth.resources import choices, data_file

FOLDER = "filters/models"
ROLES = ("instruction", "response")
SETTINGS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)


def from_family(generic: object) -> str:
    """The end of an option's help text whose default comes from the family file."""
    return f"Default: the model family's file in {FOLDER}/ (the card names it), else {generic}."


@dataclass(frozen=True)
class FamilyDefaults:
    """The settings a family file gives each role; `file` None: no file matched (generic defaults)."""

    family: str | None = None
    file: str | None = None
    roles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def sampling(self, role: str, generic: Sampling, given: Mapping[str, Any] | None = None) -> Sampling:
        """`generic` with this family's settings for `role`, then the flags in `given` (None: not given)."""
        chosen = {**self.roles.get(role, {}), **{k: v for k, v in (given or {}).items() if v is not None}}
        return dataclasses.replace(generic, **chosen)

    def record(self, role: str) -> dict[str, Any] | None:
        """What the card says of `role`: the file and the values it gave; None without a file."""
        if self.file is None:
            return None
        return {"family": self.family, "file": self.file, "values": dict(self.roles.get(role, {}))}


def recorded(*uses: tuple[FamilyDefaults, str]) -> dict[str, Any] | None:
    """The card's `sampling_defaults`, role by role (`(defaults, role)` pairs); None where no file gave any."""
    entry = {role: record for defaults, role in uses if (record := defaults.record(role)) is not None}
    return entry or None


def for_backend(backend: object) -> FamilyDefaults:
    """The family defaults of a loaded backend, by its model name and whether it is chat-tuned."""
    return for_model(str(getattr(backend, "model", "")), chat_tuned=getattr(backend, "chat_tuned", True))


def for_model(name: str | Path | None, chat_tuned: bool = True, folder: Path | None = None) -> FamilyDefaults:
    """The first family file (in name order; the shipped ones, or those in `folder`) whose `match`
    fits `name`; none: the generic defaults."""
    lowered = str(name or "").lower()
    shipped = [data_file(f"{FOLDER}/{family}.toml") for family in choices(FOLDER, ".toml")] if folder is None else []
    files = sorted(folder.glob("*.toml")) if folder else shipped
    for path in files:
        family, relative = path.stem, f"{FOLDER}/{path.name}" if folder is None else str(path)
        config = load(path)
        match = config.get("match", {})
        if "base" in match and match["base"] == chat_tuned:
            continue
        if any(str(n).lower() in lowered for n in match.get("names", ())):
            roles = {role: dict(config.get(role, {})) for role in ROLES}
            return FamilyDefaults(family, relative, roles)
    return FamilyDefaults()


def load(path: Path) -> dict[str, Any]:
    """A family file, checked: unknown roles or settings name the file and the fix."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    config = tomllib.loads(path.read_text(encoding="utf-8"))
    for role, values in config.items():
        if role == "match":
            continue
        if role not in ROLES:
            raise SynthError(f"{path}: unknown section [{role}]; use [match], [instruction] or [response]")
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise SynthError(f"{path}: unknown setting {', '.join(unknown)}; use {', '.join(SETTINGS)}")
    return config
