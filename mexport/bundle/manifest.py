"""The bundle's manifest: its versioned schema, checksums, and the checks every reader makes.

``manifest.json`` lists every other file in the bundle with its sha256 and size, and carries a
checksum of itself (``manifest_sha256``: the sha256 of the file's bytes with that value written as
64 zeros), so one changed byte anywhere, the manifest included, is caught and named.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InputError

SCHEMA = 1
FORMAT = "mexport-bundle"
MANIFEST = "manifest.json"
_ZERO = "0" * 64
_SELF = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')
REQUIRED = ("format", "schema", "mexport_version", "files", "artifacts", "golden", "manifest_sha256")
ARTIFACT_FIELDS = ("id", "format", "precision", "kind", "models", "pipeline", "tolerance", "golden")


class BundleError(InputError):
    """A bundle is malformed, tampered with, incomplete or from a newer mexport (exit code 2)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(files: dict[str, str], prefix: str) -> str:
    """One digest for a directory artifact (an ``.mlpackage``): sha256 over its files' sorted
    ``relative/path<NUL>sha256<LF>`` lines, paths relative to the directory."""
    lines = sorted(f"{p[len(prefix) + 1:]}\0{d}\n" for p, d in files.items() if p.startswith(prefix + "/"))
    return sha256_bytes("".join(lines).encode())


def dumps(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes with the self-checksum filled in."""
    body = dict(manifest, manifest_sha256=_ZERO)
    raw = (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
    return raw.replace(f'"manifest_sha256": "{_ZERO}"'.encode(), f'"manifest_sha256": "{sha256_bytes(raw)}"'.encode(), 1)


def safe_member(name: str) -> str:
    """A bundle path must stay inside the bundle: relative, POSIX, no '..', no drive, no NUL."""
    p = PurePosixPath(name)
    if (not name or "\\" in name or "\0" in name or p.is_absolute() or re.match(r"^[A-Za-z]:", name)
            or any(part in ("..", "") for part in name.rstrip("/").split("/"))):
        raise BundleError(f"unsafe path in bundle: {name!r} (it would escape the target directory)")
    return name


def loads(raw: bytes) -> dict[str, Any]:
    """Parse and check a manifest: format, schema version (newer is refused), self-checksum, fields."""
    try:
        m = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{MANIFEST}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST}: not a mexport bundle manifest (format is not {FORMAT!r})")
    schema = m.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise BundleError(f"{MANIFEST}: schema must be an integer, got {schema!r}")
    if schema > SCHEMA:
        raise BundleError(f"{MANIFEST}: schema {schema} is newer than this mexport reads ({SCHEMA}); upgrade mexport")
    if schema < 1:
        raise BundleError(f"{MANIFEST}: schema {schema} is not a valid schema version")
    found = _SELF.findall(raw)
    if len(found) != 1:
        raise BundleError(f"{MANIFEST}: its self-checksum (manifest_sha256) is missing or malformed")
    if sha256_bytes(_SELF.sub(f'"manifest_sha256": "{_ZERO}"'.encode(), raw, count=1)) != found[0].decode():
        raise BundleError(f"{MANIFEST}: checksum mismatch (the manifest was modified after it was written)")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise BundleError(f"{MANIFEST}: missing fields {', '.join(missing)}")
    if not isinstance(m["files"], dict) or not all(isinstance(v, dict) and "sha256" in v and "size" in v for v in m["files"].values()):
        raise BundleError(f"{MANIFEST}: 'files' must map each path to its sha256 and size")
    for name in m["files"]:
        safe_member(name)
    golden = m["golden"]
    if not isinstance(golden, dict) or not isinstance(golden.get("sets"), list) or not all(
            isinstance(s, dict) and {"id", "shape_nchw", "photos"} <= set(s) for s in golden["sets"]):
        raise BundleError(f"{MANIFEST}: 'golden' must hold a list of sets with id, shape_nchw and photos")
    if not isinstance(m["artifacts"], list) or not m["artifacts"]:
        raise BundleError(f"{MANIFEST}: 'artifacts' must be a non-empty list")
    set_ids = {s["id"] for s in golden["sets"]}
    for art in m["artifacts"]:
        lacking = [k for k in ARTIFACT_FIELDS if not isinstance(art, dict) or k not in art]
        if lacking:
            raise BundleError(f"{MANIFEST}: an artifact entry lacks {', '.join(lacking)}")
        for g in art["golden"]:
            if not isinstance(g, dict) or g.get("set") not in set_ids or "expected" not in g or "shape" not in g:
                raise BundleError(f"{MANIFEST}: artifact {art['id']!r} has a golden entry without a known set, expected file or shape")
        for role, model in art["models"].items():
            if not isinstance(model, dict) or "file" not in model:
                raise BundleError(f"{MANIFEST}: artifact {art['id']!r} role {role!r} names no file")
            if not any(f == model["file"] or f.startswith(model["file"] + "/") for f in m["files"]):
                raise BundleError(f"{MANIFEST}: artifact {art.get('id')!r} names {model['file']}, which is not in the bundle")
    return m
