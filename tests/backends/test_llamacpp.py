"""The embedded llama.cpp backend's batched decoding, on the real Gemma 3 270M (small max_tokens)."""

from __future__ import annotations

import json

import pytest

from synth.backends import Sampling
from synth.backends.llamacpp_batch import BatchDecoder, Request

GREEDY = Sampling(max_tokens=16, temperature=0.0)
# Prompts whose greedy continuations have no near-ties in their first 16 tokens: llama.cpp's
# CPU kernels differ by batch shape, so a near-tie may break either way (see the issue).
PROMPTS = [
    "Question 1: what is the capital of France? Answer:",
    "The quick brown fox",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Monday, Tuesday, Wednesday,",
    "The alphabet: A B C D E",
    "Twinkle, twinkle, little star,",
    "January, February, March,",
]


@pytest.fixture(scope="session")
def embedded(base_model):
    """These decoder tests run on the base model: their prompts were picked for its greedy continuations."""
    return base_model


def _requests(backend, prompts, max_tokens, **sampling):
    return [Request(tokens=backend.tokenize(p), max_tokens=m, **sampling) for p, m in zip(prompts, max_tokens)]


NEAR_TIE = 0.5  # logits: a gap this small between the two best tokens may flip with the batch shape


def _greedy_alone(llm, tokens: list[int], steps: int) -> tuple[list[int], list[float]]:
    """One sequence at a time, greedy: the tokens chosen and each step's gap between the best two."""
    import numpy as np

    llm.reset()
    llm.eval(tokens)
    chosen, gaps = [], []
    for _ in range(steps):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        second, best = np.argsort(logits)[-2:]
        gaps.append(float(logits[best] - logits[second]))
        if int(best) == llm.token_eos():
            break
        chosen.append(int(best))
        llm.eval([int(best)])
    return chosen, gaps


def test_batched_agrees_with_one_at_a_time_at_temperature_zero(embedded) -> None:
    """Equal texts for every prompt, except that a prompt may part ways at a near-tie: llama.cpp's
    CPU kernels differ by batch shape (a gap of 0.38 flipped on one machine's build)."""
    batched = embedded.generate(PROMPTS, GREEDY)
    exact = 0
    for prompt, got in zip(PROMPTS, batched):
        alone = embedded.llm.create_completion(prompt=embedded.tokenize(prompt), max_tokens=16, temperature=0.0)
        assert got.prompt_tokens == alone["usage"]["prompt_tokens"]
        if got.text == alone["choices"][0]["text"]:
            assert got.completion_tokens == alone["usage"]["completion_tokens"]
            exact += 1
            continue
        chosen, gaps = _greedy_alone(embedded.llm, embedded.tokenize(prompt), 16)
        tie = next((i for i, gap in enumerate(gaps) if gap < NEAR_TIE), None)
        assert tie is not None, f"{prompt!r}: parted with no near-tie ({got.text!r})"
        agreed = embedded.llm.detokenize(chosen[:tie]).decode("utf-8", errors="ignore")
        assert got.text.startswith(agreed), f"{prompt!r}: parted before its first near-tie at token {tie}"
    assert exact >= len(PROMPTS) - 2, f"only {exact} of {len(PROMPTS)} prompts agree on all 16 tokens"


def test_stop_string_spanning_two_tokens_ends_the_text_before_it(embedded) -> None:
    prompt = PROMPTS[0]
    (full,) = embedded.generate([prompt], GREEDY)
    assert full.text.startswith(" Paris\n\nQuestion")
    stop = "is\n\nQu"  # the end of " Paris", all of "\n\n", the start of "Question"
    pieces = [embedded.llm.detokenize([t]).decode() for t in embedded.llm.tokenize(b" Paris\n\nQuestion", False)]
    assert not any(stop in piece for piece in pieces)
    (cut,) = embedded.generate([prompt], Sampling(max_tokens=16, temperature=0.0, stop=(stop,)))
    assert (cut.text, cut.finish_reason) == (" Par", "stop")


def test_finish_reasons_and_token_counts(embedded) -> None:
    long, stopped = embedded.generate([PROMPTS[7], PROMPTS[0]], Sampling(max_tokens=12, temperature=0.0, stop=("\n",)))
    assert (long.finish_reason, long.completion_tokens) == ("length", 12)
    assert (stopped.text, stopped.finish_reason) == (" Paris", "stop")
    assert stopped.completion_tokens < 12


