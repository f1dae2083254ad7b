import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth import recipes
from synth.core import SynthError, from_rows
from synth.stages.filters import Filter, heuristic_rules, load_heuristics, repetitive, where

ANSWER = "Paris is the capital of France, and it has been for centuries."
SCALES = {"input_quality": ["very poor", "poor", "average", "good", "excellent"]}


@pytest.fixture(scope="module")
def rules():
    return tuple(heuristic_rules(load_heuristics("default")))


def _verdicts(rules, rows: list[dict]) -> dict[str, str | None]:
    """Row id -> the rule that rejected it (None: kept)."""
    dropped: list[pa.Table] = []
    stage = Filter(rules, rejects=dropped.append)
    (kept,) = stage([from_rows(rows)])
    out = dict.fromkeys(kept["id"].to_pylist())
    for batch in dropped:
        out.update(zip(batch["id"].to_pylist(), batch["rejected_by"].to_pylist()))
    return out


def _row(id: str, instruction: str = "What is the capital of France?", response: str = ANSWER, **extra) -> dict:
    return {"id": id, "instruction": instruction, "response": response, **extra}


LONG_REPEAT = "\n".join(["Buy now and save big today!"] * 6 + ["Contact us."])
PHRASE_LOOP = " ".join(["the cat sat on the mat"] * 20) + "."
ESSAY = (
    "Photosynthesis converts light energy into chemical energy. Plants capture sunlight with chlorophyll, "
    "split water molecules, and release oxygen as a by-product. The energy is stored in glucose, which the "
    "plant later uses for growth, repair and reproduction. Animals depend on this process indirectly, since "
    "they eat plants or other animals that ate plants, and they breathe the oxygen it releases."
)
EN_QUESTION = "Could you explain why the sky looks blue on a clear day?"
EN_ANSWER = "Sunlight is scattered by the molecules in the air, and blue light is scattered the most."
FR_QUESTION = "Pourquoi le ciel est-il bleu pendant une journée claire ?"
MANY_WORDS_Q = "Summarise this: " + "word " * 1500  # 1,502 words (max 1,500) in 7,516 characters (max 8,000)
MANY_WORDS_A = "ok " * 6000 + "ok."  # 6,001 words (max 6,000) in 18,003 characters (max 32,000)


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (_row("ok"), None),
        (_row("essay", "Explain photosynthesis in a paragraph.", ESSAY), None),
        (_row("list", "List two fruits.", "Here are two fruits you might like:\n- Apples\n- Pears"), None),
        (_row("code", "Print hi in Python.", "Use print:\n```python\nprint('hi')\n```"), None),
        (_row("long-q", "Summarise this: " + "word " * 2000), "instruction_length"),
        (_row("empty-a", response=""), "response_length"),
        (_row("hello", "Hello there!"), "greeting"),
        (_row("thanks", "thank you so much"), "greeting"),
        (_row("frag", "capital France"), "fragment"),
        (_row("refuse", response="I'm sorry, but I can't help with that request."), "refusal"),
        (_row("as-ai", response="As an AI language model, I do not have opinions on that."), "refusal"),
        (_row("cut", response=ANSWER, response_finish_reason="length"), "finish_length"),
        # a request that failed after a whole sentence: only its finish reason tells
        (_row("failed", response=ANSWER, response_finish_reason="error"), "finish_error"),
        (_row("done", response=ANSWER, response_finish_reason="stop"), None),
        (_row("fence", response="Here is the code:\n```python\nprint('hi')"), "code_fence"),
        (
            _row("no-end", response="Paris is the capital of France and it has been the capital for"),
            "no_end_punctuation",
        ),
        (_row("dup-lines", response=LONG_REPEAT), "repetition"),
        (_row("loop", "Write a story about a cat.", PHRASE_LOOP), "repetition"),
        (
            _row(
                "mixed",
                "What is the capital of France, and why was it chosen?",
                "La capitale de la France est Paris depuis des siècles.",
            ),
            "language_mismatch",
        ),
        (_row("en-en", EN_QUESTION, EN_ANSWER), None),  # both long enough to identify, and the same
        (_row("fr-en", FR_QUESTION, EN_ANSWER), "language_mismatch"),
        # Each breaks one length bound and no other rule (chars and words, low and high).
        (_row("many-words-q", MANY_WORDS_Q), "instruction_length"),
        (_row("few-chars-q", "a b c?"), "instruction_length"),
        (_row("many-words-a", response=MANY_WORDS_A), "response_length"),
        (_row("blank-a", response="   "), "response_length"),
    ],
)
def test_each_heuristic_drops_what_it_must_and_keeps_the_rest(rules, row, rule) -> None:
    assert _verdicts(rules, [row]) == {row["id"]: rule}


