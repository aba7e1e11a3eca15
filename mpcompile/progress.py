"""Progress bars (rich) that stay quiet when disabled or when stderr is not a terminal.

A bar opened while another is shown (the kernel certificate inside conformance) becomes a line of
that display: rich allows one live display at a time.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass


class _RichBar:
    def __init__(self, progress, task) -> None:  # noqa: ANN001
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


#: the rich Progress shown now, if any
_shown: list = []


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str, unit: str = "samples") -> Iterator[_NullBar | _RichBar]:
    if not enabled or not sys.stderr.isatty():
        yield _NullBar()
        return
    if _shown:
        progress = _shown[-1]
        task = progress.add_task(description, total=total or None, unit=unit)
        try:
            yield _RichBar(progress, task)
        finally:
            progress.stop_task(task)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _Rate(TextColumn):
        def render(self, task):  # noqa: ANN001, ANN201
            speed = task.finished_speed or task.speed
            from rich.text import Text

            return Text(f"{speed:,.0f} {task.fields.get('unit', unit)}/s" if speed else "")

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(""),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        _shown.append(progress)
        try:
            task = progress.add_task(description, total=total or None, unit=unit)
            yield _RichBar(progress, task)
        finally:
            _shown.pop()
