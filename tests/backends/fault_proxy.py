"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a real server, for the resilience tests
and benchmarks/resilience.py; and the real servers it fronts, as processes that can be killed.

The proxy forwards every request to its upstream unless `script(n, path, body)` (n counts the
generation requests) says otherwise: answer a status with `Retry-After`, reset the connection
before or after the server did the work, answer slowly, or cut the body short. `rate` admits that
many generation requests a second and answers 429 beyond it. `down()` stops it listening and resets
every connection, as a killed server would; `up()` listens again on the same port. It logs every
request: arrival time, path, the prompt (`key`), and what it did.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GENERATE = ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate")
# ("pass",), ("status", code, retry_after), ("reset",), ("reset_after",), ("slow", seconds), ("truncate",)
Action = tuple[Any, ...]
PASS: Action = ("pass",)


@dataclass
class Entry:
    t: float  # time.monotonic() when the request arrived
    path: str
    key: str  # the prompt: the last message's content, or the raw prompt
    action: str
    status: int | None = None
    retry_after: float | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FaultProxy:
    upstream: str  # http://127.0.0.1:PORT
    script: Callable[[int, str, dict[str, Any]], Action] | None = None
    rate: float | None = None  # generation requests admitted a second; 429 beyond
    burst: float = 1.0  # requests the rate limit lets through at once
    port: int = field(default_factory=free_port)
    log: list[Entry] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    _tokens: float = 1.0
    _stamp: float = field(default_factory=time.monotonic)
    _server: ThreadingHTTPServer | None = None
    _conns: set[socket.socket] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> FaultProxy:
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening and reset every open connection: what a killed server looks like."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            _reset(conn)

    def __enter__(self) -> FaultProxy:
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.down()

    def generations(self) -> list[Entry]:
        return [e for e in self.log if e.path in GENERATE]

    def _decide(self, path: str, body: dict[str, Any]) -> Action:
        if path not in GENERATE:
            return PASS
        with self.lock:
            self._count += 1
            n = self._count
            if self.rate is not None:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens < 1.0:
                    return ("status", 429, (1.0 - self._tokens) / self.rate)
                self._tokens -= 1.0
        return self.script(n, path, body) if self.script else PASS


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:  # a connection it reset on purpose
        pass


def _reset(conn: socket.socket) -> None:
    """Close with RST, not FIN: the client sees its connection reset."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _key(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if messages:
        return str(messages[-1].get("content"))
    return str(body.get("prompt", ""))


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.proxy.lock:
            self.proxy._conns.add(self.connection)

    def finish(self) -> None:
        with self.proxy.lock:
            self.proxy._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _handle(self, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        arrived = time.monotonic()
        action = self.proxy._decide(self.path, body)
        entry = Entry(arrived, self.path, _key(body), action[0])
        with self.proxy.lock:
            self.proxy.log.append(entry)
        if action[0] == "status":
            _, code, after = action
            entry.status, entry.retry_after = code, after
            headers = {}
            if after is not None:
                headers = {"Retry-After": str(math.ceil(after)), "retry-after-ms": str(round(after * 1000))}
            return self._send(code, json.dumps({"error": {"message": f"proxy says {code}", "code": code}}), headers)
        if action[0] == "reset":
            return self._drop()
        status, data, kind = self._forward(raw)
        entry.status = status
        if action[0] == "reset_after":  # the server did the work; the answer never arrives
            return self._drop()
        if action[0] == "slow":
            time.sleep(action[1])
        if action[0] == "truncate":
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return self._drop()
        self._send(status, data, {}, kind)

    def _forward(self, raw: bytes) -> tuple[int, bytes, str]:
        host, port = self.proxy.upstream.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
        try:
            conn.request(self.command, self.path, raw or None, headers)
            reply = conn.getresponse()
            return reply.status, reply.read(), reply.getheader("Content-Type", "application/json")
        except OSError:  # the upstream is gone: a gateway's answer
            return 502, b'{"error": "bad gateway"}', "application/json"
        finally:
            conn.close()

    def _drop(self) -> None:
        """Reset the connection now (an abortive close sends RST; the server's own close would send FIN first)."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach())

    def _send(self, status: int, data: str | bytes, headers: dict[str, str], kind: str = "application/json") -> None:
        payload = data.encode() if isinstance(data, str) else data
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    """A real server in its own process on a fixed loopback port, to kill (SIGKILL, as an
    out-of-memory kill) and start again: llama-cpp-python's OpenAI-compatible server or the
    Ollama-API test server, both serving the embedded SmolLM2-135M-Instruct GGUF."""

    kind: str  # "openai" or "ollama"
    log: Path
    port: int = field(default_factory=free_port)
    threads: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "ollama":
            module = [sys.executable, "-m", "tests.backends.ollama_server"]
            return [*module, "--port", str(self.port), "--threads", str(self.threads)]
        from synth.backends.llamacpp import default_model_path

        launch = "from synth.backends.llamacpp import avoid_amx_kernels as a; a(); import runpy; "
        launch += "runpy.run_module('llama_cpp.server', run_name='__main__')"
        cmd = [sys.executable, "-c", launch, "--model", str(default_model_path()), "--model_alias", "smollm2"]
        cmd += ["--n_ctx", "1024", "--n_threads", str(self.threads), "--verbose", "False"]
        return [*cmd, "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self, timeout: float = 90.0) -> ServerProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        probe = f"{self.url}/v1/models" if self.kind == "openai" else f"{self.url}/api/tags"
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(probe, timeout=1).read()
                return self
            except OSError as exc:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"{self.kind} server did not start: {self.log.read_text()[-2000:]}") from exc
                time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
