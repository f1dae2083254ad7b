"""Kill a run with SIGKILL at several points, resume it, and compare with an unbroken run row for row.

Each recipe runs in a child process (resume_child.py) on a deterministic test backend; side
outputs (`--pretrain-out`, `--rejects`) must match the unbroken run's too.
"""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

CHILD = [sys.executable, str(Path(__file__).with_name("resume_child.py"))]
N = 30
# recipe -> (rows asked for, main-output columns compared, side-output columns compared or None)
RECIPES = {
    "magpie": (N, ["id", "instruction", "response"], None),
    "synthesize": (16, ["id", "source_id", "instruction", "response"], ["id", "text", "source_ids"]),
    "personas": (20, ["id", "persona_id", "instruction", "instruction_status", "response"], None),
    "personas-dedup": (24, ["id", "source_id", "persona", "dup_cluster"], None),
    "filter": (40, ["id", "instruction", "response"], ["id", "rejected_by"]),
    "respond": (40, ["id", "instruction", "response", "response_finish_reason"], None),
    "judge": (40, ["id", "instruction", "input_quality", "input_quality_explanation", "judge_status"], None),
    "dedup": (40, ["id", "instruction"], ["id", "instruction"]),
    "embedded": (6, ["id", "persona_id", "instruction_raw", "instruction_status"], None),
}


def _run(out, resume: bool, mode: str = "gen", recipe: str = "magpie") -> subprocess.CompletedProcess:
    n = RECIPES[recipe][0]
    argv = [*CHILD, str(out), str(n), "1" if resume else "0", mode, recipe]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _kill_when(out, marker: str, mode: str, recipe: str = "magpie") -> None:
    argv = [*CHILD, str(out), str(RECIPES[recipe][0]), "0", mode, recipe]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.strip() == marker:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"{marker} never came"


def _rows(out, columns: list[str]) -> list[dict]:
    return pq.read_table(Path(out) / "data").select(columns).to_pylist()


def _datasets(out: Path, recipe: str) -> tuple[list[dict], list[dict] | None]:
    _, main, side = RECIPES[recipe]
    return _rows(out, main), (_rows(out.parent / "side", side) if side else None)


_UNBROKEN: dict[str, tuple[list[dict], list[dict] | None]] = {}


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    def get(recipe: str) -> tuple[list[dict], list[dict] | None]:
        if recipe not in _UNBROKEN:
            out = tmp_path_factory.mktemp(f"unbroken-{recipe}") / "o"
            done = _run(out, resume=False, recipe=recipe)
            assert done.returncode == 0, done.stderr
            _UNBROKEN[recipe] = _datasets(out, recipe)
        return _UNBROKEN[recipe]

    return get


def _kill_and_resume(
    tmp_path, recipe: str, marker: str, mode: str, shards: int = 1
) -> tuple[list[dict], list[dict] | None]:
    """Kill at `marker`, check that at least `shards` main shards were finished, resume."""
    import json

    out = tmp_path / "o"
    _kill_when(out, marker, mode, recipe)
    assert len(json.loads((out / ".synth" / "state.json").read_text())["shards"]) >= shards  # a real resume
    done = _run(out, resume=True, recipe=recipe)
    assert done.returncode == 0, done.stderr
    return _datasets(out, recipe)


@pytest.mark.parametrize("marker,mode", [("GEN 2", "gen"), ("GEN 7", "gen"), ("GEN 13", "gen"), ("WRITING", "write")])
def test_sigkill_then_resume_gives_the_unbroken_dataset(tmp_path, unbroken, marker, mode) -> None:
    out = tmp_path / "o"
    _kill_when(out, marker, mode)
    if marker != "GEN 2":  # by then complete shards are on disk, so the resume really resumes
        assert 0 < len(_rows(out, ["id"])) < N
    done = _run(out, resume=True)
    assert done.returncode == 0, done.stderr
    rows = _rows(out, RECIPES["magpie"][1])
    assert len(rows) == N and len({r["id"] for r in rows}) == N
    assert rows == unbroken("magpie")[0]


