"""The Ray executor against the local one: same seed, same rows."""

import re

import pyarrow.parquet as pq
import pytest

from synth.backends import Completion, Sampling
from synth.core import StoppedShort
from synth.distributed import RayExecutor
from synth.recipes import RunSettings, magpie
from synth.templates import builtin

ray = pytest.importorskip("ray")


def seeded_backend():
    """A backend whose replies depend only on the seed (the same in every process)."""

    class Seeded:
        name, model, chat_tuned = "seeded", "seeded", True
        template = builtin("llama3")

        def generate(self, prompts, params):
            out = []
            for i, prompt in enumerate(prompts):
                seed = params.seed + i
                if isinstance(prompt, str):  # every 4th instruction cut off, every 7th a repeat
                    text = "same again" if seed % 7 == 0 else f"question {seed}"
                    out.append(Completion(text, "length" if seed % 4 == 0 else "stop", 1, 1))
                else:
                    out.append(Completion(f"answer to {prompt[-1]['content']}", "stop", 1, 1))
            return out

    return Seeded()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_writes_the_same_rows_as_local(tmp_path, local_ray) -> None:
    common = {"n": 25, "batch_size": 8, "instruction": Sampling(seed=5), "response": Sampling(seed=5)}
    magpie(seeded_backend(), out=tmp_path / "local", **common)
    magpie(
        seeded_backend(),
        out=tmp_path / "ray",
        make_backend=seeded_backend,
        run=RunSettings(executor=RayExecutor(actors=2, batch_size=8)),
        **common,
    )
    local = pq.read_table(tmp_path / "local/data").to_pylist()
    remote = pq.read_table(tmp_path / "ray/data").to_pylist()
    assert len(local) == 25 and remote == local
    assert sum(r["instruction"] == "same again" for r in remote) == 1  # repeats across actors dropped


def gone_backend():
    """A server backend whose server is gone: its first call stops the run short, as a backend does
    once the server stays away past --server-wait."""

    class Gone:
        name, model, chat_tuned = "gone", "gone", True
        template = builtin("llama3")

        def generate(self, prompts, params):
            raise StoppedShort(
                "the server at <server> stopped answering (connection refused) and did not come back "
                "(--server-wait 0); the rows finished so far are saved: start the server and run the same "
                "command with --resume to go on"
            )

    return Gone()


def test_a_stop_inside_a_ray_actor_stops_the_run_short_as_the_local_run_does(tmp_path, local_ray) -> None:
    """A `StoppedShort` raised in an actor reaches the run as itself, not wrapped in a Ray error: the
    same message (the CLI's last line, exit 3) and the same incomplete card as the local run."""
    from synth.io import read_provenance

    common = {"n": 4, "batch_size": 8, "instruction": Sampling(seed=5), "response": Sampling(seed=5)}
    ray_run = {"run": RunSettings(executor=RayExecutor(actors=1, batch_size=8)), "make_backend": gone_backend}
    said, cards = {}, {}
    for where, extra in (("local", {}), ("ray", ray_run)):
        with pytest.raises(StoppedShort) as stop:
            magpie(gone_backend(), out=tmp_path / where, **common, **extra)
        assert type(stop.value) is StoppedShort  # itself: the CLI exits 3 with its message
        said[where] = str(stop.value).replace(str(tmp_path / where), "OUT")
        cards[where] = read_provenance(tmp_path / where)
    assert said["ray"] == said["local"] and "Traceback" not in said["ray"] and "Ray" not in said["ray"]
    assert said["local"].startswith("stopped short: the server at <server> stopped answering")
    for card in cards.values():
        assert card["status"] == "incomplete" and card["rows"] == 0
    reasons = {where: re.sub(r"rows are in \S+,", "rows are in OUT,", c["reason"]) for where, c in cards.items()}
    assert reasons["ray"] == reasons["local"] and "stopped answering" in reasons["ray"]


def test_a_carried_error_joined_to_other_outputs_comes_after_their_rows() -> None:
    import pickle

    import pyarrow as pa

    from synth.distributed import CARRIED, _raise_carried

    rows = pa.table({"id": ["a", "b"]})
    stop = pa.table({CARRIED: pa.array([pickle.dumps(StoppedShort("gone"))], pa.binary())})
    joined = pa.concat_tables([rows, stop], promote_options="default")  # as Ray may join blocks
    got = _raise_carried(joined)
    assert next(got).to_pylist() == [{"id": "a"}, {"id": "b"}]
    with pytest.raises(StoppedShort, match="^gone$"):
        next(got)
    assert list(_raise_carried(rows)) == [rows]


def test_cli_executor_ray_with_the_embedded_model(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "o"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "synth",
            "magpie",
            "--executor",
            "ray",
            "--actors",
            "1",
            "--n",
            "2",
            "--out",
            str(out),
            "--instruction-max-tokens",
            "24",
            "--response-max-tokens",
            "8",
            "--keep-truncated",  # 8-token answers are cut off; dropped, no row would ever be kept
            "--seed",
            "3",
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=550,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 2 and all(r["instruction"].strip() for r in rows)
    assert all(r["response_finish_reason"] in {"stop", "length"} and r["response"].strip() for r in rows), rows


def test_magpie_air_script_on_ray_writes_the_same_rows_as_local(tmp_path, monkeypatch, local_ray) -> None:
    import runpy
    import sys
    from pathlib import Path

    import synth
    from tests.doubles import FormatBackend

    monkeypatch.setattr(synth, "load_backend", lambda *a, **k: FormatBackend())
    script = Path(__file__).parents[1] / "pipelines" / "magpie_air.py"
    tables = {}
    for executor in ("local", "ray"):
        argv = ["--out", str(tmp_path / executor), "--n", "3", "--max-attempts", "16", "--executor", executor]
        monkeypatch.setattr(sys, "argv", [script.name, *argv, "--actors", "2"])
        runpy.run_path(str(script), run_name="__main__")
        tables[executor] = pq.read_table(tmp_path / executor / "data").to_pylist()
    assert len(tables["local"]) == 3 and tables["ray"] == tables["local"]
    assert "on_ray(local, actors=2)" in (tmp_path / "ray" / "README.md").read_text()
