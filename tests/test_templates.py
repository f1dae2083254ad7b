"""Templates against the real chat templates models ship (fixtures copied verbatim)."""

from pathlib import Path

import pytest

from synth.core import SynthError
from synth.templates import ChatTemplate, builtin, family_from_name, family_from_text, from_jinja, resolve

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

TWO_TURNS = [
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
    {"role": "assistant", "content": "A2"},
]

# family: (fixture, bos, eos, pre_query(), pre_query("SYS"), end-of-user-turn stop, two-turn rendering)
CASES = {
    "llama3": (
        "llama3.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>",
    ),
    "qwen2.5": (
        "qwen2_5.jinja",
        "",
        "<|im_end|>",
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n",
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>",
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
        "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n",
    ),
    "gemma": (
        "gemma.jinja",
        "<bos>",
        "<eos>",
        "<bos><start_of_turn>user\n",
        "<bos><start_of_turn>user\nSYS\n\n",
        "<end_of_turn>",
        "<bos><start_of_turn>user\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
        "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn>\n",
    ),
    "phi3": (
        "phi3.jinja",
        "<s>",
        "<|endoftext|>",
        "<|user|>\n",  # the template writes no BOS; the tokenizer adds it
        "<|system|>\nSYS<|end|>\n<|user|>\n",
        "<|end|>",
        # Phi-3's format: `<|role|>\n{content}<|end|>\n` per turn, then EOS when no generation prompt.
        "<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\nU2<|end|>\n<|assistant|>\nA2<|end|>\n<|endoftext|>",
    ),
    "mistral": (
        "mistral.jinja",
        "<s>",
        "</s>",
        "<s>[INST] ",
        "<s>[INST] SYS\n\n",
        "[/INST]",
        "<s>[INST] U1[/INST] A1</s>[INST] U2[/INST] A2</s>",
    ),
}


def _real(family: str) -> ChatTemplate:
    file, bos, eos = CASES[family][:3]
    return from_jinja((FIXTURES / file).read_text(), bos, eos)


@pytest.mark.parametrize("family", CASES)
def test_family_is_recognised_from_the_real_template(family) -> None:
    assert _real(family).family == family


@pytest.mark.parametrize("family", CASES)
def test_pre_query_and_rendering_from_real_templates(family) -> None:
    _, _, _, pre, pre_sys, user_end, two_turns = CASES[family]
    tmpl = _real(family)
    assert tmpl.pre_query() == pre
    assert tmpl.pre_query("SYS") == pre_sys
    assert tmpl.user_end == user_end and user_end in tmpl.instruction_stop
    assert tmpl.render(TWO_TURNS, add_generation_prompt=False) == two_turns


def test_phi3_pre_query_stops_and_conversation() -> None:
    tmpl = _real("phi3")
    pre = tmpl.pre_query()
    assert pre.endswith("<|user|>\n") and "<|assistant|>" not in pre
    assert tmpl.instruction_stop[:2] == ("<|end|>", "<|endoftext|>")  # turn end, then conversation end
    assert tmpl.pre_query("SYS").endswith("<|system|>\nSYS<|end|>\n<|user|>\n")
    text = tmpl.render(TWO_TURNS[:3])
    assert text.endswith("<|user|>\nU2<|end|>\n<|assistant|>\n")


@pytest.mark.parametrize("family", CASES)
def test_builtin_family_agrees_with_the_real_template(family) -> None:
    real, ours = _real(family), builtin(family)
    assert ours.pre_query().lstrip("<s>") == real.pre_query().lstrip("<s>")
    assert ours.user_end == real.user_end
    assert ours.response_stop[0] == real.response_stop[0]
    assert ours.render(TWO_TURNS[:1]).lstrip("<s>") == real.render(TWO_TURNS[:1]).lstrip("<s>")


@pytest.mark.parametrize("family", CASES)
def test_next_turn_pre_query_never_follows_an_assistant_header(family) -> None:
    tmpl = _real(family)
    pre = tmpl.pre_query(history=TWO_TURNS[:2])
    assert pre.rstrip().endswith(("user<|end_header_id|>", "user", "<|user|>", "[INST]")), pre
    assert "A1" in pre and not pre.endswith(tmpl.assistant_prefix or "\x00")


