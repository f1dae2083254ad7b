"""The diversity figures in `synth view`'s page, read as a person sees them in headless Chromium."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import pytest

from synth import view
from synth.core import from_rows
from synth.io import write

pytest.importorskip("model2vec")


def docstring_lines(k: int) -> list[str]:
    """First lines of stdlib docstrings: real, varied English text."""
    import collections
    import json
    import os
    import subprocess
    import textwrap

    found: list[str] = []
    for module in (os, re, json, collections, textwrap, subprocess):
        for name in sorted(dir(module)):
            doc = getattr(getattr(module, name), "__doc__", None)
            line = doc.strip().split("\n")[0] if isinstance(doc, str) else ""
            if len(line.split()) >= 5 and line not in found:
                found.append(line)
    assert len(found) >= k
    return found[:k]


def _dataset(path: Path, texts: list[str]) -> Path:
    write([from_rows([{"id": f"r{i:03d}", "instruction": t} for i, t in enumerate(texts)])], path)
    return path


def _read_page(page_file: Path) -> tuple[str, str, list[str]]:
    """(the diversity panel's text, the whole page's text, page errors) in headless Chromium."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        panel = page.locator(".chart", has=page.locator("#diversity")).inner_text()
        text = page.inner_text("body")
        browser.close()
    return panel, text, errors


def _vendi(panel: str) -> float:
    return float(re.search(r"Vendi score\s+([\d.]+) \(95% interval [\d.]+–[\d.]+\)", panel).group(1))


def test_the_page_shows_the_diversity_figures_in_words(tmp_path: Path) -> None:
    varied = docstring_lines(60)
    repetitive = [f"Return the path of file number {i}." for i in range(60)]
    pages = {}
    for name, texts in (("varied", varied), ("repetitive", repetitive)):
        data = _dataset(tmp_path / name, texts)
        pages[name] = (view.build(data)["diversity"], _read_page(view.write_view(data, tmp_path / f"{name}.html")))
    figures, (panel, text, errors) = pages["varied"]
    assert not errors
    assert "diversity of instruction" in panel and "all 60 rows" in panel and "static" in panel
    assert _vendi(panel) == pytest.approx(figures["vendi"], abs=0.005)  # the page shows what synth diversity measured
    assert f"{figures['distinct_1']:.3f} / {figures['distinct_2']:.3f}" in panel
    assert f"bits over {figures['k']} clusters" in panel and "nearest-neighbour similarity" in panel
    shown = re.findall(r"^\s*\d+\.\d% · (.+)$", panel, re.MULTILINE)  # each cluster: its share and its label
    assert len(shown) == figures["k"] == 10
    assert all(label in varied for label in shown)  # a label is one of the set's own rows
    assert "[object Object]" not in panel and "{" not in panel and "NaN" not in panel
    assert _vendi(panel) > 3 * _vendi(pages["repetitive"][1][0])  # a reader can tell the two sets apart


def test_a_sampled_set_says_so_and_a_set_without_text_says_why(tmp_path: Path, monkeypatch) -> None:
    data = _dataset(tmp_path / "d", docstring_lines(80))
    monkeypatch.setattr(view, "_diversity", functools.partial(view._diversity, sample=50))
    panel, _, errors = _read_page(view.write_view(data, tmp_path / "d.html"))
    assert not errors and "a uniform sample of 50 of 80 rows" in panel
    write([from_rows([{"id": "a", "score": 1}, {"id": "b", "score": 2}])], tmp_path / "numbers")
    panel, _, errors = _read_page(view.write_view(tmp_path / "numbers", tmp_path / "n.html"))
    assert not errors and "no diversity figures: no text column" in panel


def test_no_map_measures_nothing(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d", docstring_lines(10))
    assert view.build(data, embed_map=False)["diversity"] is None
