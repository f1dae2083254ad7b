"""Diversity: the figures against hand-computed values, the novelty gate, spreading, topics."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.backends import Completion, Prompt, Sampling
from synth.core import counter_source, from_rows, pipe
from synth.recipes import diversity as rdiv
from synth.stages import diversity as div
from synth.templates import ChatTemplate, builtin

pytest.importorskip("model2vec")


def docstrings(k: int = 60) -> list[str]:
    """First lines of stdlib docstrings: real, varied English text."""
    import collections
    import json as json_
    import os
    import re
    import textwrap

    found = []
    for module in (os, re, json_, collections, textwrap, subprocess):
        for name in sorted(dir(module)):
            doc = getattr(getattr(module, name), "__doc__", None)
            line = doc.strip().split("\n")[0] if isinstance(doc, str) else ""
            if len(line.split()) >= 5 and line not in found:
                found.append(line)
    return found[:k]


# ---------------------------------------------------------------- the figures


def test_vendi_identical_rows_give_one_and_orthogonal_rows_give_n() -> None:
    assert div.vendi_from_kernel(np.ones((4, 4))) == pytest.approx(1.0)
    assert div.vendi_from_kernel(np.eye(5)) == pytest.approx(5.0)
    assert div.vendi_score(np.tile([[0.6, 0.8]], (7, 1))) == pytest.approx(1.0)
    assert div.vendi_score(np.eye(6)) == pytest.approx(6.0)


def test_vendi_matches_a_hand_computed_kernel() -> None:
    # Two identical rows and one orthogonal: K/3 has eigenvalues 2/3, 1/3, 0.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))
    assert div.vendi_from_kernel(x @ x.T) == pytest.approx(expected)
    assert div.vendi_score(x) == pytest.approx(expected)
    # Cosine 0.5 between two rows: eigenvalues of [[1, .5], [.5, 1]] / 2 are 3/4 and 1/4.
    half = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]])
    assert div.vendi_score(half) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))


def test_vendi_meter_adds_up_to_the_whole() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    meter = div.VendiMeter(8)
    for part in np.array_split(x, 7):
        meter.add(part)
    assert meter.score() == pytest.approx(div.vendi_from_kernel(x @ x.T))


def test_distinct_n_counts_unique_ngrams() -> None:
    assert div.distinct_n(["a b c a b", "A b"], 1) == pytest.approx(3 / 7)
    assert div.distinct_n(["a b c a b", "a b"], 2) == pytest.approx(3 / 5)  # ab bc ca ab | ab
    assert div.distinct_n([""], 2) == 0.0


def test_measure_tells_a_varied_set_from_a_repetitive_one() -> None:
    varied = docstrings(60)
    assert len(varied) == 60
    repetitive = [f"Return the path of file number {i}." for i in range(60)]
    a, b = div.measure(varied, k=5), div.measure(repetitive, k=5)
    assert a["vendi"] > 3 * b["vendi"] and a["distinct_2"] > b["distinct_2"]
    assert a["nn_similarity"] < b["nn_similarity"]
    assert a["entropy_normalised"] > 0.5 and len(a["clusters"]) == 5
    assert all(c["label"] in varied for c in a["clusters"])  # each cluster's label is one of its rows
    lo, hi = a["vendi_interval"]
    assert lo < a["vendi"] < hi


def test_coverage_sees_a_set_that_misses_half_the_reference() -> None:
    ref = div.load_embedder().encode(docstrings(60))
    _, assign = div.kmeans(ref, 6)
    half = ref[assign < 3]  # the rows of three of the six clusters coverage draws on the reference
    assert div.coverage(ref, ref, 6) == 1.0
    assert div.coverage(ref, half, 6) == 0.5
    assert div.coverage(half, ref, 3) == 1.0


def test_synth_diversity_samples_a_large_set_and_writes_its_report(tmp_path) -> None:
    rows = [{"instruction": t} for t in docstrings(60)] * 5
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in docstrings(60)))
    done = subprocess.run(
        [sys.executable, "-m", "synth", "diversity", str(tmp_path / "d.jsonl"), "--sample", "100"]
        + ["--reference", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "rep"), "-k", "5"],
        capture_output=True,
        text=True,
        timeout=900,  # minutes on a loaded two-core machine
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "rep" / "diversity.json").read_text())
    assert figures["rows"] == 300 and figures["sample"] == 100 and figures["column"] == "instruction"
    assert "a uniform sample of 100" in done.stdout and "Vendi score" in done.stdout
    assert figures["reference"]["covered_by_reference"] == 1.0
    assert "Vendi score" in (tmp_path / "rep" / "diversity.md").read_text()
    again = subprocess.run(
        [sys.executable, "-m", "synth", "diversity", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "rep")],
        capture_output=True,
        text=True,
        timeout=900,  # minutes on a loaded two-core machine
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "synth", "diversity", str(tmp_path / "d.jsonl"), "--column", "nope"],
        capture_output=True,
        text=True,
        timeout=900,  # minutes on a loaded two-core machine
    )
    assert wrong.returncode == 2 and "nope" in wrong.stderr and "Traceback" not in wrong.stderr


# ---------------------------------------------------------------- the novelty gate

PLANTED = "How do I bake sourdough bread at home?"
PARAPHRASE = "How can I bake sourdough bread at home?"
DISTINCT = "What is the capital of France?"


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_the_gate_drops_a_planted_paraphrase_whatever_the_batches(size) -> None:
    texts = [PLANTED, *docstrings(2), PARAPHRASE, DISTINCT]
    rows = [{"id": f"r{i}", "instruction": t} for i, t in enumerate(texts)]
    gate = div.NoveltyGate(0.15)
    batches = [from_rows(rows[i : i + size]) for i in range(0, len(rows), size)]
    kept = [t for b in gate(batches) for t in b["instruction"].to_pylist()]
    assert kept == [PLANTED, *docstrings(2), DISTINCT]
    assert gate.stats["dropped_similar"] == 1


@dataclass
class Writer:
    """A chat model that, asked for an instruction, writes one about the item in its system prompt
    (or the next of `script`); asked to answer, answers. Records what it answered."""

    script: list[str] = field(default_factory=list)
    template: ChatTemplate = field(default_factory=lambda: builtin("llama3"))
    answered: list[str] = field(default_factory=list)
    name: str = "writer"
    model: str = "writer-model"

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        out = []
        for prompt in prompts:
            if isinstance(prompt, str):  # Magpie's pre-query text
                text = self.script.pop(0) if self.script else _about(prompt)
            else:
                self.answered.append(prompt[-1]["content"])
                text = "Here is an answer."
            out.append(Completion(text, "stop", 3, len(text.split())))
        return out


def _about(prompt: str) -> str:
    item = prompt.split("You are an expert in ", 1)[1].split(". Users ask you questions about ", 1)[0]
    return f"Please tell me everything about {item}."


@pytest.mark.parametrize("batch_size", [1, 4])
def test_magpie_novelty_answers_no_paraphrase(tmp_path, batch_size) -> None:
    llm = Writer([PLANTED, PARAPHRASE, DISTINCT, "Write a haiku about autumn leaves."])
    recipes.magpie(llm, n=3, out=tmp_path / "o", novelty=0.15, batch_size=batch_size, max_attempts=4)
    kept = pq.read_table(tmp_path / "o" / "data")["instruction"].to_pylist()
    assert kept == [PLANTED, DISTINCT, "Write a haiku about autumn leaves."]
    assert PARAPHRASE not in llm.answered and len(llm.answered) == 3  # no answer tokens spent on it
    card = (tmp_path / "o" / "README.md").read_text()
    assert '"dropped_similar": 1' in card and '"novelty": 0.15' in card


# ---------------------------------------------------------------- spreading

AREAS = {
    "Cooking": ["baking sourdough bread", "roasting vegetables", "making fresh pasta"],
    "Astronomy": ["black holes and neutron stars", "the phases of the moon", "comets and meteor showers"],
    "Personal finance": ["saving for retirement", "paying off credit card debt", "index fund investing"],
    "Gardening": ["growing tomatoes in pots", "pruning rose bushes", "composting kitchen scraps"],
}


def taxonomy(tmp_path) -> object:
    path = tmp_path / "topics.jsonl"
    rows = [{"topic": t, "subtopic": s} for t, subs in AREAS.items() for s in subs]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_spreading_moves_draws_toward_the_empty_clusters(tmp_path) -> None:
    spread = rdiv.spread_stage("topics", topics=taxonomy(tmp_path))
    assert spread.names == list(AREAS)
    feedback = spread.observe()
    planted = [f"Please tell me everything about {s} ({t})." for t in ("Cooking", "Astronomy") for s in AREAS[t]] * 4
    list(feedback([from_rows([{"id": f"p{i}", "instruction": t} for i, t in enumerate(planted)])]))
    assert spread.kept.tolist() == [12, 12, 0, 0]  # each planted row lands in its own topic's cluster
    llm = Writer()
    seen: list[str] = []
    for batch in pipe(counter_source(4), spread, _instructions(llm), feedback):
        seen += batch["spread_item"].to_pylist()
        if len(seen) >= 24:
            break
    first = [s.split(" (")[1].rstrip(")") for s in seen]
    empty = [t in ("Personal finance", "Gardening") for t in first]
    assert sum(empty[:8]) >= 7 and sum(empty[:12]) >= 9  # the empty clusters fill first
    assert sum(empty[12:]) <= 8  # then the draws even out
    assert max(spread.kept) - min(spread.kept) <= 6, spread.kept  # the gap of 12 planted rows halves
    assert spread.drawn[2] + spread.drawn[3] >= 2 * (spread.drawn[0] + spread.drawn[1])
    record = spread.describe()
    assert [c["drawn"] for c in record["clusters"]][:2] == [spread.drawn[0], spread.drawn[1]]


def _instructions(llm: Writer):
    def stage(batches):
        for batch in batches:
            prompts = [
                f"You are an expert in {s}. Users ask you questions about {s}."
                for s in batch["spread_item"].to_pylist()
            ]
            texts = [c.text for c in llm.generate(prompts, Sampling())]
            yield batch.append_column("instruction", __import__("pyarrow").array(texts))

    return stage


def test_magpie_spread_balances_kept_rows_and_records_the_draws(tmp_path) -> None:
    llm = Writer()
    # The writer gives one instruction per item, so 12 kept rows need 12 different items.
    recipes.magpie(llm, n=12, out=tmp_path / "o", spread="topics", topics=taxonomy(tmp_path), batch_size=4)
    table = pq.read_table(tmp_path / "o" / "data")
    topics = [s.split(" (")[1].rstrip(")") for s in table["spread_item"].to_pylist()]
    counts = [topics.count(t) for t in AREAS]
    assert counts == [3, 3, 3, 3], counts
    assert all(s.startswith("You are an expert in ") for s in table["system_prompt"].to_pylist())
    card = (tmp_path / "o" / "README.md").read_text()
    assert '"stage": "Spread"' in card and '"drawn"' in card and '"spread": "topics"' in card


def test_magpie_refuses_an_unknown_spread_before_loading_a_model(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synth", "magpie", "--spread", "colours", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "colours" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- synth topics

MACRO_LISTS = [
    # numbered and bulleted, after a preamble and before a remark; a topic repeated (another case,
    # a bullet) and one worded twice (its words in another order)
    "Here are 4 topics:\n1. Cooking and baking\n2. **Astronomy**\n- cooking and baking.\n3. Baking and cooking\n"
    "I hope this helps!",
    # a bare list: one line too long to be a topic
    "Personal finance\nAstronomy\nGardening:\nHome gardening tips and tricks for every season of the year here",
]
SUBTOPICS = {
    "Cooking and baking": ["Baking sourdough bread", "Roasting winter vegetables", "Sourdough bread baking"],
    "Astronomy": ["Black holes", "Phases of the moon", "black holes."],
    "Personal finance": ["Saving for retirement", "Paying off credit card debt", "Index fund investing"],
    "Gardening": ["Growing tomatoes in pots", "Pruning rose bushes", "Composting kitchen scraps"],
}


@dataclass
class ListWriter:
    """A chat model that answers `synth topics`' prompts with lists, as small models write them:
    numbered, bulleted, bold, with a chatty line, repeats (another case, another order) and a line
    too long to be a topic. Each subtopic list is one more of the topic's subtopics, in full."""

    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    name: str = "lists"
    model: str = "list-model"
    asked: list[str] = field(default_factory=list)

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        out = []
        for prompt in prompts:
            text = prompt[-1]["content"]
            self.asked.append(text)
            if "subtopics of the topic" in text:
                topic = text.split('"')[1]
                asks = sum(topic in t for t in self.asked)
                reply = "\n".join(f"{i + 1}) {s}" for i, s in enumerate(SUBTOPICS[topic][:asks]))
            else:
                reply = MACRO_LISTS[min(sum("broad" in t for t in self.asked), len(MACRO_LISTS)) - 1]
            out.append(Completion(reply, "stop", 3, len(reply.split())))
        return out


