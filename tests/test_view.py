"""`synth view`: the page's data, and the page itself in a real headless Chromium with no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synth import recipes, view
from synth.backends import Completion, Prompt, Sampling
from synth.core import StoppedShort, SynthError, from_rows
from synth.io import write
from synth.templates import ChatTemplate, builtin

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">Summarize this'
CARD = {
    "command": "synth magpie --n 40",
    "backend": {"name": "llamacpp", "model": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    "template": "chatml",
    "instruction_sampling": {"temperature": 1.0, "max_tokens": 256},
    "counts": {"attempts": 52, "dropped_instruction_truncated": 9, "dropped_empty": 3, "kept": 40},
}


def _rows(n: int = 40) -> list[dict]:
    topics = ["photosynthesis in plants", "binary search trees", "the French revolution", "prime numbers"]
    rows = []
    for i in range(n):
        instruction = f"Explain {topics[i % 4]} for reader {i}" if i else HOSTILE
        response = f"Here is an answer about {topics[i % 4]}. " + ("More detail. " * (80 if i == 3 else 2))
        rows.append(
            {
                "id": f"r{i:03d}",
                "instruction": instruction,
                "response": response,
                "messages": [
                    {"role": "user", "content": instruction},
                    {"role": "assistant", "content": response},
                ],
                "task": "math" if i % 2 else "writing",
                "input_quality": "poor" if i % 5 == 0 else "good",
                "quality_score": (i % 5) + 1,
                "response_finish_reason": "stop",
            }
        )
    return rows


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write([from_rows(_rows())], tmp_path / "magpie", card=CARD)
    rejected = [
        {"id": "x1", "instruction": "Explain primes", "rejected_by": "input_quality >= good", "dup_cluster": None},
        {"id": "x2", "instruction": "Explain prime numbers!", "rejected_by": None, "dup_cluster": "r003"},
    ]
    write([from_rows(rejected)], tmp_path / "dropped")
    return tmp_path


def test_build_counts_every_row_and_keeps_the_card(dataset: Path) -> None:
    data = view.build(dataset / "magpie", rejects=dataset / "dropped", embed_map=False)
    assert data["total"] == 40 and len(data["rows"]) == 40
    assert data["charts"]["labels"]["input_quality"] == {"good": 32, "poor": 8}
    assert sum(data["charts"]["lengths"]["instruction"]["counts"]) == 40
    assert data["card"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    funnel = [(s["label"], s["value"]) for s in data["card"]["funnel"]]  # a chain: each bar what the last left
    assert funnel == [
        ("attempts", 52),
        ("instruction truncated \u22129", 43),
        ("empty \u22123", 40),
        ("rows on disk", 40),
    ]
    assert [r["_reason"] for r in data["rejects"]] == ["rejected_by: input_quality >= good", "dup_cluster: r003"]
    assert "input_quality" in data["filters"] and "quality_score" in data["filters"]
    assert ("explain", "photosynthesis") in {(v, o) for v, o, _ in data["charts"]["verbs"]}


def test_sample_is_stratified_and_charts_still_use_all_rows(tmp_path: Path) -> None:
    rows = [{"id": str(i), "instruction": f"Write about {i}", "task": "rare" if i < 30 else "c"} for i in range(3000)]
    write([from_rows(rows[:1500]), from_rows(rows[1500:])], tmp_path / "big")
    data = view.build(tmp_path / "big", sample=100, embed_map=False)
    assert data["total"] == 3000 and sum(data["charts"]["lengths"]["instruction"]["counts"]) == 3000
    tasks = [r["task"] for r in data["rows"]]
    assert 95 <= len(tasks) <= 102 and tasks.count("rare") >= 1  # every stratum shows, in proportion
    assert data["rows"] == view.build(tmp_path / "big", sample=100, embed_map=False)["rows"]  # reproducible


def test_root_verb_rule() -> None:
    assert view.root_verb("Can you please write a short poem about cats?") == ("write", "short")
    assert view.root_verb("Explain the theory of relativity") == ("explain", "theory")
    assert view.root_verb("What is the capital of France?") is None


def test_render_keeps_data_inside_its_script_element(dataset: Path) -> None:
    html = view.render(view.build(dataset / "magpie", embed_map=False))
    assert "<script>window.__pwned" not in html and html.count("</script>") == 2
    payload = html.split('id="synth-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(payload)["rows"][0]["instruction"] == HOSTILE


def test_view_refuses_files_it_did_not_write(dataset: Path) -> None:
    mine = dataset / "notes.html"
    mine.write_text("<html>my own page</html>")
    with pytest.raises(SynthError, match="synth did not write it"):
        view.write_view(dataset / "magpie", mine, embed_map=False)
    assert mine.read_text() == "<html>my own page</html>"
    with pytest.raises(SynthError, match="must end in .html"):
        view.write_view(dataset / "magpie", dataset / "magpie" / "data.parquet", embed_map=False)
    first = view.write_view(dataset / "magpie", dataset / "v.html", embed_map=False)
    assert view.write_view(dataset / "magpie", first, embed_map=False) == first  # its own page it replaces


def test_cli_view_and_stats_html(dataset: Path) -> None:
    run = [sys.executable, "-m", "synth"]
    done = subprocess.run(
        [*run, "view", str(dataset / "magpie"), "--no-map", "--out", str(dataset / "page.html")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert 'name="generator" content="synth view"' in (dataset / "page.html").read_text()
    done = subprocess.run(
        [*run, "stats", str(dataset / "magpie"), "--no-tokens", "--html", "--out", str(dataset / "rep")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "synth view" in (dataset / "rep" / "view.html").read_text()
    bad = subprocess.run([*run, "view", str(dataset / "nope")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is needed: the README's test command installs it (apt-get install chromium)"
    return found


def test_page_in_headless_chromium(dataset: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    page_file = view.write_view(dataset / "magpie", tmp_path / "view.html", rejects=dataset / "dropped")
    url = page_file.resolve().as_uri()
    requests, blocked = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.route(
            "**/*", lambda route: route.continue_() if route.request.url == url else (blocked.append(1), route.abort())
        )
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        assert requests == [url] and not blocked and not errors  # nothing but the file itself

        count = page.locator("#row-count")
        assert count.get_attribute("data-total") == "40" and count.get_attribute("data-shown") == "40"
        assert page.locator("#rows article.row").count() == 20  # the first page of 20

        page.fill("#search", "photosynthesis")
        assert count.get_attribute("data-shown") == "10"
        assert all("photosynthesis" in t for t in page.locator("#rows article.row").all_inner_texts())
        page.fill("#search", "")

        page.select_option("#filter-input_quality", "poor")
        assert count.get_attribute("data-shown") == "8"
        page.select_option("#filter-input_quality", "")

        first = page.locator("#rows article.row").first
        assert first.locator(".turn.user").count() == 1 and first.locator(".turn.assistant").count() == 1
        assert page.evaluate("window.__pwned") is None  # the hostile instruction stayed text
        assert "<script>window.__pwned = 1</script>" in first.locator(".turn.user").inner_text()
        assert page.locator("details.folded").count() >= 1  # the long answer is folded

        assert page.locator("#funnel svg rect").count() == 4  # attempts, two drops, rows on disk
        assert page.locator("#chart-grid svg rect").count() > 10
        assert page.locator("#chart-grid svg.map circle").count() == 40  # the embedding map

        page.click("#tab-rejects")
        assert count.get_attribute("data-shown") == "2"
        assert "dup_cluster: r003" in page.locator("#rows").inner_text()

        shot = tmp_path / "view.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000


@dataclass
class _CutAfter:
    """Instructions end; the first `whole` answers end, every later one runs to its length cap."""

    whole: int
    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    name: str = "ollama"
    model: str = "smollm2:135m"
    answered: int = 0

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "template": self.template.family}  # as Ollama's card

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        out = []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                out.append(Completion(f"Describe river number {self.answered}-{i} in two lines?", "stop", 3, 8))
                continue
            self.answered += 1
            cut = self.answered > self.whole
            out.append(Completion("It flows on and on" if cut else "It flows to the sea.", "length" if cut else "stop"))
        return out


@pytest.fixture
def short_run(tmp_path: Path) -> Path:
    """A magpie run that kept 3 of the 4 rows asked for before --max-attempts 32 ran out."""
    out = tmp_path / "short"
    with pytest.raises(StoppedShort):
        run = recipes.RunSettings(command="synth magpie --n 4 --max-attempts 32")
        recipes.magpie(_CutAfter(3), n=4, out=out, max_attempts=32, run=run)
    return out


def test_the_funnel_is_a_chain_ending_at_the_rows_on_disk(short_run: Path) -> None:
    data = view.build(short_run, embed_map=False)
    card, funnel = data["card"], data["card"]["funnel"]
    assert data["total"] == 3 and funnel[0] == {"label": "attempts", "value": 32, "kind": "in"}
    assert funnel[-1] == {"label": "rows on disk", "value": 3, "kind": "out"}
    for before, step in zip(funnel, funnel[1:-1]):  # each step takes what it drops from the bar before
        dropped = int(step["label"].rsplit("\u2212", 1)[1])
        assert step["value"] == before["value"] - dropped, funnel
    assert funnel[-2]["value"] == 3  # the counts explain every row: none unaccounted
    assert card["model"] == "smollm2:135m" and card["backend"] == "ollama"  # the model, not the backend
    assert card["status"].startswith("incomplete: stopped short: --max-attempts 32 reached")
    names = [s["name"] for s in card["stages"]]
    assert "Magpie" in names and "Respond" in names and "DropTruncated" in names
    magpie = card["stages"][names.index("Magpie")]
    assert ["backend", "smollm2:135m"] in magpie["settings"]
    assert any(k == "params" and "max_tokens: 256" in v for k, v in magpie["settings"])


def test_a_two_stage_run_keeps_each_stage_counts_and_the_funnel_reads_them(tmp_path: Path) -> None:
    """Filter keeps 5 of 6 rows, dedup 3 of those 5: the card says 5 and 3, never `kept` 8."""
    import pyarrow.compute as pc

    from synth.io import read_provenance
    from synth.recipes import pipeline
    from synth.stages import dedup_exact
    from synth.stages.filters import Filter, Rule

    texts = ["Name a river.", "Name a river.", "Name a sea.", "ok", "Name a sea.", "Name a lake."]
    short = Rule("short", lambda b: pc.less(pc.utf8_length(b["instruction"]), 5))
    source = [from_rows([{"id": str(i), "instruction": t} for i, t in enumerate(texts)])]
    result = pipeline(source, Filter((short,)), dedup_exact("instruction"), out=tmp_path / "o")
    counts = read_provenance(tmp_path / "o")["counts"]
    assert counts["Filter"]["kept"] == 5 and counts["Filter"]["dropped_short"] == 1
    assert counts["ExactDedup"]["kept"] == 3 and counts["ExactDedup"]["dropped"] == 2
    assert result["rows"] == 3 and read_provenance(tmp_path / "o")["rows"] == 3
    assert read_provenance(tmp_path / "o")["input_rows"] == 6
    funnel = [(s["label"], s["value"]) for s in view.build(tmp_path / "o", embed_map=False)["card"]["funnel"]]
    assert funnel[0] == ("rows in", 6) and funnel[1] == ("short \u22121", 5) and funnel[-1] == ("rows on disk", 3)


def test_a_card_names_the_model_a_server_ran(tmp_path: Path) -> None:
    card = {"backend": "ollama", "model": "smollm2:135m", "response_model": {"backend": "openai", "model": "qwen"}}
    write([from_rows([{"id": "a", "instruction": "Say hi."}])], tmp_path / "d", card=card)
    data = view.build(tmp_path / "d", embed_map=False)["card"]
    assert data["model"] == "smollm2:135m" and data["models"] == [["response model", "qwen"]]
    assert data["funnel"] == []  # no counts: no chart that would claim what happened


def test_a_failed_map_says_why_on_stderr_and_in_the_page(dataset: Path, monkeypatch, capsys) -> None:
    def broken(texts):
        raise RuntimeError("the embedder's weights are missing")

    monkeypatch.setattr(view, "_embed", broken)
    data = view.build(dataset / "magpie")
    assert data["map"] == {"error": "no embedding map: RuntimeError: the embedder's weights are missing"}
    assert "no embedding map (RuntimeError: the embedder's weights are missing)" in capsys.readouterr().err


def test_the_page_reads_as_words_in_chromium(short_run: Path, tmp_path: Path, monkeypatch) -> None:
    """What a person sees: the card's stages by name with their settings, the status and its
    reason, the funnel ending at the rows on disk, the map's error; no raw objects or JSON."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setattr(view, "_embed", lambda texts: (_ for _ in ()).throw(OSError("no model files here")))
    page_file = view.write_view(short_run, tmp_path / "short.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        text = page.inner_text("body")
        card = page.inner_text("#card")
        bars = page.locator("#funnel svg text").all_text_contents()
        browser.close()
    assert not errors
    assert "[object Object]" not in text and "{" not in text and "}" not in text and '":' not in text
    assert "incomplete: stopped short: --max-attempts 32 reached" in card and "smollm2:135m" in card
    assert "Magpie" in card and "max_tokens: 256" in card and "DropTruncated" in card
    assert bars[-2:] == ["rows on disk", "3"]  # the last bar: its label, then its value
    assert "no embedding map: OSError: no model files here" in text
