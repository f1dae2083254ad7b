"""Instruction Pre-Training (arXiv 2406.14491) over a raw corpus, as a researcher would chain it.

Documents are cut into chunks that fit the model's context (counted with its own tokenizer),
the instruction synthesizer writes `<QUE> ... <ANS> ... </END>` pairs for each chunk with
earlier chunks and their pairs as few-shot context, the pairs become SFT rows, and repeated
questions are dropped.

    synth run pipelines/instruction_pretrain.py --corpus docs/ --out data/ipt \\
        --model instruction-pretrain/instruction-synthesizer     # vLLM, on a GPU
    synth run pipelines/instruction_pretrain.py --corpus tests/fixtures/corpus --n 4 --out /tmp/ipt

The released synthesizer was trained on this format; the embedded base model was not, so with
it expect few or no pairs (the run still shows every stage working).
"""

import argparse

from synth import Sampling, load_backend, read
from synth.backends import Metered
from synth.recipes import RunSettings, pipeline
from synth.stages import Chunk, InstructionPretrain, SftRows, dedup_exact
from synth.tokens import context_size, token_counter

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--corpus", required=True, help="A folder of .txt/.md files, jsonl, parquet, ...")
parser.add_argument("--out", required=True)
parser.add_argument("--model", default=None, help="Default: the embedded SmolLM2-135M-Instruct.")
parser.add_argument("--n", type=int, default=None, help="Stop after this many SFT rows.")
parser.add_argument("--rounds", type=int, default=2)
parser.add_argument("--max-tokens", type=int, default=256)
parser.add_argument("--overwrite", action="store_true")
args = parser.parse_args()

llm = Metered(load_backend(args.model))
count, context = token_counter(llm), context_size(llm)
params = Sampling(max_tokens=args.max_tokens, temperature=0.0)  # the released synthesizer decodes greedily
budget = context - args.max_tokens - 64  # room for the <CON> wrapper around each chunk

pipeline(
    read(args.corpus, batch_size=8 * args.rounds),  # one read batch is one chaining window
    Chunk(count, budget),
    InstructionPretrain(
        llm, count, context, params, rounds=args.rounds, bos=llm.template.bos_token, eos=llm.template.eos_token
    ),
    SftRows(),
    dedup_exact("instruction"),
    out=args.out,
    n=args.n,
    settings={"model": llm.model, "corpus": args.corpus, "rounds": args.rounds, "sampling": str(params)},
    run=RunSettings(overwrite=args.overwrite),
    inputs=[args.corpus],
)
