"""Writing a bundle reproducibly and reading one safely, as a zip or as a directory.

Writing: entries sorted, every timestamp 1980-01-01 00:00, permissions 0644, no directory entries,
no absolute paths, one compression level, so the same files give a byte-identical zip; written to
a temporary file beside the target and renamed (:mod:`mexport.io`), so a failure never leaves half
a bundle.

Reading: every entry name is checked (zip-slip, symlinks, duplicates) before anything is read, and
the sizes the zip declares are summed against :data:`MAX_UNPACKED` on opening: a small zip that
inflates to gigabytes (a zip bomb) is refused before one byte is inflated. Every read is bounded by
the size the caller expects (the manifest's), in chunks, so a lying header cannot make mexport
inflate more than that either.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from ..io import atomic_path
from .manifest import MANIFEST, MAX_MANIFEST, BundleError, loads, safe_member, tree_sha256

EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644  # inside the zip: fixed, so the bytes do not depend on the writer's umask
# What a bundle may unpack to, in all: the reference model's bundle for every target is ~60 MB.
MAX_UNPACKED = 2 << 30
CHUNK = 1 << 20


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
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in list_tree(staging):
                info = zipfile.ZipInfo(name, date_time=EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so external_attr carries the mode
                info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
                zf.writestr(info, (staging / name).read_bytes(), compresslevel=6)


def move_dir(staging: Path, dest: Path, backup: Path) -> None:
    """Replace ``dest`` (absent, empty, or an earlier bundle) with ``staging``, all or nothing
    (:func:`mexport.io.install`); the old bundle goes to ``backup`` and is removed with it."""
    from ..io import install

    if dest.exists():
        if not dest.is_dir():
            raise BundleError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()) and not (dest / "manifest.json").is_file():
            raise BundleError(f"{dest} exists and is not a bundle; refusing to replace it")
    install({dest: staging}, backup)


class BundleReader:
    """A bundle's files by bundle path, from a zip or a directory, with unsafe names and unpacked
    sizes over ``max_unpacked`` refused on opening."""

    def __init__(self, path: str | Path, max_unpacked: int = MAX_UNPACKED) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self.sizes: dict[str, int] = {}
        if not self.path.exists():
            raise BundleError(f"bundle not found: {self.path}")
        if self.path.is_dir():
            self.names = list_tree(self.path)
            self.sizes = {n: (self.path / n).stat().st_size for n in self.names}
        else:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
                raise BundleError(f"{self.path}: not a readable zip file ({e})") from None
            for info in self._zip.infolist():
                safe_member(info.filename)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise BundleError(f"{self.path}: entry {info.filename!r} is a symbolic link; refusing it")
                if info.is_dir():
                    continue
                if info.filename in self.sizes:
                    raise BundleError(f"{self.path}: duplicate entries {info.filename}")
                self.sizes[info.filename] = info.file_size
            self.names = sorted(self.sizes)
        total = sum(self.sizes.values())
        if total > max_unpacked:
            raise BundleError(f"{self.path}: its files unpack to {total / 2**30:.1f} GiB, over the {max_unpacked / 2**30:.1f} GiB "
                              "a bundle may hold (a zip bomb?); refusing to unpack it")

    def chunks(self, name: str, limit: int) -> Iterator[bytes]:
        """The file's bytes in chunks; more than ``limit`` bytes is an error (never read past it)."""
        if name not in self.sizes:
            raise BundleError(f"{name}: missing from the bundle")
        if self.sizes[name] > limit:
            raise BundleError(f"{name}: {self.sizes[name]} bytes, more than the {limit} expected")
        try:
            with (open(self.path / name, "rb") if self._zip is None else self._zip.open(name)) as f:
                left = limit + 1  # one byte more than allowed tells a lying header apart
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        return
                    left -= len(chunk)
                    if left <= 0:
                        raise BundleError(f"{name}: holds more than the {limit} bytes expected (a lying zip header?)")
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as e:  # bad CRC or deflate data
            raise BundleError(f"{name}: cannot be read from the bundle ({e})") from None

    def read(self, name: str, limit: int) -> bytes:
        return b"".join(self.chunks(name, limit))

    def sha256(self, name: str, limit: int) -> tuple[str, int]:
        """(sha256, size) of a file, streamed: a large file never sits in memory whole."""
        h, n = hashlib.sha256(), 0
        for chunk in self.chunks(name, limit):
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n

    def extract(self, dest: Path, sizes: dict[str, int]) -> Path:
        """The files named in ``sizes`` (the manifest's) under ``dest``, each read no further than its
        size there (names were checked on open); a directory bundle is used where it is."""
        if self._zip is None:
            return self.path
        for name in sorted(sizes):
            target = dest / name
            if not target.resolve().is_relative_to(dest.resolve()):
                raise BundleError(f"unsafe path in bundle: {name!r} (it would escape the target directory)")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                for chunk in self.chunks(name, sizes[name]):
                    f.write(chunk)
        return dest

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_files(reader: BundleReader, manifest: dict[str, Any]) -> None:
    """Every listed file present with its size and sha256; nothing unlisted; artifact digests agree.
    Sizes are compared before any file is read, and each read stops at the listed size."""
    listed = manifest["files"]
    for name in sorted(listed):
        if name not in reader.names:
            raise BundleError(f"{name}: missing from the bundle")
    extra = [n for n in reader.names if n not in listed and n != MANIFEST]
    if extra:
        raise BundleError(f"{extra[0]}: in the bundle but not in the manifest" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name in sorted(listed):
        if reader.sizes[name] != listed[name]["size"]:
            raise BundleError(f"{name}: {reader.sizes[name]} bytes in the bundle, the manifest lists {listed[name]['size']} "
                              "(the file was modified or damaged)")
    digests = {}
    for name in sorted(listed):
        digest, size = reader.sha256(name, listed[name]["size"])
        if size != listed[name]["size"] or digest != listed[name]["sha256"]:
            raise BundleError(f"{name}: checksum mismatch (the file was modified or damaged)")
        digests[name] = digest
    for art in manifest["artifacts"]:
        for m in art["models"].values():
            want = tree_sha256(digests, m["file"]) if m.get("directory") else digests.get(m["file"])
            if want != m.get("sha256"):
                raise BundleError(f"{m['file']}: its sha256 in the artifact entry {art['id']!r} does not match its files")


def check_integrity(path: str | Path, max_unpacked: int = MAX_UNPACKED) -> dict[str, Any]:
    """The manifest, after its schema and every file's size and sha256 were checked."""
    with BundleReader(path, max_unpacked) as reader:
        if MANIFEST not in reader.names:
            raise BundleError(f"{path}: no {MANIFEST}; not a mexport bundle")
        manifest = loads(reader.read(MANIFEST, MAX_MANIFEST))
        check_files(reader, manifest)
    return manifest
