"""The dataset card's diversity block: a run ends by measuring its main text column (as
`synth diversity` does) into the card's JSON and its README, or says why it could not."""

from __future__ import annotations

import importlib.util
import re

import pyarrow.parquet as pq
import pytest

from synth import cli, recipes
from synth.core import from_rows
from synth.io import read_provenance
from synth.recipes import diversity as rdiv
from synth.stages import diversity as div
from tests.cli_run import run_main
from tests.doubles import FormatBackend

pytest.importorskip("model2vec")


def magpie(tmp_path, monkeypatch, *extra: str, n: int = 40):
    """`synth magpie` on the format double (in this process): the output folder."""
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: FormatBackend())
    out = tmp_path / "o"
    assert run_main(["magpie", "--n", n, "--out", out, "--quiet", *extra], monkeypatch) == 0
    return out


def docstrings(k: int) -> list[str]:
    """First lines of stdlib docstrings: real, varied English text."""
    import collections
    import json
    import os
    import textwrap

    found: list[str] = []
    for module in (os, re, json, collections, textwrap, importlib.util):
        for name in sorted(dir(module)):
            doc = getattr(getattr(module, name), "__doc__", None)
            line = doc.strip().split("\n")[0] if isinstance(doc, str) else ""
            if len(line.split()) >= 5 and line not in found:
                found.append(line)
    return found[:k]


def run_rows(tmp_path, texts: list[str], name: str = "o") -> dict:
    """A pipeline run that writes `texts` as `instruction` rows: its card's diversity block."""
    rows = [{"id": f"r{i}", "instruction": t} for i, t in enumerate(texts)]
    recipes.pipeline(iter([from_rows(rows)]), out=tmp_path / name)
    return read_provenance(tmp_path / name)["diversity"]


def test_a_magpie_run_writes_its_instructions_diversity_into_the_card(tmp_path, monkeypatch, capsys, real_static):
    out = magpie(tmp_path, monkeypatch)
    block = read_provenance(out)["diversity"]
    kept = pq.read_table(out / "data")["instruction"].to_pylist()
    assert block["column"] == "instruction" and block["rows"] == block["sample"] == len(kept) == 40
    assert 1 < block["vendi"] <= 40 and block["vendi_per_row"] == pytest.approx(block["vendi"] / 40)
    lo, hi = block["vendi_interval"]
    assert lo < block["vendi"] < hi
    assert 0 < block["distinct_1"] <= block["distinct_2"] <= 1
    assert -1 <= block["nn_similarity"] <= 1 and block["embedder"].startswith("static")
    assert sum(c["size"] for c in block["clusters"]) == 40 and 0 < block["entropy_bits"] <= block["k"]
    assert {c["label"] for c in block["clusters"]} <= set(kept)  # each label is a kept row
    # The same figures `synth diversity` gives on the output.
    again = rdiv.diversity(out)
    assert again["vendi"] == pytest.approx(block["vendi"]) and again["distinct_2"] == block["distinct_2"]
    readme = (out / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Diversity") : readme.index("## Provenance")]
    assert f"| {block['vendi']:.2f} | {lo:.2f}-{hi:.2f} |" in section
    assert f"| distinct-2 (unique word pairs / pairs) | {block['distinct_2']:.3f} |" in section
    assert "measured on 40 rows" in section and section.count("\n- ") == len(block["clusters"])
    err = capsys.readouterr().err.splitlines()
    assert f"Vendi score {block['vendi']:.1f}" in err[-2] and err[-1].startswith("Wrote 40 rows")  # summary last


def test_identical_rows_give_a_vendi_score_of_one_and_varied_ones_more(tmp_path, real_static) -> None:
    texts = docstrings(60)
    same = run_rows(tmp_path, [texts[0]] * 50, "same")
    assert same["vendi"] == pytest.approx(1.0, abs=1e-3) and same["nn_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert same["entropy_bits"] == 0 and same["rows"] == same["sample"] == 50
    varied = run_rows(tmp_path, texts, "varied")
    assert 10 < varied["vendi"] <= 60 and varied["distinct_2"] > same["distinct_2"]


def test_a_large_output_is_measured_on_a_uniform_sample(tmp_path, real_static) -> None:
    texts = docstrings(400)
    rows = [f"{texts[i % len(texts)]} (row {i})" for i in range(div.SAMPLE + 1500)]
    block = run_rows(tmp_path, rows)
    assert (block["rows"], block["sample"]) == (div.SAMPLE + 1500, div.SAMPLE)
    readme = (tmp_path / "o" / "README.md").read_text(encoding="utf-8")
    assert f"a uniform sample of {div.SAMPLE} of its {div.SAMPLE + 1500} rows" in readme


def test_without_a_built_embedder_the_card_says_why_and_the_run_succeeds(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no static embedder distilled there
    out = magpie(tmp_path, monkeypatch, n=5)
    block = read_provenance(out)["diversity"]
    assert block["column"] == "instruction" and "vendi" not in block
    assert block["absent"].startswith("the static embedder is not built yet") and "synth diversity" in block["absent"]
    assert pq.read_table(out / "data").num_rows == 5
    assert not (tmp_path / "cache" / "synth").exists()  # the run never distils it
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "No diversity figures for `instruction`: the static embedder is not built yet" in readme
    assert "no diversity figures in the card: the static embedder is not built yet" in capsys.readouterr().err


def test_without_model2vec_the_card_names_the_extra_to_install(tmp_path, monkeypatch) -> None:
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "model2vec" else found(name, *a))
    block = run_rows(tmp_path, ["Write a poem about the sea.", "Explain how a compiler works."])
    assert block == {
        "column": "instruction",
        "absent": "the static embedder needs model2vec: pip install 'synth[embed]'",
    }


def test_a_failing_measure_is_the_cards_reason_not_the_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(rdiv, "static_missing", lambda: None)

    def broken(*args, **kwargs):
        raise RuntimeError("no BLAS here")

    monkeypatch.setattr(div, "measure", broken)
    block = run_rows(tmp_path, ["Write a poem about the sea.", "Explain how a compiler works."])
    assert block["absent"] == "measuring failed: RuntimeError: no BLAS here"
    assert pq.read_table(tmp_path / "o" / "data").num_rows == 2


def test_no_diversity_turns_it_off_and_the_card_says_so(tmp_path, monkeypatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("measured under --no-diversity")

    monkeypatch.setattr(rdiv, "card_diversity", refuse)
    out = magpie(tmp_path, monkeypatch, "--no-diversity", n=3)
    assert read_provenance(out)["diversity"] == {"column": None, "absent": "not measured (--no-diversity)"}
    err = capsys.readouterr().err
    assert "Vendi" not in err and "diversity figures" not in err


def test_dedup_measures_the_column_it_deduplicates(tmp_path, monkeypatch) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "Say hi.", "note": "a"}\n{"prompt": "Say hi.", "note": "b"}\n', encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run_main(["dedup", source, "--column", "prompt", "--out", tmp_path / "d"], monkeypatch) == 0
    block = read_provenance(tmp_path / "d")["diversity"]
    assert block["column"] == "prompt" and block["absent"].startswith("the static embedder is not built yet")


def test_diverse_runs_the_measured_settings(tmp_path, monkeypatch) -> None:
    """`synth magpie --diverse`: the gate at the tuned distance and spreading over the topics, in the card."""
    out = magpie(tmp_path, monkeypatch, "--diverse", n=12)
    card = read_provenance(out)
    assert card["novelty"] == rdiv.DIVERSE["novelty"] == 0.3
    assert card["spread"] == "topics"
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 12 and all(r["spread_item"] for r in rows)
