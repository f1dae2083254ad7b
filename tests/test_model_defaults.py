"""Sampling defaults per model family (filters/models/*.toml): found by the model's name, sent to the
backend, beaten by the user's flags, absent for an unknown model, and named in the card."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from synth.backends import Completion, Sampling
from synth.backends.defaults import SETTINGS, for_model, load
from synth.backends.llamacpp import DEFAULT_MODEL_NAME
from synth.resources import data_file

GENERIC = {  # synth magpie's defaults where no family file speaks
    "instruction": Sampling(max_tokens=256, temperature=1.0, seed=3),
    "response": Sampling(max_tokens=512, temperature=0.7, seed=3),
}


def shipped(family: str) -> dict:
    return load(data_file(f"filters/models/{family}.toml"))


def settings(params: Sampling) -> tuple:
    return tuple(getattr(params, name) for name in SETTINGS)


@dataclasses.dataclass
class Recorder:
    """A chat model named `model` that writes a fresh question, then an answer; records each call's sampling."""

    model: str
    chat_tuned: bool = True
    name: str = "recorder"
    params: list[Sampling] = dataclasses.field(default_factory=list)
    count: int = 0

    @property
    def template(self):
        from synth.templates import builtin

        return builtin("chatml")

    def generate(self, prompts, params: Sampling) -> list[Completion]:
        self.params.append(params)
        out = []
        for _ in prompts:
            self.count += 1
            out.append(Completion(f"How do tides work, case {self.count}?", "stop", 5, 8))
        return out


def magpie(tmp_path: Path, monkeypatch, model: str, *flags: str, chat_tuned: bool = True) -> tuple[Recorder, dict]:
    """`synth magpie --n 2` in-process on a recorder standing in for `model`; its card."""
    from synth import cli

    llm = Recorder(model, chat_tuned)
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: llm)
    out = tmp_path / "m"
    monkeypatch.setattr(sys, "argv", ["synth", "magpie", "--n", "2", "--seed", "3", "--out", str(out), *flags])
    try:
        cli.main()
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    text = (out / "README.md").read_text()
    return llm, json.loads(text[text.index("```json") + 7 : text.rindex("```")])


def test_the_default_model_finds_its_family_file_and_its_values_reach_the_backend(tmp_path, monkeypatch) -> None:
    family = for_model(DEFAULT_MODEL_NAME)
    assert family.file == "filters/models/smollm2.toml"
    file = shipped("smollm2")
    llm, card = magpie(tmp_path, monkeypatch, DEFAULT_MODEL_NAME)
    wanted = {role: dataclasses.replace(GENERIC[role], **file[role]) for role in ("instruction", "response")}
    assert {settings(p) for p in llm.params} == {settings(wanted["instruction"]), settings(wanted["response"])}
    for role in ("instruction", "response"):
        assert card[f"{role}_sampling"]["max_tokens"] == wanted[role].max_tokens
        recorded = card["sampling_defaults"][role]
        assert recorded == {"family": "smollm2", "file": "filters/models/smollm2.toml", "values": file[role]}


def test_a_flag_wins_over_the_family_file(tmp_path, monkeypatch) -> None:
    flags = ["--instruction-max-tokens", "77", "--response-temperature", "0.25", "--repeat-penalty", "1.0"]
    flags += ["--response-min-p", "0.0", "--response-top-p", "1.0", "--instruction-min-p", "0.0"]
    llm, card = magpie(tmp_path, monkeypatch, DEFAULT_MODEL_NAME, *flags)
    asked = {(p.max_tokens, p.temperature) for p in llm.params}
    assert asked == {(77, shipped("smollm2").get("instruction", {}).get("temperature", 1.0)), (512, 0.25)}
    assert all((p.repeat_penalty, p.min_p, p.top_p) == (1.0, 0.0, 1.0) for p in llm.params)
    assert card["instruction_sampling"]["max_tokens"] == 77 and card["response_sampling"]["temperature"] == 0.25


def test_an_unknown_model_runs_on_the_generic_defaults(tmp_path, monkeypatch) -> None:
    assert for_model("llama3:8b").file is None
    llm, card = magpie(tmp_path, monkeypatch, "llama3:8b")
    assert {settings(p) for p in llm.params} == {settings(GENERIC["instruction"]), settings(GENERIC["response"])}
    assert "sampling_defaults" not in card


def test_a_base_only_file_fits_only_a_base_model(tmp_path) -> None:
    (tmp_path / "gemma3-base.toml").write_text(
        '[match]\nnames = ["gemma-3-270m"]\nbase = true\n[response]\nmin_p = 0.2\n'
    )
    gemma = "gemma-3-270m-q4_k_m.gguf"
    base = for_model(gemma, chat_tuned=False, folder=tmp_path)
    assert (base.family, base.roles["response"]) == ("gemma3-base", {"min_p": 0.2})
    assert for_model(gemma, chat_tuned=True, folder=tmp_path).file is None  # Gemma 3 270M instruct is another model
    shipped_base = for_model(gemma, chat_tuned=False)  # the shipped file for the base model
    assert shipped_base.file == "filters/models/gemma3-base.toml" and shipped_base.roles["instruction"]["min_p"] == 0.1


def test_precedence_flag_then_file_then_generic() -> None:
    family = for_model(DEFAULT_MODEL_NAME)
    family = dataclasses.replace(family, roles={"response": {"temperature": 0.3, "min_p": 0.2}})
    chosen = family.sampling("response", GENERIC["response"], {"temperature": 0.9, "min_p": None})
    assert (chosen.temperature, chosen.min_p, chosen.max_tokens, chosen.seed) == (0.9, 0.2, 512, 3)


def test_a_family_file_with_an_unknown_setting_names_it(tmp_path) -> None:
    from synth.core import SynthError

    bad = tmp_path / "x.toml"
    bad.write_text('[match]\nnames = ["x"]\n[response]\ntemprature = 0.5\n')
    with pytest.raises(SynthError, match="unknown setting temprature"):
        load(bad)


def test_respond_takes_the_family_answers_settings_and_a_flag_beats_them(tmp_path, monkeypatch) -> None:
    from synth import cli

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"instruction": "Why is the sea salty?"}) + "\n")
    response = shipped("smollm2").get("response", {})
    for flags in ([], ["--temperature", "0.2"]):
        llm = Recorder(DEFAULT_MODEL_NAME)
        monkeypatch.setattr(cli._shared, "load_backend", lambda *a, llm=llm, **k: llm)
        out = tmp_path / f"r{len(flags)}"
        monkeypatch.setattr(sys, "argv", ["synth", "respond", str(source), "--out", str(out), "--seed", "3", *flags])
        try:
            cli.main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        generic = Sampling(max_tokens=1024, temperature=0.7, seed=3)
        expected = dataclasses.replace(generic, **{**response, **({"temperature": 0.2} if flags else {})})
        (params,) = llm.params
        assert settings(params) == settings(expected)
        text = (out / "README.md").read_text()
        card = json.loads(text[text.index("```json") + 7 : text.rindex("```")])
        assert card["sampling_defaults"]["response"]["file"] == "filters/models/smollm2.toml"
