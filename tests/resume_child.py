"""Run in a child process by test_resume: a recipe on a deterministic, slow test backend.

argv: OUT N RESUME(0/1) MODE [RECIPE], where MODE is
  `gen`   print GEN k before each backend call (READ k before each input batch for `filter`);
  `write` print WRITING while the second shard's temporary file is on disk, then stall;
  `side`  print SIDE once the side output has committed its rows for the second main checkpoint,
          before the main output's state records them, then stall (the window a kill must survive).
RECIPE is `magpie` (the default), `synthesize` (with --pretrain-out), `personas` (generate, with
responses), `personas-dedup` (from-text with --dedup minhash), `filter` (with --rejects), `respond`,
`judge`, `dedup` (minhash, with --rejects), or `embedded` (personas generate on the real embedded
model, the starter set).
Inputs go beside OUT, side outputs to OUT's parent as `side`; shards are small so a run has many.
"""

import functools
import json
import random
import re
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

import synth.io
from synth.backends import Completion, Sampling
from synth.recipes import RunSettings
from synth.templates import builtin


def _marker(text: str) -> None:
    print(text, flush=True)
    time.sleep(0.05)


class Deterministic:
    """Replies depend only on the prompt, so an interrupted and an unbroken run agree."""

    name, model, chat_tuned = "deterministic", "deterministic", True
    template = builtin("chatml")
    calls = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def context_size(self) -> int:
        return 4096

    def generate(self, prompts, params):
        Deterministic.calls += 1
        _marker(f"GEN {Deterministic.calls}")
        return [self.reply(prompt, params.seed + i) for i, prompt in enumerate(prompts)]

    def reply(self, prompt, seed: int) -> Completion:
        if isinstance(prompt, str):  # a magpie instruction; every 5th is cut off and dropped
            return Completion(f"q{seed}", "length" if seed % 5 == 0 else "stop", 1, 1)
        text = prompt[-1]["content"]
        number = re.search(r"number (\d+)", text)
        k = int(number.group(1)) if number else -1
        if "Document number" in text:  # a chunk to synthesize pairs from; every 4th gets no JSON
            pairs = [{"instruction": f"What is in document {k}?", "response": f"Mill {k}."}]
            pairs.append({"instruction": f"Where is mill {k}?", "response": f"By river {k}."})
            return Completion("not json" if k % 4 == 3 else json.dumps({"pairs": pairs}), "stop", 1, 1)
        if "Persona:" in text:  # text-to-persona; topics repeat, so dedup drops rows across a restart
            return Completion(f"Persona: A reader who loves topic {k % 10}.", "stop", 1, 1)
        if "User prompt:" in text:  # persona-driven instruction; every 5th ignores the format
            return Completion("no label" if k % 5 == 4 else f"User prompt: Tell me about lighthouse {k}.", "stop", 1, 1)
        if "rate the quality of the user query" in text:  # the quality rubric; every 6th reply is not JSON
            scale = ["very poor", "poor", "average", "good", "excellent"]
            verdict = json.dumps({"explanation": f"query {k}", "input_quality": scale[k % 5]})
            return Completion("no verdict" if k % 6 == 5 else verdict, "stop", 1, 1)
        return Completion(f"answer to {text}", "stop", 1, 1)


