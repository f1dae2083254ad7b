"""Every real-model claim, on the embedded default SmolLM2-135M-Instruct (a chat model whose GGUF
carries its own ChatML template). One backend for the session, a few rows, small token caps."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from synth import recipes
from synth.backends import Sampling
from synth.core import from_rows, pipe
from synth.recipes.chat import steering
from synth.stages import Judge, Magpie, MultiTurn, PromptPairs, load_rubric
from synth.stages.persona import PersonaPrompt, load_template

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
ASK = Sampling(max_tokens=64, temperature=1.0, seed=3)


def _ids(n: int) -> list[dict]:
    return [{"id": f"{i:09d}"} for i in range(n)]


def test_the_pre_query_text_comes_from_the_gguf_template_with_its_default_system_prompt(embedded) -> None:
    template = embedded.template
    assert embedded.chat_tuned and template.family == "chatml"
    assert template.pre_query() == f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    steered = template.pre_query("You write math problems.")
    assert steered == "<|im_start|>system\nYou write math problems.<|im_end|>\n<|im_start|>user\n"
    assert "<|im_end|>" in template.instruction_stop
    tokens = embedded.tokenize(template.pre_query())  # the template writes <|im_start|>, its BOS: not twice
    assert tokens[0] == embedded.llm.token_bos() and tokens[1] != tokens[0]


def test_instructions_end_on_the_end_of_turn_token(embedded) -> None:
    stage = Magpie(embedded, embedded.template, ASK)
    (out,) = pipe([from_rows(_ids(8))], stage)
    # The model closed its turn (finish reason stop, not the 64-token cap) on most attempts.
    assert stage.stats["attempts"] == 8 and stage.stats["kept"] >= 5, stage.stats
    assert out.num_rows == stage.stats["kept"]
    for text, reason in zip(out["instruction"].to_pylist(), out["instruction_finish_reason"].to_pylist()):
        assert reason == "stop" and text and "<|im_end|>" not in text and "<|im_start|>" not in text


def test_steering_reaches_the_prompt_and_the_instructions(embedded) -> None:
    system = steering(task="math", system_prompt="Ask about fractions.", language="fr")
    assert "fractions" in system and "French" in system
    prompts = []

    class Spy:
        template = embedded.template

        def generate(self, batch, params):
            prompts.extend(batch)
            return embedded.generate(batch, params)

    stage = Magpie(Spy(), embedded.template, ASK, system_prompt=system)
    list(pipe([from_rows(_ids(4))], stage))
    assert all(p.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n") for p in prompts)
    assert DEFAULT_SYSTEM not in prompts[0]  # a given system prompt replaces the default one


def test_two_turns_and_respond_with_messages(embedded, tmp_path) -> None:
    first = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ]
    rows = [{"id": f"{i:09d}", "messages": first, "response_finish_reason": "stop"} for i in range(3)]
    stage = MultiTurn(embedded, embedded, embedded.template, turns=2, instruction=ASK, response=Sampling(96, seed=5))
    (out,) = pipe([from_rows(rows)], stage)
    whole = [c for c in out["messages"].to_pylist() if len(c) == 4]
    assert whole, stage.stats  # at least one conversation got a whole second exchange
    for conv in whole:
        assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
        assert all(m["content"] for m in conv)

    source = tmp_path / "convs.jsonl"
    source.write_text("".join(json.dumps({"id": f"c{i}", "conv": first[:1]}) + "\n" for i in range(2)))
    recipes.respond(embedded, source, out=tmp_path / "r", messages_column="conv", params=Sampling(48, seed=1))
    answered = pq.read_table(tmp_path / "r" / "data").to_pylist()
    assert len(answered) == 2
    for row in answered:
        assert row["response"] and row["messages"][:1] == first[:1] and row["messages"][-1]["role"] == "assistant"
        # what it says is the 135M model's affair (at Q4_1 it gets France's capital wrong even greedily)
        assert row["response_finish_reason"] in ("stop", "length") and row["messages"][-1]["content"] == row["response"]


def test_the_quality_judge_gives_structured_verdicts(embedded) -> None:
    rows = [
        {"id": "a", "instruction": "Explain how photosynthesis works in simple terms."},
        {"id": "b", "instruction": "asdf qwer"},
        {"id": "c", "instruction": "Write a Python function that reverses a string."},
        {"id": "d", "instruction": "What are three causes of the French Revolution?"},
    ]
    stage = Judge((embedded,), load_rubric("quality"), Sampling(max_tokens=48, temperature=0.0))
    (out,) = pipe([from_rows(rows)], stage)
    statuses = out["quality_status"].to_pylist()
    assert statuses.count("ok") >= 3, (statuses, out["quality_raw"].to_pylist())
    scale = load_rubric("quality").scales["input_quality"]
    assert all(v in scale for v, s in zip(out["input_quality"].to_pylist(), statuses) if s == "ok")


def test_persona_prompts_and_the_synthesizers_prompt_mode(embedded) -> None:
    persona = PersonaPrompt(embedded, load_template("instruction"), Sampling(max_tokens=96, temperature=0.0))
    people = [
        {"id": f"p{i}", "persona": text}
        for i, text in enumerate(
            [
                "A marine biologist who studies coral reefs.",
                "A retired teacher who loves gardening.",
                "A teenage gamer learning to code.",
                "A nurse working night shifts.",
            ]
        )
    ]
    (out,) = pipe([from_rows(people)], persona)
    asked = [r["instruction"] for r in out.to_pylist() if r["instruction_status"] == "ok"]
    # A 135M model follows the "User prompt:" format for some personas, not all; the others keep their raw text.
    assert asked and all(asked), out["instruction_raw"].to_pylist()

    templates = (("qa", "Write {pairs} question and answer pairs about this text:\n\n{text}"),)
    chunk = "The Eiffel Tower is in Paris. It was finished in 1889 and is 330 metres tall."
    pairs = PromptPairs(embedded, templates, pairs=2, params=Sampling(max_tokens=128, temperature=0.0))
    (got,) = pipe([from_rows([{"id": "k0", "text": chunk}])], pairs)
    found = got["pairs"].to_pylist()[0]
    assert found and all(p["instruction"] and p["response"] for p in found), got["synthesis_raw"].to_pylist()
