"""Verified data: code extraction and `synth verify code`; answer extraction, equivalence,
self-consistency and `synth verify math`."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synth.backends import Completion, Sampling
from synth.core import from_rows
from synth.stages.verify import (
    CheckAnswer,
    SelfConsistency,
    equivalent,
    extract_answer,
    majority,
    program_of,
)
from tests.cards import flat
from tests.conftest import ScriptedBackend
from tests.test_cli import synth

GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nCheck:\n```py\nassert add(2, 3) == 5\n```"
BUGGY = "```python\ndef add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n```"
LOOP = "```python\nwhile True:\n    pass\n```"
RUNS = "```python\ndef add(a, b):\n    return a + b\n\nprint(add(2, 3))\n```"  # runs, checks nothing
UNCALLED = "```python\ndef add(a, b):\n    return a + b\n\ndef test_add():\n    assert add(2, 3) == 5\n```"
CODE_ROWS = [
    {"id": "good", "response": GOOD, "tests": None},
    {"id": "buggy", "response": BUGGY, "tests": None},
    {"id": "tested", "response": "```python\ndef sq(x):\n    return x * x\n```", "tests": "assert sq(3) == 9"},
    {"id": "wrong-test", "response": "```python\ndef sq(x):\n    return x + x\n```", "tests": "assert sq(3) == 9"},
    {"id": "loop", "response": LOOP, "tests": None},
    {"id": "prose", "response": "Use a dictionary for that.", "tests": None},
    {"id": "js", "response": "```js\nconsole.log(1)\n```", "tests": None},
    {"id": "cut", "response": "```python\ndef add(a, b):\n    return", "tests": None},
    {"id": "untested", "response": RUNS, "tests": None},
    {"id": "uncalled", "response": UNCALLED, "tests": None},  # a pytest-style test nobody runs
]


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_program_of_joins_python_blocks_and_names_the_tests() -> None:
    assert program_of(GOOD) == ("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n", "python", "asserts")
    assert program_of("x = 1\nprint(x)") == ("x = 1\nprint(x)\n", "python", "none")  # bare code, no fence
    assert program_of("Hello") == (None, None, "none")  # a lone word parses as Python, but is no code
    assert program_of("```js\nconsole.log(1)\n```") == (None, "js", "none")
    assert program_of("```\nprint(1)\n```", "assert 1 + 1 == 2")[1:] == ("python", "column")
    assert program_of("```\n$ ls -la\n```") == (None, "text", "none")
    assert program_of("```python\ndef f():\n    return") == (None, None, "none")  # an unclosed fence
    # asserts count only where the program runs them
    assert program_of(UNCALLED)[2] == "none"
    assert program_of(UNCALLED + "\n```python\ntest_add()\n```")[2] == "asserts"
    assert program_of("```python\nif __name__ == '__main__':\n    assert 1 + 1 == 2\n```")[2] == "asserts"
    unit = "import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.assertEqual(1, 1)\n"
    assert program_of(unit)[2] == "none" and program_of(unit + "unittest.main()\n")[2] == "asserts"
    assert program_of("x = 1\nif x != 1:\n    raise AssertionError(x)")[2] == "asserts"


def _provenance(out) -> dict:
    card = (out / "README.md").read_text()
    return json.loads(card[card.index("```json") + 7 : card.rindex("```")])


def test_verify_code_cli_keeps_passing_rows_and_rejects_the_rest(tmp_path) -> None:
    src = _jsonl(tmp_path / "in.jsonl", CODE_ROWS)
    out, rejects, cache = tmp_path / "out", tmp_path / "rejects", tmp_path / "cache"
    argv = ["verify", "code", str(src), "--out", str(out), "--rejects", str(rejects), "--tests-column", "tests"]
    done = synth(*argv, "--timeout", "2", "--cache", str(cache))
    assert done.returncode == 0, done.stderr
    kept = {r["id"]: r for r in pq.read_table(out / "data").to_pylist()}
    assert set(kept) == {"good", "tested", "untested", "uncalled"}
    assert [kept[k]["verify_tests"] for k in ("good", "tested")] == ["asserts", "column"]
    # code that runs but checks nothing is kept, marked, and never counted as a pass
    assert [(kept[k]["verify_status"], kept[k]["verify_tests"]) for k in ("untested", "uncalled")] == [
        ("untested", "none"),
        ("untested", "none"),
    ]
    assert [kept[k]["verify_status"] for k in ("good", "tested")] == ["pass", "pass"]
    assert kept["untested"]["verify_stdout"] == "5\n"
    dropped = {r["id"]: r["verify_status"] for r in pq.read_table(rejects / "data").to_pylist()}
    assert dropped == {
        "buggy": "fail",
        "wrong-test": "fail",
        "loop": "timeout",
        "prose": "no_code",
        "js": "no_code",
        "cut": "no_code",
    }
    counts = flat(_provenance(out)["counts"])
    assert (counts["verify_pass"], counts["verify_untested"], counts["verify_timeout"]) == (2, 2, 1)
    assert _provenance(out)["require_tests"] is False
    # A rerun costs nothing: every program's result comes from the cache (the loop's 2 s too).
    again = synth(*argv, "--timeout", "2", "--cache", str(cache), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert flat(_provenance(out)["counts"])["cached"] == 7
    assert pq.read_table(out / "data").num_rows == 4


def test_verify_code_require_tests_drops_code_that_checks_nothing(tmp_path) -> None:
    from synth.recipes import verify_code
    from synth.sandbox import Limits, Sandbox

    rows = [r for r in CODE_ROWS if r["id"] in {"good", "tested", "buggy", "untested", "uncalled"}]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    argv = ["verify", "code", str(src), "--out", str(out), "--rejects", str(rejects), "--tests-column", "tests"]
    done = synth(*argv, "--timeout", "5", "--no-cache", "--require-tests")
    assert done.returncode == 0, done.stderr
    kept = pq.read_table(out / "data").to_pylist()
    assert [(r["id"], r["verify_status"]) for r in kept] == [("good", "pass"), ("tested", "pass")]
    dropped = {r["id"]: (r["verify_status"], r["rejected_by"]) for r in pq.read_table(rejects / "data").to_pylist()}
    assert dropped == {
        "buggy": ("fail", "verify"),
        "untested": ("untested", "verify"),
        "uncalled": ("untested", "verify"),
    }
    card = _provenance(out)
    assert card["require_tests"] is True and flat(card["counts"])["verify_untested"] == 2
    # the same rows through the recipe, without the flag: the untested ones stay, marked
    sandbox = Sandbox(Limits(timeout=5.0), jobs=2)
    result = verify_code(src, out=tmp_path / "lenient", sandbox=sandbox, tests_column="tests")
    lenient = {r["id"]: r["verify_status"] for r in pq.read_table(tmp_path / "lenient" / "data").to_pylist()}
    assert lenient == {"good": "pass", "tested": "pass", "untested": "untested", "uncalled": "untested"}
    assert result["counts"]["verify_pass"] == 2 and result["counts"]["verify_untested"] == 2


def test_verify_code_cli_names_a_missing_column(tmp_path) -> None:
    src = _jsonl(tmp_path / "in.jsonl", [{"id": "a", "answer": GOOD}])
    done = synth("verify", "code", str(src), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "no column 'response'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{3}, then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("Thus the answer is 0.5.", "0.5"),
        ("The final answer is: $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("We get 3 boxes and then 1,250 apples", "1250"),
        ("No numbers at all.", None),
        ("The answer is \\boxed{x^2 + 1", None),  # cut off inside the box: no stray number instead
    ],
)
def test_extract_answer(text, answer) -> None:
    assert extract_answer(text) == answer


def test_equivalent_forms_agree_and_different_values_do_not() -> None:
    forms = ["1/2", "0.5", "\\frac{1}{2}", "\\dfrac{1}{2}", "$\\frac12$"]
    assert all(equivalent(a, b) for a in forms for b in forms)
    assert equivalent("x^2+2x+1", "(x+1)^2") and equivalent("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}")
    assert equivalent("1,000", "1000")
    assert not equivalent("1/2", "1/3") and not equivalent("0.5", "5") and not equivalent("2", None)


def test_majority_groups_equivalent_answers() -> None:
    assert majority(["3", "1/2", "0.5", None, "\\frac{1}{2}"]) == ("1/2", 0.6, 1)
    assert majority(["1", "2"]) == ("1", 0.5, 0)  # a tie goes to the earliest sample
    assert majority([None, None]) == (None, 0.0, -1)


def test_self_consistency_keeps_the_majority_answer_and_its_agreement() -> None:
    cut = Completion("Then \\boxed{9", "length")
    llm = ScriptedBackend(
        replies=[
            *["So \\boxed{\\frac{1}{2}}.", "The answer is 0.5.", "\\boxed{3}", "It is 1/2"],
            *["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", cut],
        ]
    )
    stage = SelfConsistency(llm, k=4, params=Sampling(max_tokens=64), min_agreement=0.5, prompt="Solve: {problem}")
    rows = [{"id": "p", "instruction": "1 divided by 2?"}, {"id": "q", "instruction": "Pick 1-3."}]
    rows.append({"id": "r", "instruction": None})  # not asked
    (out,) = stage([from_rows(rows)])
    got = out.to_pylist()
    asked = [[{"role": "user", "content": f"Solve: {q}"}] for q in ("1 divided by 2?", "Pick 1-3.")]
    assert llm.calls == [[asked[0]] * 4 + [asked[1]] * 4]  # one call: K samples of each problem asked
    assert (got[0]["answer"], got[0]["answer_agreement"], got[0]["verify_status"]) == ("\\frac{1}{2}", 0.75, "pass")
    assert got[0]["response"] == "So \\boxed{\\frac{1}{2}}." and got[0]["messages"][-1]["content"] == got[0]["response"]
    assert got[0]["answer_votes"] == ["\\frac{1}{2}", "0.5", "3", "1/2"]
    assert (got[1]["answer_agreement"], got[1]["verify_status"]) == (0.25, "low_agreement")
    assert got[1]["answer_votes"][-1] is None  # the cut-off sample has no answer
    assert (got[2]["verify_status"], got[2]["response"]) == ("no_answer", None)
    assert stage.stats == {"verify_pass": 1, "verify_low_agreement": 1, "verify_no_answer": 1}


def test_check_answer_against_a_reference_column() -> None:
    rows = [
        {"id": "a", "response": "Half of it: \\boxed{\\frac{1}{2}}", "answer": "0.5"},
        {"id": "b", "response": "It is 7.", "answer": "#### 8"},
        {"id": "c", "response": "I do not know.", "answer": "3"},
        {"id": "d", "response": "The answer is 3", "answer": "3", "response_finish_reason": "length"},
    ]
    rows[0]["response_finish_reason"] = rows[1]["response_finish_reason"] = rows[2]["response_finish_reason"] = "stop"
    (out,) = CheckAnswer("response", "answer")([from_rows(rows)])
    assert out["verify_status"].to_pylist() == ["pass", "fail", "no_answer", "no_answer"]
    assert out["predicted_answer"].to_pylist() == ["\\frac{1}{2}", "7", None, None]


def test_check_answer_takes_an_expression_reference_whole() -> None:
    # A reference is the answer itself (or a solution ending in \boxed{} or `#### X`), never
    # cut down to its last number: `\sqrt{2}` is not 2, `(x+1)^2` is not 2.
    cases = [
        ("The answer is 2.", "\\sqrt{2}", "fail"),
        ("So \\boxed{\\sqrt{2}}.", "\\sqrt{2}", "pass"),
        ("The answer is $x^2+2x+1$.", "(x+1)^2", "pass"),
        ("\\boxed{2}", "(x+1)^2", "fail"),
        ("The answer is 0.5.", "\\frac{1}{2}", "pass"),
        ("The answer is 2.", "$\\frac{1}{2}$", "fail"),
        ("\\boxed{\\frac{1}{2}}", "We halve it: $\\boxed{\\dfrac{1}{2}}$", "pass"),  # a reference solution
        ("It is 72.", "She sold 48/2 = 24 clips.\n#### 72", "pass"),  # GSM8K's answer column
        ("It is 24.", "She sold 48/2 = 24 clips.\n#### 72", "fail"),
    ]
    rows = [{"id": str(i), "response": r, "answer": a} for i, (r, a, _) in enumerate(cases)]
    (out,) = CheckAnswer("response", "answer")([from_rows(rows)])
    assert out["verify_status"].to_pylist() == [status for _, _, status in cases]


def test_verify_math_cli_with_a_reference(tmp_path) -> None:
    rows = [
        {"id": "a", "response": "So the answer is \\boxed{\\dfrac{1}{2}}.", "gold": "1/2"},
        {"id": "b", "response": "The answer is 0.25.", "gold": "\\frac{1}{2}"},
    ]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    done = synth("verify", "math", str(src), "--out", str(out), "--rejects", str(rejects), "--reference-column", "gold")
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in pq.read_table(out / "data").to_pylist()] == ["a"]
    assert [(r["id"], r["verify_status"]) for r in pq.read_table(rejects / "data").to_pylist()] == [("b", "fail")]
    nothing = synth("verify", "math", str(src), "--out", str(tmp_path / "o2"))
    assert nothing.returncode == 2 and "--reference-column" in nothing.stderr
    prompt = tmp_path / "p.txt"
    prompt.write_text("Solve it.")  # no {problem}: refused before any model loads
    bad = synth("verify", "math", str(src), "--out", str(tmp_path / "o3"), "--samples", "2", "--prompt", str(prompt))
    assert bad.returncode == 2 and "p.txt" in bad.stderr and "backend" not in bad.stderr


def test_self_consistency_on_the_embedded_model(tmp_path, embedded) -> None:
    # The 135M model is no mathematician: check that it was asked K times a problem and that
    # every row is accounted for, kept only with agreement, else rejected with its status. With
    # K = 2 one sample that names a number is half the votes, enough: some row must be kept.
    from synth.recipes import verify_math

    problems = [{"id": str(i), "instruction": q} for i, q in enumerate(["What is 2 + 3?", "What is 10 / 4?", "7 * 6?"])]
    src = _jsonl(tmp_path / "in.jsonl", problems)
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    params = Sampling(max_tokens=48, temperature=0.7, seed=1)
    result = verify_math(src, out=out, backend=embedded, samples=2, params=params, rejects=rejects)
    kept, dropped = pq.read_table(out / "data").to_pylist(), pq.read_table(rejects / "data").to_pylist()
    assert len(kept) + len(dropped) == 3 and result["tokens"] > 0
    assert kept, [r["answer_votes"] for r in dropped]
    for row in kept:
        assert row["answer_agreement"] >= 0.5 and row["verify_status"] == "pass"
        assert extract_answer(row["response"]) is not None
    for row in dropped:
        assert row["verify_status"] in {"no_answer", "low_agreement"} and len(row["answer_votes"]) == 2


def test_verify_math_recipe_with_samples_and_a_reference(tmp_path) -> None:
    from synth.recipes import verify_math

    rows = [
        {"id": "a", "instruction": "Half of 1?", "gold": "0.5"},
        {"id": "b", "instruction": "2 + 2?", "gold": "4"},
        {"id": "c", "instruction": "Any?", "gold": "1"},
    ]
    src = _jsonl(tmp_path / "in.jsonl", rows)
    llm = ScriptedBackend(
        replies=[
            *["\\boxed{1/2}", "\\boxed{\\frac{1}{2}}", "\\boxed{2}"],  # agree on 1/2, the reference
            *["\\boxed{5}", "The answer is 5.", "\\boxed{4}"],  # agree on 5: not the reference
            *["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"],  # no majority
        ]
    )
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    verify_math(src, out=out, backend=llm, samples=3, reference_column="gold", min_agreement=0.6, rejects=rejects)
    (kept,) = pq.read_table(out / "data").to_pylist()
    assert (kept["id"], kept["answer"], kept["verify_status"]) == ("a", "1/2", "pass")
    assert kept["answer_agreement"] == pytest.approx(2 / 3) and kept["model"] == "scripted-model"
    dropped = {r["id"]: r["verify_status"] for r in pq.read_table(rejects / "data").to_pylist()}
    assert dropped == {"b": "fail", "c": "low_agreement"}
    assert "Please reason step by step" in llm.calls[0][0][0]["content"]  # the shipped prompt
