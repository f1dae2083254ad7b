"""Verified data: code that runs, answers that agree.

Code: the fenced blocks of a response (Python; the language from the fence) run in `synth.sandbox`
with the tests from a column or the asserts in the answer; code that runs but checks nothing is
`untested`, never a pass. Math: the final answer is taken from
`\\boxed{}`, "the answer is" or the last number, and compared by value and symbolically
(math-verify, on sympy); with samples, the majority answer and its agreement rate
(self-consistency) decide.
"""

from __future__ import annotations

import ast
import functools
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.backends import Backend, Sampling
from synth.core import Batch, SynthError, add_columns
from synth.sandbox import Sandbox
from synth.stages.filters import Rule
from synth.stages.magpie import MESSAGES, _seeded

CODE_STATUSES = ("pass", "untested", "fail", "error", "timeout", "no_code")
MATH_STATUSES = ("pass", "fail", "no_answer", "low_agreement")
RUNNABLE = {"python"}
ALIASES = {"py": "python", "python3": "python", "py3": "python", "ipython": "python", "": ""}
FENCE = re.compile(
    r"^[ \t]*(?P<mark>`{3,}|~{3,})[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<code>.*?)^[ \t]*(?P=mark)[ \t]*$", re.M | re.S
)


# ---------------------------------------------------------------- code


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of `text` as (language, code); an unlabelled block that parses as Python
    is Python. An unclosed fence (a cut-off answer) yields nothing."""
    blocks = []
    for m in FENCE.finditer(text or ""):
        lang = m.group("lang").lower()
        lang = ALIASES.get(lang, lang)
        code = m.group("code")
        if lang == "":
            lang = "python" if _parses(code) else "text"
        blocks.append((lang, code))
    return blocks


def program_of(text: str | None, tests: str | None = None) -> tuple[str | None, str | None, str]:
    """The program to run for a response: its Python blocks joined in order, then `tests`.

    Returns (program or None, the language found, where the tests come from: `column`, `asserts`
    or `none`). A response with no fence that parses whole as Python statements counts as code.
    Asserts count only where they run: at module level, or in a function the program calls (a
    `def test_...` nobody calls checks nothing), or in `unittest` cases with `unittest.main()`.
    """
    blocks = code_blocks(text or "")
    python = [code for lang, code in blocks if lang in RUNNABLE]
    if not blocks and text and _parses(text) and _has_statement(text):
        python = [text]
    if not python:
        return None, (blocks[0][0] if blocks else None), "none"
    code = "\n\n".join(c.rstrip() for c in python) + "\n"
    if tests and tests.strip():
        return f"{code}\n\n{tests.rstrip()}\n", "python", "column"
    return code, "python", "asserts" if _has_assert(code) else "none"


@functools.lru_cache(maxsize=4096)
def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _has_statement(code: str) -> bool:
    # Prose almost never parses; a lone word does (a bare name), so a bare expression is not code.
    return any(not isinstance(node, ast.Expr) for node in ast.parse(code).body)


def _has_assert(code: str) -> bool:
    if not _parses(code):
        return "assert " in code
    tree = ast.parse(code)
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    called = {f.id if isinstance(f, ast.Name) else f.attr for f in calls if isinstance(f, (ast.Name, ast.Attribute))}
    return _checks(tree.body, called)


def _checks(body: list[ast.stmt], called: set[str]) -> bool:
    """Whether running `body` can reach an assert (or `raise AssertionError`, or a unittest case
    run by `unittest.main()`); a function's body counts only if its name is called somewhere."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found = node.name in called and _checks(node.body, called)
        elif isinstance(node, ast.ClassDef):
            unittest = "main" in called and any("TestCase" in ast.unparse(base) for base in node.bases)
            found = unittest or _checks(node.body, called)
        elif isinstance(node, ast.Assert) or (isinstance(node, ast.Raise) and "AssertionError" in ast.unparse(node)):
            found = True
        else:  # if/for/while/with/try/match: the statements inside them
            inner = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
            inner += [c for h in getattr(node, "handlers", []) + getattr(node, "cases", []) for c in h.body]
            found = _checks(inner, called)
        if found:
            return True
    return False