class Marked:
    """The real embedded model, printing GEN k before each call like the test backend."""

    def __init__(self) -> None:
        from synth.backends.llamacpp import LlamaCppBackend

        self.inner, self.calls = LlamaCppBackend(n_ctx=1024, n_threads=2), 0

    def generate(self, prompts, params):
        self.calls += 1
        _marker(f"GEN {self.calls}")
        return self.inner.generate(prompts, params)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _small_shards(resume: bool, rows: int = 4) -> RunSettings:
    """Main shards of `rows` rows and side outputs that also flush on their own every 3 rows."""
    synth.io.Sink.__init__.__defaults__ = (None, 3)
    synth.io.tee.__kwdefaults__["shard_rows"] = 3
    return RunSettings(resume=resume, shard_rows=rows)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(recipe: str, out: Path, n: int, resume: bool) -> None:
    side, seeded = out.parent / "side", Sampling(seed=0, max_tokens=64)
    if recipe == "magpie":
        from synth.recipes import magpie

        magpie(
            Deterministic(),
            n=n,
            out=out,
            batch_size=4,
            instruction=seeded,
            response=seeded,
            run=RunSettings(resume=resume, shard_rows=4),
        )
    elif recipe == "synthesize":
        import synth.recipes.corpus as corpus

        small = _small_shards(resume)
        docs = [{"text": f"Document number {i} tells of a river town and its old mill."} for i in range(n)]
        source = _write_jsonl(out.parent / "corpus.jsonl", docs)
        corpus.synthesize(
            Deterministic(), source, out=out, pretrain_out=side, pairs=2, batch_size=2, params=seeded, run=small
        )
    elif recipe == "personas":
        import synth.recipes.personas as personas

        small = _small_shards(resume)
        people = [{"id": f"p{i:02d}", "persona": f"The keeper of lighthouse number {i}."} for i in range(n + 2)]
        source = _write_jsonl(out.parent / "personas.jsonl", people)
        personas.personas_generate(
            Deterministic(), source, out=out, n=n, batch_size=3, params=seeded, responses=seeded, run=small
        )
    elif recipe == "personas-dedup":
        import synth.recipes.personas as personas

        small = _small_shards(resume)
        source = _write_jsonl(out.parent / "docs.jsonl", [{"text": f"Notes number {i} on a topic."} for i in range(n)])
        personas.personas_from_text(
            Deterministic(), source, out=out, dedup="minhash", batch_size=3, params=seeded, run=small
        )
    elif recipe == "filter":
        import synth.recipes.quality as quality

        small = _small_shards(resume)
        rows = [
            {
                "id": f"r{i:03d}",
                "instruction": "hi" if i % 7 == 3 else f"Explain how item number {i} works, please.",
                "response": "" if i % 3 == 1 else f"Item number {i} works well.",
            }
            for i in range(n)
        ]
        source = _write_jsonl(out.parent / "rows.jsonl", rows)
        real_read = quality.read

        def slow_read(path, batch_size=1000):
            for k, batch in enumerate(real_read(path, batch_size), 1):
                _marker(f"READ {k}")
                yield batch

        quality.read = slow_read
        quality.filter_rows(source, out=out, rejects=side, batch_size=3, run=small)
    elif recipe == "respond":
        import synth.recipes.chat as chat

        small = _small_shards(resume)
        source = _write_jsonl(
            out.parent / "questions.jsonl", [{"instruction": f"Question number {i}?"} for i in range(n)]
        )
        chat.respond(Deterministic(), source, out=out, batch_size=3, params=seeded, run=small)
    elif recipe == "judge":
        import synth.recipes.quality as quality

        small = _small_shards(resume)
        rows = [{"instruction": f"Explain thing number {i}.", "response": f"Thing {i}."} for i in range(n)]
        source = _write_jsonl(out.parent / "answers.jsonl", rows)
        quality.judge([Deterministic()], source, out=out, batch_size=3, params=seeded, run=small)
    elif recipe == "dedup":
        import synth.recipes.quality as quality

        small = _small_shards(resume)
        quality.write = functools.partial(synth.io.write, shard_rows=4)
        # 8 of 48 words per topic; every third row repeats the row before it, and MinHash drops it
        words = [f"w{j}" for j in range(48)]
        rows = [{"instruction": " ".join(random.Random(i - (i % 3 == 2)).sample(words, 8))} for i in range(n)]
        source = _write_jsonl(out.parent / "topics.jsonl", rows)
        real_read = quality.read

        def slow_read(path, batch_size=1000):
            for k, batch in enumerate(real_read(path, batch_size), 1):
                _marker(f"READ {k}")
                yield batch

        quality.read = slow_read
        quality.dedup(source, out=out, rejects=side, method="minhash", batch_size=3, run=small)
    elif recipe == "embedded":
        import synth.recipes.personas as personas

        small = _small_shards(resume, rows=2)
        params = Sampling(max_tokens=8, temperature=0.7, seed=0)
        personas.personas_generate(Marked(), "starter", out=out, n=n, batch_size=2, params=params, run=small)
    else:
        raise SystemExit(f"unknown recipe {recipe}")


def serve() -> None:
    """argv: serve. For each `OUT N RESUME MODE RECIPE` line on stdin, fork a child that runs it and
    prints `PID p` first; print `EXIT rc` when it ends. The imports are paid once, not per run, and
    each child's patches die with it."""
    import os
    import signal
    import traceback

    import py3langid

    import synth.recipes  # noqa: F401  (every recipe module, imported before the forks)
    from synth.stages.filters import heuristic_rules, load_heuristics

    heuristic_rules(load_heuristics("default"))  # compiles its patterns, imports regex
    py3langid.classify("warm the language model up")  # loads it: two seconds a run otherwise

    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            print(f"PID {os.getpid()}", flush=True)
            sys.argv = [sys.argv[0], *line.split()]
            code = 0
            try:
                main()
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {os.waitstatus_to_exitcode(status)}", flush=True)


def main() -> None:
    out, n, resume, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    recipe = sys.argv[5] if len(sys.argv) > 5 else "magpie"
    if mode == "write":
        real = pq.write_table
        writes = []

        def slow_write(table, where, **kw):
            real(table, where, **kw)
            writes.append(where)
            if len(writes) == 2:
                print("WRITING", flush=True)
                time.sleep(60)

        pq.write_table = slow_write
    if mode == "side":
        commit = synth.io.Sink.commit
        commits = []

        def stalling_commit(self):
            marks = commit(self)
            commits.append(marks)
            if len(commits) == 2:
                print("SIDE", flush=True)
                time.sleep(60)
            return marks

        synth.io.Sink.commit = stalling_commit
    run(recipe, out, n, resume)


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["serve"] else main()