def test_unbroken_run_is_sane(unbroken) -> None:
    rows = unbroken("magpie")[0]
    assert len(rows) == N
    assert all(r["response"] == f"answer to {r['instruction']}" for r in rows)
    assert not any(int(r["instruction"][1:]) % 5 == 0 for r in rows)  # the cut-off ones were dropped


@pytest.mark.parametrize(
    "recipe,marker,mode,shards",
    [
        ("synthesize", "GEN 5", "gen", 1),
        ("synthesize", "SIDE", "side", 1),
        ("synthesize", "WRITING", "write", 0),  # the side's first commit: main and side shards no state lists
        ("personas", "GEN 6", "gen", 1),
        ("personas", "WRITING", "write", 1),
        ("personas-dedup", "GEN 5", "gen", 1),
        ("filter", "READ 6", "gen", 1),
        ("filter", "SIDE", "side", 1),
    ],
)
def test_other_recipes_resume_to_the_unbroken_dataset_side_outputs_too(
    tmp_path, unbroken, recipe, marker, mode, shards
) -> None:
    rows, side = _kill_and_resume(tmp_path, recipe, marker, mode, shards)
    want_rows, want_side = unbroken(recipe)
    assert len({r["id"] for r in rows}) == len(rows)  # none twice
    assert rows == want_rows  # none lost, same ids, same order
    if want_side is not None:
        assert len({r["id"] for r in side}) == len(side)
        assert side == want_side


def test_a_real_model_run_killed_and_resumed_matches_the_unbroken_one(tmp_path, unbroken) -> None:
    # llama.cpp samples each prompt with its own seed, so a resumed batch decodes as it would have.
    rows, _ = _kill_and_resume(tmp_path, "embedded", "GEN 3", "gen")
    assert len(rows) == RECIPES["embedded"][0] and rows == unbroken("embedded")[0]


def test_a_kill_leaves_the_side_output_ahead_of_the_main_state_and_resume_rewinds_it(tmp_path, unbroken) -> None:
    import json

    out = tmp_path / "o"
    _kill_when(out, "SIDE", "side", "filter")
    state = json.loads((out / ".synth" / "state.json").read_text())
    side_state = json.loads((tmp_path / "side" / ".synth" / "state.json").read_text())
    recorded = state["checkpoint"]["sides"][0]["shards"]
    assert len(side_state["shards"]) > recorded  # the window this design has to survive
    done = _run(out, resume=True, recipe="filter")
    assert done.returncode == 0, done.stderr
    assert _datasets(out, "filter") == unbroken("filter")


def test_unbroken_side_outputs_are_sane(unbroken) -> None:
    rows, chains = unbroken("synthesize")
    documents = RECIPES["synthesize"][0]
    with_pairs = [k for k in range(documents) if k % 4 != 3]
    assert len(rows) == 2 * len(with_pairs) and len(chains) == documents  # every chunk has a chain
    assert all(c["text"].startswith(f"Document number {int(c['source_ids'][0].split('-')[-1])} ") for c in chains)
    kept, rejects = unbroken("filter")
    assert len(kept) + len(rejects) == RECIPES["filter"][0] and kept and rejects
    assert {r["rejected_by"] for r in rejects} == {"response_length", "greeting"}
    people = unbroken("personas")[0]
    assert len(people) == RECIPES["personas"][0]
    assert {r["instruction_status"] for r in people} == {"ok", "missing_prefix"}
    personas = unbroken("personas-dedup")[0]
    assert sorted(r["persona"] for r in personas) == sorted(f"A reader who loves topic {k}." for k in range(10))


def test_ctrl_c_inside_a_stage_keeps_that_batch_for_the_resume(tmp_path) -> None:
    """A finite input: the batch a stage holds when Ctrl-C lands is neither written nor skipped."""
    import pyarrow.parquet as pq

    from synth.core import from_rows
    from synth.recipes import RunSettings, pipeline
    from synth.recipes._runner import Interrupted

    source = [from_rows([{"id": f"r{i}", "text": str(i)} for i in range(k, k + 5)]) for k in (0, 5, 10)]
    calls = {"n": 0}

    def flaky(batches):  # interrupts while it holds the third batch, once
        for batch in batches:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            yield batch

    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        pipeline(iter(source), flaky, out=out, settings={"x": 1})
    assert sorted(pq.read_table(out / "data").column("id").to_pylist()) == [f"r{i}" for i in range(10)]
    pipeline(iter(source), flaky, out=out, settings={"x": 1}, run=RunSettings(resume=True))
    ids = pq.read_table(out / "data").column("id").to_pylist()
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"r{i}" for i in range(15)]


