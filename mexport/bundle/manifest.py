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
MAX_MANIFEST = 16 << 20  # the reference model's is ~60 KB
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
    check_structure(m)
    return m


_HEX64 = re.compile(r"[0-9a-f]{64}")
TOLERANCE_BOUNDS = ("max_abs", "min_psnr_db", "max_mean_abs")
KINDS = {"fused": ("fused",), "pair": ("coarse", "refine")}


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise BundleError(f"{MANIFEST}: {what}")


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_number(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_structure(m: dict[str, Any]) -> None:
    """Every field a reader uses, with its type, before anything uses it: a manifest resealed with a
    valid self-checksum is still data from anywhere. The first problem is the error."""
    from ..spec import PipelineSpec

    files = m["files"]
    _need(isinstance(files, dict), "'files' must map each path to its sha256 and size")
    for name, f in files.items():
        safe_member(name)
        _need(isinstance(f, dict) and isinstance(f.get("sha256"), str) and _HEX64.fullmatch(f["sha256"]) is not None
              and _is_int(f.get("size")), f"files[{name!r}] must hold a sha256 (64 hex digits) and a size (an integer >= 0)")

    def a_file(v: Any, what: str) -> None:
        _need(isinstance(v, str) and v in files, f"{what} must name a file listed in 'files', got {v!r}")

    golden = m["golden"]
    _need(isinstance(golden, dict) and isinstance(golden.get("sets"), list),
          "'golden' must hold a list of sets with id, shape_nchw and photos")
    sets: dict[str, dict[str, Any]] = {}
    for s in golden["sets"]:
        _need(isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] not in sets,
              "each golden set needs a unique string id")
        shape = s.get("shape_nchw")
        _need(isinstance(shape, list) and len(shape) == 4 and all(_is_int(d, 1) for d in shape),
              f"golden set {s['id']!r}: shape_nchw must be 4 positive integers")
        _need(isinstance(s.get("photos"), dict), f"golden set {s['id']!r}: 'photos' must map names to files")
        for name, ph in s["photos"].items():
            _need(isinstance(ph, dict), f"golden set {s['id']!r} photo {name!r} must be an object")
            a_file(ph.get("input_nchw"), f"golden set {s['id']!r} photo {name!r} input_nchw")
        sets[s["id"]] = s

    arts = m["artifacts"]
    _need(isinstance(arts, list) and bool(arts), "'artifacts' must be a non-empty list")
    ids = set()
    for art in arts:
        lacking = [k for k in ARTIFACT_FIELDS if not isinstance(art, dict) or k not in art]
        _need(not lacking, f"an artifact entry lacks {', '.join(lacking)}")
        aid = art["id"]
        _need(isinstance(aid, str) and aid not in ids, f"artifact ids must be unique strings, got {aid!r}")
        ids.add(aid)
        for k in ("format", "precision"):
            _need(isinstance(art[k], str), f"artifact {aid!r}: {k} must be a string")
        _need(art["kind"] in KINDS, f"artifact {aid!r}: kind must be one of {', '.join(KINDS)}, got {art['kind']!r}")
        models = art["models"]
        _need(isinstance(models, dict) and sorted(models) == sorted(KINDS[art["kind"]]),
              f"artifact {aid!r}: 'models' must map {' and '.join(KINDS[art['kind']])} to their files")
        for role, model in models.items():
            _need(isinstance(model, dict) and isinstance(model.get("file"), str), f"artifact {aid!r} role {role!r} names no file")
            safe_member(model["file"])
            _need(any(f == model["file"] or f.startswith(model["file"] + "/") for f in files),
                  f"artifact {aid!r} names {model['file']}, which is not in the bundle")
            _need(isinstance(model.get("directory", False), bool), f"artifact {aid!r} role {role!r}: 'directory' must be true or false")
        pipeline = art["pipeline"]
        _need(isinstance(pipeline, dict) and isinstance(pipeline.get("spec"), dict), f"artifact {aid!r}: pipeline.spec must be an object")
        try:
            PipelineSpec.from_dict(pipeline["spec"])
        except (TypeError, ValueError) as e:
            raise BundleError(f"{MANIFEST}: artifact {aid!r}: pipeline.spec is not a valid spec ({e})") from None
        tol = art["tolerance"]
        _need(isinstance(tol, dict) and isinstance(tol.get("numerics"), str) and isinstance(tol.get("why", ""), str),
              f"artifact {aid!r}: tolerance must name its numerics")
        unknown = sorted(set(tol) - {"numerics", "why", *TOLERANCE_BOUNDS})
        _need(not unknown, f"artifact {aid!r}: unknown tolerance fields {', '.join(map(str, unknown))}")
        bounds = [k for k in TOLERANCE_BOUNDS if k in tol]
        _need(bool(bounds) and all(_is_number(tol[k]) and tol[k] >= 0 for k in bounds),
              f"artifact {aid!r}: tolerance needs at least one of {', '.join(TOLERANCE_BOUNDS)}, each a finite number >= 0")
        _need(isinstance(art["golden"], list), f"artifact {aid!r}: 'golden' must be a list")
        for g in art["golden"]:
            _need(isinstance(g, dict) and g.get("set") in sets, f"artifact {aid!r} has a golden entry without a known set")
            _need(g.get("photo") in sets[g["set"]]["photos"], f"artifact {aid!r}: golden photo {g.get('photo')!r} is not in set {g['set']!r}")
            a_file(g.get("expected"), f"artifact {aid!r} golden expected")
            shape = g.get("shape")
            _need(isinstance(shape, list) and len(shape) == 4 and all(_is_int(d, 1) for d in shape),
                  f"artifact {aid!r}: golden shape must be 4 positive integers")
