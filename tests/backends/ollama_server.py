"""A small server speaking Ollama's HTTP API on 127.0.0.1, for tests and benchmarks.

Each model is a function `(prompt, sampling) -> Completion`: the embedded llama.cpp model in
tests, a fixed-delay echo in the concurrency benchmark. It records every request and can be
told to fail the next few with a given status, to exercise retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from synth.backends import Completion, Prompt, Sampling

Responder = Callable[[Prompt, Sampling], Completion]

# The Go template of a model with no chat template (a base model), as Ollama reports it.
PLAIN_TEMPLATE = "{{ .Prompt }}"
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)


@dataclass
class Model:
    respond: Responder
    template: str = PLAIN_TEMPLATE
    family: str = ""


@dataclass
class FakeOllama:
    """The server's state: models by tag, recorded requests, queued faults."""

    models: dict[str, Model]
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)  # statuses for the next generate/chat requests
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *statuses: int) -> None:
        with self.lock:
            self.faults.extend(statuses)

    def generations(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path in ("/api/generate", "/api/chat")]


def embedded_responder(backend: Any) -> Responder:
    """Serve a `LlamaCppBackend`; llama.cpp runs one request at a time, like Ollama with NUM_PARALLEL=1."""
    lock = threading.Lock()

    def respond(prompt: Prompt, params: Sampling) -> Completion:
        with lock:
            return backend.generate([prompt], params)[0]

    return respond


def delayed_echo(delay: float | Callable[[Prompt], float]) -> Responder:
    """Answer `echo: <prompt>` after a delay; requests overlap freely, like a server serving K at once."""

    def respond(prompt: Prompt, params: Sampling) -> Completion:
        time.sleep(delay(prompt) if callable(delay) else delay)
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        return Completion(f"echo: {text}", "stop", len(text.split()), 2)

    return respond


def _sampling(body: dict[str, Any]) -> Sampling:
    o = body.get("options") or {}
    fmt = body.get("format")
    schema = {"type": "object"} if fmt == "json" else (fmt or None)
    return Sampling(
        max_tokens=o.get("num_predict", 128),
        temperature=o.get("temperature", 0.8),
        top_p=o.get("top_p", 0.9),
        top_k=o.get("top_k", 40),
        min_p=o.get("min_p", 0.0),
        stop=tuple(o.get("stop") or ()),
        seed=o.get("seed"),
        json_schema=schema,
    )


class _Handler(BaseHTTPRequestHandler):
    state: FakeOllama  # set on a subclass per server
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect of Ollama
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(200, "Ollama is running", "text/plain")
        elif self.path == "/api/tags":
            self._json(200, {"models": [{"name": tag, "model": tag, "size": 0} for tag in self.state.models]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        state = self.state
        with state.lock:
            state.requests.append((self.path, body))
            fault = state.faults.pop(0) if state.faults and self.path in ("/api/generate", "/api/chat") else None
        model = state.models.get(body.get("model", ""))
        if self.path not in ("/api/show", "/api/generate", "/api/chat"):
            return self._json(404, {"error": "not found"})
        if model is None:
            return self._json(404, {"error": f"model '{body.get('model')}' not found"})
        if fault:
            return self._json(fault, {"error": f"injected fault {fault}"})
        if self.path == "/api/show":
            details = {"format": "gguf", "family": model.family, "parameter_size": "270M"}
            info = {"general.architecture": model.family or "unknown"}
            return self._json(200, {"template": model.template, "details": details, "model_info": info})
        self._generate(body, model)

    def _generate(self, body: dict[str, Any], model: Model) -> None:
        chat = self.path == "/api/chat"
        if chat:
            prompt: Prompt = body["messages"]
        elif body.get("raw"):
            prompt = body.get("prompt", "")
        else:  # not raw: the server applies the model's template, here with a single user turn
            prompt = [{"role": "user", "content": body.get("prompt", "")}]
        out = model.respond(prompt, _sampling(body))
        final = {
            "model": body["model"],
            "created_at": "2025-01-01T00:00:00Z",
            "done": True,
            "done_reason": out.finish_reason,
            "prompt_eval_count": out.prompt_tokens,
            "eval_count": out.completion_tokens,
        }

        def piece(text: str) -> dict[str, Any]:
            return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

        if not body.get("stream", True):  # Ollama streams unless told not to
            return self._json(200, {**final, **piece(out.text)})
        words = out.text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        chunks = [{"model": body["model"], "done": False, **piece(p)} for p in pieces]
        chunks.append({**final, **piece("")})
        self._send(200, "".join(json.dumps(c) + "\n" for c in chunks), "application/x-ndjson")

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload), "application/json")

    def _send(self, status: int, text: str, content_type: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when many clients arrive at once


@contextmanager
def serve(models: dict[str, Model]) -> Iterator[FakeOllama]:
    """Run the server on a free loopback port for the length of the `with` block."""
    state = FakeOllama(models)
    handler = type("Handler", (_Handler,), {"state": state})
    server = _Server(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