@dataclass(frozen=True, repr=False)
class VerifyCode:
    """Reads `column` (and `tests_column`); adds `verify_status` (pass, untested, fail, error,
    timeout, no_code), `verify_language`, `verify_tests` (column, asserts, none), `verify_stdout`,
    `verify_stderr` (tails) and `verify_seconds`.

    A program with no tests that exits 0 is `untested`, not `pass`: it showed only that it runs.
    Nothing is dropped here: `passed()` is the rule that keeps only passing rows.
    """

    column: str = "response"
    tests_column: str | None = None
    sandbox: Sandbox = field(default_factory=Sandbox)
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __repr__(self) -> str:
        return (
            f"VerifyCode(column={self.column!r}, tests_column={self.tests_column!r}, "
            f"limits={self.sandbox.limits!r}, isolation={self.sandbox.mode!r})"
        )

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            for name in (self.column, self.tests_column):
                if name and name not in batch.column_names:
                    raise SynthError(
                        f"the input has no column {name!r} (it has {', '.join(batch.column_names)}); "
                        "name the right one with --column or --tests-column"
                    )
            yield self.apply(batch)

    def apply(self, batch: Batch) -> Batch:
        texts = batch[self.column].to_pylist()
        tests = batch[self.tests_column].to_pylist() if self.tests_column else [None] * batch.num_rows
        found = [program_of(t if isinstance(t, str) else None, s) for t, s in zip(texts, tests)]
        ran = iter(self.sandbox.run_all([p for p, _, _ in found if p is not None]))
        rows: dict[str, list[Any]] = {k: [] for k in ("status", "stdout", "stderr", "seconds")}
        for program, _, tested in found:
            result = next(ran) if program is not None else None
            status = result.status if result else "no_code"
            rows["status"].append("untested" if status == "pass" and tested == "none" else status)
            rows["stdout"].append(result.stdout if result else None)
            rows["stderr"].append(result.stderr if result else None)
            rows["seconds"].append(result.seconds if result else None)
            if result is not None:
                self.stats["cached"] += result.cached
                self.stats["sandbox_failed"] += result.setup_failed
        self.stats.update(f"verify_{s}" for s in rows["status"])
        return add_columns(
            batch,
            verify_status=pa.array(rows["status"], pa.string()),
            verify_language=pa.array([lang for _, lang, _ in found], pa.string()),
            verify_tests=pa.array([kind for _, _, kind in found], pa.string()),
            verify_stdout=pa.array(rows["stdout"], pa.string()),
            verify_stderr=pa.array(rows["stderr"], pa.string()),
            verify_seconds=pa.array(rows["seconds"], pa.float64()),
        )


def passed(name: str = "verify", untested: bool = True) -> Rule:
    """The filter rule that drops every row whose `verify_status` is not `pass` (nor `untested`:
    code that ran clean but checked nothing, kept unless `untested` is False)."""
    keep = ["pass", "untested"] if untested else ["pass"]
    return Rule(name, lambda b: pc.invert(pc.fill_null(pc.is_in(b["verify_status"], pa.array(keep)), False)))


# ---------------------------------------------------------------- math

BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*(?P<answer>.+?)\s*(?:\.(?=\s|$)|\n|$)", re.I
)
GSM8K = re.compile(r"^####\s*(?P<answer>.+?)\s*$", re.M)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def extract_answer(text: str | None) -> str | None:
    """The final answer of a solution: the last `\\boxed{...}`, else the last "the answer is X"
    (or GSM8K's `#### X`), else the last number; None if there is none."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:  # "" is an unclosed box, a cut-off answer: no answer rather than a stray number
        return boxed.strip() or None
    said = [m.group("answer") for m in (*GSM8K.finditer(text), *ANSWER_IS.finditer(text))]
    if said:
        answer = said[-1].strip().strip("$").strip()
        if answer:
            return answer
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def reference_answer(text: str | None) -> str | None:
    """The expected answer in a reference column: the last `\\boxed{...}` or GSM8K's `#### X` where
    it has one (a reference solution), else the whole text. Never its last number, as for a
    solution: the reference `(x+1)^2` or `\\sqrt{2}` is an expression, not `2`."""
    if text is None:
        return None
    boxed = _last_boxed(text)
    if boxed and boxed.strip():
        return boxed.strip()
    said = GSM8K.findall(text)
    answer = (said[-1] if said else text).strip().strip("$").strip()
    return answer or None


def _last_boxed(text: str) -> str | None:
    starts = list(BOXED.finditer(text))
    if not starts:
        return None
    depth, begin = 1, starts[-1].end()
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i]
    return ""


def equivalent(a: str | None, b: str | None) -> bool:
    """Whether two final answers are the same: as text, as numbers, or symbolically (math-verify)."""
    if a is None or b is None:
        return False
    if _normal(a) == _normal(b):
        return True
    x, y = _parsed(a), _parsed(b)
    if not x or not y:
        return False
    from math_verify import verify

    timeout = 5 if threading.current_thread() is threading.main_thread() else None  # it times out by signal
    xs, ys = list(x), list(y)  # verify takes a list (a tuple is compared as one value)
    return bool(verify(xs, ys, timeout_seconds=timeout) or verify(ys, xs, timeout_seconds=timeout))


def _normal(answer: str) -> str:
    text = answer.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\\(?:left|right|,|;|!|\s)", "", text)
    return re.sub(r"\s+", "", text).rstrip(".").lower()


@functools.lru_cache(maxsize=65536)
def _parsed(answer: str) -> tuple[Any, ...]:
    try:
        from math_verify import parse
    except ImportError:
        raise SynthError("comparing math answers needs math-verify: pip install 'math-verify>=0.9'") from None
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    text = _normal(answer) if "\\" in answer else answer.strip().strip("$")
    text = text.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text) else text
    return tuple(parse(f"${text}$", parsing_timeout=timeout) or parse(text, parsing_timeout=timeout))


def majority(answers: Sequence[str | None]) -> tuple[str | None, float, int]:
    """The answer most samples agree on (equivalence classes; the earliest wins a tie), the share
    of all samples in its class, and the index of its first sample (-1 if no sample answered)."""
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        home = next((g for g in groups if equivalent(answers[g[0]], answer)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    if not groups:
        return None, 0.0, -1
    best = max(groups, key=len)
    return answers[best[0]], len(best) / len(answers), best[0]


@dataclass(frozen=True)
class CheckAnswer:
    """Reads `column` (a solution) and `reference` (the expected answer, taken whole, or a solution
    ending in `\\boxed{}` or `#### X`); adds `predicted_answer` and `verify_status`: pass, fail
    (not equivalent) or no_answer.

    A solution whose `<column>_finish_reason` is not `stop` has no answer. After
    `SelfConsistency`, a row it did not pass keeps its status."""

    column: str = "response"
    reference: str = "answer"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            for name in (self.column, self.reference):
                if name not in batch.column_names:
                    raise SynthError(
                        f"the input has no column {name!r} (it has {', '.join(batch.column_names)}); "
                        "name the right one with --column or --reference-column"
                    )
            answers = [extract_answer(t) for t in batch[self.column].to_pylist()]
            reason = f"{self.column}_finish_reason"
            if reason in batch.column_names:  # a cut-off or failed solution has no final answer
                answers = [a if r in (None, "stop") else None for a, r in zip(answers, batch[reason].to_pylist())]
            expected = [reference_answer(str(r)) if r is not None else None for r in batch[self.reference].to_pylist()]
            statuses = [
                "no_answer" if a is None else "pass" if equivalent(a, e) else "fail" for a, e in zip(answers, expected)
            ]
            if "verify_status" in batch.column_names:  # after self-consistency: its verdict stands where it failed
                statuses = [s if p == "pass" else p for s, p in zip(statuses, batch["verify_status"].to_pylist())]
            self.stats.update(f"verify_{s}" for s in statuses)
            yield add_columns(
                batch,
                predicted_answer=pa.array(answers, pa.string()),
                verify_status=pa.array(statuses, pa.string()),
            )


@dataclass(frozen=True)
class SelfConsistency:
    """Reads `column` (a problem; rows where it is null are not asked); asks `backend` for `k`
    solutions each, and adds `response` (the first solution giving the majority answer),
    `response_finish_reason`, `messages`, `answer`, `answer_agreement` (the share of the k
    samples that agree with it), `answer_votes` (each sample's answer) and `verify_status`:
    pass, low_agreement (under `min_agreement`) or no_answer.

    A sample cut off by max tokens, or failed, has no answer: it counts against agreement.
    """

    backend: Backend
    k: int = 4
    params: Sampling = Sampling(max_tokens=1024, temperature=0.7)
    column: str = "instruction"
    min_agreement: float = 0.5
    prompt: str = "{problem}"
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            if self.column not in batch.column_names:
                raise SynthError(
                    f"the input has no column {self.column!r} (it has {', '.join(batch.column_names)}); "
                    "name the right one with --problem-column"
                )
            yield self.apply(batch)

    def apply(self, batch: Batch) -> Batch:
        problems = batch[self.column].to_pylist()
        asked = [i for i, p in enumerate(problems) if isinstance(p, str) and p.strip()]
        convs = [[{"role": "user", "content": self.prompt.replace("{problem}", problems[i])}] for i in asked]
        prompts = [conv for conv in convs for _ in range(self.k)]
        out = self.backend.generate(prompts, _seeded(self.params, batch)) if prompts else []
        rows: dict[str, list[Any]] = {k: [None] * batch.num_rows for k in ("response", "reason", "messages", "answer")}
        rows["agreement"], rows["votes"] = [0.0] * batch.num_rows, [None] * batch.num_rows
        rows["status"] = ["no_answer"] * batch.num_rows
        for n, i in enumerate(asked):
            samples = out[n * self.k : (n + 1) * self.k]
            votes = [extract_answer(c.text) if c.finish_reason == "stop" else None for c in samples]
            answer, agreement, first = majority(votes)
            rows["votes"][i], rows["agreement"][i] = votes, agreement
            if answer is None:
                continue
            chosen = samples[first]
            rows["answer"][i], rows["reason"][i] = answer, chosen.finish_reason
            rows["response"][i] = chosen.text.strip()
            rows["messages"][i] = [*convs[n], {"role": "assistant", "content": chosen.text.strip()}]
            rows["status"][i] = "pass" if agreement >= self.min_agreement else "low_agreement"
        self.stats.update(f"verify_{s}" for s in rows["status"])
        return add_columns(
            batch,
            response=pa.array(rows["response"], pa.string()),
            response_finish_reason=pa.array(rows["reason"], pa.string()),
            messages=pa.array(rows["messages"], MESSAGES),
            answer=pa.array(rows["answer"], pa.string()),
            answer_agreement=pa.array(rows["agreement"], pa.float64()),
            answer_votes=pa.array(rows["votes"], pa.list_(pa.string())),
            verify_status=pa.array(rows["status"], pa.string()),
        )
