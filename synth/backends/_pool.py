"""Concurrent requests with retries, shared by the server backends (Ollama, OpenAI-compatible).

Servers have no batch endpoint worth relying on, so throughput comes from keeping K requests
in flight. A row that still fails after its retries becomes an `error` completion with the
reason kept; only faults no retry can fix (no server, no such model) stop the run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from synth.backends import Completion
from synth.core import SynthError

T = TypeVar("T")


class Retryable(Exception):
    """A fault worth another try (timeout, 5xx, 429, dropped connection).

    `final` is raised instead of failing the row once the attempts run out: a server that
    stays unreachable fails every row, so the run should stop and say why.
    """

    def __init__(self, reason: str, final: SynthError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


class Failed(Exception):
    """A request refused in a way no retry fixes (a bad request, a prompt over the context): the row fails."""


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with full jitter: try k waits uniform(0, min(cap, base * 2**k))."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass
class Pool(Generic[T]):
    """Sends requests through `send` with `concurrency` in flight; results keep input order."""

    send: Callable[[int, T], Completion]
    concurrency: int = 4
    retry: Retry = field(default_factory=Retry)
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise SynthError(f"concurrency must be at least 1, got {self.concurrency}; pass --concurrency 1 or more")
        if self.retry.attempts < 1:
            raise SynthError(f"retry attempts must be at least 1, got {self.retry.attempts}")

    def map(self, items: Sequence[T]) -> list[Completion]:
        """One completion per item, in order. Item i is passed to `send` with its index i."""
        if self.concurrency == 1 or len(items) <= 1:
            return [self._with_retries(i, item) for i, item in enumerate(items)]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="synth-request")
        futures: list[Future[Completion]] = [
            self._executor.submit(self._with_retries, i, item) for i, item in enumerate(items)
        ]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:  # a fatal fault or Ctrl-C: drop what has not started yet
                f.cancel()
            raise

    def _with_retries(self, index: int, item: T) -> Completion:
        for attempt in range(self.retry.attempts):
            try:
                return self.send(index, item)
            except Failed as exc:
                return Completion("", "error", error=str(exc))
            except Retryable as exc:
                last = exc
                if attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.delay(attempt))
        if last.final is not None:
            raise last.final
        return Completion("", "error", error=f"{last.reason} (gave up after {self.retry.attempts} attempts)")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def strip_bos(prompt: str, bos_token: str) -> str:
    """Servers add BOS when they tokenize a raw prompt; a template that also writes it would double it."""
    if bos_token and prompt.startswith(bos_token):
        return prompt[len(bos_token) :]
    return prompt
