"""A test double that answers each prompt in the format the prompt asks for (tests only, never a default).

For the tests that must see rows: the small embedded model often yields none that parse, so a
test on it alone cannot tell a working pipeline from one that writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass
class FormatBackend:
    """JSON that fills `params.json_schema`; `<QUE> .. <ANS> .. </END>` pairs for a `<CON>` chunk;
    `Label: ...` where the prompt says to start with a label; an instruction for a bare pre-query
    template; a `\\boxed{}` answer (the same for every sample of a problem) where the prompt asks
    for one; fenced Python with asserts under a system prompt about code; else a plain answer.
    Replies differ with the prompt and the call, ending in a full stop."""

    template: ChatTemplate = field(default_factory=lambda: builtin("chatml"))
    name: str = "format"
    model: str = "format-model"
    chat_tuned: bool = True
    calls: list[list[Prompt]] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def context_size(self) -> int:
        return 4096

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        self.calls.append(list(prompts))
        out = []
        for i, prompt in enumerate(prompts):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            seed = xxhash.xxh64_intdigest(f"{len(self.calls)}/{i}/{text}".encode())
            reply = self._reply(prompt, text, params, seed)
            out.append(Completion(reply, "stop", len(text.split()), len(reply.split())))
        return out

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


def _code(seed: int) -> str:
    """A fenced Python answer with asserts; one in four is wrong, so verification has work to do."""
    x, op = seed % 1000, "-" if seed % 4 == 0 else "+"
    code = f"def add(a, b):\n    return a {op} b\n\n\nassert add({x}, 1) == {x + 1}\n"
    return f"Here is a solution.\n\n```python\n{code}```"


def _words(seed: int, head: str, k: int = 6) -> str:
    return " ".join([head, *(WORDS[(seed >> (6 * j)) % len(WORDS)] for j in range(k))])


def _instance(schema: dict[str, Any], seed: int) -> Any:
    """A value the schema accepts: the last of an enum (the best label), else one by type."""
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        return {name: _instance(sub, seed >> 3) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_instance(schema.get("items", {}), seed >> j) for j in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        return schema.get("maximum", schema.get("minimum", 1))
    if kind == "boolean":
        return True
    return _words(seed, "Plainly")[: schema.get("maxLength", 200)]
