"""The default executor: every task runs in this process, in submission order, on the objects themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mpcompile.execution.base import Executor, LocalShared, Shared, Task, TaskFn, local_error

_PENDING = object()


class _LocalTask(Task):
    def __init__(self, fn: TaskFn, shared: Shared, item: Any, index: int, label: str) -> None:
        super().__init__(index, label)
        self._call: tuple[TaskFn, Shared, Any] | None = (fn, shared, item)
        self._value: Any = _PENDING
        self._error: Exception | None = None

    def done(self) -> bool:
        return self._call is None

    def run(self) -> None:
        if self._call is None:
            return
        fn, shared, item = self._call
        self._call = None
        try:
            self._value = fn(shared.resolve(), item)
        except Exception as exc:  # noqa: BLE001 - re-raised by result() with the task's label
            self._error = exc

    def result(self) -> Any:
        self.run()
        if self._error is not None:
            raise local_error(self._error, self.label, self.index) from self._error
        return self._value


class SequentialExecutor(Executor):
    """Runs each task when its result is first waited for: no copies, no processes, today's threading."""

    kind = "sequential"
    workers = 1

    def share(self, value: Any) -> Shared:
        return LocalShared(value)

    def _submit(self, fn: TaskFn, shared: Shared, item: Any, index: int, label: str) -> Task:
        return _LocalTask(fn, shared, item, index, label)

    def wait(self, tasks: Sequence[Task]) -> list[Task]:
        if not tasks:
            return []
        first = tasks[0]
        if first.done():
            return [t for t in tasks if t.done()]
        assert isinstance(first, _LocalTask)
        first.run()  # in submission order: the one that would have run first
        return [first]

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[Task]:
        for task in tasks:
            if isinstance(task, _LocalTask):
                task.run()
            yield task

    def cancel(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            if isinstance(task, _LocalTask):
                task._call = None