def test_default_system_prompt_is_kept_in_the_derived_pre_query() -> None:
    assert "You are Qwen, created by Alibaba Cloud" in _real("qwen2.5").pre_query()


def test_response_stops_close_the_assistant_turn() -> None:
    assert _real("llama3").response_stop[0] == "<|eot_id|>"
    assert _real("qwen2.5").response_stop[0] == "<|im_end|>"
    assert _real("gemma").response_stop[0] == "<end_of_turn>"
    assert "</s>" in _real("mistral").response_stop


def test_family_from_names_and_ollama_tags() -> None:
    assert family_from_name("llama3:8b") == "llama3"
    assert family_from_name("Meta-Llama-3.1-8B-Instruct") == "llama3"
    assert family_from_name("qwen2.5:7b") == "qwen2.5"
    assert family_from_name("gemma3") == "gemma"
    assert family_from_name("phi3:mini") == "phi3"
    assert family_from_name("mistral:7b-instruct") == "mistral"
    assert family_from_name("falcon") is None
    assert family_from_text("{{ '<|im_start|>' + message.role }}") == "chatml"


def test_unknown_family_lists_known_ones() -> None:
    with pytest.raises(SynthError, match=r"unknown chat template family 'vicuna'.*llama3.*--template"):
        resolve("vicuna")
    with pytest.raises(SynthError, match="known families"):
        resolve(None, names=["falcon-7b"])


def test_a_template_file_overrides(tmp_path) -> None:
    path = tmp_path / "mine.jinja"
    path.write_text((FIXTURES / "llama3.jinja").read_text())
    assert resolve(str(path), bos_token="<|begin_of_text|>").pre_query().endswith("user<|end_header_id|>\n\n")


def test_chat_templates_run_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}"
    with pytest.raises(SynthError, match="unsafe"):
        from_jinja(evil).render([{"role": "user", "content": "hi"}])


def test_a_model_with_a_distinct_bos_gets_exactly_one(base_model) -> None:
    # Gemma's <bos> starts the text only; SmolLM2's BOS is <|im_start|>, which opens every turn
    # (tests/test_default_model.py checks it is not doubled at the start).
    tokens = base_model.tokenize(base_model.template.pre_query())
    bos = base_model.llm.token_bos()
    assert tokens[0] == bos and tokens[1] != bos
    chat = base_model.tokenize([{"role": "user", "content": "Hi"}])
    assert chat.count(bos) == 1


def test_llama3_1_keeps_its_own_system_header() -> None:
    tmpl = from_jinja((FIXTURES / "llama3_1.jinja").read_text(), "<|begin_of_text|>", "<|eot_id|>")
    assert tmpl.family == "llama3"
    pre = tmpl.pre_query()
    assert pre.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    assert pre.endswith("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")


def test_gemma3_folds_the_system_prompt_into_the_first_user_turn() -> None:
    tmpl = from_jinja((FIXTURES / "gemma3.jinja").read_text(), "<bos>", "<eos>")
    assert tmpl.family == "gemma"
    assert tmpl.pre_query("SYS") == "<bos><start_of_turn>user\nSYS\n\n"
    assert tmpl.instruction_stop[0] == "<end_of_turn>"


def test_phi4_is_its_own_family() -> None:
    tmpl = from_jinja((FIXTURES / "phi4.jinja").read_text(), "<|endoftext|>", "<|im_end|>")
    assert tmpl.family == "phi4"
    assert tmpl.pre_query() == "<|im_start|>user<|im_sep|>"
    assert tmpl.assistant_prefix == "<|im_start|>assistant<|im_sep|>"


@pytest.mark.parametrize(
    "file,family",
    [
        ("llama3.gotmpl", "llama3"),
        ("qwen2_5.gotmpl", "chatml"),
        ("gemma2.gotmpl", "gemma"),
        ("gemma3.gotmpl", "gemma"),
        ("phi3.gotmpl", "phi3"),
        ("mistral.gotmpl", "mistral"),
    ],
)
def test_family_from_ollama_go_templates(file, family) -> None:
    # Ollama keeps Qwen2.5's default system prompt in the Modelfile's SYSTEM, not the template: chatml.
    assert family_from_text((FIXTURES.parent / "ollama_templates" / file).read_text()) == family
