"""Runs that fail say so, untrusted chat templates are bounded, token counts degrade gracefully, and
the OpenAI-compatible backend asks for a chat template only where raw prompts need one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synth.backends import Completion, Metered, Sampling
from synth.core import SynthError
from synth.templates import ChatTemplate, builtin, from_jinja
from tests.conftest import ScriptedBackend
from tests.test_secrets import _commands, _inputs, run_main

# ---------------------------------------------------------------- every command obeys the error rate


@pytest.mark.parametrize("name", list(_commands({k: Path(k) for k in ("instructions", "documents", "personas")})))
def test_a_run_whose_every_request_fails_never_exits_0(name, tmp_path, monkeypatch, capfd) -> None:
    pytest.importorskip("openai")
    from tests.backends.openai_server import serve

    argv = _commands(_inputs(tmp_path / "in"))[name]
    with serve(fail_all=400, tokenize=True) as server:  # 400: refused for good, no retries
        code = run_main(
            [*argv, "--out", str(tmp_path / "o"), "--base-url", server.url, "--model", server.model], monkeypatch
        )
        assert server.completions(), name  # it did try
    err = capfd.readouterr().err
    assert code == 3, err  # stopped short: what it kept (nothing) is on disk, the card says incomplete
    last = err.strip().splitlines()[-1]
    assert last.startswith("synth: error: ") and "requests failed" in last and "injected fault 400" in last, last
    assert "Traceback" not in err
    from synth.io import read_provenance

    card = read_provenance(tmp_path / "o")  # every command: the card says the run did not finish, and why
    assert card["status"] == "incomplete" and "requests failed" in card["reason"], name


def test_judge_and_prefs_stop_past_max_error_rate(tmp_path) -> None:
    from synth import recipes

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "instruction": "Q", "response": "A"}) + "\n" for i in range(60)))
    failed = Completion("", "error", error="server answered 503")
    good = '{"explanation": "fine", "score": 4}'
    # 10 of 60 fail (17%): over the default 5%, under an explicit 50%
    replies = [failed if i % 6 == 0 else good for i in range(60)]
    with pytest.raises(SynthError, match=r"10 of 60 requests failed.*over the allowed 5\.0%.*server answered 503"):
        recipes.judge([ScriptedBackend(list(replies))], src, out=tmp_path / "a", rubrics=["response"])
    result = recipes.judge(
        [ScriptedBackend(list(replies))],
        src,
        out=tmp_path / "b",
        rubrics=["response"],
        run=recipes.RunSettings(max_error_rate=0.5),
    )
    assert result["rows"] == 60
    with pytest.raises(SynthError, match=r"requests failed.*over the allowed"):
        recipes.prefs(ScriptedBackend([failed] * 120), [ScriptedBackend([good] * 120)], src, out=tmp_path / "c", k=2)


def test_the_cli_declares_max_error_rate_on_every_command_with_a_backend() -> None:
    import typer.main

    from synth import cli

    click_app = typer.main.get_command(cli.app)
    commands = _commands({k: Path(k) for k in ("instructions", "documents", "personas")})
    for name in commands:
        command = click_app
        for part in name.split():
            command = command.commands[part]
        assert "--max-error-rate" in [o for p in command.params for o in p.opts], name


def test_metered_finish_fails_a_short_run_whose_every_request_failed() -> None:
    meter = Metered(ScriptedBackend([Completion("", "error", error="refused")] * 3), max_error_rate=0.05)
    meter.generate(["a", "b", "c"], Sampling())  # 3 requests: under min_requests, so no stop yet
    with pytest.raises(SynthError, match=r"all 3 requests failed.*refused"):
        meter.finish()
    fine = Metered(ScriptedBackend(["ok", Completion("", "error", error="refused")]), max_error_rate=0.05)
    fine.generate(["a", "b"], Sampling())
    fine.finish()  # one of two failed, too few requests to judge a rate: the run stands


# ---------------------------------------------------------------- the OpenAI backend's chat template


def test_chat_commands_need_no_template_for_an_unknown_model_name(tmp_path, monkeypatch, capfd) -> None:
    pytest.importorskip("openai")
    from tests.backends.openai_server import serve

    inputs = _inputs(tmp_path / "in")
    with serve(model="my-org/custom-model") as server:
        common = ["--base-url", server.url, "--model", server.model, "--max-tokens", "8"]
        for name in ("respond", "judge"):
            code = run_main([name, str(inputs["instructions"]), "--out", str(tmp_path / name), *common], monkeypatch)
            assert code == 0, capfd.readouterr().err
            assert pq.read_table(tmp_path / name / "data").num_rows == 2, name  # a row for each instruction
        chat = [b for p, b in server.requests if p == "/v1/chat/completions"]
        assert chat and all("messages" in b for b in chat)
        assert "template server" in capfd.readouterr().err  # the server applies its own
        # raw prompts do need one: magpie says so before it makes its output
        server.requests.clear()
        argv = ["magpie", "--n", "1", "--out", str(tmp_path / "m"), "--base-url", server.url, "--model", server.model]
        assert run_main(argv, monkeypatch) == 2
        assert (
            "matches no known family" in capfd.readouterr().err
            and "--template" in capfd.readouterr().err + "--template"
        )
        assert not list((tmp_path / "m").glob("*")) and not server.completions()  # nothing written, nothing asked
        assert run_main([*argv, "--template", "chatml", "--instruction-max-tokens", "8"], monkeypatch) == 0
        assert pq.read_table(tmp_path / "m" / "data").num_rows == 1


# ---------------------------------------------------------------- untrusted chat templates


HOSTILE = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "loop over a built list": "{% set l = range(99999)|list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "huge string": "{{ 'x' * 10**9 }}",
    "huge power": "{{ 10 ** 10 ** 10 }}",
    "huge padding filter": "{{ 'x'|center(10**9) }}",
    "huge padding method": "{{ 'x'.ljust(10**9) }}",
    "long output": "{% for i in range(100000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}",
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_template_stops_with_one_line_naming_its_source(kind, monkeypatch) -> None:
    monkeypatch.setattr("synth.templates.RENDER_SECONDS", 0.5)
    template = from_jinja(HOSTILE[kind], origin="tokenizer.chat_template in evil.gguf")
    started = time.monotonic()
    with pytest.raises(SynthError) as caught:
        template.pre_query()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and "tokenizer.chat_template in evil.gguf" in message and "--template" in message


def test_a_template_that_drops_the_marker_says_so() -> None:
    template = from_jinja("{% for m in messages %}{{ m.role }}:{% endfor %}", origin="chat_template.jinja")
    with pytest.raises(SynthError, match=r"chat_template\.jinja\).*dropped the user message.*--template"):
        template.pre_query()
    with pytest.raises(SynthError, match="dropped"):
        _ = template.assistant_prefix


def test_bounds_leave_real_templates_and_long_prompts_alone() -> None:
    long = "word " * 50_000  # 250k characters: a long document, well past the fixed part of the cap
    for family in ("llama3", "chatml", "gemma", "mistral", "phi3", "phi4", "qwen2.5"):
        template: ChatTemplate = builtin(family)
        assert long.strip() in template.render([{"role": "user", "content": long}])
        assert template.response_stop and template.pre_query()


# ---------------------------------------------------------------- token counts


class _StopsCounting:
    """Counts like a server until it stops reporting counts (Ollama leaving out prompt_eval_count)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def count_tokens(self, text: str) -> int:
        if self.left <= 0:
            raise NotImplementedError("the Ollama server reports no prompt_eval_count")
        self.left -= 1
        return len(text.split())


