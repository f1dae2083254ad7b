"""Concurrent requests with retries, shared by the server backends (Ollama, OpenAI-compatible).

Servers have no batch endpoint worth relying on, so throughput comes from keeping K requests
in flight. A row that still fails after its retries becomes an `error` completion with the
reason kept; only faults no retry can fix (no server, no such model) stop the run.

The worker threads are daemons: after Ctrl-C a request may still wait up to its timeout
(minutes, on a busy server), and Python's exit would otherwise wait for it. The stdlib's
ThreadPoolExecutor joins its threads at exit whatever `shutdown(wait=False)` says.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from synth.backends import Completion
from synth.core import SynthError

T = TypeVar("T")
R = TypeVar("R")


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

    def call(self, fn: Callable[[], R], what: str) -> R:
        """`fn()` with retries, for a request outside any row (counting tokens): a failure stops the run."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except Failed as exc:
                raise SynthError(f"{what} failed: {exc}") from None
            except Retryable as exc:
                last = exc
                if attempt + 1 < self.attempts:
                    time.sleep(self.delay(attempt))
        if last.final is not None:
            raise last.final
        raise SynthError(f"{what} failed: {last.reason} (gave up after {self.attempts} attempts)")


class _Workers:
    """A fixed set of daemon threads running submitted calls; enough of an executor for `Pool`."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        future: Future[R] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller's thread, which decides
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel what has not started and let each thread end after its current call; no waiting."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)


@dataclass
class Pool(Generic[T]):
    """Sends requests through `send` with `concurrency` in flight; results keep input order."""

    send: Callable[[int, T], Completion]
    concurrency: int = 4
    retry: Retry = field(default_factory=Retry)
    _executor: _Workers | None = field(default=None, repr=False)
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
                self._executor = _Workers(self.concurrency, "synth-request")
            executor = self._executor
        futures = [executor.submit(self._with_retries, i, item) for i, item in enumerate(items)]
        try:
            return [f.result() for f in futures]
        except BaseException as exc:
            for f in futures:  # a fatal fault or Ctrl-C: drop what has not started yet
                f.cancel()
            if isinstance(exc, KeyboardInterrupt):
                self.close()  # requests in flight finish (or time out) on their own; nobody waits for them
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
        """Stop the workers without waiting; the next `map` starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown()


def strip_bos(prompt: str, bos_token: str) -> str:
    """Servers add BOS when they tokenize a raw prompt; a template that also writes it would double it."""
    if bos_token and prompt.startswith(bos_token):
        return prompt[len(bos_token) :]
    return prompt
