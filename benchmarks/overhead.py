"""Overhead of synth over a plain llama-cpp-python loop, in one run.

(a) `synth.recipes.magpie` on the embedded model, and (b) a plain loop over llama-cpp-python
doing the same work: the same pre-query prompt, seeds, stop strings and token caps for the
instruction, then the same chat prompt for the response. Both sides are compared in generated
tokens per second (synth drops cut-off instructions, so rows/s would flatter neither side).
Rounds alternate a/b to even out drift from other load on the machine.

    python benchmarks/overhead.py --attempts 24 --rounds 2 [--model FILE.gguf]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from synth import Sampling
from synth.backends.llamacpp import LlamaCppBackend
from synth.recipes import magpie

INSTRUCTION = Sampling(max_tokens=48, temperature=1.0, seed=1)
RESPONSE = Sampling(max_tokens=48, temperature=0.7, seed=1)


def plain_loop(backend: LlamaCppBackend, attempts: int) -> tuple[int, float]:
    """What a researcher writes by hand: one create_completion per prompt."""
    llm, tmpl = backend.llm, backend.template
    stop = [*tmpl.instruction_stop, "\n\n"]  # synth adds the paragraph stop for a base model too
    pre = llm.tokenize(tmpl.pre_query().encode(), add_bos=False, special=True)
    tokens, start = 0, time.perf_counter()
    for i in range(attempts):
        out = llm.create_completion(
            pre,
            max_tokens=INSTRUCTION.max_tokens,
            temperature=INSTRUCTION.temperature,
            top_p=1.0,
            top_k=0,
            min_p=0.0,
            stop=stop,
            seed=INSTRUCTION.seed + i,
        )
        tokens += out["usage"]["completion_tokens"]
        text, reason = out["choices"][0]["text"].strip(), out["choices"][0]["finish_reason"]
        if reason != "stop" or not text:
            continue
        chat = llm.tokenize(tmpl.render([{"role": "user", "content": text}]).encode(), add_bos=False, special=True)
        out = llm.create_completion(
            chat,
            max_tokens=RESPONSE.max_tokens,
            temperature=RESPONSE.temperature,
            top_p=1.0,
            top_k=0,
            min_p=0.0,
            stop=list(tmpl.response_stop),
            seed=RESPONSE.seed + i,
        )
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def through_synth(backend: LlamaCppBackend, attempts: int, batch_size: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        # n out of reach and a cap on attempts: exactly the plain loop's attempts are made.
        result = magpie(
            backend,
            n=10**9,
            out=Path(tmp) / "out",
            instruction=INSTRUCTION,
            response=RESPONSE,
            batch_size=batch_size,
            max_attempts=attempts,
        )
    return result["tokens"], result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="Prompts per backend call.")
    parser.add_argument(
        "--decode-batch",
        type=int,
        default=1,
        help="Sequences llama.cpp decodes together; 1 compares like with like (pure overhead).",
    )
    parser.add_argument("--model", help="A GGUF file (default: the embedded model).")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    args = parser.parse_args()
    backend = LlamaCppBackend(args.model, n_ctx=1024, batch_size=args.decode_batch)
    rows = []
    for _ in range(args.rounds):
        for name, run in (
            ("plain", lambda: plain_loop(backend, args.attempts)),
            ("synth", lambda: through_synth(backend, args.attempts, args.batch_size)),
        ):
            tokens, seconds = run()
            rows.append({"side": name, "tokens": tokens, "seconds": round(seconds, 2), "tok_s": tokens / seconds})
            print(f"{name:6s} {tokens:6d} tokens {seconds:7.1f}s {tokens / seconds:7.1f} tok/s", flush=True)
    rate = {
        side: sum(r["tokens"] for r in rows if r["side"] == side) / sum(r["seconds"] for r in rows if r["side"] == side)
        for side in ("plain", "synth")
    }
    ratio = rate["synth"] / rate["plain"]
    print(f"synth / plain generated tokens/s: {ratio:.3f}")
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model": backend.model,
                "runs": rows,
                "ratio": ratio,
                "attempts": args.attempts,
                "decode_batch": args.decode_batch,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
