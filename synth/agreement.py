"""Agreement between a judge and people, and among judges: the figures and their report page.

scikit-learn, scipy and krippendorff compute every statistic; this module picks them per kind of
field (label, ordinal, pairwise), adds bootstrap intervals and writes report.md, report.json, PNGs.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

# A pairwise verdict; MT-Bench's "tie (bothbad)" and "tie (inconsistent)" are ties too.
PAIRWISE = ("model_a", "model_b", "tie")
MEASURES = ("accuracy", "accuracy_without_ties", "cohen_kappa", "quadratic_kappa", "spearman")


def agreement(
    human: Sequence[int],
    judge: Sequence[int],
    raw: Sequence[float] | None,
    kind: str,
    n_labels: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, Cohen's kappa, (ordinal) quadratic-weighted kappa and Spearman, (pairwise) accuracy
    without ties, each with a bootstrap 95% interval; the confusion matrix (rows: people, columns:
    judge) and per-label precision and recall. Labels are codes 0..n_labels-1."""
    import numpy as np
    from scipy import stats
    from sklearn import metrics

    codes = list(range(n_labels))
    h, j = np.asarray(human, dtype=int), np.asarray(judge, dtype=int)
    r = np.asarray(raw if raw is not None else judge, dtype=float)
    measures: dict[str, Callable[..., float]] = {
        "accuracy": lambda a, b, _: metrics.accuracy_score(a, b),
        "cohen_kappa": lambda a, b, _: metrics.cohen_kappa_score(a, b, labels=codes),
    }
    if kind == "ordinal":
        measures["quadratic_kappa"] = lambda a, b, _: metrics.cohen_kappa_score(a, b, labels=codes, weights="quadratic")
        measures["spearman"] = lambda a, _, c: stats.spearmanr(a, c).statistic
    out: dict[str, Any] = {}
    with warnings.catch_warnings():  # undefined values (one class, constant input) are reported as null
        warnings.simplefilter("ignore")
        for name, measure in measures.items():
            out[name] = _with_interval(measure, (h, j, r), resamples, seed)
        if kind == "pairwise":  # MT-Bench's second setup: only the votes where neither side says tie
            tie = PAIRWISE.index("tie")
            keep = (h != tie) & (j != tie)
            kept = (h[keep], j[keep], r[keep])
            out["accuracy_without_ties"] = _with_interval(measures["accuracy"], kept, resamples, seed)
            out["compared_without_ties"] = int(keep.sum())
        out["confusion"] = metrics.confusion_matrix(h, j, labels=codes).tolist() if len(h) else []
        precision, recall, _, support = (
            metrics.precision_recall_fscore_support(h, j, labels=codes, zero_division=0.0)
            if len(h)
            else ([], [], [], [])
        )
    out["per_label"] = [
        {"precision": float(p), "recall": float(q), "support": int(s)} for p, q, s in zip(precision, recall, support)
    ]
    return out


