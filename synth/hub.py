"""Push a synth output directory to the Hugging Face Hub as a dataset repo."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from synth.core import SynthError
from synth.io import STATE

# The Hub's rules: ORG/NAME, each of letters, digits, `_`, `-`, `.`; no `--` or `..`; `-` and
# `.` neither start nor end a part; at most 96 characters a part.
_PART = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO = re.compile(rf"^(?!.*(?:--|\.\.)){_PART}/{_PART}$", re.ASCII)
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def check_repo(repo: str, option: str = "--push-to-hub") -> None:
    """Fail fast, before a model loads, on a repo id the Hub would refuse or a missing client."""
    if not _REPO.match(repo):
        raise SynthError(
            f"{option} {repo!r} is not a Hub repo id; write it as ORG/NAME (letters, digits, '-', '_', '.')"
        )
    if importlib.util.find_spec("huggingface_hub") is None:
        raise SynthError(f"{option} needs huggingface_hub, which is not installed: pip install huggingface-hub")
    if _offline():
        raise SynthError(f"{option} cannot upload with HF_HUB_OFFLINE set; unset HF_HUB_OFFLINE or leave out {option}")


def push(path: str | Path, repo: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload `data/*.parquet` and the dataset card of a finished run; returns the repo URL.

    The token comes from the argument, `HF_TOKEN` or `hf auth login`, through huggingface_hub;
    synth never prints it nor writes it anywhere, error messages included.
    """
    path = Path(path)
    state_file = path / STATE
    if not (path / "README.md").is_file() or not list((path / "data").glob("*.parquet")):
        raise SynthError(f"{path} holds no synth dataset (data/*.parquet and README.md); nothing to push")
    if state_file.is_file() and not json.loads(state_file.read_text()).get("complete", False):
        raise SynthError(f"the run in {path} is not finished; finish it with --resume before pushing")
    check_repo(repo, "--repo")
    from huggingface_hub import HfApi

    api: Any = HfApi(token=token)
    if private:
        refuse_public(repo, token, api)
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=str(path),
            allow_patterns=["data/*.parquet", "README.md"],
            commit_message=f"Upload {path.name} made with synth",
        )
    except Exception as exc:  # whatever huggingface_hub or its HTTP client raise: one line, never a traceback
        raise SynthError(_upload_error(exc, path, repo, token)) from None
    return str(url)


def refuse_public(repo: str, token: str | None = None, api: Any = None) -> None:
    """With `--private`, stop if `repo` already exists as a public dataset: uploading would publish
    what the user meant to keep private (`create_repo` leaves an existing repo's visibility as is)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import RepositoryNotFoundError

    try:
        info = (api or HfApi(token=token)).repo_info(repo, repo_type="dataset")
    except RepositoryNotFoundError:
        return  # created private on push
    except Exception as exc:  # whatever huggingface_hub or its HTTP client raise: one line
        raise SynthError(
            f"cannot check whether {repo} is private ({type(exc).__name__}: {_one_line(str(exc), token)}); "
            "check the network and HF_TOKEN, then run again"
        ) from None
    if not getattr(info, "private", False):
        raise SynthError(
            f"--private, but the Hub dataset {repo} already exists and is public: pushing would publish the data. "
            "Make it private in its settings on the Hub, push to another repo, or drop --private"
        )


def _upload_error(exc: Exception, path: Path, repo: str, token: str | None) -> str:
    """One line saying why the upload failed and what to do; the dataset on disk is complete."""
    again = f"run `synth push {path} --repo {repo}` (the dataset in {path} is complete)"
    kind = type(exc).__name__
    detail = _one_line(str(exc), token) or kind
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if kind == "OfflineModeIsEnabled":
        return (
            f"cannot push to {repo}: huggingface_hub is in offline mode here (HF_HUB_OFFLINE); with it unset, {again}"
        )
    if status in (401, 403):
        return f"the Hub refused the upload to {repo} ({detail}); check HF_TOKEN or `hf auth login`, then {again}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or "Connect" in kind or "Timeout" in kind:
        return f"cannot reach the Hub to push to {repo} ({kind}: {detail}); check the network, then {again}"
    return f"the upload to {repo} failed ({kind}: {detail}); to try again, {again}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}  # as huggingface_hub reads it


def _one_line(message: str, token: str | None) -> str:
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    for secret in {token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")} - {None, ""}:
        first = first.replace(str(secret), "***")
    first = _TOKEN.sub("hf_***", first)
    return first if len(first) <= 300 else first[:297] + "..."
