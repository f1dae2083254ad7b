"""Persona-driven math problems (Persona Hub, arXiv 2406.20094), answered and judged.

Each persona of a set writes one math problem it would care about; the model then solves it
step by step, a judge rates the response, and near-duplicate problems are dropped.

    synth run pipelines/persona_math.py --personas starter --n 40 --out data/persona-math
    synth run pipelines/persona_math.py --model qwen2.5:7b --personas proj-persona/PersonaHub:persona \\
        --n 10000 --out data/persona-math                                   # Ollama, a Hub persona set
    synth run pipelines/persona_math.py --n 3 --out /tmp/pm                  # embedded model, a smoke run

Rows whose problem did not follow the answer format keep `instruction_status` (not `ok`) and
are left unanswered rather than dropped, so you can see how the model did.
"""

import argparse

from synth import Sampling, load_backend
from synth.backends import Metered
from synth.core import take
from synth.recipes import pipeline
from synth.stages import Judge, Respond, dedup_minhash, load_rubric
from synth.stages.persona import AnswerParsed, PersonaGenerate, read_personas

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--personas", default="starter", help="starter (shipped), a file or folder, or a Hub id.")
parser.add_argument("--model", default=None, help="Ollama tag, GGUF path or HF id. Default: the embedded SmolLM2-135M-Instruct.")
parser.add_argument("--n", type=int, default=None, help="Personas to use (default: all).")
parser.add_argument("--out", required=True)
parser.add_argument("--max-tokens", type=int, default=512)
parser.add_argument("--judge-max-tokens", type=int, default=256)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--overwrite", action="store_true")
args = parser.parse_args()

llm = Metered(load_backend(args.model))
people = read_personas(args.personas, batch_size=32)
pipeline(
    take(args.n)(people) if args.n else people,
    PersonaGenerate(llm, "math", Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)),
    AnswerParsed(Respond(llm, Sampling(max_tokens=args.max_tokens, temperature=0.0), column="instruction")),
    Judge((llm,), load_rubric("response"), Sampling(max_tokens=args.judge_max_tokens, temperature=0.0)),
    dedup_minhash("instruction", threshold=0.7),
    out=args.out,
    settings={"model": llm.model, "personas": args.personas, "task": "math"},
    overwrite=args.overwrite,
)
