"""Run untrusted programs in a sandbox, many at a time, each result cached by the program's hash.

Each program gets a fresh temporary directory as its working directory and runs in a subprocess
with limits on CPU time, address space, file size and processes, a wall-clock timeout, and an
environment holding nothing but PATH, HOME, TMPDIR and the locale. Where the machine allows it
(root, `unshare` and `setpriv`, Linux 5.12+) it also gets its own network namespace (no network
at all), pid namespace (it sees only its own processes, and all of them die with it) and mount
namespace in which everything but its directory is read-only, and it runs without capabilities,
as `nobody` where the interpreter is readable by nobody. Processes are counted in a pids cgroup
where one can be made: as root, RLIMIT_NPROC does not apply. What is missing is said once, in
`Isolation.notes`. The README's Verification section says what this does not protect against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

INIT = Path(__file__).with_name("_sandbox_init.py")
SETUP_FAILED, ASSERTION_FAILED = 125, 101
NOBODY = 65534
VERSION = "1"  # part of every cache key: bump when a change here can change a result
STATUSES = ("pass", "fail", "error", "timeout")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one program may use. `timeout` is wall-clock seconds, and CPU seconds too."""

    timeout: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    processes: int = 64
    tail_chars: int = 2000


@dataclasses.dataclass(frozen=True)
class Result:
    """`status`: pass (exit 0), fail (an assert failed), error (any other exit), timeout."""

    status: str
    stdout: str
    stderr: str
    seconds: float
    cached: bool = False
    setup_failed: bool = False  # the sandbox, not the program, failed: never cached


@dataclasses.dataclass(frozen=True)
class Isolation:
    """How programs are run on this machine; `notes` say what is missing, once."""

    unshare: tuple[str, ...] = ()  # the command that makes the namespaces; empty: none
    setpriv: tuple[str, ...] = ()  # the command that drops privileges; empty: none
    cgroup_root: str | None = None  # where a pids cgroup per program is made
    user: int | None = None  # the uid programs run as, where it is changed
    userns: bool = False  # namespaces inside a user namespace: processes are counted in it by RLIMIT_NPROC
    notes: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        parts = ["userns" if self.userns else "namespaces" if self.unshare else "rlimits"]
        parts += ["pids-cgroup"] if self.cgroup_root else []
        parts += [f"uid-{self.user}"] if self.user is not None else (["no-caps"] if self.setpriv else [])
        return "+".join(parts)


