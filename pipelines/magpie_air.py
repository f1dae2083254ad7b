"""A Magpie-Air-like recipe: Magpie instructions and responses from one aligned model, then
heuristic filters, an LLM judge of input quality and difficulty, a filter on its labels, and
MinHash near-duplicate removal, streamed into one dataset with every stage in its card.

    synth run pipelines/magpie_air.py --model llama3:8b --n 300000 --out data/magpie-air   # Ollama
    synth run pipelines/magpie_air.py --model meta-llama/Meta-Llama-3-8B-Instruct --n 300000 --out data/air  # vLLM
    synth run pipelines/magpie_air.py --n 4 --out /tmp/air          # the embedded model, for a smoke run
    synth run pipelines/magpie_air.py --model M --executor ray --ray-address auto --actors 8 --gpus-per-actor 1 ...

With `--against` (a benchmark name such as gsm8k, NAME=PATH for a local copy, a Hub id or a file;
repeatable), rows that hold a benchmark item are dropped: `synth decontaminate`'s stage, counted in the card.

Magpie-Air kept rows whose input quality was at least "average" and dropped near-duplicates;
`--min-quality` and `--threshold` set those. With the embedded base model the judge rarely
approves anything: `--min-quality none` keeps the judge's labels without filtering on them.
"""

import argparse

import pyarrow as pa

from synth import Sampling, load_backend
from synth.backends import Metered, template_of
from synth.core import add_columns, counter_source, pipe, take
from synth.recipes import RunSettings, pipeline
from synth.recipes.decontaminate import benchmarks
from synth.stages import Filter, Judge, Magpie, Respond, dedup_minhash, heuristic_rules, load_heuristics, load_rubric
from synth.stages.decontaminate import Decontaminate
from synth.stages.filters import where
from synth.stages.judge import shipped_scales

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument(
    "--model", default=None, help="Ollama tag, GGUF path, HF id (vLLM). Default: the embedded SmolLM2-135M-Instruct."
)
parser.add_argument("--n", type=int, default=1000, help="Rows to keep.")
parser.add_argument("--out", required=True)
parser.add_argument("--min-quality", default="average", help="Lowest input_quality kept, or none.")
parser.add_argument("--threshold", type=float, default=0.7, help="MinHash Jaccard threshold for near-duplicates.")
parser.add_argument("--max-tokens", type=int, default=512)
parser.add_argument("--judge-max-tokens", type=int, default=256)
parser.add_argument("--max-attempts", type=int, default=None, help="Cap on instructions tried.")
parser.add_argument("--system-prompt", default=None, help="Steer the instructions and answers (Magpie's steering).")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--resume", action="store_true")
parser.add_argument("--against", action="append", default=[], help="Drop rows holding this benchmark's items.")
parser.add_argument("--decontaminate-methods", default="ngram,embedding", help="With --against: ngram, embedding.")
parser.add_argument("--executor", choices=["local", "ray"], default="local", help="ray: LLM stages in Ray actors.")
parser.add_argument("--ray-address", default=None, help="A Ray cluster to join (default: start a local one).")
parser.add_argument("--actors", type=int, default=2, help="With --executor ray: actors, each with its own backend.")
parser.add_argument("--gpus-per-actor", type=float, default=0.0, help="With --executor ray: 1 for one vLLM per GPU.")
args = parser.parse_args()


def llm_stages(llm: Metered) -> list:
    """Magpie, responses and the two judges on one backend (in this process, or in each Ray actor)."""
    template = template_of(llm)
    asking = Sampling(max_tokens=min(args.max_tokens, 256), temperature=1.0, top_p=1.0, seed=args.seed)
    if not getattr(llm, "chat_tuned", True):
        asking = asking.with_stop("\n\n")  # a base model never closes its turn
    answering = Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)
    judging = Sampling(max_tokens=args.judge_max_tokens, temperature=0.0)
    return [
        Magpie(llm, template, asking),
        Respond(llm, answering),
        Judge((llm,), load_rubric("quality"), judging, {"instruction": "instruction"}),
        Judge((llm,), load_rubric("difficulty"), judging, {"instruction": "instruction"}),
    ]


def steer(batches):
    """The system prompt as a column: Magpie writes instructions under it, Respond answers under it."""
    for batch in batches:
        yield add_columns(batch, system_prompt=pa.array([args.system_prompt] * batch.num_rows, pa.string()))


def on_actor():  # runs inside each actor: its own backend
    stages = llm_stages(Metered(load_backend(args.model)))
    return lambda batches: pipe(batches, *stages)


# Benchmarks load before the model, so a bad --against fails at once.
methods = tuple(m.strip() for m in args.decontaminate_methods.split(",") if m.strip())
decontaminate = [Decontaminate(benchmarks(args.against), methods=methods)] if args.against else []
llm = Metered(load_backend(args.model))
generate = llm_stages(llm)
if args.executor == "ray":
    from synth.distributed import RayExecutor

    ray = RayExecutor(args.ray_address, args.actors, num_gpus=args.gpus_per_actor, batch_size=64)
    generate = [ray.map(on_actor)]
rules = heuristic_rules(load_heuristics("default"), "instruction", "response")
if args.min_quality != "none":
    rules.append(where(f"input_quality >= {args.min_quality}", shipped_scales()))

pipeline(
    take(args.max_attempts)(counter_source(batch_size=64)) if args.max_attempts else counter_source(batch_size=64),
    *([steer] if args.system_prompt else []),
    *generate,
    *decontaminate,
    Filter(tuple(rules)),
    dedup_minhash("instruction", threshold=args.threshold),
    out=args.out,
    n=args.n,
    settings={
        "model": llm.model,
        "template": template_of(llm).family,
        "min_quality": args.min_quality,
        "system_prompt": args.system_prompt,
    },
    run=RunSettings(overwrite=args.overwrite, resume=args.resume),
)
