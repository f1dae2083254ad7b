import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core import SynthError, from_rows
from synth.io import open_output, read, read_provenance, write


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "text": f"t{i}"} for i in range(start, start + n)]


def test_write_makes_a_hub_dataset_that_datasets_and_polars_load(tmp_path) -> None:
    import datasets
    import polars as pl

    batches = [from_rows(_rows(3)), from_rows(_rows(3, 3))]
    write(batches, tmp_path / "out", card={"model": "m"}, shard_rows=3)
    assert sorted(p.name for p in (tmp_path / "out/data").iterdir()) == ["train-00000.parquet", "train-00001.parquet"]
    ds = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert ds["id"] == [f"r{i}" for i in range(6)]
    assert pl.scan_parquet(str(tmp_path / "out/data/*.parquet")).collect().height == 6
    card = (tmp_path / "out/README.md").read_text()
    # no `configs` block: with one, datasets caches by folder name and config, not by the files
    assert card.startswith("---\ntags:") and "configs" not in card and "n<1K" in card
    prov = read_provenance(tmp_path / "out")
    assert prov["rows"] == 6 and prov["model"] == "m" and prov["status"] == "complete"


def test_interrupt_flushes_rows_in_hand(tmp_path) -> None:
    def source():
        yield from_rows(_rows(2))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(source(), tmp_path / "out")
    assert pq.read_table(tmp_path / "out/data").num_rows == 2
    assert not list((tmp_path / "out/data").glob(".*.tmp"))


def test_existing_run_needs_resume_or_overwrite(tmp_path) -> None:
    write([from_rows(_rows(2))], open_output(tmp_path, {"model": "a"}))
    with pytest.raises(SynthError, match="--resume.*--overwrite"):
        open_output(tmp_path, {"model": "a"})
    with pytest.raises(SynthError, match="model: was 'a', now 'b'"):
        open_output(tmp_path, {"model": "b"}, resume=True)
    resumed = open_output(tmp_path, {"model": "a"}, resume=True)
    assert resumed.rows == 2
    write([from_rows(_rows(1, 2))], resumed)
    assert pq.read_table(tmp_path / "data")["id"].to_pylist() == ["r0", "r1", "r2"]
    fresh = open_output(tmp_path, {"model": "b"}, overwrite=True)
    assert fresh.rows == 0 and not list((tmp_path / "data").glob("*.parquet"))


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="synth did not write"):
        open_output(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_null_columns_get_a_stable_type_across_shards(tmp_path) -> None:
    a = pa.table({"id": ["1"], "x": pa.array([None], pa.null())})
    b = pa.table({"id": ["2"], "x": ["v"]})
    write([a, b], tmp_path / "o", shard_rows=1)
    assert pq.read_table(tmp_path / "o/data")["x"].to_pylist() == [None, "v"]


def test_read_jsonl_csv_parquet_text_and_save_to_disk(tmp_path) -> None:
    import datasets

    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": f"j{i}"}) for i in range(5)))
    (tmp_path / "b.csv").write_text("id,text\nx,c0\ny,c1\n")
    pq.write_table(pa.table({"text": ["p0"]}), tmp_path / "c.parquet")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/one.txt").write_text("hello")
    datasets.Dataset.from_dict({"text": ["s0", "s1"]}).save_to_disk(str(tmp_path / "saved"))

    jsonl = list(read(tmp_path / "a.jsonl", batch_size=2))
    assert [b.num_rows for b in jsonl] == [2, 2, 1]
    assert jsonl[0]["id"].to_pylist() == ["a-000000000", "a-000000001"]
    assert [r["id"] for b in read(tmp_path / "b.csv") for r in b.to_pylist()] == ["x", "y"]
    assert next(read(tmp_path / "c.parquet"))["text"].to_pylist() == ["p0"]
    assert next(read(tmp_path / "docs")).to_pylist() == [{"id": "one.txt", "text": "hello"}]
    assert next(read(tmp_path / "saved"))["text"].to_pylist() == ["s0", "s1"]


def test_read_reports_bad_input_clearly(tmp_path) -> None:
    with pytest.raises(SynthError, match="does not exist"):
        read(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(SynthError, match="bad.jsonl:2 is not valid JSON"):
        list(read(tmp_path / "bad.jsonl"))


def test_no_rows_at_all_still_makes_a_readable_dataset(tmp_path) -> None:
    import polars as pl

    write([], tmp_path / "none")
    assert pl.scan_parquet(str(tmp_path / "none/data/*.parquet")).collect().height == 0
    assert pq.read_table(tmp_path / "none/data").column_names == ["id"]


def test_jsonl_column_that_mixes_types_is_read_as_text_with_json_values(tmp_path, capsys) -> None:
    from synth.stages import dedup_exact
    from synth.stages.filters import Filter, heuristic_rules, load_heuristics

    values = ["What is 2 + 2?", 5, None, {"k": [1]}, True, 2.5]
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps({"instruction": v}) for v in values))
    (batch,) = read(tmp_path / "mixed.jsonl")
    assert batch["instruction"].to_pylist() == ["What is 2 + 2?", "5", None, '{"k": [1]}', "true", "2.5"]
    assert "column 'instruction'" in capsys.readouterr().err
    # Batch by batch the same: once a column held text in a file, its later values are text too.
    one_by_one = [v for b in read(tmp_path / "mixed.jsonl", batch_size=1) for v in b["instruction"].to_pylist()]
    assert one_by_one == batch["instruction"].to_pylist()
    # ... and what comes after reading does not crash on it: filter, dedup, write.
    stages = Filter(tuple(heuristic_rules(load_heuristics()))), dedup_exact()
    out = write(stages[1](stages[0](read(tmp_path / "mixed.jsonl"))), tmp_path / "out")
    assert out.rows >= 1