@dataclasses.dataclass
class Sandbox:
    """Runs Python programs under `limits`, `jobs` at a time (default: the CPU count).

    Results are cached in `cache` (a directory; None: no cache) by the hash of the program, the
    limits and the isolation, so running the same programs again costs nothing. Each program's
    directory is made in `tmp_root` (default: the system's); the isolation is probed there, so
    programs run as `nobody` only where `nobody` can pass through it.
    """

    limits: Limits = Limits()
    jobs: int = 0
    cache: Path | None = None
    tmp_root: str | None = None
    python: str = sys.executable
    isolation: Isolation | None = None

    def __post_init__(self) -> None:
        self.jobs = self.jobs or os.cpu_count() or 1
        self._iso = self.isolation or isolation(self.python, self.tmp_root)

    @property
    def notes(self) -> tuple[str, ...]:
        return self._iso.notes

    @property
    def mode(self) -> str:
        return self._iso.mode

    def run_all(self, programs: Sequence[str]) -> list[Result]:
        """Each program's result, in order, `jobs` running at once."""
        if len(programs) <= 1 or self.jobs == 1:
            return [self.run(p) for p in programs]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(self.run, programs))

    def run(self, program: str) -> Result:
        key = self._key(program)
        cached = self._cached(key)
        if cached is not None:
            return cached
        result = _execute(program, self.limits, self._iso, self.python, self.tmp_root)
        if not result.setup_failed:
            self._store(key, result)
        return result

    def _key(self, program: str) -> str:
        parts = {
            "version": VERSION,
            "program": program,
            "limits": dataclasses.asdict(self.limits),
            "isolation": self._iso.mode,
            "python": platform.python_version(),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _cached(self, key: str) -> Result | None:
        if self.cache is None:
            return None
        path = self.cache / key[:2] / f"{key}.json"
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Result(**{**values, "cached": True})

    def _store(self, key: str, result: Result) -> None:
        if self.cache is None:
            return
        path = self.cache / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{key}.{threading.get_ident()}.tmp")  # written whole, then renamed
        partial.write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
        os.replace(partial, path)


def default_cache() -> Path:
    """`$XDG_CACHE_HOME/synth/verify`, else `~/.cache/synth/verify`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synth" / "verify"


def _execute(program: str, limits: Limits, iso: Isolation, python: str, tmp_root: str | None) -> Result:
    with tempfile.TemporaryDirectory(prefix="synth-verify-", dir=tmp_root, ignore_cleanup_errors=True) as root:
        work = Path(root) / "work"
        work.mkdir()
        (work / "main.py").write_text(program, encoding="utf-8")
        if iso.user is not None:  # it may pass through the (private) parent, and owns its directory
            os.chmod(root, 0o711)
            os.chown(work, iso.user, iso.user)
            os.chown(work / "main.py", iso.user, iso.user)
        cgroup = _make_cgroup(iso.cgroup_root, limits.processes)
        config = {
            "work": str(work),
            "cgroup": str(cgroup) if cgroup else None,
            "namespaces": bool(iso.unshare),
            "python": python,
            "setpriv": list(iso.setpriv),
            "cpu_seconds": max(1, int(limits.timeout + 0.999)),
            "memory_bytes": limits.memory_mb * 2**20,
            "file_bytes": limits.file_mb * 2**20,
            "nproc": _nproc(iso, cgroup, limits.processes),
        }
        command = [*iso.unshare, python, "-E", "-s", "-B", str(INIT), json.dumps(config)]
        # Output goes to files, not pipes: the file-size limit caps it, and nothing fills our memory.
        with open(Path(root) / "stdout", "w+b") as out, open(Path(root) / "stderr", "w+b") as err:
            started = time.monotonic()
            timed_out, code = _wait(command, work, out, err, limits.timeout, cgroup)
            seconds = round(time.monotonic() - started, 3)
            stdout, stderr = _tail(out, limits.tail_chars), _tail(err, limits.tail_chars)
    return Result(_status(code, timed_out), stdout, stderr, seconds, setup_failed=code == SETUP_FAILED)


def _wait(
    command: list[str], work: Path, out: BinaryIO, err: BinaryIO, timeout: float, cgroup: Path | None
) -> tuple[bool, int]:
    """Run `command` to its end or the timeout; afterwards nothing it started is left running."""
    env = _clean_env(work)
    proc = subprocess.Popen(
        command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
    )
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # an exception of our own (Ctrl-C): the program must not outlive us
            _kill_group(proc.pid)
            proc.wait()
        # Without a pid namespace, processes it started may be left: its session, and its cgroup.
        _kill_group(proc.pid)
        _remove_cgroup(cgroup)
    return timed_out, code


def _status(code: int, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if code == 0:
        return "pass"
    if code == ASSERTION_FAILED:
        return "fail"
    signum = code - 128 if code > 128 else -code
    return "timeout" if signum == signal.SIGXCPU else "error"


def _tail(file: BinaryIO, chars: int) -> str:
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(max(0, size - 4 * chars))
    return file.read().decode("utf-8", errors="replace")[-chars:]


def _clean_env(work: Path) -> dict[str, str]:
    """Nothing of ours: no keys, tokens or proxies reach the program."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, signal.SIGKILL)


def _make_cgroup(root: str | None, processes: int) -> Path | None:
    if root is None:
        return None
    path = Path(root) / f"synth-verify-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    (path / "pids.max").write_text(str(processes))
    return path


def _remove_cgroup(path: Path | None) -> None:
    """Kill what is left in the cgroup, then remove it."""
    if path is None:
        return
    for _ in range(500):
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):  # still busy after 5 s: the kernel removes nothing we need
        path.rmdir()