def test_parse_list_takes_the_items_of_a_model_list() -> None:
    assert rdiv.parse_list(MACRO_LISTS[0]) == [
        "Cooking and baking",
        "Astronomy",
        "cooking and baking",
        "Baking and cooking",
    ]
    assert rdiv.parse_list(MACRO_LISTS[1]) == ["Personal finance", "Astronomy", "Gardening"]


def test_topics_writes_a_deduplicated_two_level_taxonomy(tmp_path) -> None:
    llm = ListWriter()
    done = rdiv.topics(llm, n=10, per_topic=3, out=tmp_path / "t", max_calls=40)
    table = pq.read_table(tmp_path / "t" / "data").to_pylist()
    # four macro topics asked for (10 / 3): the repeats (case, bullet, word order) are dropped
    assert done["topics"] == list(SUBTOPICS)
    assert sum("broad" in t for t in llm.asked) == 2
    pairs = [(r["topic"], r["subtopic"]) for r in table]
    assert len(pairs) == 10 and done["rows"] == 10
    assert all(r["id"].startswith("topic-") for r in table)
    # each subtopic once, under the topic it was asked for: "black holes." and "Sourdough bread
    # baking" are repeats of earlier ones (normalised text; embeddings), written in later rounds
    assert sorted(pairs) == sorted(
        (t, s) for t, subs in SUBTOPICS.items() for s in subs if s not in ("black holes.", "Sourdough bread baking")
    )
    card = (tmp_path / "t" / "README.md").read_text()
    assert "macro_topics" in card and "Personal finance" in card


