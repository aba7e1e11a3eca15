"""A local process pool (``concurrent.futures.ProcessPoolExecutor``, spawned workers).

* Shared values are written once to a memory-mapped file (``shared.py``); a task carries
  only the file's key and path, and each worker loads a value on its first task that needs
  it and keeps it (a small LRU), so a model or cached activations cross to a worker once.
* Each worker's ONNX Runtime sessions use ``cores // workers`` intra-op threads (at least
  1), set by the pool's initializer; the parent keeps ORT's default.
* Workers never fork this process (its threads, its ORT state): they fork from a forkserver
  that imported numpy and ONNX Runtime once (where the OS has one), else they are spawned.
  They ignore SIGINT: Ctrl-C reaches the parent, which stops them.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from mpcompile.execution import shared as shared_file
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
    threads_per_worker,
    worker_died,
)

#: The shared values this worker process keeps loaded.
_CACHE = WorkerCache()


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_worker_threads(threads)


#: What a forkserver imports once, before it forks the workers (each then starts warm).
PRELOAD = ("numpy", "onnx", "onnxruntime", "mpcompile.ortsession", "mpcompile.execution.processes")


def default_start_method() -> str:
    """``forkserver`` where the OS has it (workers fork from a clean, single-threaded server that has
    imported numpy and ONNX Runtime once), else ``spawn``; never a plain ``fork`` of this process."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _context(method: str) -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(PRELOAD))  # no '__main__': the caller's script is not imported there
    return context


class SharedFile(Shared):
    """A handle on a value written by ``shared.dump``: a key and a path, a few bytes to pickle.

    ``released`` lists the values the parent released before this one: a worker drops them
    (and unmaps their pages) before loading this one.
    """

    def __init__(self, key: str, path: str, size: int, released: tuple[str, ...] = ()) -> None:
        self.key, self.path, self.size, self.released = key, path, size, released

    def resolve(self) -> Any:
        return _CACHE.get(self.key, lambda: shared_file.load(self.path), self.released)

    def __repr__(self) -> str:
        return f"<SharedFile {self.path} ({self.size:,} bytes)>"


class _PoolTask(Task):
    def __init__(self, future: cf.Future, index: int, label: str) -> None:
        super().__init__(index, label)
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        try:
            value = self.future.result()
        except BrokenProcessPool as exc:
            raise worker_died(self.label, self.index, f"{exc or 'the process pool broke'}; workers start as fresh "
                              "interpreters that import the main script, so a script that uses them must guard its "
                              "top level with if __name__ == '__main__':") from None
        except cf.CancelledError:
            raise worker_died(self.label, self.index, "cancelled") from None
        if isinstance(value, Failure):
            raise failure_error(value, self.label, self.index)
        return value


class ProcessExecutor(Executor):
    kind = "processes"

    def __init__(self, workers: int, *, threads: int | None = None, folder: str | os.PathLike | None = None,
                 start_method: str | None = None) -> None:
        super().__init__()
        self.start_method = start_method or default_start_method()
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self.threads = threads or threads_per_worker(workers)
        self._folder = Path(folder) if folder is not None else shared_file.default_folder()
        self._pool: cf.ProcessPoolExecutor | None = None
        self._files: dict[str, Path] = {}
        self._released: list[str] = []
        self._running: set[cf.Future] = set()

    def _ensure_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=_context(self.start_method),
                initializer=_init_worker, initargs=(self.threads,),
            )
        return self._pool

    def share(self, value: Any) -> Shared:
        key = f"{os.getpid()}-{uuid.uuid4().hex}"
        path = self._folder / f"mpcompile-shared-{key}.bin"
        try:
            size = shared_file.dump(value, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._files[key] = path
        return SharedFile(key, str(path), size, tuple(self._released[-64:]))

    def release(self, shared: Shared) -> None:
        if isinstance(shared, SharedFile):
            path = self._files.pop(shared.key, None)
            if path is not None:
                path.unlink(missing_ok=True)  # workers that mapped it keep their mapping until they drop it
                self._released.append(shared.key)

    def _submit(self, fn: TaskFn, shared: Shared, item: Any, index: int, label: str) -> Task:
        future = self._ensure_pool().submit(run_task, fn, shared, item)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return _PoolTask(future, index, label)

    def wait(self, tasks: Sequence[Task]) -> list[Task]:
        futures = {t.future: t for t in tasks if isinstance(t, _PoolTask)}
        done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
        return [t for t in tasks if isinstance(t, _PoolTask) and t.future in done]

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[Task]:
        by_future = {t.future: t for t in tasks if isinstance(t, _PoolTask)}
        for future in cf.as_completed(by_future):
            yield by_future[future]

    def cancel(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            if isinstance(task, _PoolTask):
                task.future.cancel()

    def close(self, abandon: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            running = list(self._running)
            for future in running:
                future.cancel()
            if abandon or any(not f.done() for f in running):
                # Results nobody wants (a failure, Ctrl-C, speculative work): stop our workers now.
                processes = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:
                    if process.is_alive():
                        process.terminate()
                for process in processes:
                    process.join(timeout=5)
            else:
                pool.shutdown(wait=True)
        self._running.clear()
        for path in self._files.values():
            path.unlink(missing_ok=True)
        self._files.clear()
