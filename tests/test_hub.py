import pytest

from synth import hub
from synth.core import SynthError, from_rows
from synth.io import open_output, write


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records what would be sent, sends nothing."""

    calls: list = []

    def __init__(self, token=None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


@pytest.fixture
def api(monkeypatch):
    import huggingface_hub

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


def test_push_uploads_shards_and_card_only(tmp_path, api, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    write([from_rows([{"id": "a"}])], tmp_path / "o")
    url = hub.push(tmp_path / "o", "me/my-set", private=True)
    assert url.endswith("me/my-set")
    (_, init), (_, create), (_, upload) = api.calls
    assert init == {"token": None}  # huggingface_hub reads HF_TOKEN itself; synth never handles it
    assert create == {"repo_id": "me/my-set", "repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload["allow_patterns"] == ["data/*.parquet", "README.md"] and upload["repo_type"] == "dataset"
    assert "hf_secret_value" not in (tmp_path / "o/README.md").read_text()


def test_push_refuses_bad_repo_ids_and_unfinished_runs(tmp_path, api) -> None:
    with pytest.raises(SynthError, match="ORG/NAME"):
        hub.push(tmp_path, "no-slash")
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

    monkeypatch.setattr(cli, "load_backend", lambda *a, **k: ScriptedBackend(replies=["Q?", "A."]))
    result = CliRunner().invoke(
        cli.app, ["magpie", "--n", "1", "--max-attempts", "1", "--out", str(tmp_path / "o"), "--push-to-hub", "me/set"]
    )
    assert result.exit_code == 0, result.output
    assert [c[0] for c in api.calls] == ["init", "create_repo", "upload_folder"]
    assert api.calls[2][1]["folder_path"] == str(tmp_path / "o")
