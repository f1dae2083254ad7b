"""What keeps a days-long run against a server going: waiting for it, pacing it, finding its pace.

- `Link`: what the request pool knows of the server: whether it ever answered, since when nothing
  has succeeded, and until when no request may go (an outage's next probe, a `Retry-After`).
  Its `status()` is the progress line's "server unreachable, retry 3 in 8 s".
- `Concurrency`: requests in flight, fixed or adaptive (AIMD): up while throughput rises,
  down on 429, 503, timeouts, or latency that rises without throughput to show for it.
- `Bucket`: a token bucket, for `--rpm` (one token a request) and `--tpm` (prompt + completion tokens).

Faults come in kinds, which decide what a retry costs: `unreachable` (nothing listens: the
request never reached a server), `busy` (429, 502, 503, 504: the server, or the proxy before it,
asks for a pause), `dropped` (a connection cut or a body cut short), `timeout`, `error` (other 5xx).
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from synth.core import StoppedShort, SynthError

KINDS = ("unreachable", "busy", "dropped", "timeout", "error")
BUSY_STATUSES = frozenset({429, 502, 503, 504})
OUTAGE_CAP = 8.0  # seconds between probes of a server that went away, at most: a refused probe costs nothing


def parse_concurrency(value: int | str | None) -> int | None:
    """`--concurrency`: a number fixes it, `auto` (None) adapts it to the server."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise SynthError(f"--concurrency takes auto or a number of at least 1, not {value!r}; pass --concurrency auto")
    return number


