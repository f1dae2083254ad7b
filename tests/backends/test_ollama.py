"""The Ollama backend against a fake Ollama server on loopback, backed by the real Gemma 3 270M base model."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from synth import recipes
from synth.backends import Completion, Sampling, load_backend
from synth.backends._pool import strip_bos
from synth.core import SynthError, from_rows
from synth.io import read
from synth.stages import Magpie
from synth.templates import builtin
from synth.tokens import context_size, token_counter
from tests.backends.ollama_server import LLAMA3_TEMPLATE, QWEN25_SYSTEM, QWEN25_TEMPLATE, Model, delayed_echo

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
        keep_truncated=True,  # 12-token answers are the point here, not whole ones
        max_attempts=400,  # a base model rarely ends within 32 tokens: no give-up after 64
    )
    rows = [r for b in read(tmp_path / "out") for r in b.to_pylist()]
    assert result["rows"] == len(rows) == 2
    assert all(r["instruction"] and r["response_finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["response"].strip() for r in rows), rows  # kept when cut off, never when empty
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
    ollama.fail_next(500, 500)  # an error each time; a 503 would be waited out (see test_resilience.py)
    bad, good = llm.generate(["a", "b"], Sampling())
    assert bad.finish_reason == "error" and "500" in bad.error and "2 attempts" in bad.error
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
    rows = [r for b in read(tmp_path / "o") for r in b.to_pylist()]
    assert sorted(r["instruction"] for r in rows) == ["question 0?", "question 1?", "question 2?"]
    assert (
        json.loads((tmp_path / "o" / "README.md").read_text().split("```json")[1].split("```")[0])["concurrency"] == 3
    )


def _sent_prompts(server) -> list[str]:
    """The raw prompts sent to /api/generate, in order."""
    return [g["prompt"] for g in server.generations() if g.get("raw")]


def test_the_modelfile_system_prompt_opens_the_raw_pre_query(ollama) -> None:
    # Qwen2.5 in the Ollama library: a ChatML Go template, its default system prompt in the Modelfile.
    qwen = Model(delayed_echo(0.0), template=QWEN25_TEMPLATE, family="qwen2", system=QWEN25_SYSTEM)
    ollama.models["qwen2.5:7b"] = qwen
    llm = load_backend("qwen2.5:7b", host=ollama.url)
    assert (llm.template.family, llm.default_system) == ("chatml", QWEN25_SYSTEM)
    list(Magpie(llm, llm.template, Sampling(max_tokens=8, seed=1))([from_rows([{"id": "a"}])]))
    (sent,) = _sent_prompts(ollama)
    assert sent == f"<|im_start|>system\n{QWEN25_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    assert sent == builtin("qwen2.5").pre_query()  # what Qwen2.5's own Jinja template gives llama.cpp and vLLM
    assert llm.describe()["default_system_prompt"] == QWEN25_SYSTEM


def test_a_system_prompt_given_replaces_the_default(ollama) -> None:
    ollama.models["qwen2.5:7b"] = Model(delayed_echo(0.0), template=QWEN25_TEMPLATE, system=QWEN25_SYSTEM)
    llm = load_backend("qwen2.5:7b", host=ollama.url)
    stage = Magpie(llm, llm.template, Sampling(max_tokens=8, seed=1), system_prompt="You teach maths.")
    list(stage([from_rows([{"id": "a"}])]))
    assert _sent_prompts(ollama) == ["<|im_start|>system\nYou teach maths.<|im_end|>\n<|im_start|>user\n"]


def test_a_default_system_prompt_in_the_go_template_is_kept(ollama) -> None:
    go = (
        "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n"
        "{{- else }}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{{- end }}"
        "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    )
    ollama.models["helpful:1b"] = Model(delayed_echo(0.0), template=go)
    llm = load_backend("helpful:1b", host=ollama.url)
    llm.generate([llm.template.pre_query()], Sampling(max_tokens=8))
    assert _sent_prompts(ollama) == ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"]
    # messages go to /api/chat as they are: the server applies its own default there
    llm.generate([[{"role": "user", "content": "hi"}]], Sampling(max_tokens=8))
    assert ollama.generations()[-1]["messages"] == [{"role": "user", "content": "hi"}]


def test_no_default_system_prompt_means_none_is_added(ollama) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    assert llm.default_system == "" and llm.template.pre_query() == builtin("gemma").pre_query()
    ollama.models["qwen2.5:7b"] = Model(delayed_echo(0.0), template=QWEN25_TEMPLATE, system=QWEN25_SYSTEM)
    overridden = load_backend("qwen2.5:7b", host=ollama.url, template="chatml")  # taken as given
    assert overridden.template.pre_query() == "<|im_start|>user\n"


def test_tokens_are_counted_by_the_server(ollama, base_model) -> None:
    llm = load_backend("gemma3:270m", host=ollama.url)
    text = "Photosynthesis turns light, water and carbon dioxide into sugar."
    assert token_counter(llm).count == llm.count_tokens  # its own count, not the byte bound
    ollama.requests.clear()
    assert llm.count_tokens(text) == base_model.count_tokens(text) + 1  # Ollama's count includes the BOS it adds
    (sent,) = ollama.generations()
    assert (sent["prompt"], sent["raw"], sent["options"]["num_predict"]) == (text, True, 1)
    assert llm.count_tokens("") == 0 and len(ollama.generations()) == 1  # nothing sent for an empty text


def test_context_size_is_the_modelfile_num_ctx(ollama) -> None:
    ollama.models["long:8b"] = Model(delayed_echo(0.0), LLAMA3_TEMPLATE, "llama", parameters="num_ctx 8192")
    llm = load_backend("long:8b", host=ollama.url)
    assert context_size(llm) == 8192
    llm.generate(["x"], Sampling(max_tokens=4))
    assert "num_ctx" not in ollama.generations()[-1]["options"]  # the server uses it already


def test_context_size_is_pinned_when_the_server_would_choose(ollama) -> None:
    ollama.models["big:8b"] = Model(delayed_echo(0.0), LLAMA3_TEMPLATE, "llama", context_length=131072)
    ollama.models["small:1b"] = Model(delayed_echo(0.0), LLAMA3_TEMPLATE, "llama", context_length=2048)
    llm = load_backend("big:8b", host=ollama.url)
    assert llm.describe()["context_length"] == 131072 and llm.describe()["num_ctx"] is None
    assert context_size(llm) == 4096  # not the model's 128k: the server's default may be less, so it is sent
    llm.generate(["x"], Sampling(max_tokens=4))
    assert ollama.generations()[-1]["options"]["num_ctx"] == 4096
    assert context_size(load_backend("small:1b", host=ollama.url)) == 2048
    assert context_size(load_backend("big:8b", host=ollama.url, num_ctx=16384)) == 16384
