"""A run that cannot succeed says so: when almost no attempt becomes a row, stop and name the fix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from synth.core import Batch, StoppedShort

MIN_ATTEMPTS = 64  # a fair number of tries before judging: a small model's bad luck evens out by then
MIN_YIELD = 0.02  # kept rows per attempt under this (about 1 in 64) is near zero


@dataclass
class GiveUp:
    """A pass-through stage after every drop: counts the rows that get through and, once
    `min_attempts` attempts (read from `attempts()`) have kept under `min_yield` of them, stops
    the run with one line naming the commonest drop reason (from `counts()`) and its fix (`fixes`).
    Rows already written stay written (`StoppedShort`): the run can go on with --resume once fixed."""

    attempts: Callable[[], int]
    counts: Callable[[], Mapping[str, int]]
    fixes: Mapping[str, str]
    min_attempts: int = MIN_ATTEMPTS
    min_yield: float = MIN_YIELD
    kept: int = 0
    stats: Counter[str] = field(default_factory=Counter, repr=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.kept += batch.num_rows
            self.check()
            yield batch

    def check(self) -> None:
        tried = self.attempts()
        if tried < self.min_attempts or self.kept >= self.min_yield * tried:
            return
        drops = Counter({k: v for k, v in self.counts().items() if k.startswith("dropped_") and v})
        if not drops:
            return
        reason, count = drops.most_common(1)[0]
        why = reason.removeprefix("dropped_")
        fix = self.fixes.get(why, "check the model and its chat template (--template FAMILY), or use a chat model")
        raise StoppedShort(
            f"giving up: {self.kept} rows kept from {tried} attempts; commonest drop: {why} ({count}x). "
            f"Fix: {fix}; or pass --max-attempts to run on regardless"
        )
