"""A card is written where the user has no home (no HOME, no passwd entry: a container's
arbitrary uid): there is then no home to hide, and paths are still cut to their file names."""

from __future__ import annotations

import pwd

import pytest

from synth.card import model_file, public, public_text


@pytest.fixture
def homeless(monkeypatch):
    def unknown(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown)


def test_public_text_without_a_home(homeless) -> None:
    text = "read /data/corpus/train.jsonl and ~/models/m.gguf from http://10.0.0.5:8080/v1"
    assert public_text(text) == "read train.jsonl and m.gguf from <server>"
    assert public({"input": "/srv/in.jsonl", "base_url": "http://h:1"}) == {"input": "in.jsonl"}


def test_model_file_without_a_home(homeless, tmp_path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert model_file(str(model))["file"] == "tiny.gguf" and model_file(str(model))["bytes"] == 4
    assert model_file("~/models/absent.gguf") == "absent.gguf"  # no home to look in: named, not read
