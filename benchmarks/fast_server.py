"""A local OpenAI-compatible server that answers at once (or after `--delay` seconds).

For benchmarks only: it measures synth, not a model. Each completion is unique (a counter),
so Magpie's repeat check keeps every row.

    python benchmarks/fast_server.py --port 8799 [--delay 0.05]
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_COUNTER = itertools.count()
_LOCK = threading.Lock()


def make_handler(delay: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._send({"object": "list", "data": [{"id": "fast", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if delay:
                time.sleep(delay)
            with _LOCK:
                k = next(_COUNTER)
            chat = self.path.endswith("/chat/completions")
            text = f"Answer number {k} with a few more words." if chat else f"Write item number {k} of the list."
            choice = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            usage = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
            self._send(
                {
                    "id": f"c{k}",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 0,
                    "model": body.get("model", "fast"),
                    "choices": [choice],
                    "usage": usage,
                }
            )

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def serve(port: int = 0, delay: float = 0.0) -> ThreadingHTTPServer:
    """Start the server in a background thread; returns it (its port is `server.server_port`)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(delay))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.delay))
    print(f"serving on http://127.0.0.1:{server.server_port}/v1", flush=True)
    server.serve_forever()
