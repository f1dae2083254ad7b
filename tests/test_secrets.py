"""Keys go only where the user sent them, and never into a card, a log or a file; the card holds no
local paths, server hosts or memory addresses. Every command that takes a backend runs against a
loopback OpenAI-compatible server that records the Authorization header of each request."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.backends.openai_server import serve
from tests.cli_run import run_main

pytest.importorskip("openai")

CANARY_DEFAULT = "sk-canary-DEFAULT-7f3a91"  # in $OPENAI_API_KEY: never sent to a server that is not OpenAI's
CANARY_NAMED = "sk-canary-NAMED-c0ffee42"  # in the variable --api-key-env names: sent to that server only


def _inputs(root: Path) -> dict[str, Path]:
    root.mkdir()
    files = {
        "instructions": ("instruction", "response", ["What is 2+2?", "Name a colour."]),
        "documents": ("text", None, ["Rivers carry water to the sea. " * 8, "Bees make honey from nectar. " * 8]),
        "personas": ("persona", None, ["A retired sailor who paints.", "A nurse on night shifts."]),
    }
    paths = {}
    for name, (column, extra, texts) in files.items():
        rows = [{"id": f"r{i}", column: t, **({extra: "Four."} if extra else {})} for i, t in enumerate(texts)]
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def _commands(inputs: dict[str, Path]) -> dict[str, list[str]]:
    small = ["--max-tokens", "16"]
    return {
        # one row: every attempt echoes the same pre-query prompt, so the others are duplicates
        "magpie": ["magpie", "--n", "1", "--max-attempts", "4", "--instruction-max-tokens", "8"],
        "respond": ["respond", str(inputs["instructions"]), *small],
        "judge": ["judge", str(inputs["instructions"]), *small],
        "prefs": ["prefs", str(inputs["instructions"]), "--k", "2", *small, "--judge-max-tokens", "16"],
        "synthesize": ["synthesize", str(inputs["documents"]), *small, "--context-tokens", "4096"],
        "think": ["think", str(inputs["documents"]), *small, "--context-tokens", "4096"],
        "personas from-text": ["personas", "from-text", str(inputs["documents"]), *small],
        "personas expand": ["personas", "expand", str(inputs["personas"]), *small],
        "personas generate": ["personas", "generate", "--personas", str(inputs["personas"]), "--n", "2", *small],
    }


def _written_text(root: Path) -> str:
    return "".join(f.read_bytes().decode("utf-8", "replace") for f in sorted(root.rglob("*")) if f.is_file())


@pytest.mark.parametrize("named", [False, True], ids=["no-api-key-env", "api-key-env"])
def test_a_key_goes_only_where_the_user_sent_it_through_every_command(named, tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_DEFAULT)
    monkeypatch.setenv("SYNTH_TEST_KEY", CANARY_NAMED)
    inputs = _inputs(tmp_path / "in")
    outputs = tmp_path / "out"
    rows = {}
    with serve(tokenize=True) as server:
        for name, argv in _commands(inputs).items():
            server.authorization.clear()
            out = outputs / name.replace(" ", "-")
            argv = [*argv, "--out", str(out), "--base-url", server.url, "--model", server.model]
            code = run_main([*argv, *(["--api-key-env", "SYNTH_TEST_KEY"] if named else [])], monkeypatch)
            captured = capfd.readouterr()
            assert code == 0, f"{name}: {captured.err}"
            assert (out / "README.md").is_file(), name
            rows[name] = pq.read_table(out / "data").num_rows
            paths = {path for path, _ in server.authorization}
            assert any(p.startswith("/v1/") and p.endswith("completions") for p in paths), (name, paths)
            if name in ("synthesize", "think"):
                assert "/tokenize" in paths, (name, paths)  # the probes beside /v1 carry the same header
            sent = {header for _, header in server.authorization}
            assert sent == ({f"Bearer {CANARY_NAMED}"} if named else {"Bearer none"}), (name, sent)
            for canary in (CANARY_DEFAULT, CANARY_NAMED):
                assert canary not in captured.out + captured.err, name
    written = _written_text(outputs)
    # The server echoes each prompt: prefs' judge and the synthesizer get no answer in their format and
    # keep nothing (their own tests use doubles that speak it); every other command keeps its rows.
    everything = dict.fromkeys(("respond", "judge", "think", "personas from-text", "personas expand"), 2)
    expected = {"magpie": 1, "prefs": 0, "synthesize": 0, "personas generate": 2, **everything}
    assert rows == expected, json.dumps(rows)
    assert len(list(outputs.rglob("README.md"))) == 9
    for canary in (CANARY_DEFAULT, CANARY_NAMED):
        assert canary not in written


def test_the_environment_key_goes_to_its_own_provider_only(monkeypatch) -> None:
    from synth.backends.openai import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", CANARY_DEFAULT)
    ours = OpenAIBackend("gpt-4o-mini", base_url="https://api.openai.com/v1")
    other = OpenAIBackend("gpt-4o-mini", base_url="https://api.openai.com.attacker.example/v1")
    assert ours.client.api_key == CANARY_DEFAULT and other.client.api_key == "none"
    for llm in (ours, other):
        assert CANARY_DEFAULT not in repr(llm) + json.dumps(llm.describe())


def test_a_server_echoing_the_key_back_does_not_put_it_in_messages(tmp_path, monkeypatch, capfd) -> None:
    monkeypatch.setenv("SYNTH_TEST_KEY", CANARY_NAMED)
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "o"
    with serve(fail_all=400) as server:
        server.model = "fake-chatml"
        argv = ["respond", str(inputs["instructions"]), "--out", str(out), "--base-url", server.url]
        argv += ["--model", server.model, "--api-key-env", "SYNTH_TEST_KEY"]
        from tests.backends import openai_server

        real_error = openai_server._Handler._error

        def echoing(self, status, message):  # a server that quotes the request's header in its error
            real_error(self, status, f"{message}; you sent {self.headers.get('Authorization')}")

        monkeypatch.setattr(openai_server._Handler, "_error", echoing)
        code = run_main(argv, monkeypatch)
    captured = capfd.readouterr()
    assert code == 3 and "all 2 requests failed" in captured.err  # every request failed: stopped short, never 0
    assert CANARY_NAMED not in captured.out + captured.err + _written_text(tmp_path)
    assert "Bearer ***" in captured.err  # the message is kept, the key masked


def _card_without_times_and_counts(out: Path) -> str:
    text = (out / "README.md").read_text()
    record = json.loads(text[text.index("```json\n") + 8 : text.rindex("\n```")])
    for key in ("started", "finished", "counts", "generated_tokens", "failed_requests", "rows", "shards"):
        record.pop(key, None)
    return text[: text.index("## Provenance")] + json.dumps(record, sort_keys=True)


def test_the_card_holds_no_paths_hosts_or_addresses_and_repeats_exactly(tmp_path, monkeypatch, capfd) -> None:
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "o"
    with serve() as server:
        argv = ["respond", str(inputs["instructions"].resolve()), "--out", str(out), "--base-url", server.url]
        argv += ["--model", server.model, "--max-tokens", "16", "--seed", "3"]
        assert run_main(argv, monkeypatch) == 0, capfd.readouterr().err
        first = _card_without_times_and_counts(out)
        assert run_main([*argv, "--overwrite"], monkeypatch) == 0, capfd.readouterr().err
        port = server.url.split(":")[-1].split("/")[0]
    assert pq.read_table(out / "data").num_rows == 2  # the card of a run that answered both instructions
    card = (out / "README.md").read_text()
    home = os.path.expanduser("~")  # unset HOME and no passwd entry: "~"; HOME=/ is in every path
    home = [home] if os.path.isabs(home) and len(Path(home).parts) > 1 else []
    for private in (str(tmp_path), *home, "127.0.0.1", port):
        assert private not in card, private
    assert not re.search(r" at 0x[0-9a-f]+", card) and "<function" not in card
    assert "instructions.jsonl" in card  # the input is still named, by its file name
    # the same command again writes the same card, apart from times and counts (--overwrite is not a setting)
    assert _card_without_times_and_counts(out).replace(" --overwrite", "") == first
