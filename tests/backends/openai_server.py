"""A small OpenAI-compatible server on 127.0.0.1 that injects faults, for the retry and error tests.

It answers /v1/models, /v1/completions and /v1/chat/completions with `echo: <prompt>`, and,
when asked to, vLLM's /tokenize (one token per word). It records every request; `fail_next`
queues statuses for the next completion requests and `fail_all` answers every one with a status.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.backends.ollama_server import on_loopback

COMPLETIONS = ("/v1/completions", "/v1/chat/completions")


@dataclass
class FakeOpenAI:
    """The server's state: the one model it serves, recorded requests, queued faults."""

    model: str = "fake-chatml"
    tokenize: bool = False  # answer vLLM's POST /tokenize
    max_model_len: int | None = None  # in /v1/models and /tokenize, as vLLM reports it
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    authorization: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization) of every request
    faults: list[int] = field(default_factory=list)
    fail_all: int | None = None
    url: str = ""  # the base URL a client is given, ending in /v1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *statuses: int) -> None:
        with self.lock:
            self.faults.extend(statuses)

    def completions(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path in COMPLETIONS]


class _Handler(BaseHTTPRequestHandler):
    state: FakeOpenAI  # set on a subclass per server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.state.authorization.append((self.path, self.headers.get("Authorization")))
        if self.path == "/v1/models":
            card: dict[str, Any] = {"id": self.state.model, "object": "model", "created": 0, "owned_by": "test"}
            if self.state.max_model_len:
                card["max_model_len"] = self.state.max_model_len
            return self._json(200, {"object": "list", "data": [card]})
        self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        state = self.state
        with state.lock:
            state.requests.append((self.path, body))
            state.authorization.append((self.path, self.headers.get("Authorization")))
            fault = None
            if self.path in COMPLETIONS:
                fault = state.faults.pop(0) if state.faults else state.fail_all
        if self.path == "/tokenize" and state.tokenize:
            tokens = list(range(len(body.get("prompt", "").split())))
            return self._json(200, {"count": len(tokens), "tokens": tokens, "max_model_len": state.max_model_len})
        if self.path not in COMPLETIONS:
            return self._error(404, f"no route {self.path}")
        if body.get("model") != state.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        if fault:
            return self._error(fault, f"injected fault {fault}")
        chat = self.path == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        text = f"echo: {prompt}"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        used = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        self._json(
            200,
            {
                "id": "cmpl-test",
                "object": "chat.completion" if chat else "text_completion",
                "created": 0,
                "model": state.model,
                "choices": [choice],
                "usage": {**used, "total_tokens": sum(used.values())},
            },
        )

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"message": message, "type": "error", "code": status}})

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(**settings: Any) -> Iterator[FakeOpenAI]:
    """Run the server on a free loopback port for the length of the `with` block."""
    with on_loopback(FakeOpenAI(**settings), _Handler, "/v1") as state:
        yield state
