"""What a dataset card may say: the run's settings, made fit to publish.

A card is pushed to the Hub with the data, so it names a local model by file name, size and
SHA-256 (never its path under the user's home), leaves out the hosts of servers, cuts every
other local path to its file name, and records stages by name and settings (their own
`describe()`, their dataclass fields, or a function's name and the immutable values it closes over),
never `repr()`, whose memory addresses would also make two identical runs' cards differ.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_HOST_KEYS = frozenset({"base_url", "host"})  # where a server runs: not the card's business
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\",;)]+")
# An absolute or home-relative path standing alone (not the tail of `org/name` or of a URL).
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\",;)]+")
_PLAIN = (str, int, float, bool, type(None))


def public(value: Any, key: str = "") -> Any:
    """`value` (a card's settings, nested) with local paths, server hosts and keys' hiding places removed."""
    if isinstance(value, Mapping):
        return {str(k): public(v, str(k)) for k, v in value.items() if str(k) not in _HOST_KEYS}
    if isinstance(value, (list, tuple)):
        return [public(v, key) for v in value]
    if isinstance(value, str):
        return model_file(value) if key == "model_path" else public_text(value)
    return value


def public_text(text: str) -> str:
    """`text` with each URL replaced by `<server>` and each absolute or `~` path cut to its file name."""
    home = _home()
    if home is not None and len(home) > 1:
        text = text.replace(home, "~")
    text = _URL.sub("<server>", text)
    return _PATH.sub(lambda m: Path(m.group(0).rstrip("/")).name or "/", text)


def model_file(path: str) -> dict[str, Any] | str:
    """A local model file as the card names it: file name, size in bytes and SHA-256."""
    home = _home()
    file = Path(path).expanduser() if home is not None else Path(path)
    if not file.is_file():
        return public_text(path)
    stat = file.stat()
    return {
        "file": file.name,
        "bytes": stat.st_size,
        "sha256": _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns),
    }


def _home() -> str | None:
    """The user's home, or None where there is none to find (no HOME, and a uid with no passwd
    entry, as in a container run as an arbitrary user): then there is no home to hide."""
    try:
        return str(Path.home())
    except (RuntimeError, KeyError):  # pathlib raises RuntimeError; KeyError is pwd's own, should it escape
        return None


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: a changed file hashes anew
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_record(stage: Any) -> Any:
    """A stage as the card lists it: its name and settings."""
    return public(_record(stage, depth=0))


def stage_names(records: list[Any]) -> list[str]:
    """The name each stage's counters go under in the card (`Magpie`, `dedup_exact`); a name that
    comes again is numbered (`Respond 2`), so no two stages' counters are ever added up."""
    names: list[str] = []
    for record in records:
        name = str(record.get("stage", "stage")) if isinstance(record, Mapping) else str(record)
        taken = sum(n == name or n.startswith(f"{name} ") and n[len(name) + 1 :].isdigit() for n in names)
        names.append(f"{name} {taken + 1}" if taken else name)
    return names