# The recipes killed at seeded random moments; a moment is a marker (a backend call, or a batch read
# for the recipes without a model) and a random delay after it, inside the work that follows.
KILLED = ["magpie", "respond", "judge", "filter", "dedup", "synthesize"]
KILLS = 5


@pytest.fixture(scope="module")
def server():
    """One child that forks a run per request (see resume_child.serve): 36 runs without 36 start-ups.
    SIGINT at its default there, whatever this process's is (see test_cli's Ctrl-C test)."""
    proc = subprocess.Popen(
        [*CHILD, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


def _served(server, out, recipe: str, resume: bool, marker: int = 0, delay: float = 0.0) -> tuple[int, int]:
    """Run (or resume) `recipe` in a forked child; at its `marker`-th marker wait `delay` s and SIGKILL
    it (marker 0: let it finish). Returns the child's exit code (-9 when killed) and the markers seen."""
    out.parent.mkdir(parents=True, exist_ok=True)  # the child writes its input there
    server.stdin.write(f"{out} {RECIPES[recipe][0]} {int(resume)} gen {recipe}\n")
    server.stdin.flush()
    pid, seen = None, 0
    for line in server.stdout:
        if line.startswith("PID "):
            pid = int(line.split()[1])
        elif line.startswith(("GEN ", "READ ")):
            seen += 1
            if seen == marker:
                time.sleep(delay)
                with contextlib.suppress(ProcessLookupError):  # it may have ended within the delay
                    os.kill(pid, signal.SIGKILL)
        elif line.startswith("EXIT "):
            return int(line.split()[1]), seen
    raise AssertionError("the run server died")


@pytest.mark.parametrize("recipe", KILLED)
def test_five_seeded_random_kills_then_resume_give_the_unbroken_dataset(tmp_path, unbroken, server, recipe) -> None:
    """SIGKILL at five seeded random moments (a marker anywhere in the run, then a random delay inside
    the work after it), each followed by --resume: no row lost, none twice, the main and side outputs
    equal to an unbroken run. Kills chain (a resumed run is killed again); a resumed run that ends
    before its kill point is checked and the next kill starts a fresh run."""
    rng = random.Random(f"kill-{recipe}")
    code, markers = _served(server, tmp_path / "full" / "o", recipe, resume=False)  # side outputs go beside o
    assert code == 0 and markers >= 4 and _datasets(tmp_path / "full" / "o", recipe) == unbroken(recipe)
    want = unbroken(recipe)
    survived, with_rows, chain = 0, 0, 0
    out = tmp_path / "0" / "o"
    while survived < KILLS:
        resume = (out / ".synth" / "state.json").exists()
        code, _ = _served(server, out, recipe, resume, marker=rng.randint(1, markers), delay=rng.uniform(0, 0.08))
        if code == 0:  # the resumed run ended before its kill point: check it, start a fresh chain
            assert _datasets(out, recipe) == want
            chain += 1
            out = tmp_path / str(chain) / "o"
            continue
        assert code == -signal.SIGKILL, f"{recipe}: the run failed ({code})"
        survived += 1
        state = json.loads((out / ".synth" / "state.json").read_text()) if resume or out.exists() else {}
        with_rows += bool(state.get("shards"))
    assert _served(server, out, recipe, resume=True)[0] == 0
    rows, side = _datasets(out, recipe)
    assert len({r["id"] for r in rows}) == len(rows)  # none twice
    assert rows == want[0]  # none lost, same rows in the same order
    assert side == want[1]
    assert with_rows >= 2  # kills landed after shards were written too: those resumes really resumed