@pytest.mark.parametrize(
    ("instruction", "response", "bound", "settings"),
    [
        (MANY_WORDS_Q, ANSWER, "instruction_max_words", {}),
        ("Summarise this: " + "y" * 8000, ANSWER, "instruction_max_chars", {}),
        ("a b c?", ANSWER, "instruction_min_chars", {}),
        (" " * 8, ANSWER, "instruction_min_words", {}),  # 8 characters, no word
        ("What is the capital of France?", MANY_WORDS_A, "response_max_words", {}),
        ("What is the capital of France?", "   ", "response_min_words", {}),
        # With the default 1 character and 1 word, a response that has a word has a character too.
        ("What is the capital of France?", "Paris.", "response_min_chars", {"response_min_chars": 10}),
    ],
)
def test_each_length_bound_alone_decides(instruction, response, bound, settings) -> None:
    row = _row("r", instruction, response)
    role = bound.split("_")[0]
    assert _verdicts(tuple(heuristic_rules({"length": settings})), [row]) == {"r": f"{role}_length"}
    assert _verdicts(tuple(heuristic_rules({"length": {**settings, bound: 0}})), [row]) == {"r": None}


def test_rules_whose_column_is_missing_are_skipped(rules) -> None:
    rows = [{"id": "a", "instruction": "What is the capital of France?"}, {"id": "b", "instruction": "hi"}]
    assert _verdicts(rules, rows) == {"a": None, "b": "greeting"}


def test_repetition_keeps_short_and_varied_text() -> None:
    cfg = load_heuristics()["repetition"]
    assert not repetitive(ESSAY, cfg)
    assert not repetitive("Yes.\nYes.\nNo, because the second case differs.\nMaybe.", cfg)
    assert repetitive(PHRASE_LOOP, cfg)


def test_language_allow_list(tmp_path) -> None:
    config = {"language": {"allowed": ["en"], "mismatch": False, "min_chars": 20}}
    rules = tuple(heuristic_rules(config))
    french = "La capitale de la France est Paris depuis des siècles."
    rows = [_row("en"), _row("fr", french, french), _row("tiny", "Bonjour", "Oui")]
    assert _verdicts(rules, rows) == {"en": None, "fr": "language", "tiny": None}


def test_a_heuristics_file_can_switch_rules_off_and_unknown_keys_are_errors(tmp_path) -> None:
    path = tmp_path / "h.toml"
    path.write_text("[greeting]\nenabled = false\n")
    names = [r.name for r in heuristic_rules(load_heuristics(path))]
    assert names == []  # only the sections in the file
    path.write_text("[length]\ninstruction_min_char = 5\n")
    with pytest.raises(SynthError, match="unknown key.*instruction_min_char.*\\[length\\]"):
        load_heuristics(path)
    assert load_heuristics("none") == {}


