"""Progress for the CLI: a rich bar per stage on a terminal, one plain line per finished step
otherwise (logs, CI), nothing with ``--quiet`` or ``--json`` (scripts read stdout; they should not
have to filter stderr either).

Library code never prints. Long library calls take ``progress(stage, done, total, detail)`` and
``log(message)`` callbacks; a :class:`ProgressUI` is both. It writes to the terminal even while
the converters' output is sent to a log (:func:`mexport.console.terminal`).

Plain lines are few on purpose: one per finished step of a stage with few slow steps (a
conversion), one when a stage with many quick steps (photos checked) is done.
"""

from __future__ import annotations

import sys
from typing import Any

from .console import TerminalStream, terminal

# A stage with more steps than this prints one plain line when it is done, not one per step.
STEPS_PER_LINE = 3


class ProgressUI:
    """Use as a context manager around the library call; everything goes to stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        self._printed: dict[str, int] = {}  # plain lines: the last step printed per stage

    def __enter__(self) -> "ProgressUI":
        if not self.enabled:
            return self
        from rich.console import Console

        console = Console(file=TerminalStream(sys.stderr))
        if console.is_terminal:  # not a terminal (a pipe, a file, CI's log): plain lines instead
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            # No redirection of sys.stdout/sys.stderr into the bars: the console writes to stderr
            # itself (through TerminalStream), and a redirected stderr would feed it its own output.
            self._bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, redirect_stdout=False, redirect_stderr=False)
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
            # a step starting says nothing a log line would not; a finished one does, once
            if done > self._printed.get(stage, 0) and (total <= STEPS_PER_LINE or done == total):
                self._printed[stage] = done
                self.log(f"{stage} {done}/{total}" + (f": {detail}" if detail and total <= STEPS_PER_LINE else ""))
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
            out = terminal() or sys.stderr
            out.write(message + "\n")
            out.flush()

    def counter(self, stage: str, total: int):
        """A no-argument callback for library calls that report one finished item at a time."""
        done = 0

        def tick(detail: str = "") -> None:
            nonlocal done
            done += 1
            self(stage, done, total, detail)

        return tick
