"""Push a synth output directory to the Hugging Face Hub as a dataset repo."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from synth.core import SynthError
from synth.io import STATE

_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


def push(path: str | Path, repo: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload `data/*.parquet` and the dataset card of a finished run; returns the repo URL.

    The token comes from the argument, `HF_TOKEN` or `hf auth login`, through huggingface_hub;
    synth never prints it nor writes it anywhere.
    """
    path = Path(path)
    if not _REPO.match(repo):
        raise SynthError(f"--repo {repo!r} is not a Hub repo id; write it as ORG/NAME")
    state_file = path / STATE
    if not (path / "README.md").is_file() or not list((path / "data").glob("*.parquet")):
        raise SynthError(f"{path} holds no synth dataset (data/*.parquet and README.md); nothing to push")
    if state_file.is_file() and not json.loads(state_file.read_text()).get("complete", False):
        raise SynthError(f"the run in {path} is not finished; finish it with --resume before pushing")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api: Any = HfApi(token=token)
    try:
        url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=str(path),
            allow_patterns=["data/*.parquet", "README.md"],
            commit_message=f"Upload {path.name} made with synth",
        )
    except HfHubHTTPError as exc:
        raise SynthError(f"the Hub refused the upload to {repo} ({exc}); check HF_TOKEN or `hf auth login`") from None
    return str(url)
