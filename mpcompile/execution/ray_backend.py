"""A Ray cluster (``mpcompile[ray]``): ``--ray local`` starts one in this process, ``--ray ADDRESS`` joins one.

* Shared values go into Ray's object store once (``ray.put``); a task receives the
  ``ObjectRef`` inside a small handle (so Ray does not copy the value into the task's
  arguments) and each worker process ``ray.get``s it on first use and keeps it: numpy
  arrays are zero-copy views on the node's object store, shared by the workers of a node.
* Each task asks Ray for one CPU and its ORT sessions use one intra-op thread, so Ray's
  scheduler never runs more sessions than a node has cores.
* Every worker checks once that it runs the driver's mpcompile (version and a digest of its
  source), numpy and onnxruntime: a node with other versions could compute other numbers.

Ray is imported only here, only when a Ray executor is created.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mpcompile.errors import MpcompileError
from mpcompile.execution.base import (
    Executor,
    Failure,
    Shared,
    Task,
    TaskFn,
    WorkerCache,
    failure_error,
    run_task,
    set_worker_threads,
    worker_died,
)

INSTALL_HINT = "pip install 'mpcompile[ray]'"
_CACHE = WorkerCache()
_CHECKED: dict[str, bool] = {}
_FINGERPRINTED = ("numpy", "onnxruntime")


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MpcompileError(f"--ray needs Ray, which is not installed ({exc}); install it with: {INSTALL_HINT}") from None
    return ray


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of mpcompile's own source files: the same version string can hide other code (a checkout)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def fingerprint() -> dict[str, str]:
    """What a worker must share with the driver for identical numbers: versions and mpcompile's code."""
    from mpcompile._version import __version__

    found = {"mpcompile": __version__, "mpcompile code": code_digest()}
    for name in _FINGERPRINTED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "?"
    return found


class RayShared(Shared):
    """An ``ObjectRef`` wrapped so that Ray passes the reference, not the value, to each task.

    ``released`` lists the values the driver released before this one: a worker drops them first.
    """

    def __init__(self, ref: Any, released: tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.released = released

    def resolve(self) -> Any:
        import ray

        return _CACHE.get(self.ref.hex(), lambda: ray.get(self.ref), self.released)


def _ray_body(expected: dict[str, str], threads: int, fn: TaskFn, shared: Shared, item: Any) -> Any:
    """Runs on a Ray worker: check the versions once, set the ORT thread budget, run the task."""
    key = repr(sorted(expected.items()))
    if key not in _CHECKED:
        mine = fingerprint()
        wrong = {k: (v, mine.get(k)) for k, v in expected.items() if mine.get(k) != v}
        if wrong:
            host = os.uname().nodename if hasattr(os, "uname") else "?"
            detail = ", ".join(f"{k} {theirs} (driver {ours})" for k, (ours, theirs) in wrong.items())
            return Failure(MpcompileError(f"Ray worker on {host} has other versions than the driver: {detail}; "
                                          f"install the same versions on every node"))
        _CHECKED[key] = True
    set_worker_threads(threads)
    return run_task(fn, shared, item)


class _RayTask(Task):
    def __init__(self, ref: Any, index: int, label: str, ray: Any) -> None:
        super().__init__(index, label)
        self.ref = ref
        self._ray = ray

    def done(self) -> bool:
        ready, _ = self._ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self) -> Any:
        ray = self._ray
        try:
            value = ray.get(self.ref)
        except ray.exceptions.TaskCancelledError:
            raise worker_died(self.label, self.index, "cancelled") from None
        except ray.exceptions.RayError as exc:  # worker or node died, object lost, ...
            raise worker_died(self.label, self.index, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if isinstance(value, Failure):
            raise failure_error(value, self.label, self.index)
        return value


class RayExecutor(Executor):
    """Tasks on a Ray cluster. ``address``: ``"local"`` (start one here; ``workers`` CPUs, default all), or an
    address for ``ray.init(address=...)`` (``auto``, ``ray://head:10001``, ``head:6379``). A Ray already
    initialized in this process is used as it is (and left running)."""

    kind = "ray"

    def __init__(self, address: str = "local", *, workers: int | None = None) -> None:
        super().__init__()
        ray = import_ray()
        self._ray = ray
        self.address = address
        self._owns = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            if address == "local":
                # Workers inherit this environment (PYTHONPATH) and Ray adds the driver's folder to
                # their sys.path; the fingerprint check below catches a worker importing other code.
                # address="local": always a new instance of our own, never a cluster that happens to run here.
                options.update(address="local", num_cpus=workers, include_dashboard=False)
            else:
                options.update(address=address)
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise MpcompileError(f"--ray {address}: cannot start or join the Ray cluster: {str(exc).splitlines()[0]}") from None
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(cpus, workers) if workers else cpus)
        self._remote = ray.remote(num_cpus=1)(_ray_body)
        self._expected = fingerprint()
        self._shared: dict[str, RayShared] = {}
        self._released: list[str] = []

    def describe(self) -> str:
        return f"ray ({self.address}), {self.workers} CPUs"

    def share(self, value: Any) -> Shared:
        handle = RayShared(self._ray.put(value), tuple(self._released[-64:]))
        self._shared[handle.ref.hex()] = handle
        return handle

    def release(self, shared: Shared) -> None:
        if isinstance(shared, RayShared) and self._shared.pop(shared.ref.hex(), None) is not None:
            self._released.append(shared.ref.hex())  # Ray frees the object once no task or worker holds it

    def _submit(self, fn: TaskFn, shared: Shared, item: Any, index: int, label: str) -> Task:
        ref = self._remote.remote(self._expected, 1, fn, shared, item)
        return _RayTask(ref, index, label, self._ray)

    def wait(self, tasks: Sequence[Task]) -> list[Task]:
        by_ref = {t.ref: t for t in tasks if isinstance(t, _RayTask)}
        if not by_ref:
            return []
        refs = list(by_ref)
        ready, rest = self._ray.wait(refs, num_returns=1)
        if rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready = ready + more
        done = set(ready)
        return [t for t in tasks if isinstance(t, _RayTask) and t.ref in done]

    def cancel(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            if isinstance(task, _RayTask):
                try:
                    self._ray.cancel(task.ref)
                except Exception:  # noqa: BLE001 - already finished, or the cluster is going away
                    pass

    def close(self, abandon: bool = False) -> None:
        self._shared.clear()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
