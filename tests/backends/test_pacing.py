"""The request pool's patience and pace: waiting for a server that went away, Retry-After,
rate limits, and adaptive concurrency (driven here by simulated servers, on a simulated clock)."""

from __future__ import annotations

import threading
import time

import pytest

from synth.backends import Completion
from synth.backends._pool import Pool, Retry, Retryable
from synth.backends._resilience import Bucket, Concurrency, parse_concurrency, retry_after, waiting
from synth.core import StoppedShort, SynthError

QUICK = Retry(attempts=3, base_delay=0.01)
DOWN = SynthError("no server answers at http://127.0.0.1:1; start it")


class Flaky:
    """A server that answers, is unreachable from `down_at` (a request count) for `seconds`, then answers again."""

    def __init__(self, down_at: int = 1, seconds: float = float("inf")) -> None:
        self.down_at, self.seconds, self.calls, self.back = down_at, seconds, 0, None
        self.lock = threading.Lock()

    def __call__(self, index: int, item: str) -> Completion:
        with self.lock:
            self.calls += 1
            if self.calls > self.down_at and self.back is None:
                self.back = time.monotonic() + self.seconds
        if self.back is not None and time.monotonic() < self.back:
            raise Retryable("no answer from the server", final=DOWN)
        return Completion(item, "stop", 1, 1)


def test_a_server_never_reached_stops_the_run_at_once() -> None:
    pool = Pool(Flaky(down_at=0), concurrency=2, retry=QUICK, server_wait=60)
    started = time.monotonic()
    with pytest.raises(SynthError, match="no server answers") as caught:
        pool.map(["a", "b", "c"])
    assert not isinstance(caught.value, StoppedShort) and time.monotonic() - started < 5


def test_a_server_that_answered_is_waited_for_and_the_rows_come_back_in_order() -> None:
    pool = Pool(Flaky(down_at=1, seconds=1.0), concurrency=3, retry=QUICK, server_wait=30)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            seen.append(waiting() or "")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out = pool.map(list("abcdef"))
    finally:
        stop.set()
        watcher.join()
    assert [c.text for c in out] == list("abcdef") and all(c.finish_reason == "stop" for c in out)
    assert any(s.startswith("server unreachable, retry ") for s in seen)
    assert pool.record["server_outages"] == 1 and pool.record["waited_for_server_s"] >= 0.9
    assert pool.record["retried"]["unreachable"] >= 1 and waiting() is None


def test_a_server_gone_past_server_wait_stops_short_with_the_resume_line() -> None:
    pool = Pool(Flaky(down_at=1), concurrency=2, retry=QUICK, server_wait=0.5, where="http://127.0.0.1:9/v1")
    started = time.monotonic()
    with pytest.raises(StoppedShort) as caught:
        pool.map(list("abcd"))
    assert 0.5 <= time.monotonic() - started < 5
    message = str(caught.value)
    assert caught.value.exit_code == 3 and "\n" not in message
    assert "the server at http://127.0.0.1:9/v1 stopped answering" in message and "--resume" in message


def test_server_wait_0_fails_fast() -> None:
    pool = Pool(Flaky(down_at=1), concurrency=1, retry=QUICK, server_wait=0)
    with pytest.raises(StoppedShort, match=r"--server-wait 0"):
        pool.map(list("abc"))


def busy_then_ok(refusals: int, after: float | None = None):
    calls: dict[str, list[float]] = {}

    def send(index: int, item: str) -> Completion:
        calls.setdefault(item, []).append(time.monotonic())
        if len(calls[item]) <= refusals:
            raise Retryable("server answered 503: busy", kind="busy", retry_after=after)
        return Completion(item, "stop")

    return send, calls


def test_a_busy_server_is_retried_past_the_attempts_while_server_wait_lasts() -> None:
    send, calls = busy_then_ok(6)
    (out,) = Pool(send, concurrency=1, retry=QUICK, server_wait=30).map(["a"])
    assert out.finish_reason == "stop" and len(calls["a"]) == 7
    send, calls = busy_then_ok(6)
    (out,) = Pool(send, concurrency=1, retry=QUICK, server_wait=0).map(["a"])  # no waiting: the attempts count
    assert out.error == "server answered 503: busy (gave up after 3 attempts)" and len(calls["a"]) == 3


def test_retry_after_holds_back_every_request() -> None:
    send, calls = busy_then_ok(1, after=0.4)
    pool = Pool(send, concurrency=3, retry=QUICK)
    assert [c.text for c in pool.map(list("abc"))] == list("abc")
    first = min(t for times in calls.values() for t in times)
    retries = [times[1] for times in calls.values()]
    assert min(retries) >= first + 0.4


