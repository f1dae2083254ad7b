"""--push-to-hub on every writing command, checked before any model loads; vLLM flags; one-line usage errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth import cli
from tests.cli_run import run_main

WRITERS = [
    ["magpie"],
    ["respond"],
    ["judge"],
    ["filter"],
    ["prefs"],
    ["synthesize"],
    ["think"],
    ["personas", "from-text"],
    ["personas", "expand"],
    ["personas", "generate"],
    ["dedup"],
]
LLM_COMMANDS = [c for c in WRITERS if c not in (["filter"], ["dedup"])]
WIDE = {"TERMINAL_WIDTH": "200", "COLUMNS": "200"}  # rich wraps narrower help


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command gets as far as loading a model."""

    def load(*args, **kwargs):
        raise AssertionError(f"a model was loaded: {args} {kwargs}")

    monkeypatch.setattr(cli._shared, "load_backend", load)


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
def test_every_writing_command_takes_push_to_hub(command) -> None:
    result = CliRunner().invoke(cli.app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "--push-to-hub" in result.output and "--private" in result.output


@pytest.mark.parametrize("command", LLM_COMMANDS, ids=" ".join)
def test_every_llm_command_takes_the_vllm_options(command) -> None:
    result = CliRunner().invoke(cli.app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for flag in ("--tensor-parallel-size", "--gpu-memory-utilization", "--max-model-len"):
        assert flag in result.output


def _inputs(tmp_path) -> dict[str, str]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "Hi?", "response": "Hello.", "text": "Some text."}) + "\n")
    return {"source": str(rows)}


ARGS = {  # what each command needs besides --out, so that only the repo id is wrong
    "magpie": [],
    "respond": ["{source}"],
    "judge": ["{source}"],
    "filter": ["{source}"],
    "prefs": ["{source}"],
    "synthesize": ["{source}"],
    "think": ["{source}"],
    "personas from-text": ["{source}"],
    "personas expand": ["starter"],
    "personas generate": [],
    "dedup": ["{source}"],
}


@pytest.mark.parametrize("command", WRITERS, ids=" ".join)
@pytest.mark.parametrize("repo", ["no-slash", "a/b/c", "org/bad--name", "-org/name"])
def test_a_bad_repo_id_stops_with_one_line_before_any_model_loads(
    command, repo, tmp_path, monkeypatch, capsys, no_model
) -> None:
    out = tmp_path / "out"
    args = [a.format(**_inputs(tmp_path)) for a in ARGS[" ".join(command)]]
    assert run_main([*command, *args, "--out", str(out), "--push-to-hub", repo], monkeypatch) == 2
    line = error_line(capsys)
    assert line.startswith("synth: error: --push-to-hub") and repr(repo) in line and "ORG/NAME" in line
    assert not out.exists()  # nothing made: the check ran first


def test_push_to_hub_without_huggingface_hub_says_what_to_install(tmp_path, monkeypatch, capsys, no_model) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "huggingface_hub" else real(name))
    assert run_main(["magpie", "--out", str(tmp_path / "o"), "--push-to-hub", "me/set"], monkeypatch) == 2
    assert "pip install huggingface-hub" in error_line(capsys)


def test_push_to_hub_in_offline_mode_stops_before_the_run(tmp_path, monkeypatch, capsys, no_model) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_main(["judge", "x.jsonl", "--out", str(tmp_path / "o"), "--push-to-hub", "me/set"], monkeypatch) == 2
    assert "HF_HUB_OFFLINE" in error_line(capsys)


def test_vllm_options_reach_load_backend(tmp_path, monkeypatch) -> None:
    from tests.conftest import ScriptedBackend

    seen: list[dict] = []

    def load(model, backend, **options):
        seen.append({"model": model, "backend": backend, **options})
        return ScriptedBackend(replies=["Q?", "A."])

    monkeypatch.setattr(cli._shared, "load_backend", load)
    flags = ["--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.5", "--max-model-len", "4096"]
    argv = ["magpie", "--model", "org/m", "--backend", "vllm", *flags, "--n", "1", "--max-attempts", "1"]
    result = CliRunner().invoke(cli.app, [*argv, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "o" / "data")["response"].to_pylist() == ["A."]
    assert seen[0]["model"] == "org/m" and seen[0]["backend"] == "vllm"
    assert (seen[0]["tensor_parallel_size"], seen[0]["gpu_memory_utilization"], seen[0]["max_model_len"]) == (
        2,
        0.5,
        4096,
    )


def test_vllm_options_unset_leave_other_backends_alone(tmp_path, monkeypatch) -> None:
    from tests.conftest import ScriptedBackend

    seen: list[dict] = []
    load = lambda *a, **k: seen.append(k) or ScriptedBackend(replies=["Q?", "A."])  # noqa: E731
    monkeypatch.setattr(cli._shared, "load_backend", load)
    result = CliRunner().invoke(cli.app, ["magpie", "--n", "1", "--max-attempts", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "o" / "data")["response"].to_pylist() == ["A."]
    assert seen[0]["tensor_parallel_size"] is None and seen[0]["max_model_len"] is None  # load_backend drops None


def test_a_vllm_option_on_llama_cpp_is_refused_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    # the real load_backend: llama.cpp's options refuse the keyword before any model file is opened
    code = run_main(["magpie", "--tensor-parallel-size", "2", "--n", "1", "--out", str(tmp_path / "o")], monkeypatch)
    assert code == 2
    line = error_line(capsys)
    assert "--tensor-parallel-size" in line and "does not apply to the llamacpp backend" in line


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["magpie", "--n", "0"], "--n"),
        (["magpie", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["dedup"], "'source'"),
        (["judge", "x.jsonl", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(argv, option, tmp_path, monkeypatch, capsys, no_model) -> None:
    assert run_main([*argv, "--out", str(tmp_path / "o")], monkeypatch) == 2
    line = error_line(capsys)
    assert line.startswith("synth: error: ") and option in line
    assert line.endswith(f"; see `synth {argv[0]} --help`")


def test_help_and_version_still_exit_0(monkeypatch, capsys) -> None:
    assert run_main(["magpie", "--help"], monkeypatch) == 0
    assert "--push-to-hub" in capsys.readouterr().out
    assert run_main(["--version"], monkeypatch) == 0
    assert capsys.readouterr().out.strip()


def test_bare_synth_still_shows_the_help(monkeypatch, capsys) -> None:
    code = run_main([], monkeypatch)
    assert code == 2  # click's convention for no_args_is_help: the help, on a usage-error code
    captured = capsys.readouterr()
    assert "magpie" in captured.out + captured.err and "error" not in captured.err
