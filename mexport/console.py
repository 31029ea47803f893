"""Converters that keep quiet: third-party output goes to a log file, mexport's own to the terminal.

litert-torch, TensorFlow, ai-edge-quantizer, onnxruntime, coremltools and ExecuTorch print stage
timers, C++ log lines, progress bars and warnings, from Python and from C++ (straight to file
descriptors 1 and 2, where no ``contextlib.redirect_stdout`` reaches). While a
:class:`ConverterOutput` is active, everything written to fd 1 and 2, to ``sys.stdout`` and
``sys.stderr``, by Python warnings and by logging handlers that wrote there, lands in its log file;
with ``echo=True`` it is also copied to the terminal as it comes (``-v``). mexport's own progress
and messages reach the terminal through :func:`terminal`, which writes to where stderr pointed
before the capture began.

POSIX only, like the converters mexport drives. Not thread-safe: one capture at a time, from the
thread that runs the export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

_active: list["ConverterOutput"] = []

# What a converter's failure looks like in its own output: a Python exception's line, an absl/glog
# error line (E1206 ...), an ERROR line, an op "not supported", litert-torch's failed stage
# ("[ FAIL] LiteRT-Torch Convert > Lower to MLIR: coarse"). Not any line with "fail" or "could
# not" in it: coremltools and torchao print such notices on every import ("Failed to load
# _MLModelProxy", "Could not load this library"), and they say nothing about the failure.
_MATTERS = re.compile(r"^[\w.]*(?:Error|Exception)\b|^E\d{4} |^ERROR\b|^error:|not supported|unsupported op|\[ ?FAIL\]")


def terminal() -> TextIO | None:
    """Where mexport's own output goes while a capture is active: stderr as it was before the
    capture began; None when none is active."""
    return _active[-1].terminal if _active else None


class TerminalStream(io.TextIOBase):
    """A stream that writes to ``default`` (stderr when it was made), or to the active capture's
    :func:`terminal`: for objects made before a capture begins (rich's Console) that must keep
    reaching the terminal during it."""

    def __init__(self, default: TextIO) -> None:
        super().__init__()
        self._default = default

    def _target(self) -> TextIO:
        return terminal() or self._default

    def write(self, s: str) -> int:
        return self._target().write(s)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        try:
            return self._target().isatty()
        except (AttributeError, ValueError):
            return False

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"


def _real_fd(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation, OSError):
        return None


class ConverterOutput:
    """``with ConverterOutput(path):`` third-party output goes to ``path`` (appended), and with
    ``echo`` to the terminal too. Restores every stream on exit, whatever happened."""

    def __init__(self, path: str | Path, echo: bool = False) -> None:
        self.path = Path(path)
        self.echo = echo
        self.terminal: TextIO = sys.stderr
        self._saved_fds: dict[int, int] = {}
        self._streams: tuple[Any, Any] | None = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._root_handler: logging.Handler | None = None
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self._py: Any = None
        self._own_terminal = False

    # ------------------------------------------------------------------ entering

    def _terminal_stream(self) -> TextIO:
        """stderr as it is now, kept writable after fd 2 is redirected: a duplicate of its file
        descriptor when it writes to fd 1 or 2, else the object itself (a test runner's buffer)."""
        err = sys.stderr
        fd = _real_fd(err)
        if fd in (1, 2):
            self._own_terminal = True
            return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(err, "encoding", None) or "utf-8", errors="replace")
        return err

    def __enter__(self) -> "ConverterOutput":
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        self.terminal = self._terminal_stream()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        log = self._log = open(self.path, "ab", buffering=0)
        if self.echo:
            read, write = os.pipe()
            self._thread = threading.Thread(target=self._tee, args=(read, log), daemon=True)
            self._thread.start()
            target = write
        else:
            target = log.fileno()
        for fd in (1, 2):
            self._saved_fds[fd] = os.dup(fd)
            os.dup2(target, fd)
        if self.echo:
            os.close(target)  # fd 1 and 2 hold the pipe now; the tee ends when they let go of it
        # Python-level writers: sys.stdout/sys.stderr may be objects that do not write to fd 1/2
        # (a test runner's buffers); every write to them goes to the log too.
        py = self._py = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        self._streams = (sys.stdout, sys.stderr)
        for handler in _stream_handlers():
            if handler.stream in self._streams:
                self._handlers.append((handler, handler.stream))
                handler.stream = py  # not setStream(): it flushes the old stream, which may be closed
        root = logging.getLogger()
        if not any(h in root.handlers for h, _ in self._handlers):
            # Records that would reach no stream of the terminal's (logging's last resort, or a
            # test runner's capture) go to the log too. Its presence also keeps logging.warning()
            # from installing a handler of its own on the stream that is closed at the end.
            self._root_handler = logging.StreamHandler(py)
            self._root_handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
            root.addHandler(self._root_handler)
        sys.stdout = sys.stderr = py
        _active.append(self)
        return self

    def _tee(self, read: int, log) -> None:
        """Copy the pipe to the log and to the terminal until every writer has closed it."""
        term_fd = _real_fd(self.terminal)
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                log.write(chunk)
                with contextlib.suppress(Exception):
                    if term_fd is not None:
                        os.write(term_fd, chunk)
                    else:
                        self.terminal.write(chunk.decode("utf-8", "replace"))
                        self.terminal.flush()

    # ------------------------------------------------------------------ leaving

    def __exit__(self, *exc: object) -> None:
        if _active and _active[-1] is self:
            _active.pop()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        if self._streams is not None:
            sys.stdout, sys.stderr = self._streams
        for handler, stream in self._handlers:
            handler.stream = stream
        self._handlers.clear()
        if self._root_handler is not None:
            logging.getLogger().removeHandler(self._root_handler)
            self._root_handler = None
        for handler in _stream_handlers():  # made during the capture, on a stream about to close
            if handler.stream is self._py:
                handler.stream = sys.__stderr__  # the process's stderr, where it would have written
        for fd, saved in self._saved_fds.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._saved_fds.clear()
        # The Python-level stream holds a duplicate of the pipe's write end: closed first, so that
        # the tee sees the pipe end; the log once the tee has copied everything into it.
        with contextlib.suppress(Exception):
            self._py.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self._log.close()
        if self._own_terminal:
            with contextlib.suppress(Exception):
                self.terminal.close()
        self._py = self._log = self._thread = None


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quote(path: str | Path, limit: int = 3) -> str:
    """The lines of a converter log that matter for an error message (the last ones that report an
    error), joined into one line; empty when the log reports none (mexport's own check failed)."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    picked = list(dict.fromkeys(ln for ln in lines if _MATTERS.search(ln)))[-limit:]
    return " | ".join(ln[:200] for ln in picked)
