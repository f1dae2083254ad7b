"""Past one machine: run a pipeline's LLM stages on Ray Data, one backend per actor.

`RayExecutor.map(make_stage)` turns a stage factory into a stage whose batches are processed by
`map_batches` over an actor pool: each actor calls `make_stage()` once (so it loads its own
backend: one vLLM engine per GPU on a cluster, llama.cpp or a server client locally) and then
serves batches. Output order is preserved, so a run gives the same rows as the local executor.
"""

from __future__ import annotations

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
                yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)

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
        out = list(self.stage([batch]))
        return pa.concat_tables(out, promote_options="default") if out else batch.slice(0, 0)


def _windows(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    window: list[Batch] = []
    for batch in batches:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window
