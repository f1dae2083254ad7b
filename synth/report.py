"""Live progress on stderr and the closing summary."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from synth.core import Batch, Stage

_QUIET = {"on": False}
_BARS: list[_Line] = []  # the bars drawing now; `row_finished` moves them


def set_quiet(quiet: bool) -> None:
    """`-q`: no progress bars (the closing summary and errors still print)."""
    _QUIET["on"] = quiet


def progress(
    total: int | None,
    meter: Any = None,
    initial: int = 0,
    desc: str = "rows",
    stats: Mapping[str, int] | None = None,
    tick: float = 1.0,
) -> Stage:
    """A pass-through stage drawing a tqdm bar: the rows kept so far, generated tokens per second
    and kept rows per second since the start, the yield (kept / attempts) when `stats` counts
    them, and an ETA. A thread redraws it every `tick` seconds, so the rates move while a batch
    is still generating; `meter.live_tokens()`, where there is one, counts tokens as they come.
    Between batches, `row_finished()` moves the bar as each row's last answer ends; a batch
    passing through sets it to the rows that are really kept."""

    def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
        if _QUIET["on"]:
            yield from batches
            return
        from tqdm import tqdm

        # tqdm's own rate and ETA count rows per batch; the postfix has the live ones instead
        shape = "{desc}: {n_fmt} [{elapsed}{postfix}]"
        if total:
            shape = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
        with tqdm(
            total=total, initial=initial, unit="row", desc=desc, file=sys.stderr, dynamic_ncols=True, bar_format=shape
        ) as bar:
            line = _Line(bar, meter, stats, initial)
            stop = threading.Event()
            ticker = threading.Thread(target=line.every, args=(tick, stop), daemon=True)
            ticker.start()
            _BARS.append(line)
            try:
                for batch in batches:
                    line.settle(batch.num_rows)
                    line.draw()
                    yield batch
            finally:
                _BARS.remove(line)
                stop.set()
                ticker.join()

    return stage


class _Line:
    """The bar's rates, redrawn from the run's own thread and from a ticker thread."""

    def __init__(self, bar: Any, meter: Any, stats: Mapping[str, int] | None, initial: int) -> None:
        self.bar, self.meter, self.stats, self.initial = bar, meter, stats, initial
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.tokens0 = self._tokens()
        self.kept, self.ahead = initial, 0  # rows through the bar; rows finished since the last batch
        self.drawn = 0.0

    def settle(self, rows: int) -> None:
        with self.lock:
            self.kept += rows
            self.ahead = 0
            self.bar.n = self.kept

    def finished(self, rows: int) -> None:
        with self.lock:
            self.ahead += rows
            shown = self.kept + self.ahead
            self.bar.n = min(shown, self.bar.total) if self.bar.total else shown
            due = time.monotonic() - self.drawn >= 0.1  # at most ten redraws a second
        if due:
            self.draw()

    def _tokens(self) -> int:
        live = getattr(self.meter, "live_tokens", None)
        if callable(live):
            return live()
        return getattr(self.meter, "completion_tokens", 0)

    def every(self, tick: float, stop: threading.Event) -> None:
        while not stop.wait(tick):
            self.draw()

    def draw(self) -> None:
        with self.lock:
            self.drawn = time.monotonic()
            seconds = max(time.monotonic() - self.start, 1e-9)
            rows = self.bar.n - self.initial
            parts = []
            if self.meter is not None:
                parts.append(f"{(self._tokens() - self.tokens0) / seconds:.0f} tok/s")
            parts.append(f"{rows / seconds:.2f} rows/s")
            if self.stats and self.stats.get("attempts"):
                parts.append(f"yield {rows / self.stats['attempts']:.0%}")
            if self.bar.total and rows:
                parts.append(f"ETA {_clock((self.bar.total - self.bar.n) * seconds / rows)}")
            waiting = _server_waiting()
            if waiting:
                parts.append(waiting)
            self.bar.set_postfix_str(", ".join(parts), refresh=True)


def _server_waiting() -> str | None:
    """What a server backend waits for ("server unreachable, retry 3 in 8 s"); only where one is loaded."""
    resilience = sys.modules.get("synth.backends._resilience")
    return resilience.waiting() if resilience is not None else None


def row_finished(rows: int = 1) -> None:
    """A row's last answer has ended: the bars drawing now count it before its batch arrives
    (the batch then sets them to the rows really kept)."""
    for line in tuple(_BARS):
        line.finished(rows)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def summary(
    rows: int, path: Any, seconds: float, counts: Mapping[str, int], tokens: int = 0, ending: str | None = None
) -> str:
    """One paragraph: rows, tokens, drops by reason, wall time, where the data is; then `ending`
    as the last line, where the run stopped short ("stopped short: 3 of 4 rows.")."""
    drops = {k.removeprefix("dropped_"): v for k, v in counts.items() if k.startswith("dropped_") and v}
    dropped = ", ".join(f"{v} {k}" for k, v in sorted(drops.items())) or "none"
    attempts = counts.get("attempts")
    tried = f" from {attempts} attempts ({rows / attempts:.0%} yield)" if attempts else ""
    text = (
        f"Wrote {rows} rows{tried} to {path} in {seconds:.1f}s; "
        f"{tokens} tokens generated ({tokens / max(seconds, 1e-9):.0f} tok/s); dropped: {dropped}."
    )
    return f"{text}\n{ending}" if ending else text


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
