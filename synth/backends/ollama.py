"""Ollama through its official client: raw prompts to /api/generate, messages to /api/chat.

Ollama has no batch endpoint and no `n`, so throughput comes from concurrent requests; a
server started with OLLAMA_NUM_PARALLEL=K serves K at once.

Raw mode skips the server's template and with it the model's default system prompt (the
Modelfile's SYSTEM, such as Qwen2.5's "You are Qwen, ...", or a default written into the Go
template), so the chat template built here puts that default back: the pre-query text is then
what the model saw in training, as the model's own Jinja template gives it under llama.cpp or vLLM.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

from synth.backends import Completion, Prompt, Sampling
from synth.backends._pool import Failed, Pool, Retryable, strip_bos
from synth.backends._resilience import BUSY_STATUSES, parse_concurrency, retry_after
from synth.core import SynthError
from synth.templates import MARKER, ChatTemplate, builtin, family_from_name, family_from_text, resolve

DEFAULT_HOST = "http://127.0.0.1:11434"
# The context synth asks for when it must know the size and neither num_ctx nor the Modelfile
# sets one: servers default to 2048, 4096 or more by version and memory, so it is sent explicitly.
FALLBACK_NUM_CTX = 4096


@dataclass(frozen=True)
class OllamaOptions:
    """Options of the Ollama backend."""

    host: str | None = None  # default: $OLLAMA_HOST, else DEFAULT_HOST
    concurrency: int | str = "auto"  # requests in flight: a number, or auto (adapts to the server)
    timeout: float = 600.0  # seconds per request; a long generation on a busy server is slow
    attempts: int = 4  # per request, timeouts and 5xx retried with backoff
    retry_delay: float = 0.5  # seconds, doubled per attempt, with jitter
    server_wait: float = 600.0  # seconds to wait for a server that went away or sheds load; 0: fail fast
    rpm: float | None = None  # client-side limit on requests a minute
    tpm: float | None = None  # client-side limit on prompt + completion tokens a minute
    num_ctx: int | None = None  # the server's default context is often 2048-4096 tokens
    verbose: bool = False


class OllamaBackend:
    """Generates with a model an Ollama server holds (`llama3:8b`, `qwen2.5:7b`, ...)."""

    name = "ollama"
    reason = "chosen with --backend ollama"
    _send_num_ctx = False  # set once context_size() has picked a num_ctx the server must use

    def __init__(self, model: str, template: str | None = None, **options: Any) -> None:
        try:
            import httpx
            import ollama
        except ImportError:
            raise SynthError("the ollama backend needs the `ollama` package: pip install 'synth[server]'") from None

        if not model:
            raise SynthError("the ollama backend needs a model: pass --model NAME:TAG, e.g. llama3:8b")
        self.options = OllamaOptions(**options)
        concurrency = parse_concurrency(self.options.concurrency)  # a bad value fails before any request
        self.model = model
        self.host = (self.options.host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).rstrip("/")
        self._ollama, self._httpx = ollama, httpx
        # The client's errors drop the headers, so each thread keeps its last answer's (Retry-After).
        self._seen = threading.local()
        hooks = {"response": [self._saw]}
        self.client = ollama.Client(host=self.host, timeout=self.options.timeout, event_hooks=hooks)
        show = self._call(lambda: self.client.show(model))
        self.go_template = show.template or ""
        self.family_hint = (show.details.family if show.details else None) or ""
        self.template: ChatTemplate = self._template(template)
        self.default_system = ""
        if not template:  # an override is taken as given, default system prompt and all
            self.default_system = _modelfile_system(show) or _go_default_system(self.go_template, self.template)
            if self.default_system:
                self.template = DefaultSystem.wrap(self.template, self.default_system)
        self.context_length = _context_length(show.modelinfo or {})
        # Only a num_ctx synth sends, or the Modelfile's, is known to be the server's.
        self.num_ctx = self.options.num_ctx or _parameter(show.parameters or "", "num_ctx")
        # A template that is only `{{ .Prompt }}` marks a base model, which never closes a turn.
        self.chat_tuned = family_from_text(self.go_template) is not None
        self.pool: Pool[tuple[Prompt, Sampling]] = Pool.for_server(self._send, concurrency, self.options, self.host)
        self.pool.link.heard()  # /api/show answered: the server is there, and is waited for if it goes

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
            "default_system_prompt": self.default_system or None,
            "concurrency": self.pool.concurrency or "auto",
            "server_requests": self.pool.record,  # live: retries, outages waited through, settled concurrency
            "num_ctx": self.num_ctx,
            "context_length": self.context_length,
        }

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as the server's tokenizer counts them (BOS included where the model adds one).

        Ollama has no tokenize endpoint: the text goes raw to /api/generate for one token and
        the prompt's count comes back. A text longer than the context is cut by the server and
        counts as about the context, which is over any budget anyway.
        """
        if not text:
            return 0  # an empty prompt asks Ollama to load the model, and counts nothing
        options: dict[str, Any] = {"num_predict": 1, "temperature": 0.0}
        if self.num_ctx:
            options["num_ctx"] = self.num_ctx
        call = partial(self.client.generate, self.model, text, raw=True, options=options)
        reply = self.pool.call(lambda: self._call(call, retry=True), "counting tokens on Ollama")
        if reply.prompt_eval_count is None:
            raise NotImplementedError(f"the Ollama server at {self.host} reports no prompt_eval_count")
        return reply.prompt_eval_count

    def context_size(self) -> int:
        """Tokens of context each request gets: num_ctx, else FALLBACK_NUM_CTX (or the model's own, if less),
        which from then on is sent with every request so the server uses exactly that."""
        if not self.num_ctx:
            self.num_ctx = min(self.context_length or FALLBACK_NUM_CTX, FALLBACK_NUM_CTX)
            self._send_num_ctx = True
        return self.num_ctx

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
            chat = partial(self.client.chat, self.model, messages, options=options, format=params.json_schema)
            reply = self._call(chat, retry=True)
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
        options.update(_penalties(params))
        if self.options.num_ctx or self._send_num_ctx:
            options["num_ctx"] = self.num_ctx
        return options

    def _saw(self, response: Any) -> None:
        self._seen.headers = response.headers

    def _call(self, fn: Callable[[], Any], retry: bool = False) -> Any:
        """Run one client call, turning its faults into messages that say what to do."""
        self._seen.headers = None
        try:
            return fn()
        except (ConnectionError, self._httpx.ConnectTimeout):  # the client's name for httpx.ConnectError
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
            raise Retryable(f"timed out after {self.options.timeout:.0f}s", kind="timeout") from None
        except (self._httpx.TransportError, json.JSONDecodeError) as exc:  # a reset, a body cut short
            if not retry:
                raise SynthError(f"the Ollama server at {self.host} dropped the connection ({exc})") from None
            raise Retryable(f"the connection dropped mid-answer ({type(exc).__name__})", kind="dropped") from None
        except self._ollama.ResponseError as exc:
            if exc.status_code == 404 and "not found" in str(exc.error).lower():
                raise SynthError(
                    f"the Ollama server at {self.host} has no model {self.model!r}; run `ollama pull {self.model}`"
                ) from None
            if retry and (exc.status_code >= 500 or exc.status_code == 429):
                busy = exc.status_code in BUSY_STATUSES
                raise Retryable(
                    f"Ollama answered {exc.status_code}: {exc.error}",
                    kind="busy" if busy else "error",
                    retry_after=retry_after(self._seen.headers, cap=max(self.options.server_wait, 60)),
                ) from None
            if retry:
                raise Failed(f"Ollama answered {exc.status_code}: {exc.error}") from None
            raise SynthError(f"the Ollama server at {self.host} answered {exc.status_code}: {exc.error}") from None