def _with_interval(measure: Callable[..., float], data: tuple[Any, ...], resamples: int, seed: int) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    n = len(data[0])
    value = _finite(measure(*data)) if n else None
    if value is None or n < 2 or resamples < 1:
        return {"value": value, "ci95": None}
    result = stats.bootstrap(
        data,
        measure,
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    # A resample can leave the statistic undefined (kappa on one class): those resamples drop out.
    spread = result.bootstrap_distribution[np.isfinite(result.bootstrap_distribution)]
    if not len(spread):
        return {"value": value, "ci95": None}
    low, high = np.percentile(spread, [2.5, 97.5])
    return {"value": value, "ci95": [float(low), float(high)], "undefined_resamples": int(resamples - len(spread))}


def jury_agreement(raters: Sequence[Sequence[float]], kind: str, n_labels: int) -> dict[str, Any]:
    """Krippendorff's alpha among the judges (rows: judges, columns: items; NaN where one gave none)."""
    import krippendorff
    import numpy as np

    level: Literal["ordinal", "nominal"] = "ordinal" if kind == "ordinal" else "nominal"
    data = np.asarray(raters, dtype=float)
    units = int((np.isfinite(data).sum(axis=0) >= 2).sum())
    try:
        alpha = krippendorff.alpha(data, level_of_measurement=level, value_domain=list(range(n_labels)))
    except ValueError as exc:  # fewer than two values anywhere: alpha is undefined
        return {"krippendorff_alpha": None, "level": level, "units": units, "note": str(exc)}
    return {"krippendorff_alpha": _finite(alpha), "level": level, "units": units, "judges": len(raters)}


def _finite(value: Any) -> float | None:
    import math

    value = float(value)
    return value if math.isfinite(value) else None


def summary(result: dict[str, Any]) -> str:
    """Plain-text lines: the join counts, then per field and judge the headline figures."""
    rows = result["rows"]
    lines = ["rows: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in rows.items() if not isinstance(v, list))]
    for name, figures in result["fields"].items():
        for judge, f in figures["judges"].items():
            shown = [f"{m} {_shown(f[m])}" for m in MEASURES if m in f]
            unscored = sum(f["unscored"].values())
            lines.append(f"{name} [{judge}]: {f['compared']} compared, {unscored} unscored; " + ", ".join(shown))
        if "jury" in figures:
            alpha = {"value": figures["jury"]["krippendorff_alpha"]}
            lines.append(f"{name}: judges' Krippendorff alpha {_shown(alpha)}")
    return "\n".join(lines)


def _shown(figure: dict[str, Any]) -> str:
    value = figure.get("value")
    if value is None:
        return "n/a"
    ci = figure.get("ci95")
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def write_report(result: dict[str, Any], out: Path) -> list[Path]:
    """report.json, report.md and one confusion-matrix PNG per field and judge."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    page = ["# Judge calibration", "", f"Judged: `{result['judged']}`; labels: `{result['labels']}`.", ""]
    page += ["| rows | count |", "| --- | --- |"]
    page += [f"| {k.replace('_', ' ')} | {v} |" for k, v in result["rows"].items() if not isinstance(v, list)]
    for name, figures in result["fields"].items():
        page += ["", f"## {name}", "", f"Kind: {figures['kind']}; labels: {', '.join(map(str, figures['labels']))}."]
        page += [f"Rows with no human label: {figures['unlabelled']}.", ""]
        for judge, f in figures["judges"].items():
            page += _judge_section(name, judge, f, figures["labels"])
            if f["compared"]:
                files.append(_confusion_png(out, name, judge, f["confusion"], figures["labels"]))
                page += [f"![{name} {judge}]({files[-1].name})", ""]
        if "jury" in figures:
            jury = figures["jury"]
            page += [
                f"Agreement among the judges: Krippendorff's alpha ({jury['level']}) "
                f"{_shown({'value': jury['krippendorff_alpha']})} over {jury['units']} items.",
                "",
            ]
    (out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text("\n".join(page) + "\n", encoding="utf-8")
    print(f"synth: wrote {len(files) + 2} files to {out}", file=sys.stderr)
    return [*files, out / "report.json", out / "report.md"]


def _judge_section(name: str, judge: str, f: dict[str, Any], labels: list[Any]) -> list[str]:
    unscored = ", ".join(f"{k} {v}" for k, v in f["unscored"].items()) or "none"
    lines = [f"### {judge}", "", f"Compared: {f['compared']}; unscored: {unscored}.", ""]
    lines += ["| measure | value | 95% interval |", "| --- | --- | --- |"]
    for m in MEASURES:
        if m in f:
            value, ci = f[m]["value"], f[m]["ci95"]
            lines.append(
                f"| {m} | {'n/a' if value is None else f'{value:.3f}'} | "
                f"{f'{ci[0]:.3f} to {ci[1]:.3f}' if ci else 'n/a'} |"
            )
    if f["confusion"]:
        lines += ["", "Confusion (rows: people, columns: judge):", ""]
        lines += ["| people \\ judge | " + " | ".join(map(str, labels)) + " |", "| --- " * (len(labels) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(map(str, row)) + " |" for label, row in zip(labels, f["confusion"])]
        lines += ["", "| label | precision | recall | support |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {label} | {p['precision']:.3f} | {p['recall']:.3f} | {p['support']} |"
            for label, p in zip(labels, f["per_label"])
        ]
    return [*lines, ""]


def _confusion_png(out: Path, name: str, judge: str, matrix: list[list[int]], labels: list[Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    slug = re.sub(r"[^\w.-]+", "_", f"{name}__{judge}" if name != judge else name).strip("_")
    path = out / f"confusion_{slug}.png"
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=[str(v) for v in labels]).plot(
        ax=ax, colorbar=False, xticks_rotation=45
    )
    ax.set_xlabel(f"judge ({judge})")
    ax.set_ylabel("people")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
