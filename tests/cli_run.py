"""Running a `synth` command in the test's own process, as a user's shell would, for its exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def run_main(argv: Sequence[Any], monkeypatch, backend: object | None = None) -> int:
    """`synth ARGV` (each item as text) in this process: its exit code. With `backend`, every model
    the command loads is that one (a double), so no model file is read."""
    from synth import cli

    if backend is not None:
        monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: backend)
    monkeypatch.setattr(sys, "argv", ["synth", *[str(a) for a in argv]])
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
