"""Writing a bundle reproducibly and reading one safely, as a zip or as a directory.

Writing: entries sorted, every timestamp 1980-01-01 00:00, permissions 0644, no directory entries,
no absolute paths, one compression level, so the same files give a byte-identical zip; written to
a temporary file beside the target and renamed, so a failure never leaves half a bundle.

Reading: every entry name is checked (zip-slip, symlinks, duplicates) before anything is read.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from .manifest import BundleError, safe_member

EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


def list_tree(root: Path) -> list[str]:
    """Every regular file under ``root`` as a sorted POSIX path relative to it."""
    out = []
    for p in root.rglob("*"):
        if p.is_symlink():
            raise BundleError(f"{p}: symbolic links are not allowed in a bundle")
        if p.is_file():
            out.append(p.relative_to(root).as_posix())
    return sorted(out)


def write_zip(staging: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in list_tree(staging):
                info = zipfile.ZipInfo(name, date_time=EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr carries the mode
                info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
                zf.writestr(info, (staging / name).read_bytes(), compresslevel=6)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move_dir(staging: Path, dest: Path) -> None:
    """Replace ``dest`` (absent, empty, or an earlier bundle) with ``staging`` by renames."""
    if dest.exists():
        if not dest.is_dir():
            raise BundleError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()) and not (dest / "manifest.json").is_file():
            raise BundleError(f"{dest} exists and is not a bundle; refusing to replace it")
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        try:
            os.replace(staging, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, dest)
    for p in [dest, *dest.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else FILE_MODE)


class BundleReader:
    """A bundle's files by bundle path, from a zip or a directory, with unsafe names refused."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if not self.path.exists():
            raise BundleError(f"bundle not found: {self.path}")
        if self.path.is_dir():
            self.names = list_tree(self.path)
            return
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise BundleError(f"{self.path}: not a readable zip file ({e})") from None
        names = []
        for info in self._zip.infolist():
            safe_member(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise BundleError(f"{self.path}: entry {info.filename!r} is a symbolic link; refusing it")
            if info.is_dir():
                continue
            names.append(info.filename)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise BundleError(f"{self.path}: duplicate entries {', '.join(dup[:3])}")
        self.names = sorted(names)

    def read(self, name: str) -> bytes:
        if name not in self.names:
            raise BundleError(f"{name}: missing from the bundle")
        if self._zip is None:
            return (self.path / name).read_bytes()
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:  # bad CRC or deflate data
            raise BundleError(f"{name}: cannot be read from the zip ({e})") from None

    def extract(self, dest: Path) -> Path:
        """The bundle's files under ``dest`` (names were checked on open); a directory bundle is
        used where it is."""
        if self._zip is None:
            return self.path
        for name in self.names:
            target = dest / name
            if not target.resolve().is_relative_to(dest.resolve()):
                raise BundleError(f"unsafe path in bundle: {name!r} (it would escape the target directory)")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read(name))
        return dest

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
