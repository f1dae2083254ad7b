"""Past one machine: run a pipeline's LLM stages on Ray Data, one backend per actor.

`RayExecutor.map(make_stage)` turns a stage factory into a stage whose batches are processed by
`map_batches` over an actor pool: each actor calls `make_stage()` once (so it loads its own
backend: one vLLM engine per GPU on a cluster, llama.cpp or a server client locally) and then
serves batches. Output order is preserved, so a run gives the same rows as the local executor.
A synth error an actor raises (a `StoppedShort`, a `SynthError`) reaches the run as itself, after
the rows before it, not wrapped in Ray's errors (whose wrapping loses it on the way to the driver),
so the run ends as the local one would: exit 3 or 2, its one line, its card.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType

import pyarrow as pa

from synth.core import Batch, Stage, SynthError


@dataclass(frozen=True)
class RayExecutor:
    """Where and how wide: `address` of a Ray cluster (None: start or join a local one)."""

    address: str | None = None
    actors: int = 2
    num_gpus: float = 0.0  # per actor; 1 for one vLLM engine per GPU
    batch_size: int = 64
    window: int = 256  # batches submitted to Ray at a time; bounds the driver's memory

    def map(self, make_stage: Callable[[], Stage]) -> Stage:
        """A stage that runs `make_stage()`'s stage inside Ray actors."""

        def stage(batches: Iterable[Batch]) -> Iterator[Batch]:
            ray = self._ray()
            for window in _windows(batches, self.window):
                ds = ray.data.from_arrow(window).map_batches(
                    _StageActor,
                    fn_constructor_kwargs={"make_stage": make_stage},
                    batch_format="pyarrow",
                    batch_size=self.batch_size,
                    compute=ray.data.ActorPoolStrategy(size=self.actors),
                    num_gpus=self.num_gpus or None,
                )
                for out in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    yield from _raise_carried(out)

        stage.__qualname__ = f"on_ray({self.address or 'local'}, actors={self.actors})"
        return stage

    def _ray(self) -> ModuleType:  # the ray module
        try:
            import ray
        except ImportError:
            raise SynthError("--executor ray needs Ray: pip install 'synth[ray]'") from None
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": max(self.actors, 2)}
            ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kwargs)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        return ray


class _StageActor:
    """One per actor: builds the stage (and its backend) once, then maps batches through it."""

    def __init__(self, make_stage: Callable[[], Stage]) -> None:
        self.stage = make_stage()

    def __call__(self, batch: pa.Table) -> pa.Table:
        try:
            out = list(self.stage([batch]))
        except SynthError as exc:  # raised, Ray would wrap it into a UserCodeException that has lost it
            return pa.table({CARRIED: pa.array([pickle.dumps(exc)], pa.binary())})
        return pa.concat_tables(out, promote_options="default") if out else batch.slice(0, 0)


def _raise_carried(out: pa.Table) -> Iterator[Batch]:
    """`out`'s rows, up to a synth error an actor carried back as a row (Ray may have joined that
    row to other outputs): then the error, raised as itself."""
    if CARRIED not in out.column_names:
        yield out
        return
    carried = out[CARRIED].to_pylist()
    first = next(i for i, value in enumerate(carried) if value is not None)
    if first:
        yield out.slice(0, first).drop_columns([CARRIED])
    raise pickle.loads(carried[first])


CARRIED = "_synth_error"  # the column an actor's synth error travels in, pickled


def _windows(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    window: list[Batch] = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window
