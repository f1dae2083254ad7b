"""The verify sandbox on real programs: each misbehaviour is stopped, and stopped the right way.

The spawner is bounded in the program itself (500 forks): never an unbounded fork bomb on a
shared machine. Where the machine allows no namespaces (not root), the tests that need one skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from synth.sandbox import Isolation, Limits, Sandbox, isolation

SPAWNER = """
import os, time
n = 0
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
finally:
    print("forked", n, flush=True)
"""


@pytest.fixture
def boxes(tmp_path: Path) -> Path:
    root = tmp_path / "boxes"
    root.mkdir()
    return root


def sandbox(boxes: Path, **limits: float) -> Sandbox:
    return Sandbox(Limits(**{"timeout": 5.0, **limits}), jobs=2, tmp_root=str(boxes))


def processes_under(path: Path) -> list[int]:
    """Processes whose working directory is inside `path` (a sandbox's, or a child's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(path)):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


def test_correct_and_buggy_code(boxes) -> None:
    good, bad, crash = sandbox(boxes).run_all(
        ["import numpy\n\ndef f(x):\n    return x + 1\n\nassert f(1) == 2\nprint('ok')", "assert 1 + 2 == 4", "1 / 0"]
    )
    assert (good.status, good.stdout) == ("pass", "ok\n"), good.stderr  # with this Python's packages
    assert bad.status == "fail" and "AssertionError" in bad.stderr
    assert crash.status == "error" and "ZeroDivisionError" in crash.stderr
    assert list(boxes.iterdir()) == []  # every temporary directory is gone


def test_infinite_loop_times_out_within_the_limit(boxes) -> None:
    result = sandbox(boxes, timeout=2.0).run("while True:\n    pass")
    assert result.status == "timeout"
    assert result.seconds < 2.0 + 3.0  # the wall clock or the CPU limit, whichever first, plus start-up
    assert processes_under(boxes) == []


def test_process_spawner_is_stopped_at_the_process_limit(boxes) -> None:
    iso = isolation()
    result = sandbox(boxes, processes=16).run(SPAWNER)
    assert processes_under(boxes) == [], "a forked child outlived its sandbox"
    if iso.cgroup_root is None and os.geteuid() == 0:
        pytest.skip("no pids cgroup here: as root nothing limits the process count (the sandbox says so)")
    forked = int(result.stdout.split()[-1])
    assert result.status == "error" and "BlockingIOError" in result.stderr
    assert forked < 16


def test_ten_gigabytes_is_refused(boxes) -> None:
    result = sandbox(boxes, memory_mb=512).run("x = bytearray(10 * 1024**3)\nprint(len(x))")
    assert result.status == "error" and "MemoryError" in result.stderr


def test_writes_stay_in_the_working_directory(boxes, tmp_path) -> None:
    if not isolation().unshare:
        pytest.skip("no mount namespace here (not root): programs can write wherever their user can")
    outside = tmp_path / "outside.txt"
    program = "open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read())\n"
    program += f"open({str(outside)!r}, 'w').write('x')"
    result = sandbox(boxes).run(program)
    assert result.stdout == "x\n"  # its own directory is writable
    assert result.status == "error" and "Read-only file system" in result.stderr
    assert not outside.exists()
    escape = sandbox(boxes).run("import os\nos.system('mount -o remount,rw /')\nopen('/tmp/synth-escape', 'w')")
    assert escape.status == "error" and not Path("/tmp/synth-escape").exists()


def test_socket_is_refused(boxes) -> None:
    if not isolation().unshare:
        pytest.skip("no network namespace here (not root): programs can reach the network")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\nprint('connected')"
        result = sandbox(boxes).run(program)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # a connection would be waiting in the backlog
            server.accept()
    assert result.status == "error" and "connected" not in result.stdout
    assert "Network is unreachable" in result.stderr or "refused" in result.stderr


def test_environment_holds_no_secrets(boxes, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    result = sandbox(boxes).run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('HF_TOKEN'))")
    assert result.status == "pass"
    assert "secret" not in result.stdout and "OPENAI_API_KEY" not in result.stdout and "None" in result.stdout


