"""Ollama through its official client: raw prompts to /api/generate, messages to /api/chat.

Ollama has no batch endpoint and no `n`, so throughput comes from concurrent requests; a
server started with OLLAMA_NUM_PARALLEL=K serves K at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from synth.backends import Completion, Prompt, Sampling
from synth.backends._pool import Failed, Pool, Retry, Retryable, strip_bos
from synth.core import SynthError
from synth.templates import ChatTemplate, builtin, family_from_name, family_from_text, resolve

DEFAULT_HOST = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class OllamaOptions:
    """Options of the Ollama backend."""

    host: str | None = None  # default: $OLLAMA_HOST, else DEFAULT_HOST
    concurrency: int = 4
    timeout: float = 600.0  # seconds per request; a long generation on a busy server is slow
    attempts: int = 4  # per request, timeouts and 5xx retried with backoff
    retry_delay: float = 0.5  # seconds, doubled per attempt, with jitter
    num_ctx: int | None = None  # the server's default context is often 2048-4096 tokens
    verbose: bool = False


class OllamaBackend:
    """Generates with a model an Ollama server holds (`llama3:8b`, `qwen2.5:7b`, ...)."""

    name = "ollama"
    reason = "chosen with --backend ollama"

    def __init__(self, model: str, template: str | None = None, **options: Any) -> None:
        try:
            import httpx
            import ollama
        except ImportError:
            raise SynthError("the ollama backend needs the `ollama` package: pip install 'synth[server]'") from None

        if not model:
            raise SynthError("the ollama backend needs a model: pass --model NAME:TAG, e.g. llama3:8b")
        self.options = OllamaOptions(**options)
        self.model = model
        self.host = (self.options.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).rstrip("/")
        self._ollama, self._httpx = ollama, httpx
        self.client = ollama.Client(host=self.host, timeout=self.options.timeout)
        show = self._call(lambda: self.client.show(model))
        self.go_template = show.template or ""
        self.family_hint = (show.details.family if show.details else None) or ""
        self.template: ChatTemplate = self._template(template)
        # A template that is only `{{ .Prompt }}` marks a base model, which never closes a turn.
        self.chat_tuned = family_from_text(self.go_template) is not None
        self.pool: Pool[tuple[Prompt, Sampling]] = Pool(
            self._send, self.options.concurrency, Retry(self.options.attempts, self.options.retry_delay)
        )

    def _template(self, override: str | None) -> ChatTemplate:
        if override:
            return resolve(override)
        names = (self.model, self.family_hint)
        family = family_from_text(self.go_template) or next(filter(None, map(family_from_name, names)), None)
        if family is None:
            raise SynthError(
                f"could not tell the chat template of Ollama model {self.model}: its template matches no known "
                "family and neither does its name; pass --template FAMILY (llama3, chatml, gemma, phi3, mistral, ...)"
            )
        return builtin(family)

    def describe(self) -> dict[str, Any]:
        """What the dataset card records about this backend."""
        return {
            "backend": self.name,
            "selected": self.reason,
            "model": self.model,
            "host": self.host,
            "template": self.template.family,
            "chat_tuned": self.chat_tuned,
            "concurrency": self.options.concurrency,
        }

    def generate(self, prompts: Sequence[Prompt], params: Sampling) -> list[Completion]:
        """One completion per prompt, in order; prompt i samples with seed `params.seed + i`."""
        return self.pool.map([(p, params) for p in prompts])

    def _send(self, index: int, item: tuple[Prompt, Sampling]) -> Completion:
        prompt, params = item
        seed = None if params.seed is None else params.seed + index
        if isinstance(prompt, str):
            # raw: the prompt is the whole model input, template and all (Magpie's pre-query text)
            options = self._options(params, params.stop, seed)
            raw = strip_bos(prompt, self.template.bos_token)
            call = partial(self.client.generate, self.model, raw, raw=True, options=options, format=params.json_schema)
            reply = self._call(call, retry=True)
            text = reply.response
        else:
            options = self._options(params, params.with_stop(*self.template.response_stop).stop, seed)
            messages = [dict(m) for m in prompt]
            call = partial(self.client.chat, self.model, messages, options=options, format=params.json_schema)
            reply = self._call(call, retry=True)
            text = reply.message.content or ""
        # Raw mode returns no end-of-turn token: done_reason is the only sign of a cut-off.
        return Completion(
            text=text,
            finish_reason="length" if reply.done_reason == "length" else "stop",
            prompt_tokens=reply.prompt_eval_count or 0,
            completion_tokens=reply.eval_count or 0,
        )

    def _options(self, params: Sampling, stop: tuple[str, ...], seed: int | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,  # 0 disables it here too; Ollama's own default would be 40
            "min_p": params.min_p,
            "num_predict": params.max_tokens,
        }
        if stop:
            options["stop"] = list(stop)
        if seed is not None:
            options["seed"] = seed
        if self.options.num_ctx:
            options["num_ctx"] = self.options.num_ctx
        return options

    def _call(self, fn: Callable[[], Any], retry: bool = False) -> Any:
        """Run one client call, turning its faults into messages that say what to do."""
        try:
            return fn()
        except ConnectionError:
            down = SynthError(
                f"no Ollama server answers at {self.host}; start one with `ollama serve` "
                "(or point OLLAMA_HOST / --base-url at a running one)"
            )
            if not retry:
                raise down from None
            raise Retryable(f"no answer from {self.host}", final=down) from None
        except self._httpx.TimeoutException:
            if not retry:
                raise SynthError(f"the Ollama server at {self.host} did not answer in time") from None
            raise Retryable(f"timed out after {self.options.timeout:.0f}s") from None
        except self._httpx.TransportError as exc:
            if not retry:
                raise SynthError(f"the Ollama server at {self.host} dropped the connection ({exc})") from None
            raise Retryable(f"connection error: {exc}") from None
        except self._ollama.ResponseError as exc:
            if exc.status_code == 404 and "not found" in str(exc.error).lower():
                raise SynthError(
                    f"the Ollama server at {self.host} has no model {self.model!r}; run `ollama pull {self.model}`"
                ) from None
            if retry and (exc.status_code >= 500 or exc.status_code == 429):
                raise Retryable(f"Ollama answered {exc.status_code}: {exc.error}") from None
            if retry:
                raise Failed(f"Ollama answered {exc.status_code}: {exc.error}") from None
            raise SynthError(f"the Ollama server at {self.host} answered {exc.status_code}: {exc.error}") from None
