"""Concurrent requests with retries, shared by the server backends (Ollama, OpenAI-compatible).

Servers have no batch endpoint worth relying on, so throughput comes from keeping K requests
in flight, K fixed or found as the run goes (`Concurrency`). A server that answered once and
then goes away (a restart, an out-of-memory kill) is waited for, up to `server_wait` seconds,
and so is one that sheds load (429, 503, with its `Retry-After` honoured); a row that still
fails becomes an `error` completion with the reason kept, one per item, never a duplicate.
Only a server that never answered, or that stays away past `server_wait`, stops the run.

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

from synth.backends import Completion, Prompt, Sampling
from synth.backends._resilience import Bucket, Concurrency, Link
from synth.core import SynthError

T = TypeVar("T")
R = TypeVar("R")


class Retryable(Exception):
    """A fault worth another try, of a `kind` (see `synth.backends._resilience`): `unreachable`,
    `busy` (with the server's `retry_after`, if it said), `dropped`, `timeout` or `error`.

    `final` is what stops the run when the server was never reached at all (nothing listens
    where the user pointed): that is a wrong address or a server not started, not an outage.
    """

    def __init__(
        self, reason: str, final: SynthError | None = None, kind: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.kind = kind or ("unreachable" if final is not None else "error")
        self.retry_after = retry_after


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
    """Daemon threads running submitted calls, as many as asked for so far; enough of an executor for `Pool`."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._name = name
        self._threads: list[threading.Thread] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        """At least `count` threads (only the caller's thread grows them)."""
        while len(self._threads) < count:
            thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
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
    """Sends requests through `send`, `concurrency` in flight (None: adaptive); results keep input order.

    `server_wait`: seconds to wait for a server that answered before and then went away or kept
    answering 429/502/503/504, before a row fails (or, for one gone, the run stops short).
    `rpm`, `tpm`: client-side limits on requests and on tokens a minute; `cost(item)` estimates
    a request's tokens before it goes (the answer's own count settles it after).
    """

    send: Callable[[int, T], Completion]
    concurrency: int | None = 4
    retry: Retry = field(default_factory=Retry)
    server_wait: float = 600.0
    rpm: float | None = None
    tpm: float | None = None
    cost: Callable[[T], int] | None = None
    where: str = "the server"
    link: Link = field(init=False, repr=False)
    record: dict[str, Any] = field(default_factory=dict, repr=False)  # live: what the card says of the requests
    _slots: Concurrency = field(init=False, repr=False)
    _buckets: tuple[Bucket | None, Bucket | None] = field(init=False, repr=False)
    _executor: _Workers | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise SynthError(f"concurrency must be at least 1, got {self.concurrency}; pass --concurrency 1 or more")
        if self.retry.attempts < 1:
            raise SynthError(f"retry attempts must be at least 1, got {self.retry.attempts}")
        if self.server_wait < 0:
            raise SynthError(f"--server-wait must be 0 or more seconds, got {self.server_wait}")
        self.link = Link(self.where, self.server_wait, self.retry.base_delay)
        self._slots = Concurrency(self.concurrency)
        self._buckets = (Bucket(self.rpm) if self.rpm else None, Bucket(self.tpm) if self.tpm else None)

    @classmethod
    def for_server(
        cls, send: Callable[[int, T], Completion], concurrency: int | None, options: Any, where: str
    ) -> Pool[T]:
        """The pool of an HTTP backend, from its options (`attempts`, `retry_delay`, `server_wait`,
        `rpm`, `tpm`); a request's tokens estimated from its prompt and `max_tokens`."""
        return cls(
            send,
            concurrency,
            Retry(options.attempts, options.retry_delay),
            server_wait=options.server_wait,
            rpm=options.rpm,
            tpm=options.tpm,
            cost=estimate_tokens,  # type: ignore[arg-type]  # T is (prompt, sampling) for every server backend
            where=where,
        )

    def map(self, items: Sequence[T]) -> list[Completion]:
        """One completion per item, in order. Item i is passed to `send` with its index i."""
        if self.concurrency == 1 or len(items) <= 1:
            try:
                return [self._with_retries(i, item) for i, item in enumerate(items)]
            finally:
                self._note()
        with self._lock:
            if self._executor is None:
                self._executor = _Workers(0, "synth-request")
            executor = self._executor
        executor.grow(self._slots.threads())
        futures = [executor.submit(self._with_retries, i, item) for i, item in enumerate(items)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:  # a fatal fault or Ctrl-C: drop what has not started yet
                f.cancel()
            self.close()  # requests in flight finish (or time out) on their own; nobody waits for them
            raise
        finally:
            self._note()

    def call(self, fn: Callable[[], R], what: str) -> R:
        """`fn()` for a request outside any row (counting tokens), waiting for the server as rows do;
        a failure stops the run."""
        out = self._with_retries(0, None, lambda _i, _x: fn(), measure=False)  # type: ignore[arg-type]  # no item
        if isinstance(out, Completion) and out.finish_reason == "error" and out.error is not None:
            raise SynthError(f"{what} failed: {out.error}")
        return out

    def _with_retries(
        self, index: int, item: T, send: Callable[[int, T], Any] | None = None, measure: bool = True
    ) -> Any:
        self.link.using(1)
        try:
            return self._tries(index, item, send or self.send, measure)
        finally:
            self.link.using(-1)

    def _tries(self, index: int, item: T, send: Callable[[int, T], Any], measure: bool) -> Any:
        link, slots, retry = self.link, self._slots, self.retry
        tries, faults, busy_since = 0, 0, None
        while True:
            slots.acquire()
            try:
                reserved = self._pace(item)
                link.wait()  # an outage's next probe, a Retry-After: no request before
                started = time.monotonic()
                out = send(index, item)
            except Failed as exc:
                link.heard()
                self._settle(reserved, None)
                slots.release(time.monotonic() - started, 0, None if measure else "call")
                return Completion("", "error", error=str(exc))
            except Retryable as exc:
                fault = exc
                self._settle(reserved, None)
                paced = fault.kind == "busy" and fault.retry_after is not None  # the pause is the back-off
                slots.release(time.monotonic() - started, 0, "paused" if paced else fault.kind)
            except BaseException:  # Ctrl-C, or a fault no retry fixes: the slot is free, the call ends
                slots.release(0.0, 0, "call")
                raise
            else:
                link.ok()
                self._settle(reserved, out)
                tokens = getattr(out, "completion_tokens", 0)
                slots.release(time.monotonic() - started, tokens, None if measure else "call")
                return out
            link.fault(fault.kind, fault.reason, fault.retry_after)
            if fault.kind == "unreachable":
                if not link.answered and fault.final is not None:
                    raise fault.final  # never reached: a wrong address or a server not started
                if link.down_for() >= self.server_wait:
                    raise link.gone()
                delay = 0.0  # the link schedules the probes
            else:
                if fault.kind == "busy":
                    busy_since = busy_since or time.monotonic()
                # a busy server is waited for up to --server-wait before its refusals count
                if fault.kind != "busy" or busy_since is None or time.monotonic() - busy_since >= self.server_wait:
                    tries += 1
                if tries >= retry.attempts:
                    return Completion("", "error", error=f"{fault.reason} (gave up after {faults + 1} attempts)")
                delay = 0.0 if fault.retry_after is not None else retry.delay(min(faults, 8))
                faults += 1
            with slots.queued():
                link.wait(delay)

    def _pace(self, item: T) -> int:
        """Wait for the --rpm and --tpm buckets; the tokens reserved."""
        requests, tokens = self._buckets
        wait, reserved = 0.0, 0
        if requests is not None:
            wait = requests.reserve(1)
        if tokens is not None:
            reserved = self.cost(item) if self.cost is not None and item is not None else 1
            wait = max(wait, tokens.reserve(reserved))
        if wait > 0:
            self._slots.paced()  # the rate limit, not the concurrency, sets the pace now
            time.sleep(wait)
        return reserved

    def _settle(self, reserved: int, out: Any) -> None:
        tokens = self._buckets[1]
        if tokens is None or not reserved:
            return
        used = 0
        if isinstance(out, Completion) and (out.prompt_tokens or out.completion_tokens):
            used = out.prompt_tokens + out.completion_tokens
        elif out is not None:
            used = reserved  # no count came back: keep the estimate
        tokens.refund(reserved - used)

    def _note(self) -> None:
        """Bring the live record the card shows up to date."""
        self.record.update(self.link.record())
        if self._slots.auto:
            self.record["settled_concurrency"] = self._slots.settled()

    def close(self) -> None:
        """Stop the workers without waiting; the next `map` starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown()


def estimate_tokens(item: tuple[Prompt, Sampling]) -> int:
    """Tokens a request may use, for --tpm before it goes: about 4 characters a token, plus max_tokens."""
    prompt, params = item
    chars = len(prompt) if isinstance(prompt, str) else sum(len(m.get("content") or "") for m in prompt)
    return chars // 4 + 1 + params.max_tokens


def strip_bos(prompt: str, bos_token: str) -> str:
    """Servers add BOS when they tokenize a raw prompt; a template that also writes it would double it."""
    if bos_token and prompt.startswith(bos_token):
        return prompt[len(bos_token) :]
    return prompt