def test_a_heuristics_section_with_some_keys_keeps_the_defaults_of_the_others(tmp_path) -> None:
    path = tmp_path / "h.toml"
    path.write_text("[greeting]\nmin_words = 2\n")
    config = load_heuristics(path)
    assert config == {"greeting": {**load_heuristics()["greeting"], "min_words": 2}}
    rules = tuple(heuristic_rules(config))
    assert [r.name for r in rules] == ["greeting", "fragment"]
    rows = [_row("two", "capital France"), _row("one", "France"), _row("hi", "hello there")]
    assert _verdicts(rules, rows) == {"two": None, "one": "fragment", "hi": "greeting"}
    # A dict given in Python merges the same way.
    assert [r.name for r in heuristic_rules({"language": {"min_chars": 10}})] == ["language_mismatch"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[greeting]\nmin_words = "two"\n', r"\[greeting\] min_words must be a whole number, not 'two'"),
        ("[greeting]\nmin_words = 2.5\n", r"\[greeting\] min_words must be a whole number"),
        ("[repetition]\ndup_line_fraction = true\n", r"\[repetition\] dup_line_fraction must be a number"),
        ("[language]\nmismatch = 1\n", r"\[language\] mismatch must be true or false"),
        ('[length]\nenabled = "no"\n', r"\[length\] enabled must be true or false"),
        ('[refusal]\nphrases = "I can\'t"\n', r"\[refusal\] phrases must be a list of strings"),
        ("[truncated]\nend_pattern = 5\n", r"\[truncated\] end_pattern must be a string"),
        ("[repetition]\ntop_ngram_char_fraction = { two = 0.2 }\n", r"top_ngram_char_fraction must map n-gram sizes"),
        (
            '[greeting]\npatterns = ["hi", "(unclosed"]\n',
            r"\[greeting\] patterns has an invalid regular expression '\(unclosed'",
        ),
        ("[truncated]\nend_pattern = '[.!?'\n", r"\[truncated\] end_pattern has an invalid regular expression"),
        ("greeting = 3\n", r"greeting must be a \[greeting\] table"),
    ],
)
def test_a_wrong_heuristics_value_names_its_key(tmp_path, text, message) -> None:
    path = tmp_path / "h.toml"
    path.write_text(text)
    with pytest.raises(SynthError, match=message):
        load_heuristics(path)


JUDGED = [
    {"id": "a", "input_quality": "excellent", "difficulty": "easy", "response_score": 9},
    {"id": "b", "input_quality": "good", "difficulty": "very easy", "response_score": 4},
    {"id": "c", "input_quality": "poor", "difficulty": "hard", "response_score": 7},
    {"id": "d", "input_quality": None, "difficulty": None, "response_score": None},
]


@pytest.mark.parametrize(
    ("expr", "kept"),
    [
        ("input_quality >= good", ["a", "b"]),
        ("input_quality < average", ["c"]),
        ("input_quality == 'poor'", ["c"]),
        ("difficulty != very easy", ["a", "c"]),
        ("response_score > 6", ["a", "c"]),
        ("response_score<=4", ["b"]),
    ],
)
def test_where_compares_ordinal_labels_in_scale_order_and_numbers_as_numbers(expr, kept) -> None:
    stage = Filter((where(expr, SCALES),))
    (out,) = stage([from_rows(JUDGED)])
    assert out["id"].to_pylist() == kept
    assert stage.stats[f"dropped_{where(expr, SCALES).name}"] == 4 - len(kept)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("input_quality >= great", "'great' is not a label of input_quality.*very poor"),
        ("quality >= good", "no column 'quality'.*input_quality"),
        ("difficulty > easy", "no ordinal scale.*== or !="),
        ("response_score > high", "numeric"),
        ("response_score", "COLUMN OP VALUE"),
    ],
)
def test_where_errors_name_the_problem(expr, message) -> None:
    with pytest.raises(SynthError, match=message):
        list(Filter((where(expr, SCALES),))([from_rows(JUDGED)]))


def test_where_on_a_column_with_no_value_in_a_batch_drops_its_rows() -> None:
    # From jsonl, a batch where a judge failed on every row has a column of type null.
    (out,) = Filter((where("input_quality >= good", SCALES),))([from_rows([{"id": "x", "input_quality": None}])])
    assert out.num_rows == 0


def test_filter_recipe_writes_kept_and_rejected_rows_with_counts(tmp_path, capsys) -> None:
    src = tmp_path / "judged.jsonl"
    rows = [
        _row("ok", input_quality="good"),
        _row("hi", "hello", input_quality="good"),
        _row("meh", input_quality="poor"),
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows))
    recipes.filter_rows(src, out=tmp_path / "kept", where=["input_quality >= average"], rejects=tmp_path / "rej")
    assert pq.read_table(tmp_path / "kept/data").column("id").to_pylist() == ["ok"]
    rejected = pq.read_table(tmp_path / "rej/data").to_pylist()
    assert {(r["id"], r["rejected_by"]) for r in rejected} == {("hi", "greeting"), ("meh", "input_quality >= average")}
    summary = capsys.readouterr().err
    assert "1 greeting" in summary and "1 input_quality >= average" in summary
