"""Verified code instructions: Magpie with the code task's system prompt writes coding requests,
the model answers them, the Python in each answer runs in synth's sandbox with the asserts it
carries, and only answers that pass are kept, with near-duplicate requests dropped (MinHash).

    synth run pipelines/code_instruct.py --model qwen2.5-coder:7b --n 1000 --out data/code   # Ollama
    synth run pipelines/code_instruct.py --n 2 --max-attempts 16 --out /tmp/code   # embedded model, a smoke run
    synth run pipelines/code_instruct.py ... --rejects data/code-rejects   # keep what failed, with verify_status

The answer is asked to end its code with asserts (`--tests-prompt`): an answer whose code runs
but checks nothing is kept with `verify_tests` = none; `--require-tests` drops it as well.
"""

import argparse
import contextlib
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from synth import Sampling, load_backend
from synth.backends import Metered, template_of
from synth.core import Batch, counter_source, take
from synth.io import Sink
from synth.recipes import RunSettings, pipeline
from synth.recipes.chat import steering
from synth.sandbox import Limits, Sandbox, default_cache
from synth.stages import Filter, Magpie, Respond, Rule, dedup_minhash
from synth.stages.verify import VerifyCode, passed

TESTS = "End your answer with one Python code block holding the solution followed by assert statements that test it."

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=None, help="Ollama tag, GGUF path or HF id. Default: the embedded model.")
parser.add_argument("--n", type=int, default=1000, help="Verified rows to keep.")
parser.add_argument("--out", required=True)
parser.add_argument("--rejects", default=None, help="Write the rows that failed verification here.")
parser.add_argument("--max-tokens", type=int, default=1024)
parser.add_argument("--max-attempts", type=int, default=None, help="Cap on instructions tried.")
parser.add_argument("--tests-prompt", default=TESTS, help="Appended to the system prompt; '' for none.")
parser.add_argument("--require-tests", action="store_true", help="Drop passing answers that test nothing.")
parser.add_argument("--timeout", type=float, default=10.0, help="Seconds each program may run.")
parser.add_argument("--threshold", type=float, default=0.7, help="MinHash Jaccard threshold for near-duplicates.")
parser.add_argument("--batch-size", type=int, default=32, help="Attempts generated and verified at a time.")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--overwrite", action="store_true")
parser.add_argument("--resume", action="store_true")
args = parser.parse_args()

llm = Metered(load_backend(args.model))
system = steering(task="code", system_prompt=args.tests_prompt or None)


def steered(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Every attempt gets the code task's system prompt, for Magpie and for the answer."""
    for batch in batches:
        yield batch.append_column("system_prompt", pa.array([system] * batch.num_rows, pa.string()))


asking = Sampling(max_tokens=256, temperature=1.0, top_p=1.0, seed=args.seed)
if not getattr(llm, "chat_tuned", True):
    asking = asking.with_stop("\n\n")  # a base model never closes its turn
rules = [Rule("cut_off", lambda b: pc.not_equal(b["response_finish_reason"], "stop")), passed()]
if args.require_tests:
    rules.append(Rule("untested", lambda b: pc.equal(b["verify_tests"], "none")))
attempts = counter_source(batch_size=args.batch_size)
run = RunSettings(overwrite=args.overwrite, resume=args.resume)
with contextlib.ExitStack() as stack:
    rejects = None
    if args.rejects:
        rejects = stack.enter_context(Sink(run.open(args.rejects)))
    pipeline(
        take(args.max_attempts)(attempts) if args.max_attempts else attempts,
        steered,
        Magpie(llm, template_of(llm), asking),
        Respond(llm, Sampling(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed)),
        VerifyCode("response", sandbox=Sandbox(Limits(timeout=args.timeout), cache=default_cache())),
        Filter(tuple(rules), rejects),
        dedup_minhash("instruction", threshold=args.threshold),
        out=args.out,
        n=args.n,
        settings={"model": llm.model, "task": "code", "system_prompt": system},
        run=run,
    )