def test_a_column_that_changes_type_between_batches_never_crashes(tmp_path) -> None:
    def lines(*values) -> str:
        return "\n".join(json.dumps({"x": v}) for v in values)

    (tmp_path / "text_first.jsonl").write_text(lines("a", "b", 1, None))
    write(read(tmp_path / "text_first.jsonl", batch_size=2), tmp_path / "o1", shard_rows=2)
    assert pq.read_table(tmp_path / "o1/data")["x"].to_pylist() == ["a", "b", "1", None]
    (tmp_path / "numbers_first.jsonl").write_text(lines(1, 2, "three"))
    with pytest.raises(SynthError, match=r"numbers_first.jsonl:3: column 'x' changes type here: it held only int64"):
        list(read(tmp_path / "numbers_first.jsonl", batch_size=2))
    # What no reader can know ahead (whole numbers, then fractions in a later shard): the writer says so.
    batches = [pa.table({"id": ["a"], "x": [1]}), pa.table({"id": ["b"], "x": [2.5]})]
    with pytest.raises(SynthError, match=r"column 'x' holds int64 values in some rows and double in others"):
        write(batches, tmp_path / "o2", shard_rows=1)


def test_jsonl_that_is_not_utf8_or_not_objects_names_the_file_and_line(tmp_path) -> None:
    (tmp_path / "latin1.jsonl").write_bytes('{"a": "ok"}\n{"a": "café"}\n'.encode("latin-1"))
    with pytest.raises(SynthError, match=r"latin1.jsonl:2 is not UTF-8.*re-save the file as UTF-8"):
        list(read(tmp_path / "latin1.jsonl"))
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(SynthError, match=r"list.jsonl:3 is a JSON list, not an object"):
        list(read(tmp_path / "list.jsonl"))
    (tmp_path / "bom.jsonl").write_bytes('{"a": "é"}\n'.encode("utf-8-sig"))  # a BOM is fine
    assert next(read(tmp_path / "bom.jsonl"))["a"].to_pylist() == ["é"]


def test_corrupt_parquet_and_csv_files_are_named(tmp_path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(SynthError, match=r"cannot read .*junk.parquet: it is not a valid parquet file"):
        list(read(tmp_path / "junk.parquet"))
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(100)]}), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SynthError, match=r"cut.parquet: it is not a valid parquet file"):
        list(read(tmp_path / "cut.parquet"))
    (tmp_path / "ragged.csv").write_text("id,text\na,one\nb\n")
    with pytest.raises(SynthError, match=r"cannot read .*ragged.csv: it is not a valid CSV file"):
        list(read(tmp_path / "ragged.csv"))


def test_an_empty_csv_is_an_empty_dataset(tmp_path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    assert list(read(tmp_path / "empty.csv")) == []
    write(read(tmp_path / "empty.csv"), tmp_path / "out")
    assert pq.read_table(tmp_path / "out/data").num_rows == 0


def test_a_dataset_dict_folder_reads_train_or_else_every_split(tmp_path, capsys) -> None:
    import datasets

    splits = {name: datasets.Dataset.from_dict({"text": [f"{name}{i}" for i in range(2)]}) for name in ("a", "train")}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    assert [r["text"] for b in read(tmp_path / "dd") for r in b.to_pylist()] == ["train0", "train1"]
    assert "DatasetDict; reading its train split only (not a)" in capsys.readouterr().err
    datasets.DatasetDict(dict.fromkeys(("test", "validation"), splits["a"])).save_to_disk(str(tmp_path / "nt"))
    rows = [r for b in read(tmp_path / "nt") for r in b.to_pylist()]
    assert [r["text"] for r in rows] == ["a0", "a1", "a0", "a1"]
    assert len({r["id"] for r in rows}) == 4  # ids run on across the splits
    assert "no train split, so reading all of them in order (test, validation)" in capsys.readouterr().err


@pytest.mark.parametrize(("env", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_dedup_takes_arrow_buffers_from_jemalloc_unless_the_user_names_a_pool(env, expected) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import pyarrow as pa; bare = pa.default_memory_pool().backend_name\n"
        "import synth; before = pa.default_memory_pool().backend_name\n"
        "from synth.io import jemalloc_for_arrow; jemalloc_for_arrow()\n"
        "print(bare, before, pa.default_memory_pool().backend_name)"
    )
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    bare, before, after = done.stdout.split()
    assert after == expected
    assert before == bare  # importing synth changes nothing: only dedup asks for jemalloc
