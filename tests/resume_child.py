"""Run in a child process by test_resume: a Magpie run on a deterministic, slow test backend.

argv: OUT N RESUME(0/1) MODE, where MODE is `gen` (print GEN k before each backend call) or
`write` (print WRITING while the second shard's temporary file is on disk, then stall).
"""

import sys
import time

import pyarrow.parquet as pq

from synth.backends import Completion, Sampling
from synth.recipes import magpie
from synth.templates import builtin


class Deterministic:
    name, model, chat_tuned = "deterministic", "deterministic", True
    template = builtin("chatml")
    calls = 0

    def generate(self, prompts, params):
        Deterministic.calls += 1
        print(f"GEN {Deterministic.calls}", flush=True)
        time.sleep(0.05)
        out = []
        for i, prompt in enumerate(prompts):
            seed = params.seed + i
            if isinstance(prompt, str):  # an instruction; every 5th is cut off and dropped
                out.append(Completion(f"q{seed}", "length" if seed % 5 == 0 else "stop", 1, 1))
            else:
                out.append(Completion(f"answer to {prompt[-1]['content']}", "stop", 1, 1))
        return out


def main() -> None:
    out, n, resume, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
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
    magpie(
        Deterministic(),
        n=n,
        out=out,
        batch_size=4,
        shard_rows=4,
        resume=resume,
        instruction=Sampling(seed=0),
        response=Sampling(seed=0),
    )


if __name__ == "__main__":
    main()
