"""A test double that answers each prompt in the format the prompt asks for (tests only, never a default).

For the tests that must see rows: the small embedded model often yields none that parse, so a
test on it alone cannot tell a working pipeline from one that writes nothing. With `faults`, it
also answers some rows badly, as a real model does, so that a test can tell which rows each
filter must drop: a pipeline whose filters do nothing keeps them, and fails.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from synth.backends import Completion, Prompt, Sampling
from synth.templates import ChatTemplate, builtin

WORDS = (
    "tide glacier orchard lantern violin harbor compass meadow falcon quarry ember prism canyon "
    "walnut beacon mosaic thistle copper lagoon saddle pepper marble cobalt juniper ferry anvil "
    "summit cedar pigeon velvet kettle basalt mango quill tundra raven sorrel bramble dune"
).split()
LABEL = re.compile(r'[Ss]tart your answer with "([^"]+):"')
TAG = re.compile(r"\(#(\d+)\)")  # `(#k)`: the k-th text the double wrote, in every prompt that quotes it
BENCHMARK = Path(__file__).parent / "fixtures" / "benchmarks" / "gsm8k_test.jsonl"
# The first item of the GSM8K fixture: what a `contaminated` row copies.
COPIED = json.loads(BENCHMARK.read_text(encoding="utf-8").splitlines()[0])["question"]
FATES = {
    # the text the double writes first (a Magpie instruction, a persona's problem): one per row
    "instruction_cut": "cut off by max tokens (finish reason `length`)",
    "instruction_failed": "failed (finish reason `error`)",
    "contaminated": "a copy of the GSM8K fixture's first question (COPIED)",
    "near_copy": "the text written before it with a comma added (its tag kept)",
    # every later prompt that quotes the row (its answers, its judges, its samples)
    "answer_cut": "answers cut off by max tokens after their first sentence (mid-code for code)",
    "answer_failed": "answers failed (finish reason `error`) after their first sentence, which they keep",
    "poor": "judges give the worst label of each scale, the lowest score",
    "judge_failed": "judges answer in prose, not JSON",
    "disagree": "each sample of a `\\boxed{}` problem gives another answer",
    "wrong_code": "code whose asserts fail",
    "untested_code": "code that runs and asserts nothing",
    "no_pairs": "a `<CON>` chunk gets prose, no `<QUE>`/`<ANS>` pair",
    "repeated_pair": "a `<CON>` chunk gets the same question twice",
}


@dataclass
class FormatBackend:
    """JSON that fills `params.json_schema`; `<QUE> .. <ANS> .. </END>` pairs for a `<CON>` chunk;
    `Label: ...` where the prompt says to start with a label; an instruction for a bare pre-query
    template; a `\\boxed{}` answer (the same for every sample of a problem) where the prompt asks
    for one; fenced Python with asserts under a system prompt about code; else a plain answer.
    Replies differ with the prompt and the call, ending in a full stop.

    `faults` (None: every answer is good, and one code answer in four is wrong, by seed) plans bad
    answers, deterministically: an int key k names the k-th text the double writes first (Magpie's
    instructions, persona problems; counted from 0, so row `f"{k:09d}"` of a counter source, or
    the k-th persona), which then ends in the tag `(#k)`, and the fate (a name in FATES) follows
    every prompt that quotes it; a str key names the prompts whose text (a `<CON>` prompt's last
    chunk) contains it. Rows without a fault get good answers only: the best label, agreeing
    samples, code that passes its asserts."""

    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    name: str = "format"
    model: str = "format-model"
    chat_tuned: bool = True
    calls: list[list[Prompt]] = field(default_factory=list)
    faults: Mapping[int | str, str] | None = None
    written: list[str] = field(default_factory=list)  # the texts it wrote first, in order: text k has tag (#k)

    def __post_init__(self) -> None:
        unknown = set((self.faults or {}).values()) - set(FATES)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FATES)}")

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def context_size(self) -> int:
        return 4096

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        out = []
        samples: Counter[str] = Counter()  # how many times this call has held the prompt: the sample's index
        for i, prompt in enumerate(prompts):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            seed = xxhash.xxh64_intdigest(f"{len(self.calls)}/{i}/{text}".encode())
            if self.faults is None:
                reply = self._reply(prompt, text, params, seed)
                out.append(Completion(reply, "stop", len(text.split()), len(reply.split())))
            else:
                out.append(self._planned(prompt, text, params, seed, samples[text]))
            samples[text] += 1
        return out

    def fate(self, text: str) -> str | None:
        """The fault planned for a prompt's text: its tag's, else the first str key it contains."""
        faults = self.faults or {}
        tag = TAG.search(text)
        if tag and int(tag.group(1)) in faults:
            return faults[int(tag.group(1))]
        subject = text.rsplit("<CON>", 1)[-1]  # a <CON> prompt is keyed by its own chunk, not the earlier ones
        return next((f for k, f in faults.items() if isinstance(k, str) and k in subject), None)

    def _planned(self, prompt: Prompt, text: str, params: Sampling, seed: int, sample: int) -> Completion:
        label = LABEL.search(text)
        if not params.json_schema and (isinstance(prompt, str) and "<CON>" not in prompt or label):
            return self._first(label.group(1) if label else None, seed)
        fate = self.fate(text)
        if params.json_schema:  # a judge
            if fate == "judge_failed":
                return _done("I would rate this one as fine overall.")
            return _done(json.dumps(_instance(params.json_schema, seed, worst=fate == "poor")))
        if isinstance(prompt, str):  # a <CON> chunk for the instruction synthesizer
            pairs = [_words(seed >> j, "Why does") for j in (0, 7)]
            if fate == "repeated_pair":
                pairs[1] = pairs[0]
            reply = " ".join(f"<QUE> {q}? <ANS> {_words(seed >> 1, 'Because of')}. </END>" for q in pairs)
        elif "\\boxed{}" in text:
            answer = xxhash.xxh32_intdigest(text.encode()) % 97 + (sample if fate == "disagree" else 0)
            reply = f"{_words(seed, 'We reason about')}. The answer is \\boxed{{{answer}}}."
        elif prompt[0]["role"] == "system" and "code" in prompt[0]["content"]:
            reply = _code(seed, wrong=fate == "wrong_code", asserts=fate != "untested_code")
        else:
            reply = f"{_words(seed, 'Here is the answer on')}. It is complete."
        if fate == "no_pairs":
            reply = f"{_words(seed, 'This text is about')}."
        if fate in ("answer_cut", "answer_failed"):
            if isinstance(prompt, str):  # a <CON> chunk's answer: its first pair whole, cut inside the second
                cut = reply[: reply.index("</END>") + len("</END>") + 12]
            elif ". " in reply:  # its first sentence, whole: only the finish reason tells it is not done
                cut = reply[: reply.index(". ") + 1]
            else:  # code: cut inside its fence
                cut = reply[: len(reply) // 2]
            if fate == "answer_cut":
                return Completion(cut, "length", 3, len(cut.split()))
            return Completion(cut, "error", 3, len(cut.split()), error="planted failure")
        return _done(reply)

    def _first(self, label: str | None, seed: int) -> Completion:
        """The k-th text written first (an instruction, a labelled problem), tagged `(#k)`."""
        k = len(self.written)
        fate = (self.faults or {}).get(k)
        if fate == "contaminated":
            body = COPIED
        elif fate == "near_copy" and self.written:
            # The text before it, a comma added, its tag kept: a tag of its own would be a number the
            # other text lacks, which dedup's numbers-and-names check rightly reads as a distinct row.
            text = self.written[-1].replace(" ", ", ", 1)
        else:
            body = f"{_words(seed, 'Explain how')} work together?"
        if fate != "near_copy" or not self.written:
            text = f"{body} (#{k})"
        self.written.append(text)
        reply = f"{label}: {text}" if label else text
        if fate == "instruction_cut":
            return Completion(reply[: len(reply) // 2], "length", 3, 4)
        if fate == "instruction_failed":
            return Completion(reply[:10], "error", 3, 1, error="planted failure")
        return _done(reply)

    def _reply(self, prompt: Prompt, text: str, params: Sampling, seed: int) -> str:
        if params.json_schema:
            return json.dumps(_instance(params.json_schema, seed))
        if isinstance(prompt, str) and "<CON>" in prompt:
            return f"<QUE> {_words(seed, 'Why does')}? <ANS> {_words(seed >> 1, 'Because of')}. </END>"
        if "\\boxed{}" in text:  # a self-consistency prompt: one answer per problem, so samples agree
            answer = xxhash.xxh32_intdigest(text.encode()) % 97
            return f"{_words(seed, 'We reason about')}. The answer is \\boxed{{{answer}}}."
        if not isinstance(prompt, str) and "code" in prompt[0]["content"] and prompt[0]["role"] == "system":
            return _code(seed)
        label = LABEL.search(text)
        if label:
            return f"{label.group(1)}: {_words(seed, 'A question about')}?"
        if isinstance(prompt, str):  # a pre-query template: Magpie asks for an instruction
            return f"{_words(seed, 'Explain how')} work together?"
        return f"{_words(seed, 'Here is the answer on')}. It is complete."


def _done(text: str) -> Completion:
    return Completion(text, "stop", 3, len(text.split()))


def _code(seed: int, wrong: bool | None = None, asserts: bool = True) -> str:
    """A fenced Python answer with asserts; by default one in four is wrong, so verification has work to do."""
    x = seed % 1000
    op = "-" if (seed % 4 == 0 if wrong is None else wrong) else "+"
    test = f"\n\nassert add({x}, 1) == {x + 1}\n" if asserts else f"\n\nprint(add({x}, 1))\n"
    code = f"def add(a, b):\n    return a {op} b\n{test}"
    return f"Here is a solution.\n\n```python\n{code}```"


def _words(seed: int, head: str, k: int = 6) -> str:
    return " ".join([head, *(WORDS[(seed >> (6 * j)) % len(WORDS)] for j in range(k))])


def _instance(schema: dict[str, Any], seed: int, worst: bool = False) -> Any:
    """A value the schema accepts: the last of an enum (the best label), else one by type;
    `worst`: the first label, the lowest number."""
    if "enum" in schema:
        return schema["enum"][0 if worst else -1]
    kind = schema.get("type")
    if kind == "object":
        return {name: _instance(sub, seed >> 3, worst) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        items = schema.get("items", {})
        return [_instance(items, seed >> j, worst) for j in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        if worst:
            return schema.get("minimum", schema.get("maximum", 1))
        return schema.get("maximum", schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return _words(seed, "Plainly")[: schema.get("maxLength", 200)]