def test_topics_stops_short_when_the_model_repeats_itself(tmp_path) -> None:
    from synth.core import StoppedShort

    llm = ListWriter()
    with pytest.raises(StoppedShort, match="10 of 40 subtopics"):
        rdiv.topics(llm, n=40, per_topic=3, out=tmp_path / "t", max_calls=30)
    # it stops asking for macro topics after three lists bring no new one, then asks each of the
    # four for subtopics in four rounds
    assert sum("broad" in t for t in llm.asked) == 5 and len(llm.asked) == 5 + 4 * 4
    assert pq.read_table(tmp_path / "t" / "data").num_rows == 10  # what it found is written


def test_spread_topics_draws_from_a_synth_topics_output(tmp_path) -> None:
    rdiv.topics(ListWriter(), n=10, per_topic=3, out=tmp_path / "t", max_calls=40)
    written = pq.read_table(tmp_path / "t" / "data").to_pylist()
    rdiv.check_spread("topics", tmp_path / "t")  # a `synth topics` folder passes the check
    llm = Writer()
    recipes.magpie(llm, n=8, out=tmp_path / "o", spread="topics", topics=tmp_path / "t", batch_size=4)
    table = pq.read_table(tmp_path / "o" / "data")
    items = {f"{r['subtopic']} ({r['topic']})" for r in written}
    drawn = table["spread_item"].to_pylist()
    assert len(drawn) == 8 and set(drawn) <= items
    assert len({d.split(" (")[1] for d in drawn}) == 4  # every macro topic is drawn from
    card = (tmp_path / "o" / "README.md").read_text()
    assert '"spread": "topics"' in card
    assert all(f'"name": "{topic}"' in card for topic in SUBTOPICS)  # the draws per macro topic, recorded


