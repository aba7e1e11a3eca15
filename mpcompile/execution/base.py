"""The executor contract: share data once, submit small tasks, collect results by index.

A *task* is ``fn(value, item)``: ``fn`` a module-level function (sent by reference),
``value`` the object behind a ``Shared`` handle (a model, a plan, cached activations: sent
to each worker once, never per task), ``item`` the task's own small input (a layer name, a
candidate and a range of batches). Results come back in submission order whatever the
order of completion, so a run is identical on any executor and any number of workers.

Failures name the task: ``TaskError`` when the task raised a user error (an
``MpcompileError``, exit code 2), ``TaskCrash`` for anything else (a bug: it keeps the
worker's traceback).
"""

from __future__ import annotations

import abc
import collections
import os
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from mpcompile.errors import InternalError, MpcompileError

TaskFn = Callable[[Any, Any], Any]

# ============================================================================ worker state
#: Set in a worker process (by the pool's initializer, or by the Ray task wrapper): the ONNX
#: Runtime intra-op threads each session of this worker may use. ``None`` outside a worker.
_WORKER: dict[str, Any] = {"threads": None}


def worker_threads() -> int | None:
    """The intra-op thread budget of this worker process; ``None`` in the main process (ORT's default)."""
    return _WORKER["threads"]


def set_worker_threads(threads: int | None) -> None:
    _WORKER["threads"] = threads


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Cores / workers (at least 1): two workers on two cores never oversubscribe."""
    return max(1, available_cores() // max(1, workers))


# ============================================================================ failures
class TaskFailure(Exception):
    """A task failed; ``label`` names its input (e.g. ``sensitivity of layer '/conv1/Conv'``)."""

    def __init__(self, message: str, *, label: str, index: int, error_type: str, remote_traceback: str | None = None):
        super().__init__(message)
        self.label = label
        self.index = index
        self.error_type = error_type
        self.remote_traceback = remote_traceback


class TaskError(TaskFailure, MpcompileError):
    """The task raised a user error (bad input found while running it): one line, exit code 2."""


class TaskCrash(TaskFailure, InternalError):
    """The task raised anything else, or its worker died: a bug, shown with the worker's traceback."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in another process (chained as ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class Failure:
    """What a worker sends back instead of a result when the task raised: plain strings, always picklable."""

    def __init__(self, exc: BaseException) -> None:
        self.type = type(exc).__name__
        self.message = str(exc)
        self.user_error = isinstance(exc, MpcompileError)
        self.exit_code = getattr(exc, "exit_code", 2)
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def failure_error(failure: Failure, label: str, index: int) -> TaskFailure:
    if failure.user_error:
        err: TaskFailure = TaskError(f"{label}: {failure.message}", label=label, index=index, error_type=failure.type,
                                     remote_traceback=failure.traceback)
        err.exit_code = failure.exit_code  # type: ignore[attr-defined]
    else:
        err = TaskCrash(f"{label} failed: {failure.type}: {failure.message}", label=label, index=index,
                        error_type=failure.type, remote_traceback=failure.traceback)
    err.__cause__ = RemoteTraceback(failure.traceback)
    return err


def local_error(exc: Exception, label: str, index: int) -> TaskFailure:
    """A task that raised in this process: the same error types as from a worker, chained to the original."""
    if isinstance(exc, MpcompileError):
        err: TaskFailure = TaskError(f"{label}: {exc}", label=label, index=index, error_type=type(exc).__name__)
        err.exit_code = exc.exit_code  # type: ignore[attr-defined]
    else:
        err = TaskCrash(f"{label} failed: {type(exc).__name__}: {exc}", label=label, index=index,
                        error_type=type(exc).__name__)
    return err


def worker_died(label: str, index: int, detail: str) -> TaskCrash:
    return TaskCrash(f"{label} failed: its worker died ({detail})", label=label, index=index, error_type="WorkerDied")


def run_task(fn: TaskFn, shared: Shared, item: Any) -> Any:
    """The body of every remote task: resolve the shared value (cached per worker), run ``fn``, catch its failure."""
    try:
        return fn(shared.resolve(), item)
    except Exception as exc:  # noqa: BLE001 - reported to the caller with the task's label
        return Failure(exc)


# ============================================================================ handles
class Shared(abc.ABC):
    """A value sent to the workers once; tasks receive the handle and resolve it on the worker."""

    @abc.abstractmethod
    def resolve(self) -> Any:
        """The value, on the worker (loaded on first use, then cached for the worker's lifetime)."""