@dataclass(frozen=True)
class DefaultSystem(ChatTemplate):
    """A chat template plus the model's default system prompt, used when a conversation has none."""

    default_system: str = ""

    @classmethod
    def wrap(cls, template: ChatTemplate, system: str) -> DefaultSystem:
        values = {f.name: getattr(template, f.name) for f in fields(template)}
        return cls(**{**values, "default_system": system})

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        msgs = [dict(m) for m in messages]
        if not msgs or msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": self.default_system})
        return super().render(msgs, add_generation_prompt)


def _modelfile_system(show: Any) -> str:
    """The Modelfile's SYSTEM. /api/show returns it as `system`, which the client's model drops
    (so far), and in the `modelfile` text: `SYSTEM text`, `SYSTEM "text"` or in triple quotes."""
    system = getattr(show, "system", None) or (getattr(show, "model_extra", None) or {}).get("system")
    if system:
        return str(system).strip()
    found = ""
    for command, value in _MODELFILE_COMMAND.findall(show.modelfile or ""):
        if command.upper() == "SYSTEM":
            found = value[3:-3] if value.startswith('"""') else value[1:-1] if value.startswith('"') else value
    return found.strip()


# One Modelfile command; a quoted value may span lines (a TEMPLATE in triple quotes) and is skipped whole.
_MODELFILE_COMMAND = re.compile(r'(?m)^([A-Za-z]+)[ \t]+("""[\s\S]*?"""|"[^"]*"|[^\n]*)')


def _go_default_system(go_template: str, template: ChatTemplate) -> str:
    """A default system prompt written into the Go template as literal text in a system block,
    e.g. `{{- else }}<|im_start|>system\nYou are a helpful assistant.<|im_end|>`."""
    opening = template.pre_query(system=MARKER).removeprefix(template.bos_token).strip()  # up to the system text
    if not opening or "system" not in opening:  # no system block of its own (Gemma, Mistral): none to find
        return ""
    # The header, then literal text (no Go action, no special token), then the block's closing token.
    found = re.search(re.escape(opening) + r"\s*([^{}<\s][^{}<]*?)\s*<", go_template)
    return found.group(1).strip() if found else ""


def _context_length(model_info: Mapping[str, Any]) -> int | None:
    """The model's trained context, `<architecture>.context_length` in /api/show's model_info."""
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length")
    if value is None:
        value = next((v for k, v in model_info.items() if k.endswith(".context_length")), None)
    return int(value) if value else None


def _parameter(parameters: str, name: str) -> int | None:
    """An integer PARAMETER from /api/show's `parameters` text (`num_ctx    8192`, one per line)."""
    for line in parameters.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == name and value.strip().isdigit():
            return int(value.strip())
    return None


def _penalties(params: Sampling) -> dict[str, float]:
    """The repetition controls that are set, as Ollama's options name them (its own defaults otherwise)."""
    named = {
        "repeat_penalty": (params.repeat_penalty, 1.0),
        "presence_penalty": (params.presence_penalty, 0.0),
        "frequency_penalty": (params.frequency_penalty, 0.0),
    }
    return {name: value for name, (value, off) in named.items() if value != off}
