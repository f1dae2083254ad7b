"""Any OpenAI-compatible server (vLLM serve, SGLang, TGI, llama.cpp server, LM Studio).

Raw prompts go to /v1/completions, since Magpie needs the pre-query text sent untouched;
messages go to /v1/chat/completions, where the server applies the model's own template.
Tokens are counted by the server's own tokenize endpoint where it has one (vLLM, SGLang,
llama.cpp's llama-server, llama-cpp-python's server, TGI); none of them is OpenAI's API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from synth.backends import Completion, Prompt, Sampling
from synth.backends._pool import Failed, Pool, Retryable, strip_bos
from synth.backends._resilience import BUSY_STATUSES, parse_concurrency, retry_after
from synth.core import SynthError
from synth.templates import ChatTemplate, family_from_name, resolve

# The environment keys synth may send without --api-key-env, each only to its own provider's host:
# a key goes where its owner sent it, never to whatever --base-url names.
PROVIDER_KEYS = {"api.openai.com": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the OpenAI-compatible backend."""

    base_url: str = ""
    api_key_env: str | None = None  # the name of an environment variable, never the key itself
    concurrency: int | str = "auto"  # requests in flight: a number, or auto (adapts to the server)
    timeout: float = 600.0
    attempts: int = 4  # per request, timeouts and 5xx retried with backoff
    retry_delay: float = 0.5  # seconds, doubled per attempt, with jitter
    server_wait: float = 600.0  # seconds to wait for a server that went away or sheds load; 0: fail fast
    rpm: float | None = None  # client-side limit on requests a minute
    tpm: float | None = None  # client-side limit on prompt + completion tokens a minute
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
        concurrency = parse_concurrency(self.options.concurrency)  # a bad value fails before any request
        if not self.options.base_url:
            raise SynthError("the openai backend needs the server's address: pass --base-url http://HOST:PORT/v1")
        self.base_url = self.options.base_url.rstrip("/")
        self.root = re.sub(r"/v1$", "", self.base_url)  # where the servers' own endpoints live
        self._openai = openai
        # Retries are ours (with the error-rate rule), so the client's own are off.
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key(), timeout=self.options.timeout, max_retries=0
        )
        self.model = model or self._served_model()
        # Chat requests go to /v1/chat/completions, where the server applies the model's own
        # template: only raw prompts (Magpie) need one, so it is resolved when first asked for.
        # A --template given is checked now, a wrong one fails before any request.
        self._template: ChatTemplate | None = resolve(template) if template else None
        self.pool: Pool[tuple[Prompt, Sampling]] = Pool.for_server(self._send, concurrency, self.options, self.base_url)
        if not model:  # /v1/models answered: the server is there, and is waited for if it goes
            self.pool.link.heard()
        self._tokenizer: int | None = None  # index into _TOKENIZE once probed; -1: the server has none
        self._max_model_len: int | None = None
        self._http: Any = None

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r})"  # never the key, nor the server's address

    @property
    def template(self) -> ChatTemplate:
        """The chat template raw prompts are written in (Magpie's pre-query text)."""
        if self._template is None:
            self._template = resolve(names=[self.model])
        return self._template

    @property
    def template_family(self) -> str:
        """The template's family, or `server` where only the server's own is known (chat needs no more)."""
        if self._template is None and not family_from_name(self.model):
            return "server"
        return self.template.family

    def _chat_stops(self) -> tuple[str, ...]:
        # Extra stop strings for chat requests where the family is known; else the server's own stops.
        return self.template.response_stop if self.template_family != "server" else ()

    def _scrub(self, message: str) -> str:
        """A server's message with the key masked: it may echo the request's headers back."""
        key = self.client.api_key
        return message.replace(key, "***") if key and key != "none" else message

    def _api_key(self) -> str:
        name = self.options.api_key_env
        if name is None:
            # Local servers want no key (the client wants one): an environment key goes only to its own provider.
            own = PROVIDER_KEYS.get(urlsplit(self.base_url).hostname or "")
            return (os.environ.get(own) if own else None) or "none"
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
            "template": self.template_family,
            "chat_tuned": self.chat_tuned,
            "concurrency": self.pool.concurrency or "auto",
            "server_requests": self.pool.record,  # live: retries, outages waited through, settled concurrency
        }

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as the server counts them; NotImplementedError if it has no tokenize endpoint.

        Servers differ on BOS: vLLM and llama-server are asked not to add it, llama-cpp-python's
        server counts it (one token over, which errs on the safe side for a budget).
        """
        if not text:
            return 0
        if self._tokenizer is None:
            self._tokenizer = self._find_tokenizer(text)
        if self._tokenizer < 0:
            paths = ", ".join(dict.fromkeys(f"/{path}" for path, _ in _TOKENIZE))
            raise NotImplementedError(f"the server at {self.root} answers none of {paths}")
        path, body = _TOKENIZE[self._tokenizer]
        return self.pool.call(lambda: self._count(path, body(self.model, text)), f"counting tokens at {self.root}")

    def context_size(self) -> int | None:
        """Tokens of context per request, where the server tells: vLLM's /v1/models and /tokenize
        carry `max_model_len`, llama-server's /props `n_ctx`, TGI's /info `max_total_tokens`."""
        if self._max_model_len is None:
            models = self._call(self.client.models.list)
            card = next((m for m in models.data if m.id == self.model), None)
            self._max_model_len = _int(getattr(card, "max_model_len", None))
        for path, keys in (("props", ("n_ctx", "default_generation_settings.n_ctx")), ("info", ("max_total_tokens",))):
            if self._max_model_len is not None:
                break
            _, found = self.pool.call(partial(self._root, "GET", path), f"asking {self.root} for its context size")
            self._max_model_len = next(filter(None, (_int(_dig(found, k)) for k in keys)), None)
        return self._max_model_len

    def _find_tokenizer(self, text: str) -> int:
        """The first tokenize style the server answers with a count; a count of 0 for a
        non-empty text means a server that ignored the body (llama-server, sent vLLM's)."""
        for i, (path, body) in enumerate(_TOKENIZE):
            request = partial(self._root, "POST", path, body(self.model, text))
            status, found = self.pool.call(request, f"asking {self.root} to count tokens")
            if status == 200 and _token_count(found):
                self._max_model_len = self._max_model_len or _int(_dig(found, "max_model_len"))
                return i
        return -1

    def _count(self, path: str, body: dict[str, Any]) -> int:
        status, found = self._root("POST", path, body)
        if status >= 500 or status == 429:
            raise Retryable(f"/{path} answered {status}", kind="busy" if status in BUSY_STATUSES else "error")
        count = _token_count(found)
        if status == 200 and count is None:  # it counted before: a server that stopped reporting counts
            raise NotImplementedError(f"/{path} answered without a token count")
        if status != 200 or count is None:
            raise Failed(f"/{path} answered {status} without a token count")
        return count

    def _root(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One request to the server's own (non-OpenAI) endpoints beside /v1: (status, JSON or None)."""
        import httpx

        if self._http is None:
            headers = {"Authorization": f"Bearer {self.client.api_key}"}
            self._http = httpx.Client(timeout=self.options.timeout, headers=headers)
        try:
            reply = self._http.request(method, f"{self.root}/{path}", json=body)
        except httpx.ConnectError:
            down = SynthError(f"no server answers at {self.root}; start it or fix --base-url")
            raise Retryable(f"no answer from {self.root}", final=down) from None
        except httpx.TimeoutException:
            raise Retryable(f"timed out after {self.options.timeout:.0f}s", kind="timeout") from None
        except httpx.TransportError as exc:
            raise Retryable(f"the connection dropped ({type(exc).__name__})", kind="dropped") from None
        try:
            return reply.status_code, reply.json()
        except ValueError:  # not JSON: a web UI's page under that path, say
            return reply.status_code, None

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
            body = self._body(params, params.with_stop(*self._chat_stops()).stop, seed, chat=True)
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
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        extra: dict[str, Any] = {}
        # Not OpenAI's own parameters: sent only when set, since strict servers reject unknown fields.
        if params.top_k > 0:
            extra["top_k"] = params.top_k
        if params.min_p > 0:
            extra["min_p"] = params.min_p
        if params.repeat_penalty != 1.0:
            extra["repetition_penalty"] = params.repeat_penalty  # vLLM's and SGLang's name
            extra["repeat_penalty"] = params.repeat_penalty  # llama.cpp server's
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
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:  # the timeout is a connection error too
            down = SynthError(
                f"no server answers at {self.base_url}; start your OpenAI-compatible server "
                "(e.g. `vllm serve MODEL` or `python -m llama_cpp.server --model FILE.gguf`) or fix --base-url"
            )
            cause = exc.__cause__
            # the request never left; by name, as the client's HTTP library varies (httpx, httpx2)
            unreachable = any(c.__name__ in ("ConnectError", "ConnectTimeout") for c in type(cause).__mro__)
            if not retry:
                if unreachable or not isinstance(exc, openai.APITimeoutError):
                    raise down from None
                raise SynthError(f"the server at {self.base_url} did not answer in time") from None
            if unreachable:
                raise Retryable(f"no answer from {self.base_url}", final=down) from None
            if isinstance(exc, openai.APITimeoutError):
                raise Retryable(f"timed out after {self.options.timeout:.0f}s", kind="timeout") from None
            # reset, or the body cut short: the server may have seen the request, so this try counts
            raise Retryable(f"the connection dropped mid-answer ({type(cause).__name__})", kind="dropped") from None
        except openai.APIResponseValidationError as exc:  # a 200 whose body is not the JSON it should be
            if not retry:
                raise SynthError(f"the server at {self.base_url} answered with a malformed body") from None
            raise Retryable(f"the answer came back malformed ({exc.message})", kind="dropped") from None
        except openai.AuthenticationError as exc:
            raise SynthError(
                f"the server at {self.base_url} refused the API key ({exc.status_code}); "
                "put the key in an environment variable and pass its name with --api-key-env"
            ) from None
        except openai.NotFoundError as exc:
            model = getattr(self, "model", "")  # unset while asking /v1/models
            raise SynthError(
                f"the server at {self.base_url} does not serve model {model!r} or this endpoint "
                f"({self._scrub(exc.message)}); pass --model with a name from its /v1/models"
            ) from None
        except openai.APIStatusError as exc:
            if retry and (exc.status_code >= 500 or exc.status_code == 429):
                busy = exc.status_code in BUSY_STATUSES
                raise Retryable(
                    f"server answered {exc.status_code}: {self._scrub(exc.message)}",
                    kind="busy" if busy else "error",
                    retry_after=retry_after(exc.response.headers, cap=max(self.options.server_wait, 60)),
                ) from None
            if retry:
                raise Failed(f"server answered {exc.status_code}: {self._scrub(exc.message)}") from None
            message = self._scrub(exc.message)
            raise SynthError(f"the server at {self.base_url} answered {exc.status_code}: {message}") from None


# Tokenize endpoints, tried in order: (path under the server's root, body for (model, text)).
_TOKENIZE: tuple[tuple[str, Callable[[str, str], dict[str, Any]]], ...] = (
    ("tokenize", lambda model, text: {"model": model, "prompt": text, "add_special_tokens": False}),  # vLLM, SGLang
    ("tokenize", lambda model, text: {"content": text, "add_special": False}),  # llama.cpp's llama-server
    ("extras/tokenize/count", lambda model, text: {"model": model, "input": text}),  # llama-cpp-python's server
    ("tokenize", lambda model, text: {"inputs": text}),  # TGI
)


def _token_count(reply: Any) -> int | None:
    """`{"count": n}`, `{"tokens": [...]}` or a bare list of tokens (TGI)."""
    if isinstance(reply, list):
        return len(reply)
    if isinstance(reply, dict):
        if isinstance(reply.get("count"), int):
            return reply["count"]
        if isinstance(reply.get("tokens"), list):
            return len(reply["tokens"])
    return None


def _dig(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
