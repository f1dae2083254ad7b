"""Servers for the backend tests: a fake Ollama backed by the real base model, on loopback."""

from __future__ import annotations

import socket

import pytest

from tests.backends.ollama_server import Model, delayed_echo, embedded_responder, serve


@pytest.fixture(scope="session")
def ollama_server(base_model):
    """`gemma3:270m` is the real Gemma 3 270M base model; `echo:latest` answers instantly."""
    base = embedded_responder(base_model)
    models = {"gemma3:270m": Model(base, family="gemma3"), "echo:latest": Model(delayed_echo(0.0))}
    with serve(models) as server:
        yield server


@pytest.fixture
def ollama(ollama_server):
    """The session's server with its request log and fault queue cleared."""
    ollama_server.requests.clear()
    ollama_server.faults.clear()
    return ollama_server


@pytest.fixture
def dead_url() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
