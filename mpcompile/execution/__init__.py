"""One executor for embarrassingly parallel sweeps: sequential, a local process pool, or a Ray cluster.

Sensitivity (one task per layer) and the auto search (one task per candidate plan and
range of batches) run through it; the zoo benchmark and multi-model conformance can too.

    from mpcompile.execution import open_executor

    with open_executor(workers=2) as ex:                 # or ray="local" / ray="head:6379"
        model = ex.share(big_object)                     # sent to each worker once
        results = ex.map(task_fn, model, items, labels=[...], progress=bar)

``task_fn(value, item)`` must be a module-level function. Results come back in ``items``
order; computations do not depend on which worker ran them, so a run is bit-identical to
the sequential one. See docs/ray.md for a multi-node cluster.
"""

from __future__ import annotations

from mpcompile.execution.base import (
    Executor,
    Shared,
    Task,
    TaskCrash,
    TaskError,
    TaskFailure,
    available_cores,
    threads_per_worker,
    worker_threads,
)
from mpcompile.execution.processes import ProcessExecutor
from mpcompile.execution.sequential import SequentialExecutor

__all__ = [
    "Executor", "ProcessExecutor", "SequentialExecutor", "Shared", "Task", "TaskCrash", "TaskError", "TaskFailure",
    "available_cores", "open_executor", "threads_per_worker", "worker_threads",
]


def open_executor(workers: int | None = None, ray: str | None = None) -> Executor:
    """The executor for ``--workers N`` / ``--ray ADDRESS``: sequential when neither asks for more.

    ``ray``: ``"local"`` starts a Ray cluster in this process (``workers`` CPUs, default all);
    any other value is an address for ``ray.init(address=...)``. Without Ray installed that
    is a one-line ``MpcompileError`` with the install hint.
    """
    if workers is not None and workers < 1:
        from mpcompile.errors import MpcompileError

        raise MpcompileError(f"--workers must be at least 1, got {workers}")
    if ray:
        from mpcompile.execution.ray_backend import RayExecutor

        return RayExecutor(ray, workers=workers)
    if workers is not None and workers > 1:
        return ProcessExecutor(workers)
    return SequentialExecutor()
