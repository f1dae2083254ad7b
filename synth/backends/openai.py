"""Any OpenAI-compatible server (vLLM serve, SGLang, TGI, llama.cpp server, LM Studio).

Raw prompts go to /v1/completions, since Magpie needs the pre-query text sent untouched;
messages go to /v1/chat/completions, where the server applies the model's own template.
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
from synth.templates import ChatTemplate, resolve


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the OpenAI-compatible backend."""

    base_url: str = ""
    api_key_env: str | None = None  # the name of an environment variable, never the key itself
    concurrency: int = 4
    timeout: float = 600.0
    attempts: int = 4  # per request, timeouts and 5xx retried with backoff
    retry_delay: float = 0.5  # seconds, doubled per attempt, with jitter
    verbose: bool = False


class OpenAIBackend:
    """Generates through an OpenAI-compatible HTTP server."""

    name = "openai"
    reason = "chosen with --backend openai"
    chat_tuned = True

    def __init__(self, model: str | None = None, template: str | None = None, **options: Any) -> None:
        try:
            import openai
        except ImportError:
            raise SynthError("the openai backend needs the `openai` package: pip install 'synth[server]'") from None

        self.options = OpenAIOptions(**options)
        if not self.options.base_url:
            raise SynthError("the openai backend needs the server's address: pass --base-url http://HOST:PORT/v1")
        self.base_url = self.options.base_url.rstrip("/")
        self._openai = openai
        # Retries are ours (with the error-rate rule), so the client's own are off.
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key(), timeout=self.options.timeout, max_retries=0
        )
        self.model = model or self._served_model()
        self.template: ChatTemplate = resolve(template, names=[self.model])
        self.pool: Pool[tuple[Prompt, Sampling]] = Pool(
            self._send, self.options.concurrency, Retry(self.options.attempts, self.options.retry_delay)
        )

    def _api_key(self) -> str:
        name = self.options.api_key_env
        if name is None:
            return os.environ.get("OPENAI_API_KEY") or "none"  # local servers want no key, the client wants one
        key = os.environ.get(name)
        if not key:
            raise SynthError(f"--api-key-env names {name}, but that environment variable is not set; export {name}=...")
        return key

    def _served_model(self) -> str:
        models = self._call(self.client.models.list)
        ids = [m.id for m in models.data]
        if not ids:
            raise SynthError(f"the server at {self.base_url} serves no model; pass --model NAME")
        return ids[0]

    def describe(self) -> dict[str, Any]:
        """What the dataset card records about this backend."""
        return {
            "backend": self.name,
            "selected": self.reason,
            "model": self.model,
            "base_url": self.base_url,
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
            body = self._body(params, params.stop, seed, chat=False)
            raw = strip_bos(prompt, self.template.bos_token)
            reply = self._call(partial(self.client.completions.create, prompt=raw, **body), retry=True)
            text = reply.choices[0].text
        else:
            body = self._body(params, params.with_stop(*self.template.response_stop).stop, seed, chat=True)
            messages = [dict(m) for m in prompt]
            reply = self._call(partial(self.client.chat.completions.create, messages=messages, **body), retry=True)
            text = reply.choices[0].message.content or ""
        usage = reply.usage
        return Completion(
            text=text,
            finish_reason="length" if reply.choices[0].finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def _body(self, params: Sampling, stop: tuple[str, ...], seed: int | None, chat: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        extra: dict[str, Any] = {}
        # Not OpenAI's own parameters: sent only when set, since strict servers reject unknown fields.
        if params.top_k > 0:
            extra["top_k"] = params.top_k
        if params.min_p > 0:
            extra["min_p"] = params.min_p
        if params.json_schema is not None:
            fmt = {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(params.json_schema)}}
            if chat:
                body["response_format"] = fmt
            else:
                extra["response_format"] = fmt  # vLLM and SGLang take it on completions too
        if extra:
            body["extra_body"] = extra
        return body

    def _call(self, fn: Callable[[], Any], retry: bool = False) -> Any:
        """Run one client call, turning its faults into messages that say what to do."""
        openai = self._openai
        try:
            return fn()
        except openai.APITimeoutError:  # before APIConnectionError, its base class
            if not retry:
                raise SynthError(f"the server at {self.base_url} did not answer in time") from None
            raise Retryable(f"timed out after {self.options.timeout:.0f}s") from None
        except openai.APIConnectionError:
            down = SynthError(
                f"no server answers at {self.base_url}; start your OpenAI-compatible server "
                "(e.g. `vllm serve MODEL` or `python -m llama_cpp.server --model FILE.gguf`) or fix --base-url"
            )
            if not retry:
                raise down from None
            raise Retryable(f"no answer from {self.base_url}", final=down) from None
        except openai.AuthenticationError as exc:
            raise SynthError(
                f"the server at {self.base_url} refused the API key ({exc.status_code}); "
                "put the key in an environment variable and pass its name with --api-key-env"
            ) from None
        except openai.NotFoundError as exc:
            model = getattr(self, "model", "")  # unset while asking /v1/models
            raise SynthError(
                f"the server at {self.base_url} does not serve model {model!r} or this endpoint "
                f"({exc.message}); pass --model with a name from its /v1/models"
            ) from None
        except openai.APIStatusError as exc:
            if retry and (exc.status_code >= 500 or exc.status_code == 429):
                raise Retryable(f"server answered {exc.status_code}: {exc.message}") from None
            if retry:
                raise Failed(f"server answered {exc.status_code}: {exc.message}") from None
            raise SynthError(f"the server at {self.base_url} answered {exc.status_code}: {exc.message}") from None