def test_results_are_cached_by_program(boxes, tmp_path, monkeypatch) -> None:
    import synth.sandbox

    box = Sandbox(Limits(timeout=5.0), jobs=2, tmp_root=str(boxes), cache=tmp_path / "cache")
    first = box.run_all(["print(1)", "assert False"])
    assert [r.status for r in first] == ["pass", "fail"] and not any(r.cached for r in first)

    def must_not_run(*args: object) -> None:
        raise AssertionError("a cached program ran again")

    monkeypatch.setattr(synth.sandbox, "_execute", must_not_run)
    again = box.run_all(["print(1)", "assert False"])
    assert [(r.status, r.stdout, r.seconds) for r in again] == [(r.status, r.stdout, r.seconds) for r in first]
    assert all(r.cached for r in again)
    with pytest.raises(AssertionError, match="ran again"):
        box.run("print(2)")  # a new program is not in the cache


def test_output_is_capped_by_the_file_size_limit(boxes) -> None:
    result = sandbox(boxes, file_mb=1).run("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)")
    assert result.status == "error"  # SIGXFSZ at 1 MiB, long before the timeout
    assert len(result.stdout) <= Limits().tail_chars


def test_programs_run_as_nobody_where_nobody_can_run_the_interpreter() -> None:
    system = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(system, os.X_OK):
        pytest.skip("needs root and a system Python")
    box = Sandbox(Limits(timeout=5.0), python=system)  # the system temporary directory: nobody can pass through
    if box.mode != "namespaces+pids-cgroup+uid-65534":
        pytest.skip(f"this machine gives {box.mode}")
    private = Path(tempfile.mkdtemp())  # a root-only file, in a directory anyone may pass through
    private.chmod(0o755)
    (private / "key").write_text("secret")
    (private / "key").chmod(0o600)
    program = f"import os\nprint(os.getuid())\nopen('mine', 'w').write('x')\nopen({str(private / 'key')!r}).read()"
    result = box.run(program)
    shutil.rmtree(private)
    assert result.stdout == "65534\n", result.stderr
    assert result.status == "error" and "PermissionError" in result.stderr


def test_without_isolation_the_rlimits_still_hold(boxes) -> None:
    box = Sandbox(Limits(timeout=2.0), jobs=2, tmp_root=str(boxes), isolation=Isolation())
    good, bad, loop, big = box.run_all(["print('ok')", "assert 0", "while True:\n    pass", "bytearray(10 * 1024**3)"])
    assert [good.status, bad.status, loop.status, big.status] == ["pass", "fail", "timeout", "error"]
    assert "MemoryError" in big.stderr and loop.seconds < 5.0


def test_a_user_who_is_not_root_gets_namespaces_in_a_user_namespace() -> None:
    # Run as nobody (a user who is not root), with the system Python and synth's sandbox module
    # alone: the probe must pick a user namespace, where RLIMIT_NPROC counts the program's
    # processes from zero (no cgroup without root), and the network and files are shut.
    system, setpriv = "/usr/bin/python3", shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv or not os.access(system, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and a system Python")
    import synth.sandbox

    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox", {synth.sandbox.__file__!r})
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
box = sandbox.Sandbox(sandbox.Limits(timeout=5, processes=16))
programs = [{SPAWNER!r}, "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)", "open('/tmp/x', 'w')"]
print(json.dumps([box.mode, [[r.status, r.stdout, r.stderr] for r in box.run_all(programs)]]))
"""
    nobody = [setpriv, f"--reuid={65534}", f"--regid={65534}", "--clear-groups", "env", "HOME=/tmp", system, "-c"]
    done = subprocess.run([*nobody, script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    mode, ((spawned, forked, why), (net, _, refused), (write, _, readonly)) = json.loads(done.stdout)
    if not mode.startswith("userns"):
        pytest.skip(f"user namespaces are not allowed here ({mode})")
    assert spawned == "error" and "BlockingIOError" in why and int(forked.split()[-1]) < 16
    assert net == "error" and "Network is unreachable" in refused
    assert write == "error" and "Read-only file system" in readonly
