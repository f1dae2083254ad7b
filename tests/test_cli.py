"""The `synth` command as a user runs it: a subprocess, its exit code and its words."""

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.cards import flat

# Small caps for speed: answers cut off at 16 tokens are kept (--keep-truncated), not dropped as the default does.
FAST = ["--instruction-max-tokens", "48", "--response-max-tokens", "16", "--keep-truncated", "--seed", "7"]


def synth(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("argv", [["--help"], ["magpie", "--help"]])
def test_help_imports_no_heavy_module(argv) -> None:
    code = (
        "import sys\nsys.argv = ['synth', *sys.argv[1:]]\nfrom synth.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('llama_cpp', 'torch', 'vllm', 'sentence_transformers', 'datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "Usage" in out.stdout


def test_magpie_end_to_end_with_the_embedded_model(tmp_path) -> None:
    import datasets

    out = tmp_path / "demo"
    done = synth("magpie", "--n", "8", "--out", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    assert "Wrote 8 rows" in done.stderr and "template chatml" in done.stderr
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.num_rows == 8
    assert {
        "id",
        "instruction",
        "response",
        "messages",
        "instruction_finish_reason",
        "response_finish_reason",
        "model",
    } <= set(ds.column_names)
    assert len(set(ds["id"])) == 8
    for row in ds:
        assert row["instruction"] and row["instruction_finish_reason"] == "stop"
        # --keep-truncated keeps answers cut off at 16 tokens, never empty ones
        assert row["response"].strip() and row["response_finish_reason"] in {"stop", "length"}, row
        assert row["messages"] == [
            {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]},
        ]
    card = (out / "README.md").read_text()
    prov = json.loads(card[card.index("```json") + 7 : card.rindex("```")])
    assert prov["backend"] == "llamacpp" and prov["template"] == "chatml" and prov["counts"]["Magpie"]["kept"] >= 8
    assert prov["model"].startswith("SmolLM2-135M-Instruct") and prov["chat_tuned"]
    assert prov["command"].startswith("synth magpie --n 8")


def _error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize("n", ["0", "-3"])
def test_n_must_be_positive(tmp_path, n) -> None:
    err = _error(synth("magpie", "--n", n, "--out", str(tmp_path / "o")))
    assert len(err.strip().splitlines()) == 1, err  # one line, not click's usage box
    assert err.startswith("synth: error: ") and "'--n'" in err and "synth magpie --help" in err


def test_missing_model_path(tmp_path) -> None:
    err = _error(synth("magpie", "--model", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "o")))
    assert "does not exist" in err and ".gguf" in err


def test_unknown_template_family(tmp_path) -> None:
    err = _error(synth("magpie", "--template", "vicuna9", "--n", "1", "--out", str(tmp_path / "o")))
    assert "unknown chat template family 'vicuna9'" in err and "llama3" in err and "--template" in err


def test_output_dir_holding_another_run(tmp_path) -> None:
    (tmp_path / "o/.synth").mkdir(parents=True)
    (tmp_path / "o/.synth/state.json").write_text(json.dumps({"settings": {"model": "x"}, "shards": []}))
    err = _error(synth("magpie", "--n", "1", "--out", str(tmp_path / "o")))
    assert "--overwrite" in err and "--resume" in err


def test_unwritable_output_path(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    err = _error(synth("magpie", "--n", "1", "--out", str(tmp_path / "file" / "sub")))
    assert "cannot write" in err
    assert "is a file" in _error(synth("magpie", "--n", "1", "--out", str(tmp_path / "file")))


@pytest.mark.timeout(1500)  # waits up to 15 minutes for rows on a loaded machine (about 90 s on an idle one)
def test_ctrl_c_keeps_complete_shards_and_resume_finishes(tmp_path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    args = [sys.executable, "-m", "synth", "magpie", "--n", "400", "--out", str(out), *FAST]
    # SIGINT at its default in the child: a shell's background job (`pytest &`) ignores it, and the
    # child would inherit that
    default_sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=_env(), preexec_fn=default_sigint)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 900  # generous: a loaded 2-core machine decodes slowly

    def shown() -> int:
        return max((int(k) for k in re.findall(r"\| *(\d+)/400", "".join(seen))), default=0)

    # The bar counts rows as their answers end; past 32 (the first window's attempts) that window's
    # rows have gone through to the writer, and Ctrl-C must keep them.
    while shown() <= 32 and proc.poll() is None:
        assert time.monotonic() < deadline, "no row past the first window in 15 minutes: " + "".join(seen)[-2000:]
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted: " + "".join(seen)[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(seen)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    kept = pq.read_table(out / "data").num_rows
    assert kept >= 1 and f"{kept} rows are safe" in err

    done = synth("magpie", "--n", str(kept + 2), "--out", str(out), "--resume", *FAST)
    assert done.returncode == 0, done.stderr
    ids = pq.read_table(out / "data")["id"].to_pylist()
    assert len(ids) == kept + 2 and len(set(ids)) == len(ids)

    changed = synth("magpie", "--n", "9", "--out", str(out), "--resume", "--system-prompt", "Be nice.", *FAST)
    assert "system_prompt" in _error(changed)


def test_two_turn_magpie_with_a_gguf_path(tmp_path) -> None:
    import pyarrow.parquet as pq

    from synth.backends.llamacpp import default_model_path

    out = tmp_path / "chat"
    args = ["--model", str(default_model_path()), "--n", "2", "--turns", "2", "--exact-turns", "--out", str(out)]
    done = synth("magpie", *args, "--max-attempts", "32", "--system-prompt", "You are a tutor.", *FAST)
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 2, done.stderr  # --exact-turns: only whole two-turn conversations are written
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"] and row["turns"] == 2
        assert all(m["content"] for m in row["messages"])
        assert row["messages"][0] == {"role": "system", "content": "You are a tutor."}
        assert row["messages"][1]["content"] == row["instruction"] and row["system_prompt"] == "You are a tutor."
        assert row["messages"][2]["content"] == row["response"]
    card = (out / "README.md").read_text()
    counts = flat(json.loads(card[card.index("```json") + 7 : card.rindex("```")])["counts"])
    ended = sum(v for k, v in counts.items() if k.startswith("ended_") and not k.startswith("ended_at_turn_"))
    assert ended == counts.get("ended_at_turn_2", 0) == counts.get("dropped_short", 0)


def test_respond_command_on_jsonl_and_on_messages(tmp_path) -> None:
    import pyarrow.parquet as pq

    src = tmp_path / "in.jsonl"
    conv = [{"role": "user", "content": "Say hi."}]  # answered in full at 64 tokens with seed 1
    src.write_text(
        "\n".join(
            json.dumps({"instruction": q, "messages": conv, "level": i})
            for i, q in enumerate(["Say hi.", "Count to three."])
        )
    )
    done = synth("respond", str(src), "--out", str(tmp_path / "a"), "--max-tokens", "64", "--seed", "1")
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(tmp_path / "a/data").to_pylist()
    assert [r["level"] for r in rows] == [0, 1]
    # a real model at 64 tokens stops or is cut off; "error" (a failed request) is never a pass
    assert all(r["response_finish_reason"] in {"stop", "length"} and r["response"].strip() for r in rows), rows
    # "Say hi." is answered in full at 64 tokens; a cut-off answer would be no training row (null messages)
    assert rows[0]["response_finish_reason"] == "stop", rows[0]
    assert rows[0]["messages"][-2:] == [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": rows[0]["response"]},
    ]
    assert (rows[1]["messages"] is None) == (rows[1]["response_finish_reason"] == "length")
    done = synth(
        "respond",
        str(src),
        "--out",
        str(tmp_path / "b"),
        "--messages-column",
        "messages",
        "--max-tokens",
        "64",
        "--seed",
        "1",
    )
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(tmp_path / "b/data").to_pylist()
    assert len(rows) == 2 and all(r["response"].strip() for r in rows), rows
    assert rows[0]["response_finish_reason"] == "stop", rows[0]
    assert rows[0]["messages"] == [*conv, {"role": "assistant", "content": rows[0]["response"]}]


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = _error(done).strip().splitlines()
    assert lines[-1].startswith("synth: error: ") and not any(line.startswith("  ") for line in lines), lines
    return lines[-1]


def test_respond_checks_its_input_before_claiming_the_output(tmp_path) -> None:
    import pyarrow.parquet as pq

    out, src = tmp_path / "o", tmp_path / "in.jsonl"
    assert "does not exist" in _one_line(synth("respond", str(src), "--out", str(out)))
    src.write_text("\n".join(json.dumps({"question": q, "n": 1}) for q in ["Say hi.", None]))
    err = _one_line(synth("respond", str(src), "--out", str(out)))
    assert "no column 'instruction'" in err and "question" in err and "--column" in err
    err = _one_line(synth("respond", str(src), "--out", str(out), "--messages-column", "question"))
    assert "not conversations" in err and "--messages-column" in err
    assert "not text" in _one_line(synth("respond", str(src), "--out", str(out), "--column", "n"))
    assert not (out / ".synth").exists()

    # Fixed, the same --out takes the run with no --overwrite; the null question is marked, not fatal.
    done = synth("respond", str(src), "--out", str(out), "--column", "question", "--max-tokens", "8", "--seed", "1")
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out / "data").to_pylist()
    assert [r["response_finish_reason"] == "error" for r in rows] == [False, True]
    assert rows[1]["response_error"] == "question is null"
    assert rows[0]["response"].strip() and rows[0]["response_finish_reason"] in {"stop", "length"}
    # an answer cut off at 8 tokens keeps its text, says why, and is no training row (null messages)
    cut = rows[0]["response_finish_reason"] == "length"
    assert (rows[0]["response_error"] is not None) == cut and (rows[0]["messages"] is None) == cut


def test_more_turns_need_responses(tmp_path) -> None:
    err = _one_line(synth("magpie", "--n", "1", "--turns", "2", "--no-responses", "--out", str(tmp_path / "o")))
    assert "--turns 2 needs responses" in err and "--no-responses" in err
    assert not (tmp_path / "o" / ".synth").exists()


def test_the_shared_option_groups_reach_every_command_in_full() -> None:
    import typer.main

    from synth.cli import app

    def commands(group, prefix: str = "") -> dict[str, set[str]]:
        found = {}
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group: personas, verify
                found.update(commands(command, f"{prefix}{name} "))
            else:
                found[prefix + name] = {o for p in command.params for o in p.opts}
        return found

    every = commands(typer.main.get_command(app))
    server = {"--backend", "--base-url", "--api-key-env", "--concurrency", "--tensor-parallel-size"}
    server |= {"--gpu-memory-utilization", "--max-model-len", "--batch-size", "--threads", "--verbose"}
    saving = {"--overwrite", "--resume", "--push-to-hub", "--private"}
    with_server = {name for name, opts in every.items() if "--base-url" in opts}
    with_saving = {name for name, opts in every.items() if "--push-to-hub" in opts}
    assert len(with_server) >= 11 and {"magpie", "respond", "judge", "prefs", "verify math"} <= with_server
    assert len(with_saving) >= 14 and {"dedup", "filter", "decontaminate", "verify code"} <= with_saving
    for name in with_server - {"decontaminate"}:  # its --batch-size is rows read, not sequences decoded
        assert server <= every[name], name
    for name in with_saving:
        assert saving <= every[name], name


def test_the_command_named_is_built_alone_with_the_same_help_and_the_app_stays_whole() -> None:
    from typer.testing import CliRunner

    from synth.cli import app
    from synth.cli._shared import invoked

    whole = len(app.registered_commands)
    narrow = invoked(["dedup", "in.jsonl", "--out", "o"])
    assert [c.callback.__name__ for c in narrow.registered_commands] == ["dedup"] and not narrow.registered_groups
    assert [g.name for g in invoked(["verify", "code", "x"]).registered_groups] == ["verify"]
    assert invoked(["--help"]) is app and invoked(["no-such-command"]) is app and invoked([]) is app
    assert len(app.registered_commands) == whole > 10
    for argv in (["dedup", "--help"], ["verify", "code", "--help"]):
        alone, full = CliRunner().invoke(invoked(argv), argv), CliRunner().invoke(app, argv)
        assert alone.exit_code == full.exit_code == 0 and alone.output == full.output