def _nproc(iso: Isolation, cgroup: Path | None, processes: int) -> int | None:
    """RLIMIT_NPROC for the program, where no cgroup counts its processes. In its own user namespace
    the count starts at zero; outside one it counts every process of the user, so ours are added."""
    if cgroup is not None or (os.geteuid() == 0 and not iso.userns):
        return None  # as root outside a user namespace, RLIMIT_NPROC does not apply
    return processes if iso.userns else _user_processes() + processes


def _user_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            count += entry.name.isdigit() and entry.stat().st_uid == uid
    return count


@functools.cache
def isolation(python: str = sys.executable, tmp_root: str | None = None) -> Isolation:
    """The strongest isolation this machine allows, found by running a small program under each
    candidate, strongest first: as root, namespaces and a pids cgroup; otherwise namespaces inside
    a user namespace where the kernel allows one; else resource limits alone. The probe runs in
    `tmp_root`, where the programs will: `nobody` may pass through one directory and not another."""
    root = os.geteuid() == 0
    cgroup = _pids_cgroup_root() if root else None
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    candidates = []
    if unshare and setpriv:
        namespaces = (unshare, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")
        caps = (setpriv, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")
        nobody = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *caps[1:])
        if root:
            candidates = [Isolation(namespaces, nobody, cgroup, NOBODY), Isolation(namespaces, caps, cgroup)]
            candidates += [Isolation((), nobody, cgroup, NOBODY), Isolation((), caps, cgroup)]
        else:  # root inside a user namespace of its own, mapped to this user
            candidates = [Isolation((unshare, "--user", "--map-root-user", *namespaces[1:]), caps, userns=True)]
    expected = _paths(python)
    chosen = next((c for c in candidates if _works(c, python, expected, tmp_root)), Isolation(cgroup_root=cgroup))
    return dataclasses.replace(chosen, notes=_notes(chosen, root, bool(unshare and setpriv)))


def _notes(chosen: Isolation, root: bool, tools: bool) -> tuple[str, ...]:
    """What `chosen` does not do, in a line each."""
    notes = []
    if not chosen.unshare:
        why = "unshare or setpriv missing" if not tools else "namespaces not allowed here"
        who = "nobody" if chosen.user is not None else "their user"
        notes.append(
            f"no network, mount or pid namespace ({why}): programs can reach the network, "
            f"write wherever {who} can, and see other processes"
        )
    if root and chosen.setpriv and chosen.user is None:
        notes.append(
            "programs run as root without capabilities (nobody cannot run this Python): they read what root reads"
        )
    if root and not chosen.setpriv:
        notes.append("programs run as root with every capability (setpriv missing)")
    if chosen.cgroup_root is None and root:
        notes.append("no pids cgroup could be made: the process count is not limited (RLIMIT_NPROC does not bind root)")
    elif chosen.cgroup_root is None and not chosen.userns:
        notes.append("no pids cgroup (not root): RLIMIT_NPROC limits the processes of all of this user's programs")
    return tuple(notes)


PATHS = "import sys; print(sys.prefix, sys.path[1:])"


def _works(candidate: Isolation, python: str, expected: str, tmp_root: str | None) -> bool:
    """Whether `python` runs under `candidate` as it runs here: a user who cannot read its files
    may still start it, and get another installation's standard library and no packages."""
    result = _execute(PATHS, Limits(timeout=20), candidate, python, tmp_root)
    return result.status == "pass" and result.stdout == expected


def _paths(python: str) -> str:
    done = subprocess.run([python, "-E", "-s", "-c", PATHS], capture_output=True, text=True, timeout=60)
    return done.stdout


def _pids_cgroup_root() -> str | None:
    """A cgroup directory in which we may make children with `pids.max` (v1 `pids`, or v2 with the controller)."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        probe = root / f"synth-verify-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        usable = (probe / "pids.max").exists()
        probe.rmdir()
        if usable:
            _remove_stale(root)
            return str(root)
    return None


def _remove_stale(root: Path) -> None:
    """Remove the empty cgroups of synth runs that were killed outright (their process is gone)."""
    for path in root.glob("synth-verify-*-*"):
        owner = path.name.split("-")[2]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            with contextlib.suppress(OSError):  # not empty: leave it
                path.rmdir()
