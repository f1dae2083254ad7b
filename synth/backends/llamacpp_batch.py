"""Continuous batching over llama.cpp's low-level API: many sequences per `llama_decode`.

Each step decodes one token for every live sequence, plus prompt chunks of newly admitted
ones, in a single `llama_batch` over a unified KV cache. A finished sequence frees its slot
and its cache cells at once and the next waiting prompt takes the slot. A prefix shared by
all prompts of a call is prefilled once, into a sequence of its own, and copied into each
slot's cache (in a unified cache the copy shares cells, it does not duplicate them).
Sampling runs for all rows of a step together (see `synth.backends.sampling`).

The cache is sized to the work, not to `n_ctx` x slots: the first call opens it for its
first wave of prompts plus `ROOM` tokens each; when llama.cpp finds no free cell, the live
sequences' cells are read out, the context is reopened half as large again, and they are
written back (no sequence restarts). llama.cpp clears the whole KV buffer when it makes it,
so its size is resident memory from the start: this is what keeps the peak near the
one-sequence loop's.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synth.backends import Completion, FinishReason, completed
from synth.backends.loops import Loop
from synth.backends.sampling import penalise, sample

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


@dataclass(frozen=True)
class Request:
    """One prompt as the decoder takes it: tokens and its own sampling settings."""

    tokens: Sequence[int]
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF, root rule `root`
    repeat_penalty: float = 1.0  # penalties over the last PENALTY_LAST_N tokens, as llama.cpp's
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    loop_stop: bool = False  # end the sequence as `repetition` once it loops (synth.backends.loops)

    @property
    def penalised(self) -> bool:
        return self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass
class _Seq:
    """A request in a slot: what is left to feed, what came out."""

    index: int
    request: Request
    slot: int
    admitted: int
    todo: list[int]
    pos: int = 0
    out: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    rng: np.random.Generator | None = None
    grammar: Any = None
    stops: tuple[bytes, ...] = ()
    loop: Loop | None = None


@dataclass
class Stats:
    """Counters of one decoder, summed over calls: for benchmarks and `-v`."""

    steps: int = 0
    decoded_tokens: int = 0
    generated_tokens: int = 0
    decode_seconds: float = 0.0
    sample_seconds: float = 0.0
    shrinks: int = 0
    grows: int = 0
    shared_prefix_tokens: int = 0  # prefilled once, then copied into each sequence's cache


PENALTY_LAST_N = 64  # tokens (prompt and completion) the penalties look back over: llama.cpp's default
ROOM = 128  # tokens of completion each first-wave sequence gets in the cache before it has to grow
GROWTH = 1.5
_PAD = 256  # llama.cpp pads what attention reads to 256 cells: no use sizing the cache finer


def _pad(cells: int) -> int:
    return -(-cells // _PAD) * _PAD


class BatchDecoder:
    """A llama.cpp context with `slots` sequences of up to `n_ctx` tokens each.

    The KV cache holds at most `max_cache_tokens` (default `n_ctx * slots`) and is opened at
    the first call, sized to it; `cache_tokens` fixes its first size instead (tests)."""

    def __init__(
        self,
        llama: Any,
        *,
        n_ctx: int,
        slots: int,
        n_threads: int,
        n_batch: int = 512,
        cache_tokens: int | None = None,
        max_cache_tokens: int | None = None,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.n_ctx = n_ctx
        self.slots = slots
        self.n_threads = n_threads
        self.max_cache_tokens = max_cache_tokens or n_ctx * slots
        self.first_cache_tokens = cache_tokens
        self.cache_tokens = 0  # cells of the open cache; 0 until a call opens it
        self.n_batch = max(n_batch, slots)
        self.stats = Stats()
        self.memory: dict[str, float] = {}  # MiB of the open cache, from llama.cpp's log (see `measure`)
        # Opens a context and says what it took: the backend wraps this to read llama.cpp's log.
        self.measure: Callable[[Callable[[], Any]], tuple[Any, dict[str, float]]] = lambda open_: (open_(), {})
        self.report: Callable[[str], None] = lambda line: None  # where cache sizing is explained (-v)
        self._model = llama._model.model
        self._ctx: Any = None
        self._mem: Any = None
        llama._stack.callback(self._close)  # freed with the model, before it
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        llama._stack.callback(llama_cpp.llama_batch_free, self._batch)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    @property
    def prefix_seq(self) -> int:
        return self.slots

    def _open(self, cells: int) -> None:
        """(Re)open the context with a cache of `cells` tokens; whatever the old one held is gone."""
        lib = self._lib
        self._close()
        params = lib.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = self.slots + 1  # the last sequence holds the shared prefix
        params.n_outputs_max = self.slots + 1  # at most one row of logits per sequence: a small output buffer
        params.kv_unified = True  # one cache for all sequences, so a shared prefix is stored once
        params.swa_full = False  # Gemma 3's sliding-window layers keep only their window
        params.n_threads = params.n_threads_batch = self.n_threads
        ctx, self.memory = self.measure(lambda: lib.llama_init_from_model(self._model, params))
        if not ctx:
            raise MemoryError(f"llama.cpp could not allocate a cache of {cells} tokens")
        self._ctx, self._mem, self.cache_tokens = ctx, lib.llama_get_memory(ctx), cells

    def _close(self) -> None:
        free = getattr(self._lib, "llama_free", None)  # None at interpreter exit: the process frees it all
        if self._ctx and free is not None:
            free(self._ctx)
        self._ctx = self._mem = None
        self.cache_tokens = 0

    def _size_for(self, requests: Sequence[Request]) -> None:
        """Open a cache for this call's first wave of prompts, unless the open one holds it."""
        wave = requests[: self.slots]
        want = self.first_cache_tokens or _pad(sum(len(r.tokens) + min(r.max_tokens, ROOM) for r in wave))
        want = min(max(want, _PAD), self.max_cache_tokens)
        if want <= self.cache_tokens:
            return
        self._open(want)
        self.report(
            f"llama.cpp KV cache {want} tokens ({self._mib()}): {len(wave)} sequences at once x "
            f"(prompt + {ROOM} tokens of room), grows x{GROWTH} when full, up to {self.max_cache_tokens} "
            f"({self.slots} x n_ctx {self.n_ctx})"
        )

    def _mib(self) -> str:
        m = self.memory
        return f"KV {m.get('kv', 0):.0f} MiB, compute buffers {m.get('compute', 0):.0f} MiB" if m else "size unknown"

    def generate(self, requests: Sequence[Request], share_prefix: bool = True) -> list[Completion]:
        """One completion per request, in order. Requests must fit `n_ctx` (the caller checks)."""
        results: list[Completion | None] = [None] * len(requests)
        if not requests:
            return []
        self._size_for(requests)
        queue = deque(range(len(requests)))
        prefix = self._prefill_prefix(requests) if share_prefix else 0
        live: dict[int, _Seq] = {}
        limit, admitted = self.slots, 0
        try:
            while queue or live:
                while queue and len(live) < limit:
                    slot = min(set(range(self.slots)) - live.keys())
                    live[slot] = self._admit(queue.popleft(), requests, slot, prefix, admitted)
                    admitted += 1
                taken = self._fill(live)
                started = time.perf_counter()
                status = self._lib.llama_decode(self._ctx, self._batch)
                self.stats.decode_seconds += time.perf_counter() - started
                self.stats.steps += 1
                if status == 1 and self.cache_tokens < self.max_cache_tokens:
                    self._grow(live, prefix)  # the batch was not applied: it is filled again
                    continue
                if status == 1 and len(live) > 1:
                    # No room in the cache: give the youngest sequence back to the queue (it restarts
                    # from its prompt with its own seed) and run fewer at once for the rest of the call.
                    youngest = max(live.values(), key=lambda s: s.admitted)
                    self._free(live.pop(youngest.slot))
                    queue.appendleft(youngest.index)
                    limit = len(live)
                    self.stats.shrinks += 1
                    continue
                if status != 0:
                    why = "the KV cache has no room for it" if status == 1 else f"llama_decode returned {status}"
                    for seq in list(live.values()):
                        results[seq.index] = self._finish(live.pop(seq.slot), "error", why)
                    continue
                self.stats.decoded_tokens += self._batch.n_tokens
                rows = self._consume(taken)
                for seq, token in zip(rows, self._sample(rows)):
                    done = self._accept(seq, token)
                    if done:
                        results[seq.index] = self._finish(live.pop(seq.slot), done)
        finally:
            for seq in live.values():
                self._free(seq)
            if self._mem:
                self._lib.llama_memory_seq_rm(self._mem, self.prefix_seq, -1, -1)
        return [r for r in results if r is not None]

    def _grow(self, live: dict[int, _Seq], prefix: int) -> None:
        """Reopen the cache GROWTH times larger and move every live sequence's cells into it."""
        lib, old = self._lib, self.cache_tokens
        seqs = ([self.prefix_seq] if prefix else []) + sorted(live)
        saved = {}
        for seq_id in seqs:
            size = lib.llama_state_seq_get_size(self._ctx, seq_id)
            buf = (ctypes.c_uint8 * size)()
            saved[seq_id] = buf, lib.llama_state_seq_get_data(self._ctx, buf, size, seq_id)
        self._open(min(_pad(int(old * GROWTH)), self.max_cache_tokens))
        for seq_id, (buf, size) in saved.items():
            if lib.llama_state_seq_set_data(self._ctx, buf, size, seq_id) != size:
                raise MemoryError(f"llama.cpp could not move sequence {seq_id} into a cache of {self.cache_tokens}")
            if prefix and seq_id != self.prefix_seq:
                # restored with a private copy of the prefix: share the prefix sequence's cells again
                lib.llama_memory_seq_rm(self._mem, seq_id, 0, prefix)
                lib.llama_memory_seq_cp(self._mem, self.prefix_seq, seq_id, 0, prefix)
        self.stats.grows += 1
        self.report(
            f"llama.cpp KV cache full at {old} tokens with {len(live)} sequences in flight: "
            f"grown to {self.cache_tokens} ({self._mib()})"
        )

    def _prefill_prefix(self, requests: Sequence[Request]) -> int:
        """Prefill the tokens every request starts with; return how many (0: none shared)."""
        if len(requests) < 2:
            return 0
        first, shared = requests[0].tokens, min(len(r.tokens) for r in requests) - 1
        for r in requests[1:]:
            shared = next((i for i in range(shared) if r.tokens[i] != first[i]), shared)
        if shared < 2:
            return 0
        for start in range(0, shared, self.n_batch):
            chunk = first[start : min(shared, start + self.n_batch)]
            self._set_batch([(t, start + i, self.prefix_seq, False) for i, t in enumerate(chunk)])
            if self._lib.llama_decode(self._ctx, self._batch) != 0:
                self._lib.llama_memory_seq_rm(self._mem, self.prefix_seq, -1, -1)
                return 0  # no room for it: every sequence prefills its whole prompt instead
        self.stats.shared_prefix_tokens += shared
        return shared

    def _admit(self, index: int, requests: Sequence[Request], slot: int, prefix: int, admitted: int) -> _Seq:
        request = requests[index]
        if prefix:
            self._lib.llama_memory_seq_cp(self._mem, self.prefix_seq, slot, -1, -1)
        seq = _Seq(index, request, slot, admitted, list(request.tokens[prefix:]), pos=prefix)
        seq.stops = tuple(s.encode("utf-8") for s in request.stop if s)
        if request.temperature > 0 or request.grammar:
            seq.rng = np.random.default_rng(request.seed)
        if request.loop_stop:
            seq.loop = Loop()
        if request.grammar:
            seq.grammar = self._lib.llama_sampler_init_grammar(self._vocab, request.grammar.encode(), b"root")
        return seq

    def _fill(self, live: dict[int, _Seq]) -> list[tuple[_Seq, int]]:
        """Put one token of each decoding sequence, then prompt chunks, into the batch.

        Returns each sequence in the batch with how many of its tokens went in, in batch order."""
        entries: list[tuple[int, int, int, bool]] = []
        taken: list[tuple[_Seq, int]] = []
        budget = self.n_batch
        for seq in sorted(live.values(), key=lambda s: (len(s.todo) > 1, s.admitted)):
            take = min(len(seq.todo), budget)
            if take == 0:
                break
            ends = take == len(seq.todo)
            entries += [(t, seq.pos + i, seq.slot, ends and i == take - 1) for i, t in enumerate(seq.todo[:take])]
            taken.append((seq, take))
            budget -= take
        self._set_batch(entries)
        return taken

    @staticmethod
    def _consume(taken: list[tuple[_Seq, int]]) -> list[_Seq]:
        """After a good decode: advance each sequence; return those that now have logits."""
        rows = []
        for seq, take in taken:
            seq.pos += take
            del seq.todo[:take]
            if not seq.todo:
                rows.append(seq)
        return rows

    def _set_batch(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self._batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq_id, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits

    def _sample(self, rows: list[_Seq]) -> list[int]:
        if not rows:
            return []
        started = time.perf_counter()
        pointer = self._lib.llama_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float * self.n_vocab)), (len(rows),)
        )
        matrix = logits.view(np.float32).reshape(len(rows), self.n_vocab)
        for i, seq in enumerate(rows):
            if seq.request.penalised:
                recent = seq.out if len(seq.out) >= PENALTY_LAST_N else [*seq.request.tokens, *seq.out]
                penalise(matrix[i], recent[-PENALTY_LAST_N:], seq.request)
        allow = [functools.partial(self._allowed, seq.grammar) if seq.grammar else None for seq in rows]
        tokens = sample(
            matrix,
            [s.request for s in rows],
            [s.rng for s in rows],
            allow,
        )
        self.stats.sample_seconds += time.perf_counter() - started
        return tokens

    def _allowed(self, grammar: Any, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Which of the candidate tokens `ids` a grammar allows next (a boolean mask)."""
        data = np.zeros(len(ids), _TOKEN_DATA)
        data["id"], data["logit"] = ids, logits
        array = self._lib.llama_token_data_array(
            data.ctypes.data_as(ctypes.POINTER(self._lib.llama_token_data)), len(ids), -1, False
        )
        self._lib.llama_sampler_apply(grammar, ctypes.byref(array))
        return np.isfinite(data["logit"])

    def _accept(self, seq: _Seq, token: int) -> FinishReason | None:
        """Record a sampled token; return why the sequence ends, or None to go on."""
        if token < 0 or self._is_eog(token):
            return "stop"
        if seq.grammar:
            self._lib.llama_sampler_accept(seq.grammar, token)
        seq.out.append(token)
        self.stats.generated_tokens += 1
        before = len(seq.text)
        seq.text += self._piece(token)
        for stop in seq.stops:
            # Matched on the bytes of the text so far: a stop string split over tokens still ends it.
            at = seq.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                del seq.text[at:]
                return "stop"
        if len(seq.out) >= seq.request.max_tokens:
            return "length"
        if seq.loop is not None and seq.loop.add(token):
            return "repetition"  # its slot goes to the next waiting prompt in this same step
        seq.todo.append(token)
        return None

    def _finish(self, seq: _Seq, reason: FinishReason, error: str | None = None) -> Completion:
        self._free(seq)
        text = "" if error else seq.text.decode("utf-8", errors="replace")
        completion = Completion(text, reason, len(seq.request.tokens), len(seq.out), error=error)
        completed(completion)  # live progress: this sequence's row may be done
        return completion

    def _free(self, seq: _Seq) -> None:
        if self._mem:  # None only after a failed reopen
            self._lib.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
        if seq.grammar:
            self._lib.llama_sampler_free(seq.grammar)
            seq.grammar = None

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(256)
            # special=True: control tokens render as text, so stop strings naming them match.
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
            piece = self._pieces[token] = buf.raw[: max(n, 0)]
        return piece

    def _is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(self._lib.llama_vocab_is_eog(self._vocab, token))
        return eog
