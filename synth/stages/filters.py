"""Heuristic filters and `--where` conditions: rules that each mark the rows they reject.

Every threshold lives in a TOML file (the default is `filters/heuristics.toml`), so a user copies
and edits it rather than the code. Rules are vectorised with pyarrow compute where the test is a
string or number comparison; repetition and language identification go row by row.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from synth.core import Batch, SynthError, add_columns
from synth.resources import data_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Mask: TypeAlias = pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class Rule:
    """A named test: `drops(batch)` marks the rows it rejects, or is None where its column is missing."""

    name: str
    drops: Callable[[Batch], Mask | None] = field(repr=False)


@dataclass(frozen=True)
class Filter:
    """Reads the rules' columns; keeps the rows no rule rejects.

    Rules run in order, each on the rows the earlier ones kept, so `rejected_by` names the first
    rule a row failed. With `rejects`, dropped rows go there with that column (a side writer).
    """

    rules: tuple[Rule, ...]
    rejects: Callable[[Batch], None] | None = field(default=None, repr=False)
    stats: Counter[str] = field(default_factory=Counter, compare=False)

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.stats["read"] += batch.num_rows
            for rule in self.rules:
                if batch.num_rows == 0:
                    break
                mask = rule.drops(batch)
                if mask is None:
                    continue
                mask = pc.fill_null(mask, False)
                dropped = pc.sum(mask).as_py() or 0
                if dropped:
                    self.stats[f"dropped_{rule.name}"] += dropped
                    if self.rejects is not None:
                        gone = batch.filter(mask)
                        self.rejects(add_columns(gone, rejected_by=pa.array([rule.name] * gone.num_rows, pa.string())))
                    batch = batch.filter(pc.invert(mask))
            self.stats["kept"] += batch.num_rows
            yield batch


# ---------------------------------------------------------------- heuristics


def load_heuristics(spec: str | Path = "default") -> dict[str, Any]:
    """The rule settings: `default` (the shipped file), `none`, or a TOML file checked against the default's keys.

    A file's sections are the rules it runs; within one, the keys it leaves out keep their
    default values, so `[greeting]` with only `min_words = 2` is a complete rule.
    """
    if str(spec) == "none":
        return {}
    if str(spec) == "default":
        return _default_heuristics()
    path = Path(spec)
    if not path.is_file():
        raise SynthError(f"heuristics file {path} does not exist; pass default, none or a .toml file")
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SynthError(f"heuristics file {path} is not valid TOML ({exc}); fix it") from None
    return _checked(config, str(path))


def _default_heuristics() -> dict[str, Any]:
    return tomllib.loads(data_file("filters/heuristics.toml").read_text(encoding="utf-8"))


_REGEX_KEYS = {("greeting", "patterns"), ("truncated", "end_pattern")}


def _checked(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`config` with each section merged over its defaults; unknown keys, wrong types and bad
    regular expressions are errors that name the key."""
    default = _default_heuristics()
    merged: dict[str, Any] = {}
    for section, values in config.items():
        if section not in default:
            raise SynthError(f"{source}: unknown section [{section}]; known: {', '.join(default)}")
        if not isinstance(values, Mapping):
            raise SynthError(f"{source}: {section} must be a [{section}] table of settings, not {values!r}")
        unknown = set(values) - set(default[section]) - {"enabled"}
        if unknown:
            keys = ", ".join(sorted(unknown))
            raise SynthError(f"{source}: unknown key(s) {keys} in [{section}]; the default file lists the known ones")
        for key, value in values.items():
            expected = True if key == "enabled" else default[section][key]
            problem = _type_problem(value, expected)
            if problem is None and (section, key) in _REGEX_KEYS:
                problem = _regex_problem(value)
            if problem:
                raise SynthError(f"{source}: [{section}] {key} {problem}; the default file shows the form it takes")
        merged[section] = {**default[section], **values}
    return merged


