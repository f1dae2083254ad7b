"""Live progress on stderr and the closing summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from synth.core import Batch, Stage


def progress(
    total: int | None, meter: Any = None, initial: int = 0, desc: str = "rows", stats: Mapping[str, int] | None = None
) -> Stage:
    """A pass-through stage drawing a tqdm bar: rows kept per second, generated tokens per second,
    and the yield (kept / attempts) when `stats` counts them."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        from tqdm import tqdm

        start = time.monotonic()
        tokens0 = getattr(meter, "completion_tokens", 0)
        with tqdm(total=total, initial=initial, unit="row", desc=desc, file=sys.stderr, dynamic_ncols=True) as bar:
            for batch in batches:
                bar.update(batch.num_rows)
                parts = []
                if meter is not None:
                    rate = (meter.completion_tokens - tokens0) / max(time.monotonic() - start, 1e-9)
                    parts.append(f"{rate:.0f} tok/s")
                if stats and stats.get("attempts"):
                    parts.append(f"yield {stats['kept'] / stats['attempts']:.0%}")
                bar.set_postfix_str(", ".join(parts))
                yield batch

    return stage


def summary(rows: int, path: Any, seconds: float, counts: Mapping[str, int], tokens: int = 0) -> str:
    """One paragraph: rows, tokens, drops by reason, wall time, where the data is."""
    drops = {k.removeprefix("dropped_"): v for k, v in counts.items() if k.startswith("dropped_") and v}
    dropped = ", ".join(f"{v} {k}" for k, v in sorted(drops.items())) or "none"
    attempts = counts.get("attempts")
    tried = f" from {attempts} attempts ({rows / attempts:.0%} yield)" if attempts else ""
    return (
        f"Wrote {rows} rows{tried} to {path} in {seconds:.1f}s; "
        f"{tokens} tokens generated ({tokens / max(seconds, 1e-9):.0f} tok/s); dropped: {dropped}."
    )


def dedup_summary(counts: Mapping[str, int], notes: Mapping[str, Any], out: Any, rejects: Any, seconds: float) -> str:
    """Rows in, kept, dropped; rows never compared; how the method ran; where the data is."""
    unchecked = counts.get("unchecked_null", 0) + counts.get("unchecked_non_string", 0)
    how = ", ".join(f"{k} {v}" for k, v in notes.items() if k != "method")
    lines = [
        f"{counts.get('rows_in', 0)} rows in, {counts.get('kept', 0)} kept, {counts.get('dropped', 0)} dropped "
        f"as duplicates ({notes.get('method', 'dedup')}{'; ' + how if how else ''}).",
        f"Wrote {out} in {seconds:.1f}s" + (f"; dropped rows in {rejects}." if rejects else "."),
    ]
    if unchecked:
        lines.insert(1, f"{unchecked} rows with a null or non-string value were kept unchecked (dup_cluster null).")
    return "\n".join(lines)