# ---------------------------------------------------------------- --diverse beyond single-turn Magpie

COOKS = [
    "A pastry chef who runs a small bakery and teaches weekend bread classes",
    "A home cook who writes a blog about quick weeknight family dinners",
    "A restaurant line cook who specialises in grilling meat and fish",
    "A food scientist who develops recipes for a frozen meals company",
    "A retired baker who still makes sourdough for the village market",
    "A culinary student learning classic French sauces and knife skills",
    "A caterer who plans menus for weddings and large parties",
    "A vegan chef who creates plant-based versions of comfort food",
]
OTHERS = [
    "An amateur astronomer who photographs galaxies from a backyard observatory",
    "A planetarium educator who explains eclipses and comets to school groups",
    "A community gardener who grows vegetables on a shared city allotment",
    "A landscape gardener who designs drought-tolerant flower beds",
]


@dataclass
class PromptWriter:
    """A chat model that writes the next of `script` where a prompt asks for a labelled text (the
    persona templates), and answers anything else; records what it answered."""

    script: list[str]
    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    answered: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # prompts per call
    name: str = "prompts"
    model: str = "prompt-model"

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        from tests.doubles import LABEL

        self.sizes.append(len(prompts))
        out = []
        for prompt in prompts:
            label = LABEL.search(prompt[-1]["content"])
            if label:
                text = f"{label.group(1)}: {self.script.pop(0)}"
            else:
                self.answered.append(prompt[-1]["content"])
                text = "Here is an answer."
            out.append(Completion(text, "stop", 3, len(text.split())))
        return out