def retry_after(headers: Mapping[str, str] | None, cap: float = 3600.0) -> float | None:
    """Seconds the server asked to wait: `retry-after-ms` (OpenAI's), else `Retry-After` in seconds or as a date."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(cap, max(0.0, float(value) * scale))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return min(cap, max(0.0, when.timestamp() - time.time()))
    return None


_LINKS: weakref.WeakSet[Link] = weakref.WeakSet()


def waiting() -> str | None:
    """What a server backend is waiting for now, for the progress line; None when nothing is."""
    for link in list(_LINKS):
        status = link.status()
        if status:
            return status
    return None


class Link:
    """The server as the pool sees it; shared by every request of one backend."""

    def __init__(self, where: str, server_wait: float, base_delay: float = 0.5) -> None:
        self.where, self.server_wait, self.base_delay = where, server_wait, base_delay
        self.answered = False  # a server that never answered is missing, not gone: that stops the run at once
        self.failing_since: float | None = None  # the first fault since the last success
        self.resume_at = 0.0  # no request before this (monotonic clock)
        self.rounds = 0  # probes of the server in this outage
        self.reason = ""
        self.last_fault = ""
        self.retries: Counter[str] = Counter()
        self.outages = 0
        self.waited = 0.0  # seconds spent in outages that ended
        self.pending = 0  # requests being tried now: a link no request uses says nothing
        self._lock = threading.Lock()
        _LINKS.add(self)

    def ok(self) -> None:
        """A request succeeded: whatever outage there was is over."""
        with self._lock:
            self.answered = True
            if self.failing_since is not None:
                if self.rounds:
                    self.outages += 1
                    self.waited += time.monotonic() - self.failing_since
                self.failing_since, self.rounds, self.reason = None, 0, ""

    def heard(self) -> None:
        """The server answered (a refusal counts): it is there."""
        self.answered = True

    def fault(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        """Record a failed attempt; an outage (`unreachable`) or a `Retry-After` pauses every request."""
        with self._lock:
            now = time.monotonic()
            self.retries[kind] += 1
            self.last_fault = reason
            if self.failing_since is None:
                self.failing_since = now
            if kind != "unreachable":
                self.answered = True
            if retry_after is not None:
                if now + retry_after > self.resume_at:
                    code = re.search(r"\b[45]\d\d\b", reason)
                    self.resume_at = now + retry_after
                    self.reason = f"server busy ({code.group(0)})" if code else "server busy"
            elif kind == "unreachable" and self.resume_at <= now:  # the first to find it gone schedules the probe
                self.rounds += 1
                delay = min(OUTAGE_CAP, self.base_delay * 2**self.rounds)
                deadline = self.failing_since + self.server_wait
                # equal jitter: a probe soon enough to notice the server back, spread so clients do not arrive together
                self.resume_at = min(now + delay * random.uniform(0.5, 1.0), max(deadline, now))
                self.reason = "server unreachable"

    def down_for(self) -> float:
        with self._lock:
            return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    def gone(self) -> StoppedShort:
        """The stop for a server that went away and did not come back within --server-wait."""
        waited = f"for {self.server_wait:g} s (--server-wait)" if self.server_wait else "(--server-wait 0)"
        return StoppedShort(
            f"the server at {self.where} stopped answering ({self.last_fault}) and did not come back {waited}; "
            "the rows finished so far are saved: start the server and run the same command with --resume to go on"
        )

    def using(self, change: int) -> None:
        with self._lock:
            self.pending += change

    def wait(self, delay: float = 0.0) -> None:
        """Sleep `delay`, and on while a pause holds (it may grow meanwhile); short sleeps keep Ctrl-C prompt."""
        until = time.monotonic() + delay
        while (left := max(until, self.resume_at) - time.monotonic()) > 0:
            time.sleep(min(left, 0.25))

    def status(self) -> str | None:
        with self._lock:
            if self.failing_since is None or not self.reason or not self.pending:
                return None
            left = self.resume_at - time.monotonic()
            when = f"in {math.ceil(left)} s" if left > 0 else "now"
            if self.reason == "server unreachable":
                return f"server unreachable, retry {self.rounds} {when}"
            return f"{self.reason}, retry {when}" if left > 0 else None

    def record(self) -> dict[str, Any]:
        """What the dataset card says of the requests: retries by kind, outages waited through."""
        with self._lock:
            out: dict[str, Any] = {"retries": sum(self.retries.values())}
            if self.retries:
                out["retried"] = {kind: self.retries[kind] for kind in KINDS if self.retries[kind]}
            if self.outages:
                out["server_outages"] = self.outages
                out["waited_for_server_s"] = round(self.waited, 1)
            return out


@dataclass
class _Window:
    start: float
    limit: int
    done: int = 0
    tokens: int = 0
    seconds: float = 0.0
    starved: bool = False  # a slot stood free with nothing to send: the rate says nothing of the limit
    refused: int = 0  # refusals with Retry-After: the server's own pace binds

    def rate(self, now: float) -> float:
        return self.tokens / max(now - self.start, 1e-9)

    def latency(self) -> float:
        return self.seconds / max(self.tokens, 1)  # per token: answers of different lengths compare


@dataclass
class Concurrency:
    """Requests in flight: `fixed`, or adaptive between `low` and `high` (AIMD).

    Adaptive: each window of at least `limit` answers measures generated tokens per second and
    seconds per token. Throughput up by RISE: raise the limit (doubling at first, as TCP's slow
    start, then one at a time); that limit is the knee so far. Latency up by RISE after a raise
    with no throughput gain, or by twice RISE over the knee's: the server queues instead of
    batching, so cut it by DECREASE (not below the knee). A 429, 503 or timeout halves it (once
    per calm period: a burst of refusals arrives together); one with Retry-After does not, as
    the pause of every request it brings is the back-off (halving too left a rate-limited server
    idle: in flight at 1, requests came slower than it admitted), but a window with more such
    refusals than answers eases it by a tenth. Level for HOLD windows: probe one up.
    """

    fixed: int | None = None
    low: int = 1
    high: int = 64
    start: int = 4
    limit: float = 0.0
    RISE: float = 0.1
    DECREASE: float = 0.75
    HOLD: int = 3
    in_flight: int = 0
    waiting: int = 0
    slow_start: bool = True
    time_at: dict[int, float] = field(default_factory=dict)  # seconds spent at each limit
    _window: _Window | None = None
    _previous: tuple[int, float, float] | None = None  # (limit, rate, latency) of the last window
    _knee: tuple[int, float, float] | None = None  # the same, where throughput last rose: more adds only latency
    _holds: int = 0
    _calm_until: float = 0.0
    _stamp: float = 0.0
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def __post_init__(self) -> None:
        self.limit = float(self.fixed or min(max(self.start, self.low), self.high))
        self._stamp = time.monotonic()

    @property
    def auto(self) -> bool:
        return self.fixed is None

    def threads(self) -> int:
        """Workers to keep: the limit, and while adapting some more, so that demand beyond it shows."""
        return min(self.high, 2 * int(self.limit) + 2) if self.auto else int(self.limit)

    def acquire(self) -> None:
        with self._cond:
            self.waiting += 1
            try:
                while self.in_flight >= int(self.limit):
                    self._cond.wait(0.5)
            finally:
                self.waiting -= 1
            self.in_flight += 1

    def release(self, seconds: float, tokens: int, fault: str | None = None) -> None:
        """An attempt ended after `seconds`, with `tokens` generated, or with a `fault` kind
        (`paused`: a refusal with Retry-After, whose pause of every request is the back-off)."""
        with self._cond:
            self.in_flight -= 1
            if self.auto:
                self._observe(time.monotonic(), seconds, tokens, fault)
            self._cond.notify_all()

    @contextmanager
    def queued(self) -> Iterator[None]:
        """A request waiting to go again (a back-off, a pause) counts as demand beyond the limit."""
        with self._cond:
            self.waiting += 1
        try:
            yield
        finally:
            with self._cond:
                self.waiting -= 1

    def paced(self) -> None:
        """A request waited for --rpm or --tpm: this window's throughput says nothing of the limit."""
        with self._cond:
            if self._window is not None:
                self._window.starved = True

    def settled(self, now: float | None = None) -> int:
        """The limit the run spent most time at."""
        with self._cond:
            self._account(time.monotonic() if now is None else now)
            return max(self.time_at, key=self.time_at.__getitem__) if self.time_at else int(self.limit)

    def _account(self, now: float) -> None:
        limit = int(self.limit)
        self.time_at[limit] = self.time_at.get(limit, 0.0) + now - self._stamp
        self._stamp = now

    def _set(self, limit: float, now: float) -> None:
        self._account(now)
        self.limit = min(float(self.high), max(float(self.low), limit))
        self._window, self._holds = None, 0

    def _observe(self, now: float, seconds: float, tokens: int, fault: str | None) -> None:
        if fault in ("busy", "timeout"):
            if now >= self._calm_until:
                self.slow_start = False
                self._set(self.limit / 2, now)
                self._calm_until = now + max(seconds, 0.5)
            return
        if fault is not None:
            if fault == "paused" and self._window is not None:
                self._window.refused += 1
            return
        w = self._window
        if w is None:
            w = self._window = _Window(now - seconds, int(self.limit))
        w.done += 1
        w.tokens += max(tokens, 1)
        w.seconds += seconds
        w.starved |= self.waiting == 0 and self.in_flight < int(self.limit)
        if w.done < max(4, w.limit) or now - w.start < 0.2:
            return
        if w.starved:  # the end of a batch: no load to judge by
            self._window = None
            return
        if w.refused > w.done:  # more refused than admitted: ready requests to spare, ease off a little
            self.slow_start = False
            self._set(self.limit * 0.9, now)
            return
        rate, latency = w.rate(now), w.latency()
        previous, self._previous = self._previous, (w.limit, rate, latency)
        knee = self._knee
        past_knee = knee is not None and w.limit > knee[0]  # the ignores below: past_knee means knee is set
        if previous is None or rate > previous[1] * (1 + self.RISE):
            if previous is not None:
                self._knee = (w.limit, rate, latency)
            self._set(self.limit * 2 if self.slow_start else self.limit + 1, now)
        elif (w.limit > previous[0] and latency > previous[2] * (1 + self.RISE)) or (
            past_knee and latency > knee[2] * (1 + 2 * self.RISE)  # type: ignore[index]
        ):
            self.slow_start = False
            self._set(max(self.limit * self.DECREASE, knee[0] if past_knee else self.low), now)  # type: ignore[index]
        else:
            self._holds += 1
            self._window = None
            if self._holds >= self.HOLD:
                self.slow_start = False
                self._set(self.limit + 1, now)


class Bucket:
    """A token bucket holding a second's worth of `per_minute` (at least one), reserved ahead:
    a request takes its tokens now and waits off any debt, so large requests keep the average."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise SynthError(f"a rate limit must be above 0, got {per_minute}; pass --rpm or --tpm N, or leave it out")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, amount: float) -> float:
        """Take `amount`; the seconds to wait before using it."""
        with self._lock:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
            self._stamp = now
            self.level -= amount
            return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float) -> None:
        """Give back what was taken and not used (a refused request, a shorter answer than reserved)."""
        with self._lock:
            self.level = min(self.capacity, self.level + amount)
