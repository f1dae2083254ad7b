"""`synth synthesize` and `synth think` as a user runs them, on the embedded model and the fixture corpus."""

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.cards import flat
from tests.test_cli import synth

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
DOCS = {p.name: p.read_text() for p in CORPUS.iterdir() if p.suffix in {".txt", ".md"} and p.name != "scan.txt"}
DOCS = {name: text for name, text in DOCS.items() if text.strip()}
SFT_COLUMNS = ["id", "source_id", "chunk", "instruction", "response", "messages", "finish_reason"]


def provenance(out: Path) -> dict:
    card = (out / "README.md").read_text()
    return json.loads(card[card.index("```json") + 7 : card.rindex("```")])


def check_corpus_counts(out: Path) -> dict:
    counts = flat(provenance(out)["counts"])
    assert counts["documents_text"] == 3 and counts["documents_empty"] == 1 and counts["documents_binary"] == 1
    assert counts["chunks"] == 3 == counts["chunks_generated"]
    return counts


def test_prompt_mode_end_to_end(tmp_path) -> None:
    out = tmp_path / "sft"
    done = synth("synthesize", str(CORPUS), "--out", str(out), "--pairs", "1", "--max-tokens", "64", "--seed", "3")
    assert done.returncode == 0, done.stderr
    counts = check_corpus_counts(out)
    table = pq.read_table(out / "data")
    assert table.column_names == [*SFT_COLUMNS, "task", "mode", "model"]
    assert table.num_rows == counts["kept"] >= 1
    for row in table.to_pylist():
        assert row["source_id"] in DOCS and row["id"].startswith(f"{row['source_id']}#{row['chunk']}-")
        assert row["messages"][0]["content"] == row["instruction"] and row["mode"] == "prompt"


def test_instruction_pretrain_mode_end_to_end_with_pretrain_text(tmp_path) -> None:
    out, text_out = tmp_path / "sft", tmp_path / "pt"
    args = ["--mode", "instruction-pretrain", "--rounds", "2", "--max-tokens", "24", "--seed", "3"]
    done = synth("synthesize", str(CORPUS), "--out", str(out), "--pretrain-out", str(text_out), *args)
    assert done.returncode == 0, done.stderr
    counts = check_corpus_counts(out)
    # A small general model rarely speaks the synthesizer's format, so this run may keep no pair (the
    # double below must keep them all); kept or not, the output has the full schema and every count.
    table = pq.read_table(out / "data")
    assert table.column_names == [*SFT_COLUMNS, "mode", "model"] and table.num_rows == counts["kept"]
    chains = pq.read_table(text_out / "data").to_pylist()
    linked = [name for chain in chains for name in chain["source_ids"]]
    assert sorted(linked) == sorted(DOCS)  # every document in exactly one chain
    for chain in chains:
        assert chain["text"].startswith(DOCS[chain["source_ids"][0]].strip())
    assert provenance(text_out)["mode"] == "instruction-pretrain"


def test_instruction_pretrain_on_a_format_following_double_writes_sft_rows_and_linked_text(tmp_path) -> None:
    # The embedded model rarely speaks the synthesizer's format, so the test above may see no SFT
    # rows; a double that does makes sure the rows, their schema and their links are right.
    from synth import Sampling
    from synth.recipes import synthesize
    from tests.doubles import FormatBackend

    out, text_out = tmp_path / "sft", tmp_path / "pt"
    params = Sampling(max_tokens=24, seed=3)
    synthesize(FormatBackend(), CORPUS, out=out, mode="instruction-pretrain", pretrain_out=text_out, params=params)
    counts = check_corpus_counts(out)
    table = pq.read_table(out / "data")
    assert table.column_names == [*SFT_COLUMNS, "mode", "model"]
    rows = table.to_pylist()
    assert len(rows) == counts["kept"] == 3  # one pair per chunk
    for row in rows:
        assert row["source_id"] in DOCS and row["id"] == f"{row['source_id']}#{row['chunk']}-0"
        assert row["messages"] == [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
        ]
    chains = pq.read_table(text_out / "data").to_pylist()
    assert sorted(name for chain in chains for name in chain["source_ids"]) == sorted(DOCS)
    text = "\n".join(chain["text"] for chain in chains)
    assert all(row["instruction"] in text and row["response"] in text for row in rows)  # pairs laid into the text
    assert sum(chain["pairs"] for chain in chains) == len(rows)