def test_retry_after_headers() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date gone by
    assert retry_after({"retry-after": "soon"}) is None and retry_after(None) is None
    assert retry_after({"retry-after": "86400"}, cap=60) == 60


def test_token_buckets_pace_requests_and_tokens() -> None:
    rpm = Bucket(60)  # one a second, one at once
    assert rpm.reserve(1) == 0.0 and 0.9 < rpm.reserve(1) <= 1.0
    tpm = Bucket(6000)  # 100 tokens a second
    assert tpm.reserve(300) == pytest.approx(2.0, abs=0.05)  # a request bigger than the bucket waits off its debt
    tpm.refund(250)  # it used 50 of them: 50 of the 100 are left
    assert tpm.reserve(10) == 0.0 and tpm.reserve(100) == pytest.approx(0.6, abs=0.05)
    with pytest.raises(SynthError, match="above 0"):
        Bucket(0)


def test_rpm_paces_the_pool() -> None:
    pool = Pool(lambda i, item: Completion(item, "stop"), concurrency=4, rpm=1200)  # 20 a second
    started = time.monotonic()
    pool.map([str(i) for i in range(30)])
    assert time.monotonic() - started >= (30 - 20) / 20 - 0.05  # a second's worth at once, then 20 a second


def test_concurrency_option() -> None:
    assert parse_concurrency("auto") is None and parse_concurrency(None) is None and parse_concurrency("8") == 8
    for bad in ("0", "many", "-2"):
        with pytest.raises(SynthError, match="--concurrency takes auto or a number of at least 1"):
            parse_concurrency(bad)


def simulate(throughput, completions: int = 3000, refuse_above: int | None = None) -> tuple[Concurrency, float]:
    """Drive the adaptive limit with a server whose requests/s at L in flight is `throughput(L)`,
    at full load (Little's law gives the latency); over `refuse_above` in flight it answers 429."""
    slots = Concurrency()
    now = t0 = slots._stamp = 1000.0
    for _ in range(completions):
        limit = int(slots.limit)
        rate = throughput(limit)
        now += 1 / rate
        slots.in_flight, slots.waiting = limit - 1, 5  # saturated: more waiting than slots
        fault = "busy" if refuse_above is not None and limit > refuse_above else None
        slots._observe(now, limit / rate, 0 if fault else 20, fault)
    return slots, now - t0


def one_at_a_time(limit: int) -> float:
    """llama-cpp-python's server: one request at a time; a second in flight hides the gaps."""
    return 10.0 if limit >= 2 else 9.0


def batching(limit: int, slots: int = 24) -> float:
    """vLLM-like: up to 24 decoded together, each step slower with more; beyond, requests queue."""
    busy = min(limit, slots)
    return busy / (1.0 + 0.02 * busy)


def test_adaptive_concurrency_finds_a_serial_servers_pace_without_piling_on() -> None:
    slots, _ = simulate(one_at_a_time)
    assert 2 <= slots.settled(now=slots._stamp) <= 6  # the throughput is all there at 2; more only adds latency


def test_adaptive_concurrency_climbs_to_a_batching_servers_knee() -> None:
    slots, _ = simulate(batching)
    settled = slots.settled(now=slots._stamp)
    best = max(batching(k) for k in range(1, 65))
    assert batching(settled) >= 0.9 * best and settled <= 40


def test_adaptive_concurrency_backs_off_on_429() -> None:
    slots, _ = simulate(batching, refuse_above=6)
    assert 3 <= slots.settled(now=slots._stamp) <= 6 and slots.limit <= 7


def test_fixed_concurrency_stays_fixed() -> None:
    slots = Concurrency(fixed=5)
    slots.acquire()
    slots.release(0.1, 0, "busy")
    assert slots.limit == 5 and slots.threads() == 5 and slots.in_flight == 0


def test_a_bad_concurrency_is_one_line_before_any_request(tmp_path, dead_url) -> None:
    import subprocess
    import sys

    source = tmp_path / "q.jsonl"
    source.write_text('{"id": "a", "instruction": "hi"}\n')
    argv = [sys.executable, "-m", "synth", "respond", str(source), "-o", str(tmp_path / "out")]
    argv += ["--base-url", f"{dead_url}/v1", "--concurrency", "lots"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "synth: error: --concurrency takes auto or a number of at least 1, not 'lots'; pass --concurrency auto"
    )


def test_a_refusal_with_retry_after_pauses_instead_of_halving() -> None:
    slots = Concurrency()
    slots.acquire()
    slots.release(0.1, 0, "paused")  # the server said when: every request waits, which is back-off enough
    assert slots.limit == 4
    slots.acquire()
    slots.release(0.1, 0, "busy")  # it did not: halve
    assert slots.limit == 2
