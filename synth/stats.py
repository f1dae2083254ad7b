"""`synth stats`: what a dataset holds, as a table, PNG plots and a markdown page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from synth.card import drop_counts
from synth.io import read, read_provenance
from synth.stages.magpie import instruction_key

TEXT_COLUMNS = ("instruction", "response", "text")
CONTAMINATED = "dropped_contaminated_"  # synth.stages.decontaminate's counts: + f"{benchmark}_{method}"
LABEL_LIMIT = 30  # a string column with at most this many distinct values is a label


def collect(path: str | Path, count_tokens: Callable[[str], int] | None = None) -> dict[str, Any]:
    """Stream the dataset once and gather counts, lengths, finish reasons and label distributions."""
    rows = 0
    lengths: dict[str, dict[str, list[int]]] = {}  # column: chars and tokens per row
    labels: dict[str, Counter[str | None]] = {}
    numbers: dict[str, list[float]] = {}
    keys: dict[str, Counter[int]] = {}  # column: instruction keys, for the duplicate rate
    found: Counter[str] = Counter()  # a decontamination's rejects: by benchmark and method
    for batch in read(path):
        rows += batch.num_rows
        for name in batch.column_names:
            column = batch[name]
            if name == "contaminated_by" and pa.types.is_struct(column.type):
                found.update(f"{r['benchmark']} {r['method']}" for r in column.to_pylist() if r)
            elif name in TEXT_COLUMNS and pa.types.is_string(column.type):
                texts = column.to_pylist()
                lengths.setdefault(name, {"chars": [], "tokens": []})
                lengths[name]["chars"] += pc.utf8_length(column).to_pylist()
                if count_tokens:
                    lengths[name]["tokens"] += [count_tokens(t or "") for t in texts]
                seen = keys.setdefault(name, Counter())
                seen.update(instruction_key(t or "") for t in texts)
            elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
                if name not in {"turns", "response_index"}:
                    numbers.setdefault(name, []).extend(v for v in column.to_pylist() if v is not None)
            elif pa.types.is_string(column.type) and name not in {"id", "source_id", "model", "system_prompt"}:
                labels.setdefault(name, Counter()).update(column.to_pylist())
    labels = {k: v for k, v in labels.items() if len(v) <= LABEL_LIMIT}
    duplicates = {k: 1 - len(c) / max(sum(c.values()), 1) for k, c in keys.items()}
    near = {name: near_duplicate_rate(path, name) for name in keys}
    try:
        provenance = read_provenance(path)
    except (OSError, ValueError):  # not a synth output (a file, a folder without a card)
        provenance = {}
    counts = drop_counts(provenance.get("counts", {}))  # each drop reason summed over the stages
    drops = {k: v for k, v in counts.items() if k.startswith("dropped_") and not k.startswith(CONTAMINATED)}
    for key, value in counts.items():  # a decontamination's card: rows it dropped, by benchmark and method
        if key.startswith(CONTAMINATED) and value:
            benchmark, _, method = key.removeprefix(CONTAMINATED).rpartition("_")
            found[f"{benchmark} {method}"] += value
    return {
        "contamination": dict(found),
        "rows": rows,
        "lengths": lengths,
        "labels": labels,
        "numbers": numbers,
        "duplicate_rate": duplicates,
        "near_duplicate_rate": near,
        "drops": drops,
        "diversity": diversity_of(path, keys),
    }


def diversity_of(path: str | Path, columns: Any) -> dict[str, Any]:
    """`synth diversity`'s figures of the first text column (instruction first), on a sample of
    2,000 rows with the static embedder; {} where there is no text, no embedder installed, or the static
    embedder not yet distilled (`synth diversity` builds it)."""
    import importlib.util

    column = next((c for c in TEXT_COLUMNS if c in columns), None)
    if column is None or importlib.util.find_spec("model2vec") is None:
        return {}
    from synth.stages.embed import STATIC_DIR, cache_dir

    if not (cache_dir() / STATIC_DIR / "model.safetensors").is_file():
        return {}  # stats never waits minutes to distil the embedder: `synth diversity` does that once
    from synth.core import SynthError
    from synth.recipes.diversity import sampled_texts
    from synth.stages.diversity import measure

    texts, rows = sampled_texts(path, column, 2_000)
    try:
        return {column: measure(texts, k=10, rows=rows)} if len(texts) > 1 else {}
    except SynthError:  # the static embedder cannot be built here (no torch to distil it once)
        return {}


def near_duplicate_rate(path: str | Path, column: str, threshold: float = 0.7) -> float:
    """Share of rows that synth's MinHash dedup (word shingles, Jaccard >= threshold) would drop."""
    from synth.stages.dedup import MinHashDedup

    stage = MinHashDedup(column=column, threshold=threshold)
    for _ in stage(b.select(["id", column]) for b in read(path)):
        pass
    return stage.stats["dropped"] / max(stage.stats["rows_in"], 1)


def table(stats: dict[str, Any]) -> str:
    """A plain-text table of the figures, for the terminal and the markdown page."""
    import numpy as np

    lines = [f"rows: {stats['rows']}"]
    for column, kinds in stats["lengths"].items():
        for kind, values in kinds.items():
            if values:
                v = np.asarray(values)
                lines.append(
                    f"{column} {kind}: mean {v.mean():.1f}, median {np.median(v):.0f}, "
                    f"p95 {np.percentile(v, 95):.0f}, max {v.max()}"
                )
    for column, rate in stats["duplicate_rate"].items():
        lines.append(f"{column} duplicate rate (normalised text): {rate:.1%}")
    for column, rate in stats.get("near_duplicate_rate", {}).items():
        lines.append(f"{column} near-duplicate rate (MinHash, Jaccard >= 0.7): {rate:.1%}")
    for column, counts in stats["labels"].items():
        lines.append(f"{column}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    for column, values in stats["numbers"].items():
        if values:
            lines.append(f"{column}: mean {sum(values) / len(values):.2f} over {len(values)} rows")
    if stats.get("contamination"):
        found = sorted(stats["contamination"].items())
        lines.append("contaminated (benchmark method): " + ", ".join(f"{k} {v}" for k, v in found))
    for column, figures in stats.get("diversity", {}).items():
        from synth.stages.diversity import table as diversity_table

        lines += diversity_table(figures, column).splitlines()[:6]
    if stats["drops"]:
        lines.append("dropped: " + ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in stats["drops"].items()))
    return "\n".join(lines)


def report(stats: dict[str, Any], out: str | Path) -> list[Path]:
    """Write PNG plots and `report.md` embedding them under `out`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for column, kinds in stats["lengths"].items():
        for kind, values in kinds.items():
            if values:
                files.append(_plot(plt, out / f"{column}_{kind}.png", f"{column} length ({kind})", values, "hist"))
    for column, counts in stats["labels"].items():
        files.append(_plot(plt, out / f"{column}.png", column, counts, "bar"))
    for column, values in stats["numbers"].items():
        if values:
            files.append(_plot(plt, out / f"{column}.png", column, values, "hist"))
    page = ["# Dataset report", "", "```text", table(stats), "```", ""]
    page += [f"![{f.stem}]({f.name})" for f in files]
    (out / "report.md").write_text("\n".join(page) + "\n", encoding="utf-8")
    return [*files, out / "report.md"]


def _plot(plt: Any, path: Path, title: str, data: Any, kind: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if kind == "hist":
        ax.hist(data, bins=min(50, max(5, len(data) // 5)))
    else:
        names = [str(k) for k in data]
        ax.barh(names, list(data.values()))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
