"""The verify sandbox on real programs: each misbehaviour is stopped, and stopped the right way.

The spawner is bounded in the program itself (500 forks): never an unbounded fork bomb on a
shared machine. Where the machine allows no namespaces (not root), the tests that need one skip.
Every path is a temporary one: the tests that run as `nobody` copy what they need to a folder
`nobody` can read, since the checkout may sit in a private one (mode 700, or root's home).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from synth.sandbox import NOBODY, Isolation, Limits, Sandbox, isolation

SYSTEM_PYTHON = "/usr/bin/python3"
CLEAN_ENV = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]

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


def isolation_in(boxes: Path) -> Isolation:
    """The isolation `sandbox(boxes)` gets: it is probed where its programs run."""
    return isolation(sys.executable, str(boxes))


def as_nobody() -> list[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and a system Python")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def for_nobody() -> Iterator[Path]:
    """A fresh folder that `nobody` can read (mode 755, in a parent nobody may pass through),
    removed afterwards; skips, saying why, where the machine has none."""
    nobody = as_nobody()
    parents = [p for p in dict.fromkeys([tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]) if os.path.isdir(p)]
    found = None
    for parent in parents:
        made = Path(tempfile.mkdtemp(prefix="synth-test-", dir=parent))
        made.chmod(0o755)
        probe = [*nobody, *CLEAN_ENV, SYSTEM_PYTHON, "-c", "import os, sys; os.listdir(sys.argv[1])", str(made)]
        if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
            found = made
            break
        shutil.rmtree(made)
    if found is None:
        pytest.skip(f"no folder here that nobody can read (tried {', '.join(parents)})")
    yield found
    shutil.rmtree(found)


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
    iso = isolation_in(boxes)
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
    if not isolation_in(boxes).unshare:
        pytest.skip("no mount namespace here (not root): programs can write wherever their user can")
    outside = tmp_path / "outside.txt"
    program = "open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read())\n"
    program += f"open({str(outside)!r}, 'w').write('x')"
    result = sandbox(boxes).run(program)
    assert result.stdout == "x\n"  # its own directory is writable
    assert result.status == "error" and "Read-only file system" in result.stderr
    assert not outside.exists()
    target = tmp_path / "escape"  # writable by whoever runs the tests, outside the program's directory
    escape = sandbox(boxes).run(f"import os\nos.system('mount -o remount,rw /')\nopen({str(target)!r}, 'w')")
    assert escape.status == "error" and not target.exists()


def test_socket_is_refused(boxes) -> None:
    if not isolation_in(boxes).unshare:
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


def test_programs_run_as_nobody_where_nobody_can_run_the_interpreter(for_nobody) -> None:
    boxes = for_nobody / "boxes"  # root's, and nobody may pass through
    boxes.mkdir(mode=0o711)
    box = Sandbox(Limits(timeout=5.0), python=SYSTEM_PYTHON, tmp_root=str(boxes))
    if box.mode != "namespaces+pids-cgroup+uid-65534":
        pytest.skip(f"this machine gives {box.mode}")
    key = for_nobody / "key"  # a root-only file, in a folder anyone may read
    key.write_text("secret")
    key.chmod(0o600)
    program = f"import os\nprint(os.getuid())\nopen('mine', 'w').write('x')\nopen({str(key)!r}).read()"
    result = box.run(program)
    assert result.stdout == "65534\n", result.stderr
    assert result.status == "error" and "PermissionError" in result.stderr
    assert list(boxes.iterdir()) == []


def test_without_isolation_the_rlimits_still_hold(boxes) -> None:
    box = Sandbox(Limits(timeout=2.0), jobs=2, tmp_root=str(boxes), isolation=Isolation())
    good, bad, loop, big = box.run_all(["print('ok')", "assert 0", "while True:\n    pass", "bytearray(10 * 1024**3)"])
    assert [good.status, bad.status, loop.status, big.status] == ["pass", "fail", "timeout", "error"]
    assert "MemoryError" in big.stderr and loop.seconds < 5.0


def test_a_user_who_is_not_root_gets_namespaces_in_a_user_namespace(for_nobody) -> None:
    # Run as nobody (a user who is not root), with the system Python and copies of synth's
    # sandbox modules alone, in a clean environment (no HOME or TMPDIR of ours): the probe must
    # pick a user namespace, where RLIMIT_NPROC counts the program's processes from zero (no
    # cgroup without root), and the network and files are shut.
    import synth.sandbox

    nobody = as_nobody()
    code = for_nobody / "code"
    code.mkdir(mode=0o755)
    for source in (Path(synth.sandbox.__file__), synth.sandbox.INIT):
        shutil.copy(source, code / source.name)
        (code / source.name).chmod(0o644)
    home = for_nobody / "home"  # nobody's own: its HOME and TMPDIR, where a write would succeed outside a sandbox
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    escape = home / "escape"
    write = f"open({str(escape)!r}, 'w')"
    script = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sandbox", {str(code / "sandbox.py")!r})
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox
spec.loader.exec_module(sandbox)
box = sandbox.Sandbox(sandbox.Limits(timeout=5, processes=16))
programs = [{SPAWNER!r}, "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)", {write!r}]
print(json.dumps([box.mode, [[r.status, r.stdout, r.stderr] for r in box.run_all(programs)]]))
"""
    env = [*CLEAN_ENV, f"HOME={home}", f"TMPDIR={home}"]
    done = subprocess.run(
        [*nobody, *env, SYSTEM_PYTHON, "-s", "-c", script], capture_output=True, text=True, timeout=120, cwd=home
    )
    assert done.returncode == 0, done.stderr
    mode, ((spawned, forked, why), (net, _, refused), (wrote, _, readonly)) = json.loads(done.stdout)
    if not mode.startswith("userns"):
        pytest.skip(f"user namespaces are not allowed here ({mode})")
    assert spawned == "error" and "BlockingIOError" in why and int(forked.split()[-1]) < 16
    assert net == "error" and "Network is unreachable" in refused
    assert wrote == "error" and "Read-only file system" in readonly and not escape.exists()