def test_think_end_to_end(tmp_path) -> None:
    out = tmp_path / "think"
    # 24 tokens for speed: thinking cut off there is dropped by default; --keep-truncated keeps it, counted
    done = synth("think", str(CORPUS), "--out", str(out), "--max-tokens", "24", "--seed", "3", "--keep-truncated")
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out / "data").to_pylist()
    assert rows and {r["source_id"] for r in rows} <= set(DOCS)
    cut = sum(r["thinking_finish_reason"] == "length" for r in rows)
    assert flat(provenance(out)["counts"]).get("kept_truncated", 0) == cut
    for row in rows:
        assert set(row) == {
            "id",
            "source_id",
            "chunk",
            "text",
            "thinking",
            "thinking_tokens",
            "thinking_finish_reason",
            "model",
        }
        assert row["text"] == f"{DOCS[row['source_id']].strip()}\n\n{row['thinking']}"
        assert row["thinking"] and 0 < row["thinking_tokens"] <= 24


def test_unknown_mode_is_a_usage_error(tmp_path) -> None:
    done = synth("synthesize", str(CORPUS), "--out", str(tmp_path / "o"), "--mode", "fancy")
    assert done.returncode == 2 and "instruction-pretrain" in done.stderr and "Traceback" not in done.stderr


def test_synthesize_on_web_pages_and_a_pdf_traces_every_pair_to_its_file_and_page(tmp_path) -> None:
    # Real documents (python3.11-doc's manual, shared-mime-info's spec): each pair names its file,
    # page and title, and that page of that file is the text its chunk was cut from.
    import shutil

    import pypdf

    from synth import Sampling
    from synth.io import read
    from synth.recipes import synthesize
    from tests.doubles import FormatBackend

    folder = tmp_path / "docs"
    (folder / "tutorial").mkdir(parents=True)
    for name in ("appetite", "controlflow"):
        shutil.copy(f"/usr/share/doc/python3.11/html/tutorial/{name}.html", folder / "tutorial" / f"{name}.html")
    spec = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
    shutil.copy(spec, folder / "spec.pdf")
    out = tmp_path / "sft"
    llm = FormatBackend()
    params = Sampling(max_tokens=24, seed=3)
    args = {"mode": "instruction-pretrain", "rounds": 1, "params": params, "chunk_tokens": 300, "overlap_tokens": 40}
    synthesize(llm, folder, out=out, **args)
    card = provenance(out)
    assert card["chunk_tokens"] == 300 and card["overlap_tokens"] == 40
    assert flat(card["counts"])["files_pdf"] == 1 and flat(card["counts"])["files_html"] == 2
    documents = {r["id"]: r for batch in read(folder) for r in batch.to_pylist()}
    rows = pq.read_table(out / "data").to_pylist()
    pdf_rows = [r for r in rows if r["source"].endswith("spec.pdf")]
    assert {r["source"] for r in rows} == {str(folder / "spec.pdf"), *(str(p) for p in folder.glob("tutorial/*"))}
    assert len(pdf_rows) >= 17 and len(rows) == flat(card["counts"])["kept"]
    reference = pypdf.PdfReader(spec)
    for row in rows:
        origin = documents[row["source_id"]]
        assert (row["source"], row["page"], row["title"]) == (origin["source"], origin["page"], origin["title"])
    for row in pdf_rows:  # the page number is the page's: its text is that page's text
        theirs = set(reference.pages[row["page"] - 1].extract_text().split())
        ours = set(documents[row["source_id"]]["text"].split())
        assert len(theirs & ours) >= 0.8 * len(theirs)
    prompts = [p for call in llm.calls for p in call]
    assert any("4.1. if Statements" in p for p in prompts)  # the page's body went to the model
    assert not any("Show Source" in p or "Report a Bug" in p for p in prompts)  # its navigation did not