def test_personas_generate_diverse_spreads_the_personas_and_gates_the_texts(tmp_path) -> None:
    people = tmp_path / "people.jsonl"
    people.write_text("\n".join(json.dumps({"persona": p}) for p in COOKS + OTHERS))
    texts = [PLANTED, PARAPHRASE, DISTINCT, "Write a haiku about autumn leaves.", *docstrings(2)]
    llm = PromptWriter(list(texts))
    recipes.personas_generate(
        llm, people, out=tmp_path / "o", n=6, novelty=0.15, spread=True, responses=Sampling(max_tokens=64), batch_size=4
    )
    assert max(llm.sizes) <= 4  # the spread personas still come in batches of --batch-size
    rows = pq.read_table(tmp_path / "o" / "data").to_pylist()
    used = [r["persona"] for r in rows]
    # the first six personas are all cooks; spread, the six come from every part of the set
    assert any(p in OTHERS[:2] for p in used) and any(p in OTHERS[2:] for p in used), used
    assert [r["instruction"] for r in rows] == [t for t in texts if t != PARAPHRASE]
    assert PARAPHRASE not in llm.answered and len(llm.answered) == 5  # dropped before it is answered
    card = (tmp_path / "o" / "README.md").read_text()
    assert '"dropped_similar": 1' in card and '"novelty": 0.15' in card and '"spread": true' in card


def test_personas_generate_without_diverse_takes_the_first_personas(tmp_path) -> None:
    people = tmp_path / "people.jsonl"
    people.write_text("\n".join(json.dumps({"persona": p}) for p in COOKS + OTHERS))
    texts = [PLANTED, PARAPHRASE, DISTINCT, "Write a haiku about autumn leaves.", *docstrings(2)]
    recipes.personas_generate(PromptWriter(list(texts)), people, out=tmp_path / "o", n=6)
    rows = pq.read_table(tmp_path / "o" / "data").to_pylist()
    assert [r["persona"] for r in rows] == COOKS[:6]
    assert [r["instruction"] for r in rows] == texts  # the paraphrase kept: no gate without --diverse


def test_multi_turn_diverse_gates_the_opening_and_keeps_the_spread_system_prompt(tmp_path) -> None:
    llm = Writer([PLANTED, PARAPHRASE, DISTINCT, "Write a haiku about autumn leaves."])
    recipes.magpie(
        llm, n=3, out=tmp_path / "o", turns=2, novelty=0.15, spread="topics", topics=taxonomy(tmp_path), batch_size=4
    )
    rows = pq.read_table(tmp_path / "o" / "data").to_pylist()
    assert [r["messages"][1]["content"] for r in rows] == [PLANTED, DISTINCT, "Write a haiku about autumn leaves."]
    assert PARAPHRASE not in llm.answered  # gated before any answer token
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant"]
        system = row["messages"][0]["content"]
        assert system.startswith("You are an expert in ") and row["spread_item"] in system
        assert row["messages"][3]["content"] == f"Please tell me everything about {row['spread_item']}."
    card = (tmp_path / "o" / "README.md").read_text()
    assert '"dropped_similar": 1' in card and '"stage": "Spread"' in card and '"turns": 2' in card
