"""Persona-driven math problems (Persona Hub, arXiv 2406.20094), solved by self-consistency and judged.

Each persona of a set writes one math problem it would care about; the model then solves it
`--samples` times, step by step, and the row keeps the majority final answer with its agreement
rate (`answer_agreement`); problems whose solutions agree less than `--min-agreement` are
dropped (Persona Hub's and most reasoning sets' filter). A judge rates the kept response, and
near-duplicate problems are dropped.

    synth run pipelines/persona_math.py --personas starter --n 40 --out data/persona-math
    synth run pipelines/persona_math.py --model qwen2.5:7b --personas proj-persona/PersonaHub:persona \\
        --n 10000 --out data/persona-math                                   # Ollama, a Hub persona set
    synth run pipelines/persona_math.py --n 3 --out /tmp/pm                  # embedded model, a smoke run

A problem whose generation was cut off by max tokens or failed is dropped before it is solved
(`dropped_problem_cut_off`): it may still read as a problem. Rows whose problem did not follow the
answer format (`instruction_status` not `ok`), whose solutions gave no final answer, or agreed too
little are dropped and counted in the card (`verify_no_answer`, `verify_low_agreement`);
`--rejects DIR` keeps these, with `verify_status`.
With `--against` (a benchmark name such as gsm8k or math, NAME=PATH for a local copy, a Hub id or a
file; repeatable), problems that hold a benchmark item, verbatim or rephrased, are dropped before they
are answered: `synth decontaminate`'s stage, counted in the card.
"""

import argparse
import contextlib

import pyarrow.compute as pc

from synth import Sampling, load_backend
from synth.backends import Metered
from synth.core import take
from synth.io import Sink
from synth.recipes import RunSettings, pipeline
from synth.recipes.decontaminate import benchmarks
from synth.recipes.verify import load_prompt
from synth.stages import Filter, Judge, Rule, dedup_minhash, load_rubric
from synth.stages.decontaminate import Decontaminate
from synth.stages.persona import PersonaGenerate, read_personas
from synth.stages.verify import SelfConsistency, passed

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--personas", default="starter", help="starter (shipped), a file or folder, or a Hub id.")
parser.add_argument("--model", default=None, help="Ollama tag, GGUF path or HF id. Default: embedded SmolLM2-135M.")
parser.add_argument("--n", type=int, default=None, help="Personas to use (default: all).")
parser.add_argument("--out", required=True)
parser.add_argument("--max-tokens", type=int, default=512)
parser.add_argument("--judge-max-tokens", type=int, default=256)
parser.add_argument("--samples", type=int, default=4, help="Solutions sampled per problem.")
parser.add_argument("--min-agreement", type=float, default=0.5, help="Least share of solutions agreeing.")
parser.add_argument("--rejects", default=None, help="Write the dropped rows here, with verify_status.")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--against", action="append", default=[], help="Drop problems holding this benchmark's items.")
parser.add_argument("--decontaminate-methods", default="ngram,embedding", help="With --against: ngram, embedding.")
args = parser.parse_args()

# Benchmarks load before the model, so a bad --against fails at once.
methods = tuple(m.strip() for m in args.decontaminate_methods.split(",") if m.strip())
decontaminate = [Decontaminate(benchmarks(args.against), ("instruction",), methods)] if args.against else []
llm = Metered(load_backend(args.model))
people = read_personas(args.personas, batch_size=32)
solving = Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)
with contextlib.ExitStack() as stack:
    run = RunSettings(overwrite=args.overwrite)
    rejects = stack.enter_context(Sink(run.open(args.rejects))) if args.rejects else None
    pipeline(
        take(args.n)(people) if args.n else people,
        PersonaGenerate(llm, "math", Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)),
        Filter((Rule("problem_cut_off", lambda b: pc.not_equal(b["instruction_finish_reason"], "stop")),)),
        *decontaminate,
        SelfConsistency(llm, args.samples, solving, "instruction", args.min_agreement, load_prompt(None)),
        Filter((passed(),), rejects),
        Judge((llm,), load_rubric("response"), Sampling(max_tokens=args.judge_max_tokens, temperature=0.0)),
        dedup_minhash("instruction", threshold=0.7),
        out=args.out,
        settings={"model": llm.model, "personas": args.personas, "task": "math", "samples": args.samples},
        run=run,
    )
