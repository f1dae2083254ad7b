"""The first process of a verify sandbox, run by path (standard library only, nothing from synth).

Inside fresh mount, network and pid namespaces (made by `unshare`) it joins the run's pids
cgroup, makes every mount read-only except the work directory, then forks the program with its
resource limits and without privileges (`setpriv`), and waits. It is pid 1 of the namespace, so
when it exits the kernel kills every process the program left behind.

Exit codes: the program's own; 128 + N when a signal N ended it; 125 when the sandbox itself
could not be set up (the reason is on stderr).
"""

import ctypes
import json
import os
import resource
import struct
import sys

MS_REMOUNT, MS_BIND = 32, 4096
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
SYS_MOUNT_SETATTR = 442  # the same number on every architecture since Linux 5.12
SETUP_FAILED = 125
# The program runs as __main__; a failed assert is told apart from any other error by exit code 101.
RUNNER = (
    "import runpy, sys, traceback\n"
    "try:\n"
    "    runpy.run_path('main.py', run_name='__main__')\n"
    "except AssertionError:\n"
    "    traceback.print_exc()\n"
    "    sys.exit(101)\n"
)


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        if config["cgroup"]:
            with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as procs:
                procs.write("0")  # this process; every process it starts is counted with it
        if config["namespaces"]:
            read_only_except(config["work"])
    except OSError as exc:
        print(f"synth sandbox: set-up failed: {exc}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    pid = os.fork()
    if pid == 0:
        run_program(config)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def read_only_except(work: str) -> None:
    """Every mount of this (private) mount namespace read-only, then `work` bound back read-write."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0))
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, attr, 32) != 0:
        _fail(libc, "mount_setattr(/, read-only) (needs Linux 5.12 or later)")
    if libc.mount(work.encode(), work.encode(), None, MS_BIND, None) != 0:
        _fail(libc, f"bind {work}")
    if libc.mount(None, work.encode(), None, MS_REMOUNT | MS_BIND, None) != 0:
        _fail(libc, f"remount {work} read-write")
    os.chdir(work)  # the working directory was the one under the new mount: take the mount's


def _fail(libc: ctypes.CDLL, what: str) -> None:
    errno = ctypes.get_errno()
    raise OSError(errno, f"{what}: {os.strerror(errno)}")


def run_program(config: dict) -> None:
    """In the forked child: limits, then exec the program without capabilities (never returns)."""
    try:
        seconds = int(config["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (config["memory_bytes"],) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (config["file_bytes"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if config["nproc"]:
            resource.setrlimit(resource.RLIMIT_NPROC, (config["nproc"],) * 2)
        program = [config["python"], "-E", "-s", "-B", "-c", RUNNER]
        argv = [*config["setpriv"], *program]  # setpriv execs the program once it has dropped privileges
        os.execv(argv[0], argv)
    except OSError as exc:
        print(f"synth sandbox: could not start the program: {exc}", file=sys.stderr, flush=True)
    os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main()
