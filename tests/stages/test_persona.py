"""Persona stages with the scripted backend: parsing, ids and links, schema mapping, recipes."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import synth.stages as family
from synth import recipes
from synth.backends import Completion, Sampling
from synth.core import SynthError, from_rows
from synth.stages.persona import (
    ExpandPersonas,
    PersonaGenerate,
    TextToPersona,
    dedup_personas,
    load_template,
    parse_answer,
    read_personas,
    tasks,
)
from tests.conftest import ScriptedBackend

FIXTURES = Path(__file__).parent.parent / "fixtures" / "personas"
MATH = {"Math problem": "instruction"}
RELATED = {"Relation": "relation", "Persona": "persona"}


def _all(batches) -> list[dict]:
    return [row for b in batches for row in b.to_pylist()]


# ---------------------------------------------------------------- parsing answer prefixes


@pytest.mark.parametrize(
    ("text", "value", "status"),
    [
        ("Math problem: Find x if 2x = 6.", "Find x if 2x = 6.", "ok"),
        ("**Math problem:** A tank holds 3 L.\nHow long?", "A tank holds 3 L.\nHow long?", "ok"),
        ("Sure, here it is.\n\n## Math Problem:\nSum the series.", "Sum the series.", "ok"),
        ("**Math problem**: Bold label, colon outside.", "Bold label, colon outside.", "ok"),
        ("Here is a math problem: inline mention does not count.", None, "missing_prefix"),
        ("A problem with no label at all.", None, "missing_prefix"),
        ("Math problem:   \n", None, "empty"),
    ],
)
def test_parse_answer_prefix(text, value, status) -> None:
    assert parse_answer(text, MATH) == ({"instruction": value}, status)


def test_parse_two_labels_each_runs_to_the_next() -> None:
    values, status = parse_answer("Relation: her supplier\nPersona: A cooper who makes barrels.", RELATED)
    assert status == "ok" and values == {"relation": "her supplier", "persona": "A cooper who makes barrels."}
    values, status = parse_answer("Persona: first\nRelation: son\nPersona: second", RELATED)
    assert values == {"relation": "son", "persona": "first"} and status == "ok"
    assert parse_answer("Relation: son only", RELATED) == ({"relation": None, "persona": None}, "missing_prefix")


def test_every_shipped_task_asks_for_the_prefix_it_parses() -> None:
    assert set(tasks()) == {"instruction", "math", "reasoning", "knowledge", "tool", "npc"}
    for name in tasks():
        template = load_template(name)
        (label,) = template.answer
        assert "{persona}" in template.prompt and f'"{label}:"' in template.prompt, name
        filled = template.fill(persona="A glassblower in Murano.")
        assert "A glassblower in Murano." in filled and "{" not in filled


def test_unknown_task_lists_the_shipped_ones() -> None:
    with pytest.raises(SynthError, match="unknown task 'poems'.*instruction.*math"):
        load_template("poems")


# ---------------------------------------------------------------- the stages


def test_generate_one_call_per_batch_links_rows_to_personas_and_keeps_raw_output() -> None:
    replies = [
        Completion("Math problem: How many barrels fit?", "stop"),
        Completion("I would rather tell a story.", "stop"),
        Completion("Math problem: A kiln heats at", "length"),
    ]
    llm = ScriptedBackend(replies=replies)
    stage = PersonaGenerate(llm, "math", Sampling(max_tokens=32))
    people = from_rows([{"id": f"p{i}", "persona": f"Person number {i}."} for i in range(3)])
    (out,) = stage([people])
    assert len(llm.calls) == 1 and len(llm.calls[0]) == 3
    assert llm.calls[0][1][0]["role"] == "user" and "Person number 1." in llm.calls[0][1][0]["content"]
    rows = out.to_pylist()
    assert [r["id"] for r in rows] == ["p0-math", "p1-math", "p2-math"]
    assert [r["persona_id"] for r in rows] == ["p0", "p1", "p2"] and {r["task"] for r in rows} == {"math"}
    # a problem cut off by max tokens is no problem: null, its raw text kept, counted as truncated
    assert [r["instruction"] for r in rows] == ["How many barrels fit?", None, None]
    assert [r["instruction_status"] for r in rows] == ["ok", "missing_prefix", "truncated"]
    assert rows[1]["instruction_raw"] == "I would rather tell a story."
    assert rows[2]["instruction_raw"] == "Math problem: A kiln heats at"
    assert [r["instruction_finish_reason"] for r in rows] == ["stop", "stop", "length"]
    assert stage.stats == {"instruction_ok": 1, "instruction_missing_prefix": 1, "instruction_truncated": 1}


def test_knowledge_task_writes_text() -> None:
    llm = ScriptedBackend(replies=["Title: Pruning apple trees\n\nCut in late winter."])
    (out,) = PersonaGenerate(llm, "knowledge")([from_rows([{"id": "a", "persona": "An orchardist."}])])
    row = out.to_pylist()[0]
    assert row["text"] == "Pruning apple trees\n\nCut in late winter." and row["text_status"] == "ok"


def test_text_to_persona_links_to_documents() -> None:
    llm = ScriptedBackend(replies=["Persona: A hobby gardener with an old orchard.", "no idea"])
    docs = from_rows([{"id": "d1", "body": "Prune apples in winter."}, {"id": "d2", "body": "Q3 earnings."}])
    (out,) = TextToPersona(llm, column="body", source="docs.jsonl")([docs])
    assert "Prune apples in winter." in llm.calls[0][0][0]["content"]
    rows = out.to_pylist()
    assert [(r["id"], r["source_id"], r["source"]) for r in rows] == [
        ("d1-p", "d1", "docs.jsonl"),
        ("d2-p", "d2", "docs.jsonl"),
    ]
    assert (
        rows[0]["persona"] == "A hobby gardener with an old orchard." and rows[1]["persona_status"] == "missing_prefix"
    )
    assert "body" not in out.column_names


def test_text_to_persona_names_the_missing_column() -> None:
    with pytest.raises(SynthError, match="no column 'text'.*body.*--column"):
        list(TextToPersona(ScriptedBackend(replies=[]))([from_rows([{"id": "d", "body": "x"}])]))


def test_expand_two_hops_only_expands_parsed_personas() -> None:
    llm = ScriptedBackend(
        replies=[
            "Relation: patient\nPersona: A retired miner with a bad knee.",
            "Relation: ???",  # hop 1 of b fails: it is kept, and not expanded further
            "Relation: daughter\nPersona: A nurse who visits him on Sundays.",
        ]
    )
    seeds = from_rows([{"id": "a", "persona": "A physiotherapist."}, {"id": "b", "persona": "A chef."}])
    (out,) = ExpandPersonas(llm, hops=2)([seeds])
    assert [len(c) for c in llm.calls] == [2, 1]  # one call per hop, the whole batch each
    assert "A retired miner with a bad knee." in llm.calls[1][0][0]["content"]
    rows = out.to_pylist()
    assert [(r["id"], r["parent_id"], r["root_id"], r["hop"]) for r in rows] == [
        ("a-r", "a", "a", 1),
        ("b-r", "b", "b", 1),
        ("a-r-r", "a-r", "a", 2),
    ]
    assert [r["relation"] for r in rows] == ["patient", None, "daughter"]
    assert rows[1]["persona_status"] == "missing_prefix" and rows[1]["persona_raw"] == "Relation: ???"


# ---------------------------------------------------------------- persona sets


def test_starter_set_is_diverse_and_unique() -> None:
    rows = _all(read_personas("starter"))
    assert len(rows) >= 30
    assert len({r["id"] for r in rows}) == len(rows) and len({r["persona"] for r in rows}) == len(rows)
    assert len({label for r in rows for label in r["labels"]}) >= 20


def test_persona_hub_file_gets_ids_and_skips_blank_personas() -> None:
    rows = _all(read_personas(FIXTURES / "personahub.jsonl"))
    assert [r["id"] for r in rows] == ["personahub-000000000", "personahub-000000001"]
    assert rows[0]["persona"].startswith("A local historian") and rows[0]["labels"] is None
    assert rows[0]["source"] == str(FIXTURES / "personahub.jsonl")


def test_persona_hub_synthesized_file_reads_input_persona() -> None:
    rows = _all(read_personas(FIXTURES / "personahub_math.jsonl"))
    assert [r["persona"] for r in rows][1] == "An urban planner modelling bicycle traffic."
    assert set(rows[0]) == {"id", "persona", "source", "labels"}


def test_finepersonas_labels_are_parsed_into_lists() -> None:
    rows = _all(read_personas(FIXTURES / "finepersonas.jsonl"))
    assert [r["id"] for r in rows] == ["fp-1", "fp-2", "fp-3"]
    assert [r["labels"] for r in rows] == [["Science", "Environment"], ["Education", "Literature"], None]


def test_nemotron_persona_is_composed_from_its_fields() -> None:
    rows = _all(read_personas(FIXTURES / "nemotron.jsonl"))
    assert [r["id"] for r in rows] == ["9f1c", "a07e"]
    text = rows[0]["persona"]
    assert text.startswith("Maria is a practical organiser") and "regional grocery distributor" in text
    assert "47 years old" in text and "stock clerk" in text and "Tucson" in text and "walks" not in text


def test_unknown_schema_lists_columns_and_the_option() -> None:
    with pytest.raises(SynthError, match="who, score.*--persona-column"):
        read_personas(FIXTURES / "unknown.csv")
    assert [r["persona"] for r in _all(read_personas(FIXTURES / "unknown.csv", "who"))] == ["A beekeeper"]
    with pytest.raises(SynthError, match="no column 'name'.*who"):
        read_personas(FIXTURES / "unknown.csv", "name")


def test_missing_set_says_what_a_set_can_be() -> None:
    with pytest.raises(SynthError, match="not a file.*starter.*owner/name"):
        read_personas("no such set")


def test_save_to_disk_folder(tmp_path) -> None:
    import datasets

    datasets.Dataset.from_dict({"id": [1, 2], "persona": ["A welder.", "A poet."]}).save_to_disk(str(tmp_path / "ds"))
    rows = _all(read_personas(tmp_path / "ds"))
    assert [(r["id"], r["persona"]) for r in rows] == [("1", "A welder."), ("2", "A poet.")]


def test_hub_id_goes_through_load_dataset(monkeypatch) -> None:
    import datasets

    asked = []

    def fake_load(repo, config=None, split=None, streaming=False):
        asked.append((repo, config, split, streaming))
        return datasets.Dataset.from_dict({"persona": ["A tailor.", "A pilot.", "A diver."]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = _all(read_personas("proj-persona/PersonaHub:persona", batch_size=2))
    assert asked == [("proj-persona/PersonaHub", "persona", "train", True)]
    assert [r["id"] for r in rows] == ["PersonaHub-000000000", "PersonaHub-000000001", "PersonaHub-000000002"]
    assert rows[2]["persona"] == "A diver." and rows[2]["source"] == "proj-persona/PersonaHub:persona"


# ---------------------------------------------------------------- dedup composition


def test_dedup_uses_the_dedup_family_by_name(monkeypatch) -> None:
    made = []

    def fake(name):
        def factory(column, **options):
            made.append((name, column, options))
            return lambda batches: batches

        return factory

    monkeypatch.setattr(family, "dedup_minhash", fake("minhash"), raising=False)
    monkeypatch.setattr(family, "dedup_semantic", fake("semantic"), raising=False)
    assert len(dedup_personas("both")) == 2
    assert made == [
        ("minhash", "persona", {"threshold": 0.9, "ngram": 1}),
        ("semantic", "persona", {"threshold": 0.1}),
    ]
    assert dedup_personas(None) == []
    with pytest.raises(SynthError, match="unknown --dedup 'fuzzy'"):
        dedup_personas("fuzzy")


def test_dedup_without_the_dedup_family_says_so(monkeypatch) -> None:
    monkeypatch.delattr(family, "dedup_minhash", raising=False)
    with pytest.raises(SynthError, match="dedup_minhash"):
        dedup_personas("minhash")


# ---------------------------------------------------------------- recipes


def test_persona_magpie_sends_each_persona_in_the_system_prompt(tmp_path) -> None:
    people = tmp_path / "people.jsonl"
    people.write_text("\n".join(json.dumps({"id": f"x{i}", "persona": f"Person {i}, a juggler."}) for i in range(2)))
    llm = ScriptedBackend(replies=["Q0", "Q1", "Q2", "A0", "A1", "A2"])
    recipes.magpie(llm, n=3, out=tmp_path / "o", personas=people, task="math", batch_size=3)
    sent = llm.calls[0]  # the pre-query prompts: the persona, then the task's steering prompt
    assert "Person 0, a juggler." in sent[0] and "Person 1, a juggler." in sent[1] and "Person 0" in sent[2]
    assert all("math problems" in p for p in sent)
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["persona_id"] for r in rows] == ["x0", "x1", "x0"]  # cycling through the set
    assert rows[1]["persona"] == "Person 1, a juggler." and rows[1]["system_prompt"].startswith("You are")
    assert rows[1]["messages"][0] == {"role": "system", "content": rows[1]["system_prompt"]}


def test_persona_magpie_on_resume_pairs_attempts_with_the_same_personas(tmp_path) -> None:
    llm = ScriptedBackend(replies=["Q0", "Q1"])
    recipes.magpie(llm, n=2, out=tmp_path / "o", personas="starter", response=None, batch_size=2)
    llm = ScriptedBackend(replies=["Q2", "Q3"])
    resumed = recipes.RunSettings(resume=True)
    recipes.magpie(llm, n=4, out=tmp_path / "o", personas="starter", response=None, batch_size=2, run=resumed)
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["persona_id"] for r in rows] == ["starter-000", "starter-001", "starter-002", "starter-003"]


def test_generate_recipe_answers_only_parsed_prompts(tmp_path) -> None:
    llm = ScriptedBackend(replies=["User prompt: Plan my week.", "whatever", "Here is a plan."])
    recipes.personas_generate(llm, "starter", out=tmp_path / "o", n=2, responses=Sampling(max_tokens=16), batch_size=2)
    assert llm.calls[1] == [[{"role": "user", "content": "Plan my week."}]]
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["id"] for r in rows] == ["starter-000-instruction", "starter-001-instruction"]
    assert rows[0]["response"] == "Here is a plan." and rows[0]["messages"][-1]["content"] == "Here is a plan."
    assert rows[1]["response"] is None and rows[1]["instruction_status"] == "missing_prefix"


def test_generate_recipe_answers_no_cut_off_problem_and_keeps_no_cut_off_answer(tmp_path) -> None:
    replies = [
        Completion("User prompt: Plan my week.", "stop"),
        Completion("User prompt: Plan my", "length"),  # the problem is cut off: never answered
        Completion("User prompt: Sort my bills.", "stop"),
        Completion("Here is a plan.", "stop"),
        Completion("First, list every", "length"),  # the answer is cut off: no training row
    ]
    llm = ScriptedBackend(replies=replies)
    card = recipes.personas_generate(
        llm, "starter", out=tmp_path / "o", n=3, responses=Sampling(max_tokens=16), batch_size=3
    )
    assert [m[0]["content"] for m in llm.calls[1]] == ["Plan my week.", "Sort my bills."]
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [r["instruction_status"] for r in rows] == ["ok", "truncated", "ok"]
    assert [r["instruction"] for r in rows] == ["Plan my week.", None, "Sort my bills."]
    assert rows[1]["instruction_raw"] == "User prompt: Plan my"
    assert [r["response"] for r in rows] == ["Here is a plan.", None, None]
    assert [r["messages"] is not None for r in rows] == [True, False, False]
    assert [r["response_finish_reason"] for r in rows] == ["stop", None, "length"]
    counts = json.dumps(card)
    assert '"instruction_truncated": 1' in counts and '"dropped_response_truncated": 1' in counts


def test_expand_recipe_rejects_a_bad_set_before_making_output(tmp_path) -> None:
    with pytest.raises(SynthError, match="--persona-column"):
        recipes.personas_expand(ScriptedBackend(replies=[]), FIXTURES / "unknown.csv", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_from_text_recipe_writes_a_persona_set_synth_reads_back(tmp_path) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": t}) for t in ["About bees.", "About tax law."]))
    llm = ScriptedBackend(replies=["Persona: A beekeeper.", "Persona: A tax lawyer."])
    recipes.personas_from_text(llm, src, out=tmp_path / "o")
    rows = _all(read_personas(tmp_path / "o"))
    assert [(r["id"], r["persona"]) for r in rows] == [
        ("docs-000000000-p", "A beekeeper."),
        ("docs-000000001-p", "A tax lawyer."),
    ]


def test_seeded_generation_with_ids_that_end_in_letters() -> None:
    llm = ScriptedBackend(replies=["Relation: son\nPersona: A boy."])
    (out,) = ExpandPersonas(llm, Sampling(seed=3))([from_rows([{"id": "fp-a", "persona": "A baker."}])])
    assert out["id"].to_pylist() == ["fp-a-r"] and llm.params[0].seed is not None


def test_generate_resume_goes_on_from_the_next_persona(tmp_path) -> None:
    recipes.personas_generate(ScriptedBackend(replies=["User prompt: a"]), "starter", out=tmp_path / "o", n=1)
    llm = ScriptedBackend(replies=["User prompt: b"])
    recipes.personas_generate(llm, "starter", out=tmp_path / "o", n=2, run=recipes.RunSettings(resume=True))
    assert len(llm.calls) == 1 and "Manchester" not in llm.calls[0][0][0]["content"]
    rows = pq.read_table(tmp_path / "o/data").to_pylist()
    assert [(r["persona_id"], r["instruction"]) for r in rows] == [("starter-000", "a"), ("starter-001", "b")]
