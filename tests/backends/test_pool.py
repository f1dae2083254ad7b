"""The request pool the server backends share: order, retries, and Ctrl-C that does not wait."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from synth.backends import Completion
from synth.backends._pool import Failed, Pool, Retry, Retryable
from synth.core import SynthError

NO_WAIT = Retry(attempts=3, base_delay=0.0)


def test_results_keep_input_order() -> None:
    pool = Pool(lambda i, item: (time.sleep(0.01 * (5 - i)), Completion(item, "stop"))[1], concurrency=5)
    assert [c.text for c in pool.map(list("abcde"))] == list("abcde")
    pool.close()


def test_a_ctrl_c_cancels_what_has_not_started_and_stops_the_workers() -> None:
    started, release = [], threading.Event()

    def send(index: int, item: int) -> Completion:
        started.append(index)
        if index == 0:
            time.sleep(0.05)
            raise KeyboardInterrupt  # arrives in the caller's thread, as a Ctrl-C would
        release.wait(10)
        return Completion("late", "stop")

    pool = Pool(send, concurrency=2, retry=NO_WAIT)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.map(list(range(20)))
        assert len(started) <= 3  # the queued rest never starts
        assert pool._executor is None
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("synth-request"))
    finally:
        release.set()
    pool.send = lambda i, item: Completion(str(item), "stop")
    assert [c.text for c in pool.map([1, 2, 3])] == ["1", "2", "3"]  # a later call starts new workers
    pool.close()


def test_ctrl_c_exits_without_waiting_for_requests_in_flight() -> None:
    """The interpreter's exit must not wait for a request stuck until its timeout (here 60 s)."""
    child = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        # Ctrl-C as a terminal sends it, whatever signal state the test process passed down
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from synth.backends import Completion
        from synth.backends._pool import Pool
        print("imported", file=sys.stderr, flush=True)  # so a hang says where it was

        def send(index, item):
            time.sleep(60)  # a request the server is slow to answer
            return Completion("late", "stop")

        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C
        Pool(send, concurrency=4).map(list(range(16)))
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=45)
    assert time.monotonic() - started < 30
    assert "KeyboardInterrupt" in done.stderr and done.returncode != 0


def test_retries_then_a_failed_row() -> None:
    calls = []

    def send(index: int, item: str) -> Completion:
        calls.append(item)
        if item == "flaky" and calls.count("flaky") < 3:
            raise Retryable("server answered 503")
        if item == "never":
            raise Retryable("server answered 503")
        if item == "bad":
            raise Failed("server answered 400")
        return Completion(item, "stop")

    flaky, never, bad = Pool(send, concurrency=1, retry=NO_WAIT).map(["flaky", "never", "bad"])
    assert flaky.text == "flaky" and calls.count("flaky") == 3
    assert (never.finish_reason, never.error) == ("error", "server answered 503 (gave up after 3 attempts)")
    assert (bad.finish_reason, bad.error, calls.count("bad")) == ("error", "server answered 400", 1)


def test_a_fault_no_retry_fixes_stops_the_call() -> None:
    down = SynthError("no server answers at http://127.0.0.1:1")

    def send(index: int, item: str) -> Completion:
        raise Retryable("no answer", final=down)

    with pytest.raises(SynthError, match="no server answers"):
        Pool(send, concurrency=2, retry=NO_WAIT).map(["a", "b"])
    with pytest.raises(SynthError, match="no server answers"):
        NO_WAIT.call(lambda: send(0, "a"), "counting tokens")
    with pytest.raises(SynthError, match=r"counting tokens failed: 503 \(gave up after 3 attempts\)"):
        NO_WAIT.call(lambda: (_ for _ in ()).throw(Retryable("503")), "counting tokens")