class LocalShared(Shared):
    """The value itself (the sequential executor: nothing is copied)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def resolve(self) -> Any:
        return self.value


class Task(abc.ABC):
    """One submitted task. ``result()`` returns its value or raises its ``TaskFailure``."""

    def __init__(self, index: int, label: str) -> None:
        self.index = index
        self.label = label

    @abc.abstractmethod
    def done(self) -> bool: ...

    @abc.abstractmethod
    def result(self) -> Any: ...


# ============================================================================ executor
class Executor(abc.ABC):
    """Runs tasks sequentially, on a local process pool, or on a Ray cluster.

    ``workers`` is how many tasks run at once. Use as a context manager (``close()`` stops
    the workers and removes shared data); one executor can serve many ``map`` calls and
    many shared values (sensitivity, then the auto search, then the next model).
    """

    kind: str = "?"
    workers: int = 1

    def __init__(self) -> None:
        self._count = 0

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(abandon=exc[0] is not None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}, {self.workers} worker(s)>"

    def describe(self) -> str:
        return "sequential" if self.kind == "sequential" else f"{self.kind}, {self.workers} workers"

    # -- what each backend provides
    @abc.abstractmethod
    def share(self, value: Any) -> Shared:
        """Send ``value`` to the workers once (pickled with out-of-band arrays); tasks get the handle."""

    def release(self, shared: Shared) -> None:
        """The parent no longer needs ``shared`` (workers drop it when their cache turns over)."""

    @abc.abstractmethod
    def _submit(self, fn: TaskFn, shared: Shared, item: Any, index: int, label: str) -> Task: ...

    @abc.abstractmethod
    def wait(self, tasks: Sequence[Task]) -> list[Task]:
        """Block until at least one of ``tasks`` is done; return the done ones (in ``tasks`` order)."""

    def cancel(self, tasks: Iterable[Task]) -> None:
        """Give up on tasks whose results are no longer wanted (running ones may still finish)."""

    def close(self, abandon: bool = False) -> None:
        """Stop the workers (``abandon``: without waiting for running tasks) and remove shared data."""

    # -- common
    def submit(self, fn: TaskFn, shared: Shared, item: Any, *, label: str = "") -> Task:
        index = self._count
        self._count += 1
        return self._submit(fn, shared, item, index, label or f"task {index}")

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[Task]:
        """Yield ``tasks`` as they finish (any order)."""
        pending = {id(t): t for t in tasks}
        while pending:
            for task in self.wait(list(pending.values())):
                del pending[id(task)]
                yield task

    def map(self, fn: TaskFn, shared: Shared, items: Sequence[Any], *, labels: Sequence[str] | None = None,
            progress: Any = None) -> list[Any]:
        """``[fn(value, item) for item in items]``, the results in ``items`` order.

        ``progress`` (anything with ``advance(n)``) is advanced as results arrive, from
        whichever worker. On a failure the tasks after it are cancelled, the ones before it
        finish, and the first failing task in ``items`` order is raised: the one a sequential
        run reports.
        """
        labels = list(labels) if labels is not None else [f"task {i}" for i in range(len(items))]
        tasks = [self.submit(fn, shared, item, label=label) for item, label in zip(items, labels)]
        position = {id(t): i for i, t in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        try:
            for task in self.as_completed(tasks):
                try:
                    results[position[id(task)]] = task.result()
                except TaskFailure as failure:
                    first = self._first_failure(tasks, position[id(task)], failure)
                    raise first from first.__cause__
                if progress is not None:
                    progress.advance(1)
        except BaseException:
            self.cancel(t for t in tasks if not t.done())
            raise
        return results

    def _first_failure(self, tasks: Sequence[Task], failed: int, failure: TaskFailure) -> TaskFailure:
        """``failure`` at ``failed``, or a failure of an earlier task (those are all started: submission order)."""
        self.cancel(t for t in tasks[failed + 1:] if not t.done())
        earlier = list(tasks[:failed])
        for _ in self.as_completed([t for t in earlier if not t.done()]):
            pass
        for task in earlier:
            try:
                task.result()
            except TaskFailure as other:
                return other
        return failure


class WorkerCache:
    """The shared values a worker keeps loaded, by key: the oldest goes first, released ones at once."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: collections.OrderedDict[str, Any] = collections.OrderedDict()

    def get(self, key: str, load: Callable[[], Any], released: Iterable[str] = ()) -> Any:
        for old in released:
            self._items.pop(old, None)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
