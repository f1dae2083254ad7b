import pyarrow as pa
import pytest

from synth.core import SynthError, add_columns, counter_source, from_rows, pipe, rebatch, take
from synth.stages import Respond
from tests.conftest import ScriptedBackend


def test_pipe_is_lazy_and_preserves_ids() -> None:
    pulled = []

    def source():
        for i in range(3):
            pulled.append(i)
            yield from_rows([{"id": f"r{i}", "instruction": f"q{i}"}])

    llm = ScriptedBackend(replies=["a0", "a1", "a2"])
    stream = pipe(source(), Respond(llm))
    assert pulled == [] and llm.calls == []  # nothing ran yet
    first = next(stream)
    assert pulled == [0] and len(llm.calls) == 1
    rest = list(stream)
    ids = [i for b in [first, *rest] for i in b["id"].to_pylist()]
    assert ids == ["r0", "r1", "r2"]
    assert [b["response"][0].as_py() for b in [first, *rest]] == ["a0", "a1", "a2"]


def test_take_stops_upstream_without_pulling_another_batch() -> None:
    pulled = []

    def source():
        for batch in counter_source(batch_size=4):
            pulled.append(batch["id"][0].as_py())
            yield batch

    out = list(pipe(source(), take(6)))
    assert sum(b.num_rows for b in out) == 6
    assert pulled == ["000000000", "000000004"]


def test_counter_source_ids_continue_from_start() -> None:
    first = next(counter_source(batch_size=3, start=7))
    assert first["id"].to_pylist() == ["000000007", "000000008", "000000009"]


def test_rebatch_regroups_rows_in_order() -> None:
    batches = [from_rows([{"id": str(i)} for i in range(k, k + 3)]) for k in (0, 3, 6)]
    sizes = [b.num_rows for b in rebatch(batches, 4)]
    assert sizes == [4, 4, 1]
    assert [i for b in rebatch(batches, 4) for i in b["id"].to_pylist()] == [str(i) for i in range(9)]


def test_from_rows_needs_ids_and_casts_them_to_strings() -> None:
    assert from_rows([{"id": 5, "x": 1}])["id"].type == pa.string()
    with pytest.raises(SynthError, match="`id`"):
        from_rows([{"x": 1}])


def test_add_columns_overwrites_existing() -> None:
    batch = add_columns(from_rows([{"id": "a", "x": 1}]), x=[2], y=["z"])
    assert batch.to_pylist() == [{"id": "a", "x": 2, "y": "z"}]