def counts_by_stage(counts: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """A card's `counts` as {stage: {counter: n}}. A card written before counts were kept per
    stage has one flat mapping: it reads as one stage named `run`."""
    if all(isinstance(v, Mapping) for v in counts.values()):
        return {str(k): dict(v) for k, v in counts.items()}
    return {"run": {str(k): v for k, v in counts.items() if not isinstance(v, Mapping)}}


def drop_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """What a funnel reads from a card's `counts`: each `dropped_*` reason summed over the stages
    (a row is dropped once, by the stage that drops it), and the rows that went in: the first
    stage's `attempts` or `rows_in` (a later stage's count only what reached it). Never a sum of
    `kept` or `attempts` over stages."""
    stages = list(counts_by_stage(counts).values())
    flat = {key: stages[0][key] for key in ("attempts", "rows_in") if stages and stages[0].get(key)}
    for stage in stages:
        for key, value in stage.items():
            if key.startswith("dropped_") and isinstance(value, int):
                flat[key] = flat.get(key, 0) + value
    return flat


def diversity_section(block: Mapping[str, Any]) -> str:
    """The README's `## Diversity` section for a card's `diversity` block: the figures as a
    table with their 95% intervals and the clusters' labels, or why there are none."""
    column = f" for `{block['column']}`" if block.get("column") else ""
    if "vendi" not in block:
        return f"## Diversity\n\nNo diversity figures{column}: {block.get('absent', 'not measured')}.\n\n"
    sample, rows_in = block["sample"], block["rows"]
    sampled = f"a uniform sample of {sample} of its {rows_in} rows" if sample < rows_in else f"{sample} rows"
    lo, hi = block["vendi_interval"]
    plo, phi = block["vendi_per_row_interval"]
    nlo, nhi = block["nn_similarity_interval"]
    rows = [
        ("Vendi score (effective number of distinct rows)", f"{block['vendi']:.2f}", f"{lo:.2f}-{hi:.2f}"),
        ("Vendi score per row", f"{block['vendi_per_row']:.4f}", f"{plo:.4f}-{phi:.4f}"),
        ("mean nearest-neighbour cosine similarity", f"{block['nn_similarity']:.3f}", f"{nlo:.3f}-{nhi:.3f}"),
        ("distinct-1 (unique words / words)", f"{block['distinct_1']:.3f}", ""),
        ("distinct-2 (unique word pairs / pairs)", f"{block['distinct_2']:.3f}", ""),
        (f"cluster entropy over {block['k']} clusters, bits", f"{block['entropy_bits']:.2f}", ""),
        ("cluster entropy, share of the most", f"{block['entropy_normalised']:.2f}", ""),
    ]
    lines = [
        "## Diversity",
        "",
        f"The text of `{block['column']}`, measured on {sampled} with the embedder `{block['embedder']}`, "
        "as `synth diversity` measures it; the intervals are 95% bootstrap intervals.",
        "",
        "| figure | value | 95% interval |",
        "|---|---|---|",
        *(f"| {name} | {value} | {interval} |" for name, value, interval in rows),
        "",
        "Clusters, largest first, each labelled by its most typical row:",
        "",
        *(f"- {c['share']:.1%}: {_cell(c['label'])}" for c in block.get("clusters", [])),
        "",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A row's text inline in markdown: its own markup escaped, so a label stays one line of text."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", " ".join(str(text).split()))


def _record(value: Any, depth: int) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if depth > 4:
        return type(value).__name__
    if isinstance(value, Mapping):
        return {str(k): _record(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_record(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_record(v, depth + 1) for v in value), key=str)
    if callable(getattr(value, "generate", None)):  # a backend (or its meter): the model it runs
        return str(getattr(value, "model", type(value).__name__))
    describe = getattr(value, "describe", None)
    if callable(describe):
        return describe()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f for f in dataclasses.fields(value) if f.repr and f.compare and not f.name.startswith("_")]
        return {"stage": type(value).__name__, **{f.name: _record(getattr(value, f.name), depth + 1) for f in fields}}
    if callable(value):
        return _function(value, depth)
    return type(value).__name__


def _function(fn: Any, depth: int) -> Any:
    """A function's name (`drop_failed`, not `_drop_failed.<locals>.stage`) and the immutable values it closes over."""
    inner = getattr(fn, "func", None)  # functools.partial
    if inner is not None:
        return {"stage": _name(inner), **{k: _record(v, depth + 1) for k, v in fn.keywords.items()}}
    name = _name(fn)
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None) or ()
    settings = {}
    for var, cell in zip(code.co_freevars if code else (), cells):
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        # Only immutable values are settings: a dict or list a closure holds may be its running state,
        # which would make a resumed run's settings differ from the original's.
        if isinstance(content, (*_PLAIN, tuple, frozenset)):
            settings[var] = _record(content, depth + 1)
    return {"stage": name, **settings} if settings else name


def _name(fn: Any) -> str:
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return qualname.split(".<locals>.")[0].lstrip("_")