def test_over_long_prompt_gives_an_error_row_and_the_others_go_on(embedded) -> None:
    too_long = "word " * (embedded.options.n_ctx + 10)
    out = embedded.generate([PROMPTS[0], too_long, PROMPTS[1]], Sampling(max_tokens=4, temperature=0.0))
    assert [c.finish_reason for c in out] == ["length", "error", "length"]
    assert "per-sequence context" in out[1].error
    assert out[0].text and out[2].text


def test_input_order_is_kept_when_later_prompts_finish_first(embedded) -> None:
    lengths = [20, 14, 8, 2, 1, 5, 11, 3]
    out = embedded.decoder.generate(_requests(embedded, PROMPTS, lengths, temperature=0.0))
    assert [c.completion_tokens for c in out] == lengths
    assert [c.prompt_tokens for c in out] == [len(embedded.tokenize(p)) for p in PROMPTS]


def test_continuous_batching_steps_follow_the_longest_sequence_not_the_sum(embedded) -> None:
    slots = embedded.decoder.slots
    prompts = [PROMPTS[1]] + [f"Item {i}: a list of" for i in range(4 * slots)]
    lengths = [40] + [3] * (4 * slots)
    before = embedded.decoder.stats.steps
    out = embedded.decoder.generate(_requests(embedded, prompts, lengths, temperature=0.0))
    steps = embedded.decoder.stats.steps - before
    assert out[0].completion_tokens == 40
    # Static batches would take 40 steps for the first batch plus 3 more batches of short ones.
    assert steps <= 40 + 4, steps


def test_shared_prefix_gives_the_same_outputs_as_without(embedded) -> None:
    system = "Complete the list. Each list continues in the same pattern until it reaches twenty items. "
    prompts = [system + start for start in ("1, 2, 3, 4,", "January, February, March,", "A, B, C, D,")]
    requests = _requests(embedded, prompts, [16] * 3, temperature=0.0)
    before = embedded.decoder.stats.shared_prefix_tokens
    shared = embedded.decoder.generate(requests)
    assert embedded.decoder.stats.shared_prefix_tokens - before >= 15
    alone = embedded.decoder.generate(requests, share_prefix=False)
    assert [c.text for c in shared] == [c.text for c in alone]


