"""Magpie that spreads out, composed by hand: each attempt conditioned through its system prompt
on a topic drawn toward the clusters least represented among the rows kept so far (`Spread`),
a novelty gate that drops an instruction too close to a kept one before any answer token is
spent on it (`NoveltyGate`), then answers; `synth magpie --diverse` runs the same stages.

    synth run pipelines/magpie_diverse.py --n 200 --out data/diverse            # the embedded model
    synth run pipelines/magpie_diverse.py --model llama3:8b --n 10000 --out data/diverse --topics data/topics
"""

import argparse
from collections import Counter

import pyarrow.compute as pc

from synth import Sampling, load_backend
from synth.backends import Metered, template_of
from synth.core import counter_source, take
from synth.recipes import RunSettings, pipeline
from synth.recipes.diversity import DIVERSE, spread_stage
from synth.stages import DropTruncated, Magpie, Respond
from synth.stages.diversity import NoveltyGate

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=None, help="Default: the embedded SmolLM2-135M-Instruct.")
parser.add_argument("--n", type=int, default=1000, help="Rows to keep.")
parser.add_argument("--out", required=True)
parser.add_argument("--spread", default="topics", choices=["topics", "personas", "tasks"])
parser.add_argument("--topics", default=None, help="A `synth topics` output (default: the shipped taxonomy).")
parser.add_argument("--novelty", type=float, default=DIVERSE["novelty"], help="Cosine distance of the gate.")
parser.add_argument("--max-tokens", type=int, default=512)
parser.add_argument("--max-attempts", type=int, default=None, help="Cap on instructions tried.")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()


def drop_failed(batches):
    """A failed answer is no training row: dropped, counted."""
    for batch in batches:
        kept = batch.filter(pc.not_equal(batch["response_finish_reason"], "error"))
        drop_failed.stats["dropped_failed_request"] += batch.num_rows - kept.num_rows
        yield kept


drop_failed.stats = Counter()  # the run's counts take every stage's `stats`

llm = Metered(load_backend(args.model))
template = template_of(llm)
asking = Sampling(max_tokens=256, temperature=1.0, seed=args.seed)
if not getattr(llm, "chat_tuned", True):
    asking = asking.with_stop("\n\n")  # a base model never closes its turn
spread = spread_stage(args.spread, topics=args.topics, seed=args.seed)
attempts = counter_source(batch_size=16)

pipeline(
    take(args.max_attempts)(attempts) if args.max_attempts else attempts,
    spread,  # adds spread_item and the system prompt
    Magpie(llm, template, asking),
    NoveltyGate(args.novelty),  # before the answers: no tokens spent on a near-repeat
    Respond(llm, Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)),
    DropTruncated(),
    drop_failed,
    spread.observe(),  # the kept rows steer the next draws
    out=args.out,
    n=args.n,
    settings={"model": llm.model, "spread": args.spread, "novelty": args.novelty, "topics": args.topics},
    run=RunSettings(overwrite=args.overwrite, resume=args.resume),
)