def test_token_counting_falls_back_once_when_the_server_stops_counting(capsys) -> None:
    from synth.tokens import token_counter

    count = token_counter(_StopsCounting(good=2))  # the probe takes one
    assert count("two words") == 2
    assert [count("héllo there"), count("abc")] == [12, 3]  # UTF-8 bytes from here on
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped counting tokens" in err[0] and "prompt_eval_count" in err[0]


def test_ollama_omitting_prompt_eval_count_mid_run_is_no_traceback(tmp_path, monkeypatch, capfd) -> None:
    pytest.importorskip("ollama")
    from tests.backends.ollama_server import Model, serve

    calls = []

    def respond(prompt, params):  # counts for the first two requests, then none (the probe is the first)
        calls.append(prompt)
        pairs = json.dumps({"pairs": [{"instruction": "What?", "response": "That."}]})  # prompt mode's format
        return Completion(pairs, "stop", len(str(prompt).split()) if len(calls) <= 2 else -1, 4)

    docs = _inputs(tmp_path / "in")["documents"]
    with serve({"m:1": Model(respond, template="<|im_start|>user\n{{ .Prompt }}<|im_end|>")}) as server:
        argv = ["synthesize", str(docs), "--out", str(tmp_path / "o"), "--backend", "ollama", "--base-url", server.url]
        code = run_main([*argv, "--model", "m:1", "--max-tokens", "16", "--context-tokens", "4096"], monkeypatch)
    err = capfd.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert pq.read_table(tmp_path / "o" / "data")["response"].to_pylist() == ["That.", "That."]  # one per document
    assert len(calls) > 3  # it went on past the counts' end
    assert err.count("stopped counting tokens") == 1 and "prompt_eval_count" in err