def test_fixed_seed_reproduces_and_prompt_i_uses_seed_plus_i(embedded) -> None:
    params = Sampling(max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    first = embedded.generate(PROMPTS[:4], params)
    assert [c.text for c in embedded.generate(PROMPTS[:4], params)] == [c.text for c in first]
    twins = embedded.generate([PROMPTS[1]] * 4, params)
    assert len({c.text for c in twins}) > 1  # four seeds, not one


def test_json_schema_holds_for_every_sequence_in_a_batch(embedded) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    out = embedded.generate(
        [PROMPTS[0], PROMPTS[3], PROMPTS[4]], Sampling(max_tokens=40, temperature=0.7, seed=1, json_schema=schema)
    )
    for c in out:
        assert c.finish_reason == "stop"
        assert isinstance(json.loads(c.text)["answer"], int)


def test_no_cache_slot_shrinks_the_batch_and_loses_no_row(embedded) -> None:
    # A cache too small for four sequences at once, and not allowed to grow: llama_decode returns 1 part way.
    decoder = BatchDecoder(embedded.llm, n_ctx=256, slots=4, n_threads=2, max_cache_tokens=256)
    out = decoder.generate(
        _requests(embedded, [f"Story {i}: once upon a time" for i in range(4)], [100] * 4, temperature=0.0)
    )
    assert decoder.stats.shrinks >= 1
    assert [(c.finish_reason, c.completion_tokens) for c in out] == [("length", 100)] * 4


def test_cache_is_sized_to_the_prompts_not_to_n_ctx_times_the_batch(embedded) -> None:
    decoder = BatchDecoder(embedded.llm, n_ctx=2048, slots=8, n_threads=2)
    lines: list[str] = []
    decoder.report = lines.append
    assert decoder.cache_tokens == 0  # nothing is allocated before the first call
    requests = _requests(embedded, PROMPTS[:4], [8] * 4, temperature=0.0)
    out = decoder.generate(requests)
    assert [c.completion_tokens for c in out] == [8] * 4
    # four prompts of about ten tokens, each with room for 8 more: one block of 256 cells, not 8 x 2048
    assert decoder.cache_tokens == 256
    assert len(lines) == 1 and "KV cache 256 tokens" in lines[0] and "4 sequences at once" in lines[0]
    decoder.generate(requests)
    assert decoder.cache_tokens == 256 and len(lines) == 1  # the open cache holds the next call: kept


def test_full_cache_grows_and_moves_every_sequence_unchanged(embedded) -> None:
    """Sequences outgrow a 256-token cache mid-call: it is reopened larger, with their cells moved
    over (the shared prefix shared again), and every text is what a large cache gives."""
    system = "Complete the list. Each list continues in the same pattern until it reaches twenty items. "
    prompts = [system + p for p in PROMPTS[2:8]]
    requests = _requests(embedded, prompts, [40] * 6, temperature=0.0)
    roomy = BatchDecoder(embedded.llm, n_ctx=512, slots=6, n_threads=2, cache_tokens=2048)
    small = BatchDecoder(embedded.llm, n_ctx=512, slots=6, n_threads=2, cache_tokens=256)
    lines: list[str] = []
    small.report = lines.append
    expected, got = roomy.generate(requests), small.generate(requests)
    assert small.stats.grows >= 1 and small.stats.shrinks == 0
    assert small.cache_tokens > 256 and any("grown to" in line for line in lines)
    assert small.stats.shared_prefix_tokens >= 15
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == [
        (c.text, c.finish_reason, c.completion_tokens) for c in expected
    ]
    assert all(c.completion_tokens == 40 for c in got)


def test_default_batch_size_follows_threads_and_the_models_kv_cache() -> None:
    from synth.backends.llamacpp import default_batch_size, kv_bytes_per_token

    smollm2 = {  # SmolLM2-135M: 30 layers, 9 heads of 64, 3 KV heads
        "general.architecture": "llama",
        "llama.block_count": "30",
        "llama.embedding_length": "576",
        "llama.attention.head_count": "9",
        "llama.attention.head_count_kv": "3",
    }
    gemma3 = {  # Gemma 3 270M: 18 layers, 4 heads, 1 KV head, head size 256 (not 640 / 4)
        "general.architecture": "gemma3",
        "gemma3.block_count": "18",
        "gemma3.embedding_length": "640",
        "gemma3.attention.head_count": "4",
        "gemma3.attention.head_count_kv": "1",
        "gemma3.attention.key_length": "256",
        "gemma3.attention.value_length": "256",
    }
    assert kv_bytes_per_token(smollm2) == 30 * 3 * (64 + 64) * 2
    assert kv_bytes_per_token(gemma3) == 18 * 1 * (256 + 256) * 2
    small, why = default_batch_size(smollm2, threads=1)
    assert small == 8 and "8 per thread x 1 threads" in why
    assert default_batch_size(smollm2, threads=2)[0] == 11  # the KV budget binds: 128 MiB / (22.5 KiB x 512)
    assert default_batch_size(gemma3, threads=2)[0] == 14
    assert default_batch_size({"general.architecture": "x"}, threads=4)[0] == 32  # nothing known of the cache


@pytest.mark.parametrize("size", [0, 256])
def test_batch_size_out_of_range_is_a_clear_error(size: int) -> None:
    from synth.backends.llamacpp import LlamaCppBackend
    from synth.core import SynthError

    with pytest.raises(SynthError, match="batch size"):
        LlamaCppBackend(batch_size=size)


def test_models_load_without_extra_buffer_types_on_a_cpu_with_amx(monkeypatch) -> None:
    lib = pytest.importorskip("llama_cpp.llama_cpp")
    from synth.backends.llamacpp import avoid_amx_kernels, cpu_has_amx

    current = lib.llama_model_default_params
    pristine = getattr(current, "original", current)  # this process may hold synth's wrapper already
    monkeypatch.setattr(lib, "llama_model_default_params", pristine)
    monkeypatch.delenv("SYNTH_LLAMA_EXTRA_BUFFERS", raising=False)
    amx = "processor : 0\nflags : fpu sse2 avx2 avx512f amx_bf16 amx_tile amx_int8\n"
    plain = "processor : 0\nflags : fpu sse2 avx2 avx512f\n"
    assert cpu_has_amx(amx) and not cpu_has_amx(plain) and not cpu_has_amx("")

    assert not avoid_amx_kernels(plain)
    assert lib.llama_model_default_params is pristine and lib.llama_model_default_params().use_extra_bufts
    monkeypatch.setenv("SYNTH_LLAMA_EXTRA_BUFFERS", "1")
    assert not avoid_amx_kernels(amx)
    assert lib.llama_model_default_params().use_extra_bufts
    monkeypatch.delenv("SYNTH_LLAMA_EXTRA_BUFFERS")
    assert avoid_amx_kernels(amx) and avoid_amx_kernels(amx)  # twice: wrapped once
    assert not lib.llama_model_default_params().use_extra_bufts
    assert lib.llama_model_default_params.original is pristine
