"""The Ollama backend against a fake Ollama server on loopback, backed by the embedded model."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from synth import recipes
from synth.backends import Completion, Sampling, load_backend
from synth.backends._pool import strip_bos
from synth.core import SynthError
from synth.io import read
from tests.backends.ollama_server import LLAMA3_TEMPLATE, Model, delayed_echo

GO_TEMPLATES = {
    "llama3": LLAMA3_TEMPLATE,
    "chatml": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}",
    "gemma": "<start_of_turn>user\n{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}<end_of_turn>\n",
    "phi3": "{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>",
    "mistral": "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]",
}


def test_magpie_runs_end_to_end_through_ollama(ollama, tmp_path) -> None:
    llm = load_backend("gemma3:270m", base_url=None, host=ollama.url, concurrency=2)  # None: not given
    assert (llm.name, llm.template.family, llm.chat_tuned) == ("ollama", "gemma", False)
    result = recipes.magpie(
        llm,
        n=2,
        out=tmp_path / "out",
        instruction=Sampling(max_tokens=32, temperature=1.0, seed=3),
        response=Sampling(max_tokens=12, temperature=0.7, seed=3),
        batch_size=4,
    )
    rows = [r for b in read(tmp_path / "out") for r in b.to_pylist()]
    assert result["rows"] == len(rows) == 2
    assert all(r["instruction"] and r["response_finish_reason"] in ("stop", "length") for r in rows)
    card = (tmp_path / "out" / "README.md").read_text()
    assert '"backend": "ollama"' in card and "is an Ollama name:tag" in card
    paths = {path for path, _ in ollama.requests}
    assert {"/api/show", "/api/generate", "/api/chat"} <= paths


def test_magpie_sends_the_pre_query_template_raw(ollama) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    prompt = llm.template.pre_query()
    llm.generate([prompt], Sampling(max_tokens=8, seed=7, stop=("\n\n",)))
    (sent,) = ollama.generations()
    # The server adds BOS itself, so the template's own BOS text is not sent
    assert sent["prompt"] == strip_bos(prompt, "<bos>") == "<start_of_turn>user\n"
    assert sent["raw"] is True and sent["stream"] is False
    assert sent["options"] == {
        "temperature": 0.8,
        "top_p": 1.0,
        "top_k": 0,
        "min_p": 0.0,
        "num_predict": 8,
        "stop": ["\n\n"],
        "seed": 7,
    }


def test_stop_strings_end_the_text(ollama) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    (out,) = llm.generate(["1, 2, 3, 4, 5, 6,"], Sampling(max_tokens=12, temperature=0.0, stop=(",",)))
    assert out.finish_reason == "stop"
    assert "," not in out.text and out.text.strip()
    assert out.completion_tokens > 0 and out.prompt_tokens > 0


def test_length_cut_off_comes_back_from_done_reason(ollama) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    (out,) = llm.generate(["Once upon a time"], Sampling(max_tokens=3, temperature=0.0))
    assert (out.finish_reason, out.completion_tokens) == ("length", 3)


@pytest.mark.parametrize("family", sorted(GO_TEMPLATES))
def test_template_family_comes_from_the_go_template(ollama, family) -> None:
    ollama.models[f"mystery-{family}:1b"] = Model(delayed_echo(0.0), template=GO_TEMPLATES[family])
    llm = load_backend(f"mystery-{family}:1b", host=ollama.url)
    assert llm.template.family == family and llm.chat_tuned


def test_template_falls_back_to_the_name_and_yields_to_override(ollama) -> None:
    assert load_backend("gemma3:270m", host=ollama.url).template.family == "gemma"
    assert load_backend("gemma3:270m", host=ollama.url, template="chatml").template.family == "chatml"
    ollama.models["mystery:1b"] = Model(delayed_echo(0.0))
    with pytest.raises(SynthError, match="--template FAMILY"):
        load_backend("mystery:1b", host=ollama.url)


def test_chat_prompts_go_to_api_chat_with_the_response_stops(ollama) -> None:
    llm = load_backend("echo:latest", host=ollama.url, template="llama3")
    (out,) = llm.generate([[{"role": "user", "content": "hi"}]], Sampling(max_tokens=5, stop=("END",)))
    assert out.text == "echo: hi"
    (sent,) = ollama.generations()
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["options"]["stop"] == ["END", "<|eot_id|>"]


def test_json_schema_goes_to_format(ollama) -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    llm = load_backend("echo:latest", host=ollama.url, template="llama3")
    llm.generate(["x"], Sampling(json_schema=schema))
    assert ollama.generations()[0]["format"] == schema


def test_missing_model_says_to_pull_it(ollama) -> None:
    with pytest.raises(SynthError, match=r"has no model 'nosuch:7b'; run `ollama pull nosuch:7b`"):
        load_backend("nosuch:7b", host=ollama.url)


def test_server_down_says_how_to_start_one(dead_url) -> None:
    with pytest.raises(SynthError, match=f"no Ollama server answers at {dead_url}; start one with `ollama serve`"):
        load_backend("llama3:8b", host=dead_url)


def test_ollama_host_comes_from_the_environment(dead_url, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", dead_url)
    with pytest.raises(SynthError, match=f"no Ollama server answers at {dead_url}"):
        load_backend("llama3:8b")


def test_a_500_is_retried(ollama) -> None:
    llm = load_backend("echo:latest", host=ollama.url, template="llama3", retry_delay=0.01)
    ollama.fail_next(500)
    (out,) = llm.generate(["again"], Sampling())
    assert (out.text, out.finish_reason) == ("echo: again", "stop")
    assert len(ollama.generations()) == 2


def test_a_row_that_keeps_failing_is_recorded_not_fatal(ollama) -> None:
    llm = load_backend("echo:latest", host=ollama.url, template="llama3", attempts=2, retry_delay=0.01, concurrency=1)
    ollama.fail_next(503, 503)
    bad, good = llm.generate(["a", "b"], Sampling())
    assert bad.finish_reason == "error" and "503" in bad.error and "2 attempts" in bad.error
    assert good.text == "echo: b"


def test_a_bad_request_fails_the_row_without_retries(ollama) -> None:
    llm = load_backend("echo:latest", host=ollama.url, template="llama3", retry_delay=0.01)
    ollama.fail_next(400)
    (out,) = llm.generate(["a"], Sampling())
    assert out.finish_reason == "error" and "400" in out.error
    assert len(ollama.generations()) == 1


def test_order_is_kept_under_concurrency(ollama) -> None:
    in_flight, peak, lock = [0], [0], threading.Lock()
    echo = delayed_echo(lambda p: 0.02 * (8 - int(p)))  # later prompts finish first

    def counted(prompt, params):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return echo(prompt, params)
        finally:
            with lock:
                in_flight[0] -= 1

    ollama.models["slow:latest"] = Model(counted)
    llm = load_backend("slow:latest", host=ollama.url, template="llama3", concurrency=4)
    out = llm.generate([str(i) for i in range(8)], Sampling(seed=100))
    assert [c.text for c in out] == [f"echo: {i}" for i in range(8)]
    assert peak[0] == 4
    seeds = {g["prompt"]: g["options"]["seed"] for g in ollama.generations()}
    assert seeds == {str(i): 100 + i for i in range(8)}  # prompt i samples with seed + i


def test_the_server_streams_like_ollama(ollama) -> None:
    import ollama as client

    c = client.Client(host=ollama.url)
    parts = list(c.generate("echo:latest", "one two three", raw=True, stream=True))
    assert "".join(p.response for p in parts) == "echo: one two three"
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert c.list().models[0].model in ollama.models
    assert json.loads(json.dumps(ollama.requests[-1][1]))["stream"] is True


def test_cli_prints_the_backend_and_why(ollama, tmp_path, capsys, monkeypatch) -> None:
    from synth import cli

    count = itertools.count()
    asks = Model(lambda prompt, params: Completion(f"question {next(count)}?", "stop"), template=LLAMA3_TEMPLATE)
    ollama.models["asks:latest"] = asks
    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    argv = ["magpie", "-m", "asks:latest", "--n", "3", "--no-responses"]
    argv += ["--concurrency", "3", "--max-attempts", "3", "-o", str(tmp_path / "o")]
    monkeypatch.setattr("sys.argv", ["synth", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.app(argv)
    assert exit_.value.code == 0
    err = capsys.readouterr().err
    assert "backend ollama (asks:latest is an Ollama name:tag), model asks:latest, template llama3" in err
    assert (
        json.loads((tmp_path / "o" / "README.md").read_text().split("```json")[1].split("```")[0])["concurrency"] == 3
    )
