"""Loop stop: a generation that repeats itself ends early as `repetition`, is no training row, and
is counted; real lists, code and tables are never cut. Penalties reach every backend's request."""

from __future__ import annotations

import glob
import html
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from synth.backends import Completion, Sampling
from synth.backends.loops import loops_at
from synth.core import from_rows, pipe
from synth.stages.magpie import DropTruncated, Magpie, MultiTurn, Respond
from tests.conftest import ScriptedBackend


@pytest.fixture(scope="module")
def tokenize():
    """The real SmolLM2 tokenizer (vocabulary only), text -> token ids."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from synth.backends.llamacpp import _route_logs, default_model_path

    _route_logs(False)
    vocab = llama_cpp.Llama(str(default_model_path()), vocab_only=True, verbose=False)
    return lambda text: vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def _text(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8", errors="ignore")
    if path.endswith(".html"):
        text = re.sub(r"<script.*?</script>|<style.*?</style>", "", text, flags=re.S)
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


# Real text with much repetition in it: the files whose runs of repeated 6-grams were the longest
# of the 3,305 stretches LEVELS was checked on (usage messages shown again and again, an index,
# opcode tables, changelog lists), and more lists, code and tables beside them.
HARD = [
    "/usr/share/doc/python3.11/html/howto/argparse.html",
    "/usr/share/doc/python3.11/html/genindex-I.html",
    "/usr/share/doc/python3.11/html/contents.html",
    "/usr/share/doc/python3.11/html/library/dis.html",
    "/usr/share/doc/python3.11/html/library/decimal.html",
    "/usr/share/doc/python3.11/html/library/stdtypes.html",
    "/usr/share/doc/python3.11/html/library/importlib.resources.html",
    "/usr/share/doc/python3.11/html/faq/design.html",
    "/usr/lib/python3.11/pickletools.py",
    "/usr/lib/python3.11/pathlib.py",
    "/usr/lib/python3.11/ipaddress.py",
    "/usr/lib/python3.11/turtle.py",
    "/usr/lib/python3.11/contextlib.py",
    "/usr/lib/python3.11/encodings/cp437.py",
    "/usr/lib/python3.11/argparse.py",
]


def _real_texts() -> list[str]:
    docs = sorted(glob.glob("/usr/share/doc/*/changelog*") + glob.glob("/usr/share/doc/*/README*"))[:40]
    found = [p for p in HARD + docs if Path(p).is_file() and not p.endswith(".gz")]
    if len(found) < 10:
        pytest.skip("too few real texts installed (python3.11-doc, the stdlib sources)")
    return found


def test_real_lists_code_and_tables_are_never_cut(tokenize) -> None:
    stretches = 0
    for path in _real_texts():
        tokens = tokenize(_text(path))
        for start in range(0, min(len(tokens), 16_384), 1024):
            stretch = tokens[start : start + 1024]
            if len(stretch) < 200:
                break
            stretches += 1
            assert loops_at(stretch) is None, f"{path} at token {start} read as looping"
    assert stretches >= 40


@pytest.mark.parametrize("period_words", [1, 3, 12, 30])
def test_a_loop_after_honest_text_is_found_within_a_bounded_number_of_tokens(tokenize, period_words) -> None:
    honest = tokenize(_text("/usr/lib/python3.11/argparse.py"))[:300]
    words = "the river carried old boats past the mill while children counted every sail they saw".split()
    unit = tokenize(" " + " ".join((words * 3)[:period_words]) + ".")
    at = loops_at(honest + unit * 400)
    assert at is not None
    spent = at - len(honest)
    assert 0 < spent <= 2 * len(unit) + 128 + 8 * len(unit) // 4, (spent, len(unit))
    assert spent <= 200  # dozens to a couple of hundred, not max_tokens


def test_the_decoder_ends_a_looping_sequence_early_and_frees_its_slot(base_model) -> None:
    prompts = ["hello hello hello hello hello hello hello hello hello hello", "1, 2, 3, 4, 5, 6,"]
    greedy = Sampling(max_tokens=240, temperature=0.0)
    loop, counting = base_model.generate(prompts, greedy)
    assert loop.finish_reason == "repetition" and loop.completion_tokens <= 80, loop
    assert counting.finish_reason in ("length", "stop", "repetition")
    (off,) = base_model.generate(prompts[:1], Sampling(max_tokens=240, temperature=0.0, loop_stop=False))
    assert (off.finish_reason, off.completion_tokens) == ("length", 240)


def test_a_repeat_penalty_reaches_the_embedded_sampler(base_model) -> None:
    prompt = ["hello hello hello hello hello hello hello hello hello hello"]
    plain = Sampling(max_tokens=24, temperature=0.0, loop_stop=False)
    (same,) = base_model.generate(prompt, plain)
    (penalised,) = base_model.generate(prompt, Sampling(**{**plain.__dict__, "repeat_penalty": 3.0}))
    (present,) = base_model.generate(prompt, Sampling(**{**plain.__dict__, "presence_penalty": 5.0}))
    assert same.text.count("hello") >= 12
    assert penalised.text.count("hello") < same.text.count("hello") // 2, penalised.text
    assert present.text.count("hello") < same.text.count("hello") // 2, present.text


def _cut(text: str, reason: str) -> Completion:
    return Completion(text, reason, 3, 400)


def test_looping_answers_are_dropped_and_counted_and_kept_only_with_keep() -> None:
    replies = [_cut("fine answer.", "stop"), _cut("la la la", "repetition"), _cut("cut", "length")]
    for keep in (False, True):
        llm = ScriptedBackend(list(replies))
        drop = DropTruncated(keep)
        rows = [{"id": f"r{i}", "instruction": f"question {i}"} for i in range(3)]
        out = pa.concat_tables(list(pipe([from_rows(rows)], Respond(llm), drop)))
        kept = out["response_finish_reason"].to_pylist()
        assert kept == (["stop", "repetition", "length"] if keep else ["stop"])
        word = "kept" if keep else "dropped"
        assert drop.stats[f"{word}_response_repetition"] == 1 and drop.stats[f"{word}_response_truncated"] == 1


def test_a_looping_instruction_is_dropped_and_a_looping_later_turn_ends_the_conversation() -> None:
    llm = ScriptedBackend([_cut("Write a poem.", "stop"), _cut("Write write write", "repetition")])
    magpie = Magpie(llm, llm.template)
    out = list(pipe([from_rows([{"id": "a0"}, {"id": "a1"}])], magpie))
    assert sum(b.num_rows for b in out) == 1 and magpie.stats["dropped_repetition"] == 1
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    llm = ScriptedBackend([_cut("And then?", "stop"), _cut("so so so", "repetition")])
    turns = MultiTurn(llm, llm, llm.template, turns=2)
    (batch,) = pipe([from_rows([{"id": "c0", "messages": conv, "response_finish_reason": "stop"}])], turns)
    assert batch["turns"].to_pylist() == [1]
    assert turns.stats == Counter({"ended_at_turn_2": 1, "ended_response_repetition": 1})


def test_the_card_records_repetition_controls_when_set_and_old_outputs_still_resume() -> None:
    from synth.recipes._runner import _plain

    recorded = _plain(Sampling(repeat_penalty=1.2, frequency_penalty=0.3, loop_stop=False))
    assert {"repeat_penalty": 1.2, "frequency_penalty": 0.3, "loop_stop": False}.items() <= recorded.items()
    # the settings an output written before these existed recorded: equal, so it resumes
    assert set(_plain(Sampling())) == {
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "stop",
        "seed",
        "json_schema",
    }
