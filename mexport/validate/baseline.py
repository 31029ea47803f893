"""Baselines: what an earlier run measured, per artifact identity and per photo.

An artifact is keyed by what it is (its provenance: model, weights, target, precision, and which
graph: fused, coarse+refine), not by the directory it was written to, so ``-o build/int8`` finds
the baseline that ``-o out/onnx-int8`` made. The recipe and calibration are not part of the key on
purpose: a worse recipe for the same model is exactly what the baseline gates must catch.

Each photo is stored with a hash of its content (pixels, and the ground truth alpha and trimap), so
a run compares only the photos both runs saw, says how many, and refuses a baseline whose photo is
gone from ``--data`` or has changed: a silent skip would turn into a gate that passes on nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA = 2
PHOTO_NUMBERS = ("psnr", "sad", "mse", "grad", "conn")
SUMMARY_NUMBERS = ("median_psnr", "min_psnr", "p50_ms")


def identity(artifact) -> dict[str, str]:
    p = artifact.provenance
    return {"model": p.model, "weights_sha256": p.weights_sha256, "target": artifact.target, "precision": p.precision,
            "kind": artifact.kind}


def key(ident: dict[str, str]) -> str:
    """Readable and unique: ``u2netp-refine@1a2b3c4d5e6f onnx int8 fused``."""
    return f"{ident['model']}@{ident['weights_sha256'][:12]} {ident['target']} {ident['precision']} {ident['kind']}"


def photo_sha256(sample) -> str:
    h = hashlib.sha256()
    for arr in (sample.photo, sample.alpha, sample.trimap):
        if arr is None:
            h.update(b"-")
        else:
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def load(path: Path) -> dict[str, Any]:
    """The baseline file, every field checked (and "inf"/"nan", as reports write them, made floats):
    it is read before any artifact runs, so a bad one fails in a second, not after the validation."""
    from ..io import read_json

    path = Path(path)
    d = read_json(path, "baseline", f"baseline not found: {path} (create it with --update-baseline)")
    if not isinstance(d, dict):
        raise InputError(f"baseline {path}: not a baseline (a JSON object with schema and artifacts), got a {type(d).__name__}")
    unknown = sorted(set(d) - {"schema", "artifacts"})
    if unknown:  # another file of mexport's (a recipe, a report) given as the baseline
        raise InputError(f"baseline {path}: unknown fields {unknown}; a baseline holds schema and artifacts")
    if d.get("schema") == 1:
        raise InputError(f"baseline {path} has schema 1 (means keyed by directory name), which cannot be matched per photo: "
                         "make it again with --update-baseline")
    if d.get("schema") != SCHEMA:
        raise InputError(f"baseline {path} has schema {d.get('schema')!r}, expected {SCHEMA}")
    arts = d.get("artifacts", {})
    if not isinstance(arts, dict):
        raise InputError(f"baseline {path}: 'artifacts' must map artifact identities to their results, got a {type(arts).__name__}")
    for k, e in arts.items():
        where = f"baseline {path}: artifacts[{k!r}]"
        if not isinstance(e, dict):
            raise InputError(f"{where} must be an object, got {e!r}")
        ident = e.get("identity")
        if not isinstance(ident, dict) or not all(isinstance(ident.get(f), str) for f in ("model", "weights_sha256", "target",
                                                                                          "precision", "kind")):
            raise InputError(f"{where}.identity must name model, weights_sha256, target, precision and kind")
        if key(ident) != k:
            raise InputError(f"{where}: the key does not match its identity (expected {key(ident)!r}); edited by hand?")
        summary = e.setdefault("summary", {})
        if not isinstance(summary, dict):
            raise InputError(f"{where}.summary must be an object")
        for n in SUMMARY_NUMBERS:
            if n in summary:
                summary[n] = _number(summary[n], f"{where}.summary.{n}")
        photos = e.get("photos")
        if not isinstance(photos, dict) or not photos:
            raise InputError(f"{where}.photos must map photo names to their results")
        for name, row in photos.items():
            if not isinstance(row, dict) or not isinstance(row.get("sha256"), str):
                raise InputError(f"{where}.photos[{name!r}] must be an object with the photo's sha256")
            for n in PHOTO_NUMBERS:
                if n in row:
                    row[n] = _number(row[n], f"{where}.photos[{name!r}].{n}")
    return d


def _number(v: Any, what: str) -> float:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{what} must be a number, got {v!r}")
    return float(v)


def match(base: dict[str, Any], artifacts, run_hashes: dict[str, str], available: set[str], data: str,
          path: Path) -> dict[str, tuple[dict | None, str | None]]:
    """Each artifact's baseline entry, checked against this run's photos before anything runs:
    label -> (entry with its ``key`` and ``n_photos``, None) or (None, why there is none). A baseline photo that is
    not in --data at all, or whose content differs, is an error; one that --only left out is not
    compared (a subset run), and the gate says how many photos matched."""
    out: dict[str, tuple[dict | None, str | None]] = {}
    arts = base.get("artifacts", {})
    for a in artifacts:
        k = key(identity(a))
        e = arts.get(k)
        if e is None:
            have = "; ".join(arts) or "nothing"
            out[a.label] = (None, f"no baseline for {k} (the baseline holds: {have}); a new model, weights, target or "
                                  "precision needs --update-baseline")
            continue
        missing = sorted(set(e["photos"]) - available)
        if missing:
            raise InputError(f"baseline {path}: {k} was measured on {', '.join(missing)}, which {data} does not have; "
                             "give the same --data, or make the baseline again with --update-baseline")
        changed = sorted(n for n in e["photos"] if n in run_hashes and e["photos"][n]["sha256"] != run_hashes[n])
        if changed:
            raise InputError(f"baseline {path}: photo {', '.join(changed)} in {data} is not the one the baseline measured "
                             "(its pixels or ground truth changed); make the baseline again with --update-baseline")
        out[a.label] = ({**e, "key": k, "n_photos": len(e["photos"])}, None)
    return out


def entry(a, ident: dict[str, str], hashes: dict[str, str], data: str) -> dict[str, Any]:
    from ..io import jsonable

    photos = {}
    for r in a.photos:
        row = {"sha256": hashes[r["photo"]], "psnr": r["psnr"]}
        row.update({n: r["gt"][n] for n in PHOTO_NUMBERS if n in r.get("gt", {})})
        photos[r["photo"]] = row
    summary = {n: a.summary[n] for n in ("median_psnr", "min_psnr") if n in a.summary}
    if a.latency and "p50_ms" in a.latency:
        summary["p50_ms"] = a.latency["p50_ms"]
    return jsonable({"identity": ident, "label": a.label, "data": data, "summary": summary, "photos": photos})


def load_for_update(path: Path) -> dict[str, Any]:
    """What ``--update-baseline`` writes into, read before anything runs: the entries of artifacts
    not in this run are kept. A schema-1 baseline (means keyed by directory) is replaced; anything
    else that is not a baseline (a recipe given by mistake) is refused, never overwritten."""
    path = Path(path)
    if not path.exists():
        return {"schema": SCHEMA, "artifacts": {}}
    try:
        return load(path)
    except InputError:
        try:
            old = json.loads(path.read_bytes())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("schema") == 1 and set(old) <= {"schema", "artifacts"}:
            return {"schema": SCHEMA, "artifacts": {}}
        raise


def write(old: dict[str, Any], reports, artifacts, hashes: dict[str, str], data: str, path: Path) -> None:
    """This run's artifacts replace their own entries in ``old`` (:func:`load_for_update`); other
    artifacts' entries are kept. Written atomically (mexport.io)."""
    from ..io import atomic_write_bytes, jsonable

    d = {"schema": SCHEMA, "artifacts": dict(old.get("artifacts", {}))}
    by_label = {a.label: a for a in artifacts}
    for rep in reports:
        ident = identity(by_label[rep.label])
        d["artifacts"][key(ident)] = entry(rep, ident, hashes, data)
    d["artifacts"] = dict(sorted(d["artifacts"].items()))
    atomic_write_bytes(Path(path), (json.dumps(jsonable(d), indent=2, sort_keys=True) + "\n").encode())
