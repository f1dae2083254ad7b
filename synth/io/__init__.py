"""Read any input lazily; write a Hub-shaped dataset directory that resumes.

Output layout (a Hugging Face dataset repo):
    OUT/data/train-00000.parquet ...   shards, each written to a temporary file then renamed
    OUT/README.md                      dataset card: YAML metadata + provenance
    OUT/.synth/state.json              settings, finished shards, the source's checkpoint

Reading lives in `_reading` (documents: `_documents`), writing (shards, state, card) in `_writing`; import from here.
"""

from synth.io._reading import (
    arrow_without_pandas,
    check_input,
    jemalloc_for_arrow,
    read,
    strict_reading,
)
from synth.io._writing import (
    STATE,
    Output,
    Sink,
    check_apart,
    open_output,
    overlap,
    preflight,
    read_provenance,
    tee,
    write,
)

__all__ = [
    "STATE",
    "Output",
    "Sink",
    "arrow_without_pandas",
    "check_apart",
    "check_input",
    "jemalloc_for_arrow",
    "open_output",
    "overlap",
    "preflight",
    "read",
    "read_provenance",
    "strict_reading",
    "tee",
    "write",
]
