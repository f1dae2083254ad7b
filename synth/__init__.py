"""synth: synthetic training data for language models, as streaming stages."""

__version__ = "0.1.0"

from synth.backends import Backend, Completion, Sampling, load_backend  # noqa: E402
from synth.core import Batch, Stage, SynthError, add_columns, from_rows, pipe  # noqa: E402
from synth.io import read, write  # noqa: E402

__all__ = [
    "Backend",
    "Batch",
    "Completion",
    "Sampling",
    "Stage",
    "SynthError",
    "__version__",
    "add_columns",
    "from_rows",
    "load_backend",
    "pipe",
    "read",
    "write",
]
