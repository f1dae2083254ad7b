import socket
import types

import pyarrow.parquet as pq
import pytest

from synth import hub
from synth.core import SynthError, from_rows
from synth.io import open_output, write
from tests.cli_run import run_main


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records what would be sent, sends nothing."""

    calls: list = []
    existing: dict = {}  # repo id -> private, for repo_info

    def __init__(self, token=None) -> None:
        self.calls.append(("init", {"token": token}))

    def repo_info(self, repo_id, **kwargs):
        self.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
        if repo_id not in self.existing:
            from huggingface_hub.errors import RepositoryNotFoundError

            missing = types.SimpleNamespace(status_code=404, headers={}, request=None)
            raise RepositoryNotFoundError("404", response=missing)
        return types.SimpleNamespace(id=repo_id, private=self.existing[repo_id])

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.fixture
def api(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the tests' default; --push-to-hub refuses it up front
    RecordingApi.calls = []
    RecordingApi.existing = {}
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


def test_push_uploads_shards_and_card_only(tmp_path, api, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    write([from_rows([{"id": "a"}])], tmp_path / "o")
    url = hub.push(tmp_path / "o", "me/my-set", private=True)
    assert url.endswith("me/my-set")
    (_, init), (_, info), (_, create), (_, upload) = api.calls
    assert info == {"repo_id": "me/my-set", "repo_type": "dataset"}  # --private: is it already public?
    assert init == {"token": None}  # huggingface_hub reads HF_TOKEN itself; synth never handles it
    assert create == {"repo_id": "me/my-set", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload["allow_patterns"] == ["data/*.parquet", "README.md"] and upload["repo_type"] == "dataset"
    assert "hf_secret_value" not in (tmp_path / "o/README.md").read_text()


def test_push_refuses_bad_repo_ids_and_unfinished_runs(tmp_path, api) -> None:
    write([from_rows([{"id": "a"}])], tmp_path / "done")
    with pytest.raises(SynthError, match="ORG/NAME"):
        hub.push(tmp_path / "done", "no-slash")
    with pytest.raises(SynthError, match="holds no synth dataset"):
        hub.push(tmp_path, "me/x")

    def dies():
        yield from_rows([{"id": "a"}])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(dies(), open_output(tmp_path / "half"))
    with pytest.raises(SynthError, match="not finished.*--resume"):
        hub.push(tmp_path / "half", "me/x")
    assert api.calls == []


def test_push_to_hub_option_uploads_after_the_run(tmp_path, api, monkeypatch) -> None:
    from typer.testing import CliRunner

    from synth import cli
    from tests.conftest import ScriptedBackend

    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: ScriptedBackend(replies=["Q?", "A."]))
    result = CliRunner().invoke(
        cli.app, ["magpie", "--n", "1", "--max-attempts", "1", "--out", str(tmp_path / "o"), "--push-to-hub", "me/set"]
    )
    assert result.exit_code == 0, result.output
    assert [c[0] for c in api.calls] == ["init", "create_repo", "upload_folder"]
    assert api.calls[2][1]["folder_path"] == str(tmp_path / "o")
    assert pq.read_table(tmp_path / "o" / "data")["instruction"].to_pylist() == ["Q?"]  # the row it uploaded


SECRET = "hf_NotARealTokenButShapedLikeOne123"


def _http_error(status: int, message: str):
    from huggingface_hub.errors import HfHubHTTPError

    response = types.SimpleNamespace(status_code=status, headers={}, request=None)
    return HfHubHTTPError(message, response=response)


def _offline():
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")


def _validation():
    from huggingface_hub.errors import HFValidationError

    return HFValidationError("Repo id must use alphanumeric chars")


UPLOAD_ERRORS = {
    "unauthorized": (
        lambda: _http_error(401, f"401 Client Error: Unauthorized\nInvalid token {SECRET}\nRequest id: abc"),
        "check HF_TOKEN or `hf auth login`",
    ),
    "server error": (lambda: _http_error(500, "500 Server Error\n\nInternal Error"), "failed (HfHubHTTPError: 500"),
    "offline": (_offline, "offline mode"),
    "connection": (lambda: ConnectionError(f"Connection refused (Authorization: Bearer {SECRET})"), "cannot reach"),
    "other hub error": (_validation, "failed (HFValidationError: Repo id must use"),
}


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and SECRET not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("kind", UPLOAD_ERRORS)
def test_an_upload_error_is_one_line_without_the_token(kind, tmp_path, api, monkeypatch, capsys) -> None:
    make_error, words = UPLOAD_ERRORS[kind]

    def fails(self, **kwargs):
        api.calls.append(("upload_folder", kwargs))
        raise make_error()

    monkeypatch.setattr(api, "upload_folder", fails)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    write([from_rows([{"id": "a"}])], tmp_path / "o")
    assert run_main(["push", str(tmp_path / "o"), "--repo", "me/set"], monkeypatch) == 2
    line = one_line(capsys)
    assert line.startswith("synth: error: ") and words in line, line
    assert f"synth push {tmp_path / 'o'} --repo me/set" in line  # how to try again; the data is safe
    assert [c[0] for c in api.calls] == ["init", "create_repo", "upload_folder"]


def test_a_hub_that_does_not_answer_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    # the real huggingface_hub client, pointed at a loopback port nothing listens on
    import functools

    import huggingface_hub
    from huggingface_hub import constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        huggingface_hub, "HfApi", functools.partial(huggingface_hub.HfApi, endpoint=f"http://127.0.0.1:{port}")
    )
    monkeypatch.setenv("HF_TOKEN", SECRET)
    write([from_rows([{"id": "a"}])], tmp_path / "o")
    assert run_main(["push", str(tmp_path / "o"), "--repo", "me/set"], monkeypatch) == 2
    assert "cannot reach the Hub to push to me/set" in one_line(capsys)


def test_push_to_hub_failing_after_a_run_keeps_the_data_and_says_how_to_retry(
    tmp_path, api, monkeypatch, capsys
) -> None:
    from synth import cli
    from tests.conftest import ScriptedBackend

    def refuses(self, repo_id, **kwargs):
        raise _http_error(403, "403 Forbidden: you cannot write to me/set")

    monkeypatch.setattr(api, "create_repo", refuses)
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: ScriptedBackend(replies=["Q?", "A."]))
    out = tmp_path / "o"
    argv = ["magpie", "--n", "1", "--max-attempts", "1", "--out", str(out), "--push-to-hub", "me/set"]
    assert run_main(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("synth: error: the Hub refused the upload to me/set") and "Traceback" not in "".join(err)
    assert pq.read_table(out / "data").num_rows == 1 and (out / "README.md").is_file()


def test_check_repo_accepts_hub_ids_and_refuses_the_rest(monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for good in ("me/set", "my-org/magpie.v2", "Org_1/name-2"):
        hub.check_repo(good)
    for bad in ("set", "a/b/c", "me/", "/set", "me/se--t", "me/set.", ".me/set", "me/s et", "me/" + "x" * 97):
        with pytest.raises(SynthError, match="ORG/NAME"):
            hub.check_repo(bad)


def test_private_onto_an_existing_public_repo_stops_before_the_run(tmp_path, api, monkeypatch, capsys) -> None:
    from synth import cli
    from tests.conftest import ScriptedBackend

    api.existing = {"me/public-set": False, "me/private-set": True}
    opened = []
    monkeypatch.setattr(cli._shared, "load_backend", lambda *a, **k: opened.append(1) or ScriptedBackend(["Q?", "A."]))
    out = tmp_path / "o"
    argv = ["magpie", "--n", "1", "--max-attempts", "1", "--out", str(out), "--push-to-hub", "me/public-set"]
    assert run_main([*argv, "--private"], monkeypatch) == 2
    line = one_line(capsys)
    assert "me/public-set already exists and is public" in line and "--private" in line
    assert opened == [] and not out.exists()  # stopped before a model loaded or the output was made
    assert "create_repo" not in [c[0] for c in api.calls] and "upload_folder" not in [c[0] for c in api.calls]

    # `synth push --private` checks too; a repo that is already private, or new, is pushed
    write([from_rows([{"id": "a"}])], tmp_path / "done")
    with pytest.raises(SynthError, match="already exists and is public"):
        hub.push(tmp_path / "done", "me/public-set", private=True)
    assert hub.push(tmp_path / "done", "me/private-set", private=True).endswith("me/private-set")
    assert hub.push(tmp_path / "done", "me/new-set", private=True).endswith("me/new-set")
    assert [c[1]["repo_id"] for c in api.calls if c[0] == "upload_folder"] == ["me/private-set", "me/new-set"]
