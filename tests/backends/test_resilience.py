"""Runs that outlive their server: `synth respond` through a fault-injecting proxy, in front of the
real llama-cpp-python OpenAI-compatible server and the Ollama-API test server (each a process of
its own, serving the embedded SmolLM2-135M-Instruct), to completion.

Every scenario checks the same things: exit 0, every input row exactly once, no row without an
answer unless the card counts it failed, the retries in the card, and what the proxy saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from synth.io import read
from tests.backends.fault_proxy import PASS, Action, FaultProxy, ServerProcess
from tests.backends.ollama_server import Model, delayed_echo
from tests.backends.ollama_server import serve as serve_ollama
from tests.backends.openai_server import serve as serve_openai

ROWS = 8
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=["openai", "ollama"])
def server(request, tmp_path_factory):
    if request.param == "openai":
        pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    proc = ServerProcess(request.param, tmp_path_factory.mktemp("server") / "log.txt").start()
    yield proc
    proc.kill()


def questions(path: Path, n: int = ROWS) -> Path:
    rows = ({"id": f"q{i}", "instruction": f"Name a colour, {i}."} for i in range(n))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def respond(server: Any, url: str, tmp_path: Path, *extra: str, n: int = ROWS, **popen: Any) -> Any:
    """`synth respond` on `n` questions through `url` to `server` (its `kind` says which API);
    the finished process (or, with popen, the running one)."""
    source = tmp_path / "q.jsonl"
    if not source.exists():
        questions(source, n)
    argv = [sys.executable, "-m", "synth", "respond", str(source), "-o", str(tmp_path / "out")]
    argv += ["--max-tokens", "6", "--temperature", "0", *extra]
    if server.kind == "openai":
        argv += ["--base-url", f"{url}/v1"]
    else:
        argv += ["--backend", "ollama", "--base-url", url, "--model", getattr(server, "model", "smollm2:135m")]
        argv += ["--template", "llama3"] if getattr(server, "model", "") == "echo:latest" else []
    if popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    return subprocess.run(argv, capture_output=True, text=True, timeout=240)


def card(out: Path) -> dict[str, Any]:
    return json.loads((out / "README.md").read_text().split("```json")[1].split("```")[0])


def check(out: Path, n: int = ROWS) -> dict[str, Any]:
    """Every input row exactly once, each answered or failed as the card counts; the card."""
    rows = [r for b in read(out) for r in b.to_pylist()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == n and set(ids) == {f"q{i}" for i in range(n)}
    failed = [r for r in rows if r["response_finish_reason"] == "error"]
    answered = [r for r in rows if r["response_finish_reason"] != "error"]
    assert all(r["response"] for r in answered)
    # --max-tokens 6 cuts most answers: a cut-off answer keeps its text but is no training row.
    assert all((r["messages"] is not None) == (r["response_finish_reason"] == "stop") for r in answered)
    found = card(out)
    assert len(failed) == found["failed_requests"]["count"]
    assert not failed, [r["response_error"] for r in failed]  # every fault here is one a retry fixes
    return found


def every(k: int, action: Action, first: int = 2, last: int = 10**9):
    return lambda n, path, body: action if first <= n <= last and (n - first) % k == 0 else PASS


class Burst:
    """Every request answered `code` for `seconds` from the `start`-th on: a server shedding load."""

    def __init__(self, start: int, seconds: float, code: int) -> None:
        self.start, self.seconds, self.code, self.until = start, seconds, code, None

    def __call__(self, n: int, path: str, body: dict[str, Any]) -> Action:
        if n == self.start:
            self.until = time.monotonic() + self.seconds
        return ("status", self.code, None) if self.until and time.monotonic() < self.until else PASS


SCENARIOS = {
    "resets": lambda n, p, b: ("reset",) if n in (2, 6) else ("reset_after",) if n in (4, 9) else PASS,
    "503_burst": Burst(2, 3.0, 503),  # 3 s of 503s: more tries than the 4 a row had before
    "slow": every(3, ("slow", 1.5)),
    "truncated": lambda n, p, b: ("truncate",) if n in (3, 7) else PASS,
    "502_gateway": every(4, ("status", 502, None)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_fault_a_retry_fixes_ends_with_every_row_once(server, tmp_path, scenario) -> None:
    script = SCENARIOS[scenario]
    if isinstance(script, Burst):
        script = Burst(script.start, script.seconds, script.code)  # a fresh clock per server
    with FaultProxy(server.url, script) as proxy:
        done = respond(server, proxy.url, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = check(tmp_path / "out")
    faults = [e for e in proxy.generations() if e.action not in ("pass", "slow")]
    assert found["server_requests"]["retries"] == len(faults)  # each fault retried once, nothing else
    assert found["concurrency"] == "auto" and 1 <= found["server_requests"]["settled_concurrency"] <= 64
    assert len(proxy.generations()) == ROWS + len(faults)
    if scenario != "slow":
        assert len(faults) >= 2
    if scenario == "resets":  # a request whose first try reached the server still gives one row (check above)
        assert len([e for e in faults if e.action == "reset_after"]) == 2  # the same row's retry may be hit again


def test_429_with_retry_after_is_waited_out_by_every_request(server, tmp_path) -> None:
    """The issue's own check, kept: every third request refused with `Retry-After: 1`."""
    with FaultProxy(server.url, every(3, ("status", 429, 1.0), first=1)) as proxy:
        done = respond(server, proxy.url, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    found = check(tmp_path / "out")
    log = proxy.generations()
    refusals = [e for e in log if e.status == 429]
    assert len(refusals) >= ROWS // 3 and found["server_requests"]["retried"]["busy"] == len(refusals)
    for refused in refusals:
        again = next(e for e in log if e.key == refused.key and e.t > refused.t)
        assert again.t >= refused.t + 1.0  # that request not before it expired
        # nor anyone's: only a request already on its way as the 429 went out may arrive meanwhile
        early = [e for e in log if refused.t + 0.2 < e.t < refused.t + 0.99]
        assert not early, [(round(e.t - refused.t, 3), e.key) for e in early]


def test_rpm_keeps_under_a_providers_limit(server, tmp_path) -> None:
    with FaultProxy(server.url, rate=4.0, burst=4.0) as proxy:
        done = respond(server, proxy.url, tmp_path, "--rpm", "180")  # 3 a second against 4 allowed
    assert done.returncode == 0, done.stderr[-2000:]
    check(tmp_path / "out")
    log = proxy.generations()
    assert [e for e in log if e.status == 429] == []
    assert log[-1].t - log[0].t >= (ROWS - 3) / 3 - 0.2  # paced: a second's worth at once, then 3 a second


def test_a_server_killed_mid_run_is_waited_for(server, tmp_path) -> None:
    def kill_and_restart() -> None:
        proxy.down()  # its port refuses, as the server's would
        server.kill()
        time.sleep(3)
        server.start()
        proxy.up()

    killer = threading.Thread(target=kill_and_restart)
    script = lambda n, p, b: (killer.start(), PASS)[1] if n == 5 else PASS  # noqa: E731
    with FaultProxy(server.url, script) as proxy:
        done = respond(server, proxy.url, tmp_path)
        killer.join()
    assert done.returncode == 0, done.stderr[-2000:]
    found = check(tmp_path / "out")
    assert found["server_requests"]["server_outages"] == 1
    assert found["server_requests"]["retried"]["unreachable"] >= 1
    assert found["server_requests"]["waited_for_server_s"] >= 2
    assert "server unreachable, retry " in done.stderr  # the progress line said what was going on


@dataclass
class Echo:
    """The test suite's fake servers (instant `echo: ...` answers), for a test that needs 64 rows done fast."""

    kind: str
    url: str
    model: str = "echo:latest"


@pytest.fixture(params=["openai", "ollama"])
def echo(request):
    if request.param == "openai":
        with serve_openai() as state:
            yield Echo("openai", state.url.removesuffix("/v1"))
    else:
        with serve_ollama({"echo:latest": Model(delayed_echo(0.0))}) as state:
            yield Echo("ollama", state.url)


def test_a_server_that_never_comes_back_stops_short_with_rows_kept(echo, tmp_path) -> None:
    n = 70  # respond answers 64 rows at a time: the first 64 are finished when the server goes

    gone = threading.Event()

    def script(k: int, path: str, body: dict[str, Any]) -> Action:
        if k == 67:
            gone.set()
            proxy.down()  # from here on its port refuses; what is in flight is reset
        return ("reset",) if gone.is_set() else PASS

    with FaultProxy(echo.url, script) as proxy:
        done = respond(echo, proxy.url, tmp_path, "--server-wait", "3", n=n)
        assert done.returncode == 3, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert "did not come back for 3 s (--server-wait)" in last and "--resume" in last
        kept = [r["id"] for b in read(tmp_path / "out") for r in b.to_pylist()]
        assert kept == [f"q{i}" for i in range(64)]
        gone.clear()
        proxy.up()  # back: the same command with --resume finishes the rest
        again = respond(echo, proxy.url, tmp_path, "--server-wait", "3", "--resume", n=n)
    assert again.returncode == 0, again.stderr[-2000:]
    check(tmp_path / "out", n)


def test_ctrl_c_stops_at_once_while_waiting_for_the_server(server, tmp_path) -> None:
    script = lambda k, p, b: (threading.Thread(target=proxy.down).start(), PASS)[1] if k == 3 else PASS  # noqa: E731
    with FaultProxy(server.url, script) as proxy:
        # a terminal's Ctrl-C: the child gets SIGINT with the default handler, whatever this process ignores
        child = respond(server, proxy.url, tmp_path, preexec_fn=_default_sigint)
        deadline = time.monotonic() + 60
        while len(proxy.generations()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # well into the wait
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert child.returncode == 130, err[-2000:]
    assert "--resume" in err.strip().splitlines()[-1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
