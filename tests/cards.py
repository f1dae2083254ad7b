"""Reading a card's counts in tests: the card keeps each stage's counters under the stage's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synth.card import counts_by_stage


class Flat(dict):
    """Counters by name; reading one that two stages keep fails (read it by stage instead)."""

    def __init__(self, values: dict[str, int], ambiguous: dict[str, list[str]]) -> None:
        super().__init__(values)
        self.ambiguous = ambiguous

    def __getitem__(self, key: str) -> int:
        self._check(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)

    def _check(self, key: str) -> None:
        if key in self.ambiguous:
            raise AssertionError(f"{key!r} is counted by {self.ambiguous[key]}: read counts[stage][{key!r}]")


def flat(counts: Mapping[str, Any]) -> Flat:
    """A card's per-stage `counts` as one mapping: drops (`dropped`, `dropped_*`) summed over the
    stages (a row is dropped once, where it is dropped), any other counter one stage alone keeps."""
    values: dict[str, int] = {}
    where: dict[str, list[str]] = {}
    for stage, counters in counts_by_stage(counts).items():
        for key, value in counters.items():
            where.setdefault(key, []).append(stage)
            values[key] = values.get(key, 0) + value
    ambiguous = {k: v for k, v in where.items() if len(v) > 1 and not k.startswith("dropped")}
    return Flat({k: v for k, v in values.items() if k not in ambiguous}, ambiguous)
