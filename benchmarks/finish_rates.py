"""How often the model ends what it writes, under sampling settings: the figures behind
filters/models/*.toml's min-p (docs/benchmarks.md, "Sampling defaults per model").

    python benchmarks/finish_rates.py --model smollm2 --threads 1            # 64 instructions, answers
    python benchmarks/finish_rates.py --model gemma3-base --threads 1

Instructions: K attempts from the pre-query prompt alone (seeds 0..K-1, temperature 1.0, repeat
penalty 1.1), at cap 256 with nothing cut from the tail, and at cap 128 with min-p 0.1 and 0.05;
counted by finish reason, distinct texts among those that ended. Answers (cap 512, temperature 0.7)
to the instructions that ended at min-p 0.1: no penalty and no min-p, penalty 1.1, penalty 1.1 and
min-p 0.1; counted by finish reason, with the tokens of the answers that ended. Every arm on the
shipped weights (SYNTH_NO_CONVERT=1). Writes benchmarks/results/finish-rates-MODEL.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
INSTRUCTIONS = {"cap256": (256, 0.0), "cap128-minp0.1": (128, 0.1), "cap128-minp0.05": (128, 0.05)}
ANSWERS = {"plain": (1.0, 0.0), "penalty1.1": (1.1, 0.0), "penalty1.1-minp0.1": (1.1, 0.1)}


def generate(backend, prompts, params, chunk: int = 16) -> list:
    """Completions for `prompts`, prompt i with seed `params.seed + i` (the backend's rule), `chunk` at a time."""
    out = []
    for i in range(0, len(prompts), chunk):
        out += backend.generate(prompts[i : i + chunk], dataclasses.replace(params, seed=params.seed + i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["smollm2", "gemma3-base"], default="smollm2")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    os.environ.setdefault("SYNTH_NO_CONVERT", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from synth.backends import Sampling, load_backend, template_of
    from synth.backends.llamacpp import base_model_path

    backend = load_backend(str(base_model_path()) if args.model == "gemma3-base" else None, n_threads=args.threads)
    template = template_of(backend)
    stops = (*template.instruction_stop, *(() if backend.chat_tuned else ("\n\n",)))  # as synth magpie does
    result: dict = {"model": args.model, "k": args.k, "threads": args.threads, "instructions": {}, "answers": {}}
    ended: list[str] = []
    for name, (cap, min_p) in INSTRUCTIONS.items():
        params = Sampling(max_tokens=cap, temperature=1.0, min_p=min_p, repeat_penalty=1.1, seed=0, stop=stops)
        started = time.monotonic()
        out = generate(backend, [template.pre_query(None)] * args.k, params)
        texts = [c.text.strip() for c in out if c.finish_reason == "stop" and c.text.strip()]
        result["instructions"][name] = {
            "finish": dict(Counter(c.finish_reason for c in out)),
            "distinct_ended": len(set(texts)),
            "tokens": sum(c.completion_tokens for c in out),
            "seconds": round(time.monotonic() - started, 1),
        }
        print(name, result["instructions"][name], flush=True)
        ended = texts if name == "cap128-minp0.1" else ended
    for name, (penalty, min_p) in ANSWERS.items():
        params = Sampling(max_tokens=512, temperature=0.7, min_p=min_p, repeat_penalty=penalty, seed=0)
        out = generate(backend, [[{"role": "user", "content": t}] for t in ended], params)
        result["answers"][name] = {
            "of": len(ended),
            "finish": dict(Counter(c.finish_reason for c in out)),
            "tokens_ended": sum(c.completion_tokens for c in out if c.finish_reason == "stop"),
            "tokens": sum(c.completion_tokens for c in out),
        }
        print(name, result["answers"][name], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"finish-rates-{args.model}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
