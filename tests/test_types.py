"""mypy on synth/ at the strictness stated in pyproject.toml ([tool.mypy]): no error.

The cache goes to a fresh temporary folder, so the first run is cold and sees nothing of an earlier
session; the second test reuses it (its file imports synth.core, already analysed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mypy(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)]
    return subprocess.run([*argv, *args], cwd=ROOT, capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def test_synth_type_checks_clean(cache: Path) -> None:
    done = mypy("--no-error-summary", "synth", cache=cache)
    assert done.returncode == 0, f"mypy found type errors in synth/:\n{done.stdout}{done.stderr}"
    assert done.stdout.strip() == "", done.stdout


def test_the_check_can_fail(tmp_path: Path, cache: Path) -> None:
    """The same configuration reports a wrong return type and a function without annotations (the
    stated strictness): the clean result above is not vacuous."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from synth.core import Batch\n\n\ndef rows(batch: Batch) -> int:\n    return str(batch)\n\n\n"
        "def untyped(x):\n    return x\n"
    )
    done = mypy(str(bad), cache=cache)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad.py:5: error: Incompatible return value type" in done.stdout, done.stdout
    assert "bad.py:8: error: Function is missing a type annotation  [no-untyped-def]" in done.stdout, done.stdout
