"""Progress for the CLI: a rich bar per stage on a terminal, one plain line per finished step
otherwise (logs, CI), nothing with ``--quiet`` or ``--json`` (scripts read stdout; they should not
have to filter stderr either).

Library code never prints. Long library calls take ``progress(stage, done, total, detail)`` and
``log(message)`` callbacks; a :class:`ProgressUI` is both.
"""

from __future__ import annotations

from typing import Any

import click


class ProgressUI:
    """Use as a context manager around the library call; everything goes to stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> "ProgressUI":
        if not self.enabled:
            return self
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:  # not a terminal (a pipe, a file, CI's log): plain lines instead
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def __call__(self, stage: str, done: int, total: int, detail: str = "") -> None:
        if not self.enabled:
            return
        if self._bars is None:
            if done > 0:  # a step starting says nothing a log line would not; a finished one does
                click.echo(f"{stage} {done}/{total}" + (f": {detail}" if detail else ""), err=True)
            return
        description = f"{stage}" + (f" [dim]{detail}[/dim]" if detail else "")
        if stage not in self._tasks:
            self._tasks[stage] = self._bars.add_task(description, total=total)
        self._bars.update(self._tasks[stage], completed=done, total=total, description=description)

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bars is not None:
            self._bars.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message, err=True)

    def counter(self, stage: str, total: int):
        """A no-argument callback for library calls that report one finished item at a time."""
        done = 0

        def tick(detail: str = "") -> None:
            nonlocal done
            done += 1
            self(stage, done, total, detail)

        return tick