def _type_problem(value: Any, expected: Any) -> str | None:
    """What is wrong with `value`, given the default `expected` of the same key; None if nothing."""
    if isinstance(expected, bool):
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if isinstance(expected, int | float):
        number = isinstance(value, float | int) and not isinstance(value, bool)
        if isinstance(expected, int) and not (number and isinstance(value, int)):
            return f"must be a whole number, not {value!r}"
        return None if number else f"must be a number, not {value!r}"
    if isinstance(expected, str):
        return None if isinstance(value, str) else f"must be a string, not {value!r}"
    if isinstance(expected, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else f"must be a list of strings, not {value!r}"
    if isinstance(expected, dict):  # n-gram size -> fraction
        ok = isinstance(value, dict) and all(
            k.isdigit() and int(k) > 0 and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in value.items()
        )
        return None if ok else f"must map n-gram sizes to fractions, like {{ 2 = 0.2 }}, not {value!r}"
    return None


def _regex_problem(value: str | list[str]) -> str | None:
    # pyarrow runs these (RE2 syntax, e.g. \p{So}), so pyarrow, not `re`, says whether they compile.
    for pattern in [value] if isinstance(value, str) else value:
        try:
            pc.match_substring_regex(pa.array([""]), pattern)
        except pa.ArrowInvalid as exc:
            return f"has an invalid regular expression {pattern!r} ({exc}); fix it (RE2 syntax)"
    return None


def heuristic_rules(
    config: Mapping[str, Any], instruction: str = "instruction", response: str = "response"
) -> list[Rule]:
    """The rules `config` switches on, reading the `instruction` and `response` columns.

    `config` is checked and merged over the defaults like a file, so a dict may set only some keys.
    """
    config = _checked(config, "heuristics")
    on = {name: cfg for name, cfg in config.items() if cfg.get("enabled", True)}
    rules: list[Rule] = []
    if "greeting" in on:  # before length, so that "hi" is counted as a greeting
        rules += _greeting(on["greeting"], instruction)
    if "length" in on:
        rules += [_length(on["length"], instruction, "instruction"), _length(on["length"], response, "response")]
    if "refusal" in on:
        rules.append(_refusal(on["refusal"], response))
    if "truncated" in on:
        rules += _truncated(on["truncated"], response)
    if "repetition" in on:
        cfg = on["repetition"]
        rules.append(Rule("repetition", _per_row(response, lambda text: repetitive(text, cfg))))
    if "language" in on:
        rules += _language(on["language"], instruction, response)
    return rules


def _text(batch: Batch, column: str) -> Mask | None:
    if column not in batch.column_names:
        return None
    return pc.fill_null(batch[column].cast(pa.string()), "")


def _words(text: Mask) -> Mask:
    return pc.count_substring_regex(text, r"\S+")


def _length(cfg: Mapping[str, Any], column: str, role: str) -> Rule:
    def drops(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        if text is None:
            return None
        bad = pa.array([False] * batch.num_rows)
        for measure, values in (("chars", pc.utf8_length(text)), ("words", _words(text))):
            low, high = cfg.get(f"{role}_min_{measure}", 0), cfg.get(f"{role}_max_{measure}", 0)
            bad = pc.or_(bad, pc.less(values, low))
            if high:
                bad = pc.or_(bad, pc.greater(values, high))
        return bad

    return Rule(f"{role}_length", drops)


def _greeting(cfg: Mapping[str, Any], column: str) -> list[Rule]:
    pattern = r"^\s*(?:" + "|".join(f"(?:{p})" for p in cfg["patterns"]) + r")\s*[!.?,~]*\s*$"

    def greeting(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        return None if text is None else pc.match_substring_regex(text, pattern, ignore_case=True)

    def fragment(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        return None if text is None else pc.less(_words(text), cfg["min_words"])

    return [Rule("greeting", greeting), Rule("fragment", fragment)]


def _refusal(cfg: Mapping[str, Any], column: str) -> Rule:
    pattern = "|".join(re.escape(p) for p in cfg["phrases"])

    def drops(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        if text is None:
            return None
        head = pc.utf8_slice_codeunits(text, 0, cfg["within_chars"])
        return pc.match_substring_regex(head, pattern, ignore_case=True)

    return Rule("refusal", drops)


def _truncated(cfg: Mapping[str, Any], column: str) -> list[Rule]:
    def finish_length(batch: Batch) -> Mask | None:
        reason = f"{column}_finish_reason"
        return pc.is_in(batch[reason], pa.array(["length", "repetition"])) if reason in batch.column_names else None

    def finish_error(batch: Batch) -> Mask | None:
        # A failed request (finish reason `error`) may keep the words before the failure, which
        # can read as a whole answer: it is never a training row.
        reason = f"{column}_finish_reason"
        return pc.equal(batch[reason], "error") if reason in batch.column_names else None

    def code_fence(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        return None if text is None else pc.equal(pc.bit_wise_and(pc.count_substring(text, "```"), 1), 1)

    def no_end_punctuation(batch: Batch) -> Mask | None:
        text = _text(batch, column)
        if text is None:
            return None
        long_enough = pc.greater_equal(_words(text), cfg["min_words_for_punctuation"])
        return pc.and_(long_enough, pc.invert(pc.match_substring_regex(text, cfg["end_pattern"])))

    rules = [("finish_reason", "finish_length", finish_length), ("finish_reason", "finish_error", finish_error)]
    rules.append(("code_fences", "code_fence", code_fence))
    rules.append(("end_punctuation", "no_end_punctuation", no_end_punctuation))
    return [Rule(name, test) for key, name, test in rules if cfg.get(key, True)]


def _per_row(column: str, test: Callable[[str], bool]) -> Callable[[Batch], Mask | None]:
    def drops(batch: Batch) -> Mask | None:
        if column not in batch.column_names:
            return None
        return pa.array([bool(t) and test(t) for t in batch[column].to_pylist()], pa.bool_())

    return drops


def repetitive(text: str, cfg: Mapping[str, Any]) -> bool:
    """Gopher's repetition tests: duplicate lines, the top n-gram's share, duplicated n-grams' share."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        seen: set[str] = set()
        dup_lines = dup_chars = 0
        for line in lines:
            if line in seen:
                dup_lines += 1
                dup_chars += len(line)
            seen.add(line)
        if dup_lines / len(lines) > cfg["dup_line_fraction"]:
            return True
        if dup_chars / sum(len(line) for line in lines) > cfg["dup_line_char_fraction"]:
            return True
    words = text.split()
    if len(words) < cfg["min_words"]:
        return False
    total = sum(len(w) for w in words)
    for n, limit in cfg["top_ngram_char_fraction"].items():
        grams = Counter(tuple(words[i : i + int(n)]) for i in range(len(words) - int(n) + 1))
        gram, count = grams.most_common(1)[0]
        if count > 1 and count * sum(len(w) for w in gram) / total > limit:
            return True
    return any(_dup_ngram_chars(words, int(n)) / total > limit for n, limit in cfg["dup_ngram_char_fraction"].items())


def _dup_ngram_chars(words: Sequence[str], n: int) -> int:
    # Characters of the words covered by an n-gram seen before, each word counted once.
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered[i : i + n] = [True] * n
        seen.add(gram)
    return sum(len(w) for w, c in zip(words, covered) if c)


def _language(cfg: Mapping[str, Any], instruction: str, response: str) -> list[Rule]:
    identify = _identifier(cfg["min_chars"])
    allowed = set(cfg["allowed"])
    rules = []
    if allowed:

        def off(batch: Batch) -> Mask | None:
            masks = [m for m in (_langs(batch, c, identify, allowed) for c in (instruction, response)) if m is not None]
            return pc.or_(*masks) if len(masks) == 2 else (masks[0] if masks else None)

        rules.append(Rule("language", off))
    if cfg["mismatch"]:

        def mismatch(batch: Batch) -> Mask | None:
            if instruction not in batch.column_names or response not in batch.column_names:
                return None
            pairs = zip(batch[instruction].to_pylist(), batch[response].to_pylist())
            langs = [(identify(a or ""), identify(b or "")) for a, b in pairs]
            return pa.array([bool(a and b and a != b) for a, b in langs], pa.bool_())

        rules.append(Rule("language_mismatch", mismatch))
    return rules


def _langs(batch: Batch, column: str, identify: Callable[[str], str | None], allowed: set[str]) -> Mask | None:
    if column not in batch.column_names:
        return None
    found = [identify(t or "") for t in batch[column].to_pylist()]
    return pa.array([lang is not None and lang not in allowed for lang in found], pa.bool_())


def _identifier(min_chars: int) -> Callable[[str], str | None]:
    import py3langid  # loads its bundled model (about a second): only when the rule is built

    @lru_cache(maxsize=8192)
    def identify(text: str) -> str | None:
        text = text.strip()
        return py3langid.classify(text)[0] if len(text) >= min_chars else None

    return identify


# ---------------------------------------------------------------- --where

_OPS = {
    "==": pc.equal,
    "=": pc.equal,
    "!=": pc.not_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "<": pc.less,
    "<=": pc.less_equal,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")
_HOW = 'write COLUMN OP VALUE, e.g. "input_quality >= good" or "response_score > 6" (OP: ==, !=, >, >=, <, <=)'


def where(expr: str, scales: Mapping[str, Sequence[str]] | None = None) -> Rule:
    """A rule keeping rows where `expr` holds; labels of an ordinal column compare in scale order.

    A row without a value (a judge that failed on it) fails every condition.
    """
    found = _EXPR.match(expr)
    if not found or not found.group(3).strip("\"'"):
        raise SynthError(f"cannot read --where {expr!r}: {_HOW}")
    column, op, value = found.group(1), found.group(2), found.group(3).strip("\"'")
    scale = list((scales or {}).get(column, []))
    if scale and value not in scale:
        raise SynthError(f"--where {expr!r}: {value!r} is not a label of {column}; its labels in order: {scale}")
    compare = _OPS[op]
    name = f"{column} {op} {value}"

    def drops(batch: Batch) -> Mask:
        if column not in batch.column_names:
            raise SynthError(
                f"--where {expr!r}: the input has no column {column!r}; it has {', '.join(batch.column_names)}"
            )
        if pa.types.is_null(batch[column].type):  # no value in this batch at all (e.g. from jsonl)
            return pa.array([True] * batch.num_rows, pa.bool_())
        left, right = _operands(batch[column], value, scale, op, expr)
        return pc.invert(pc.fill_null(compare(left, right), False))

    return Rule(name, drops)


def _operands(col: Mask, value: str, scale: list[str], op: str, expr: str) -> tuple[Mask, Any]:
    kind = col.type
    if scale:
        return pc.index_in(col, value_set=pa.array(scale)), scale.index(value)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        try:
            return col, float(value)
        except ValueError:
            raise SynthError(f"--where {expr!r}: column is numeric, so compare it with a number") from None
    if pa.types.is_boolean(kind):
        if value.lower() not in ("true", "false") or op not in ("=", "==", "!="):
            raise SynthError(f"--where {expr!r}: column is true/false; write == true or != false")
        return col, value.lower() == "true"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if op not in ("=", "==", "!="):
            raise SynthError(
                f"--where {expr!r}: the column has no ordinal scale (no rubric defines one), so use == or !="
            )
        return col, value
    raise SynthError(f"--where {expr!r}: cannot compare a column of type {kind}")
