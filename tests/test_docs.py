"""The documentation site: it builds offline with `mkdocs build --strict` (a broken link, a missing anchor
or any warning fails), its generated CLI reference holds every command and option, its API reference
every public stage, and every public function and class it documents has a docstring."""

from __future__ import annotations

import html
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer

import synth.stages
from synth.cli import app

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = ROOT / "docs" / "reference" / "api"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as CI builds it, with every proxy pointing at a closed port: no network."""
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",  # mkdocs-material's end-of-life banner, not a build warning
        "HF_HUB_OFFLINE": "1",
        **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"), closed),
        "NO_PROXY": "",
        "no_proxy": "",
    }
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out


def commands(command: Any, path: str) -> list[tuple[str, Any]]:
    """Every command of the typer app, walked as `synth --help` lists them, groups' subcommands included."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            found += commands(sub, f"{path} {name}")
    return found


def test_the_site_builds_strict_and_offline(site: Path) -> None:
    pages = sorted(site.rglob("index.html"))
    assert len(pages) >= 30, [str(p.relative_to(site)) for p in pages]
    assert not (site / "hooks.py").exists()  # the build hook is not published
    home = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in home  # theme.font: false, so nothing fetched from Google


def test_the_cli_reference_holds_every_command_and_option(site: Path) -> None:
    page = (site / "reference" / "cli" / "index.html").read_text()
    walked = commands(typer.main.get_command(app), "synth")
    assert {"synth personas from-text", "synth personas expand", "synth verify code", "synth verify math"} <= {
        path for path, _ in walked
    }
    assert len(walked) >= 20
    starts = {path: page.find(f'id="{path.replace(" ", "-")}"') for path, _ in walked}
    missing = [path for path, at in starts.items() if at < 0]
    assert not missing, f"commands missing from the CLI reference: {missing}"
    bounds = sorted(starts.values()) + [len(page)]
    for path, command in walked:
        at = starts[path]
        section = page[at : bounds[bounds.index(at) + 1]]
        assert html.escape(path, quote=False) in section
        for param in command.params:
            flag = param.opts[0] if param.param_type_name == "option" else param.name
            assert html.escape(flag, quote=False) in section, f"{path}: {flag} missing from its section"


def test_the_api_reference_documents_every_public_stage(site: Path) -> None:
    ids = {
        i
        for page in (site / "reference" / "api").rglob("index.html")
        for i in re.findall(r'id="(synth\.[\w.]+)"', page.read_text())
    }
    assert len(synth.stages.__all__) >= 25
    for name in synth.stages.__all__:
        stage = getattr(synth.stages, name)
        rendered = [i for i in ids if i.rsplit(".", 1)[-1] == name and resolve(i) is stage]
        assert rendered, f"synth.stages.{name} is not in the API reference"


def resolve(dotted: str) -> Any:
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute, None)
        return target
    return None


def documented_modules() -> list[ModuleType]:
    """The modules the API pages render (`::: module`), with their public submodules where a page asks."""
    modules: list[ModuleType] = []
    for page in sorted(API_PAGES.rglob("*.md")):
        text = page.read_text()
        for name in re.findall(r"^::: ([\w.]+)", text, re.MULTILINE):
            module = importlib.import_module(name)
            modules.append(module)
            if "show_submodules: true" in text and hasattr(module, "__path__"):
                modules += [
                    importlib.import_module(f"{name}.{info.name}")
                    for info in pkgutil.iter_modules(module.__path__)
                    if not info.name.startswith("_")
                ]
    return modules


def public_names(module: ModuleType) -> list[str]:
    """`__all__`, else the classes and functions the module defines whose names do not start with `_`."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    ]


def has_docstring(value: Any) -> bool:
    doc = (value.__doc__ or "").strip()
    generated = inspect.isclass(value) and doc.startswith(f"{value.__name__}(")  # a dataclass's signature
    return bool(doc) and not generated


def test_every_documented_public_function_and_class_has_a_docstring() -> None:
    modules = documented_modules()
    assert {"synth", "synth.core", "synth.io", "synth.backends", "synth.stages"} <= {m.__name__ for m in modules}
    missing = [m.__name__ for m in modules if not (m.__doc__ or "").strip()]
    for module in modules:
        for name in public_names(module):
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and not has_docstring(value):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"public names without a docstring: {sorted(set(missing))}"


def test_the_docstring_check_catches_a_missing_docstring() -> None:
    from dataclasses import dataclass

    @dataclass
    class Bare:
        x: int

    def bare() -> None:
        pass

    assert not has_docstring(Bare) and not has_docstring(bare)
    assert has_docstring(synth.stages.Magpie) and has_docstring(synth.pipe)


def test_getting_started_holds_the_readme_set_up_commands_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = [line for line in readme.splitlines() if line.startswith(("python3 -m pip install -e", "(command -v"))]
    assert len(setup) == 2, setup
    page = (ROOT / "docs" / "getting-started.md").read_text().splitlines()
    assert all(line in page for line in setup)
