"""How mexport writes: every output appears whole or not at all, with the user's umask, and never
two runs into one output at once.

- :func:`atomic_path` / :func:`atomic_write_bytes`: one file, written beside its target under a
  temporary name, flushed to disk, then renamed over the target.
- :func:`staging`: a directory beside an output for a multi-file result (an export, a bundle), and
  :func:`install`, which moves the staged files into place all together or puts back what it moved.
- :func:`output_lock`: one writer per output path; a second run fails at once, naming the output.

Everything temporary is named ``.mexport-*`` and held with an ``flock`` while its run lives. A run
killed with SIGKILL (or a machine that lost power) leaves such names behind; the next run that
writes into the same directory removes every one that no live process holds (:func:`clean_stale`),
and ``mexport validate`` never takes one for an artifact.

An OSError while writing (a full disk, a read-only or immutable directory, a permission) becomes
an :class:`~mexport.errors.InputError` naming the path: one line, exit 2, nothing left behind.
POSIX only (``fcntl``), like the converters mexport drives.

And one reader, :func:`read_json`, for the JSON files users hand in (recipes, baselines): every way
such a file can be unreadable is one line naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import InputError

PREFIX = ".mexport-"


def read_json(path: Path | str, what: str, not_found: str):
    """The parsed JSON of a user's file; ``what`` names it in errors ("recipe", "baseline"),
    ``not_found`` is the whole message for a missing file (what to do about it)."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(not_found) from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory, not a JSON file") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path} is not valid JSON: {e}") from None
# A temporary name younger than this is never cleaned: its creator may not have locked it yet.
STALE_AFTER_S = 10.0


def umask() -> int:
    """The process's umask: from /proc on Linux, else by setting it and back (not thread-safe, but
    mexport writes from one thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def cannot_write(path: Path | str, e: OSError) -> InputError:
    return InputError(f"cannot write {path}: {e.strerror or e}")


def check_target(path: str | Path, directory: bool) -> None:
    """Refuse, before any slow work, an output that cannot be written: a file where a directory
    goes or the other way round, or a path under a regular file."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise InputError(f"cannot write {path}: it exists and is not a directory")
    if not directory and path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    if directory and path.is_dir() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {path}: it is not writable")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: {parent} is not writable")


def _lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False when another open file holds it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def clean_stale(directory: Path) -> list[Path]:
    """Remove the ``.mexport-*`` entries of ``directory`` that no live run holds (left by a run that
    was killed); returns what it removed. Entries it cannot open or remove are left alone."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(PREFIX) or entry.is_symlink():
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not _lock(fd):
                continue  # a live run holds it
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def make_parents(directory: Path) -> list[Path]:
    """``mkdir -p`` that returns the directories it created, deepest first, for :func:`remove_empty`."""
    created = []
    d = Path(directory)
    while not d.exists():
        created.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(created: list[Path]) -> None:
    """Undo :func:`make_parents` where nothing was put in: a failed run leaves no empty directory."""
    for d in created:
        try:
            d.rmdir()
        except OSError:
            return


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends normally it is flushed,
    given the umask's mode and renamed over ``path``; when it raises, it is removed."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    created: list[Path] = []
    try:
        created = make_parents(path.parent)
        clean_stale(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{PREFIX}{path.name}.", suffix=".tmp")
    except OSError as e:
        remove_empty(created)
        raise cannot_write(path, e) from None
    _lock(fd)  # held until the rename: clean_stale in another run leaves it alone
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())  # mkstemp makes 0600; outputs are ordinary files
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        remove_empty(created)
        raise cannot_write(path, e) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        remove_empty(created)
        raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def fix_modes(root: Path) -> None:
    """Give a staged tree the modes the umask asks for (converters and ``mkdtemp`` make 0600/0700)."""
    fm, dm = file_mode(), dir_mode()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, dm if p.is_dir() else fm)


# Errors that say the disk, not the input, failed: a write into staging that raises one of these
# is reported as the output that could not be written.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@contextlib.contextmanager
def staging(parent: str | Path, what: str = "stage", out: str | Path | None = None) -> Iterator[Path]:
    """A new ``.mexport-<what>-*`` directory in ``parent`` (created if missing), held for the block
    and removed after it, whatever happens. Stale staging of killed runs in ``parent`` goes first.
    A full disk while writing into it is an InputError naming ``out`` (the output being made)."""
    parent = Path(parent)
    created: list[Path] = []
    try:
        created = make_parents(parent)
        clean_stale(parent)
        path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{what}-", dir=parent))
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        remove_empty(created)
        raise cannot_write(out or parent, e) from None
    _lock(fd)
    try:
        yield path
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise cannot_write(out or parent, e) from None
        raise
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
        remove_empty(created)  # nothing was installed there: a failed run leaves no new directory


def install(moves: dict[Path, Path | None], backup: Path) -> None:
    """Put every staged ``source`` at its ``target`` (``None``: remove the target), all or nothing.
    Existing targets move into ``backup`` (a directory on the same filesystem, e.g. inside the
    staging directory) first; if any step fails, every target gets back what it had."""
    done: list[tuple[Path, Path | None, Path | None]] = []  # (target, its old content's backup, moved in?)
    created: list[Path] = []
    current = next(iter(moves), Path())  # the output an error names
    try:
        for current, src in moves.items():
            if src is not None:
                fix_modes(src)
                for f in [src, *src.rglob("*")] if src.is_dir() else [src]:
                    if f.is_file():
                        _fsync(f)
        backup.mkdir(parents=True, exist_ok=True)
        for i, (target, src) in enumerate(sorted(moves.items(), key=lambda kv: str(kv[0]))):
            current, old = target, None
            if target.exists() or target.is_symlink():
                old = backup / f"{i}-{target.name}"
                os.replace(target, old)
            done.append((target, old, None))
            if src is not None:
                created += make_parents(target.parent)
                os.replace(src, target)
                done[-1] = (target, old, src)
    except BaseException as e:
        for target, old, moved in reversed(done):
            with contextlib.suppress(OSError):
                if moved is not None:
                    os.replace(target, moved)
                if old is not None:
                    os.replace(old, target)
        remove_empty(sorted(created, key=lambda d: len(d.parts), reverse=True))
        if isinstance(e, OSError):
            raise cannot_write(current, e) from None
        raise


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold ``.mexport-lock-<name>`` beside ``out`` for the block: two runs writing one output
    would interleave their files, so the second fails at once and names the output. The lock file
    is removed afterwards (filelock, torch's dependency, keeps it: litter beside every output)."""
    out = Path(out)
    lock = out.parent / f"{PREFIX}lock-{out.name}"
    created: list[Path] = []
    try:
        created = make_parents(out.parent)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
            if not _lock(fd):
                os.close(fd)
                raise InputError(f"another mexport run is writing {out}; wait for it to finish or choose another output")
            # The holder before us may have removed the file between our open and our lock: then
            # we hold a lock on a name nobody else can find, and must take the one on disk.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
    except BaseException as e:
        remove_empty(created)
        if isinstance(e, OSError):
            raise cannot_write(out, e) from None
        raise
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        remove_empty(created)


def jsonable(o):
    """``o`` with NaN/Inf written as strings ("nan", "inf", "-inf") and numpy scalars as Python
    numbers: JSON has no NaN, and every report mexport writes stays strict JSON."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf" if f < 0 else "nan")
    if isinstance(o, np.integer):
        return int(o)
    return o
