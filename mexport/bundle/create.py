"""``mexport bundle create``: artifacts + manifest + golden vectors + model card, reproducibly.

Stages, in order, all in a staging directory beside the output: find the artifacts (the same
discovery as ``mexport validate``), gather their validation (an earlier ``validate --report`` or a
fidelity-only check now), describe every model file from the file itself, run every artifact on
the golden photos, write README.md, hash everything into manifest.json, then zip (or move) into
place with one rename.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import FidelityError, InputError
from .golden import GOLDEN_PHOTOS, TOLERANCES, tolerance_for, write_f32, write_png
from .manifest import FORMAT, MANIFEST, SCHEMA, dumps, sha256_file, tree_sha256

VALIDATION_DIR = "validation"


@dataclass
class BundleResult:
    path: Path
    manifest: dict[str, Any]


def _round(o: Any) -> Any:
    """Summaries rounded to what they mean (0.001 dB, 4 significant digits), so a last-bit
    difference between two runs cannot change the manifest's bytes. Non-finite values as strings."""
    if isinstance(o, dict):
        return {k: _round(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_round(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        if not math.isfinite(f):
            return "inf" if f > 0 else "-inf" if f < 0 else "nan"
        return float(f"{f:.4g}") if abs(f) < 1 else round(f, 3)
    if isinstance(o, np.integer):
        return int(o)
    return o


def _ident(artifact, bundle_dir: str) -> tuple[str, str]:
    """The artifact's id in the bundle (``onnx-fp32/fused``) and its file-name slug (``onnx-fp32.fused``)."""
    kind = "coarse+refine" if artifact.kind == "pair" else artifact.kind
    return f"{bundle_dir}/{kind}", f"{bundle_dir}.{kind.replace('+', '-')}"


def _bundle_dirs(artifacts) -> dict[Path, str]:
    """Each source directory -> ``<target>-<precision>`` (``-2``, ``-3`` on a clash), in argument order."""
    dirs: dict[Path, str] = {}
    for a in artifacts:
        src = next(iter(a.paths.values())).resolve().parent
        if src in dirs:
            continue
        base = f"{a.target}-{a.precision}"
        name, n = base, 1
        while name in dirs.values():
            n += 1
            name = f"{base}-{n}"
        dirs[src] = name
    return dirs


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=False)
    else:
        shutil.copyfile(src, dst)


def validation_from_report(report_dir: Path, artifacts, staging: Path) -> list[dict[str, Any]]:
    """For each artifact (matched by label), its results in an earlier ``mexport validate --report DIR`` run; the
    report's validate.json and report.html go into the bundle as they are."""
    from ..validate.validate import SCHEMA as VALIDATE_SCHEMA

    report_dir = Path(report_dir)
    vj, html = report_dir / "validate.json", report_dir / "report.html"
    for f in (vj, html):
        if not f.is_file():
            raise InputError(f"--report {report_dir}: {f.name} not found (write it with `mexport validate ... --report {report_dir}`)")
    try:
        d = json.loads(vj.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{vj}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("artifacts", []), list) or not all(isinstance(a, dict) for a in d.get("artifacts", [])):
        raise InputError(f"{vj}: not a validate.json report (an object with a list of artifact results)")
    if d.get("schema") != VALIDATE_SCHEMA:
        raise InputError(f"{vj}: schema {d.get('schema')!r}, this mexport reads validate.json schema {VALIDATE_SCHEMA}")
    labels = [a.label for a in artifacts]
    if len(set(labels)) != len(labels):
        raise InputError(f"two artifacts share the label {next(x for x in labels if labels.count(x) > 1)}, so their "
                         "validate.json results cannot be told apart; bundle them separately")
    by_label = {a.get("label"): a for a in d.get("artifacts", [])}
    out: list[dict[str, Any]] = []
    for art in artifacts:
        r = by_label.get(art.label)
        if r is None:
            raise InputError(f"{vj} has no result for {art.label}; validate the same artifacts you bundle "
                             f"(it has: {', '.join(sorted(map(str, by_label))) or 'none'})")
        mismatch = [k for k, want in (("target", art.target), ("precision", art.precision), ("kind", art.kind),
                                      ("size_bytes", art.size_bytes())) if r.get(k) != want]
        if mismatch:
            raise InputError(f"{vj}: its {art.label} differs from the artifact given ({', '.join(mismatch)}); validate again")
        if not r.get("passed"):
            raise FidelityError(f"{art.label} failed `mexport validate` ({vj}); refusing to bundle a failing artifact")
        out.append({"source": f"mexport validate --report ({VALIDATION_DIR}/validate.json)", "data": d.get("data"),
                          "photos": d.get("photos"), "passed": True, "summary": r.get("summary", {}), "gates": r.get("gates", []),
                          **({"latency": r["latency"]} if r.get("latency") else {})})
    (staging / VALIDATION_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vj, staging / VALIDATION_DIR / "validate.json")
    shutil.copyfile(html, staging / VALIDATION_DIR / "report.html")
    return out


def fidelity_only(artifacts, model: str | None, progress=None) -> list[dict[str, Any]]:
    """``mexport validate``'s fidelity check and default gates against the float model found from
    each artifact's provenance; no ground truth, no timings, no timestamps."""
    from ..validate.validate import Gates, apply_gates, load_samples, validate_artifact

    samples, source = load_samples(None)
    out: list[dict[str, Any]] = []
    for art in artifacts:
        rep, _ = validate_artifact(art, samples, model, threads=1, progress=progress)
        apply_gates(rep, Gates(), None)
        if not rep.passed:
            bad = "; ".join(f"{g.gate} {g.value:.2f} (threshold {g.threshold:.2f}"
                            + (f", on {', '.join(g.photos)})" if g.photos else ")") for g in rep.gates if not g.passed)
            raise FidelityError(f"{art.label} fails the fidelity check against its float model: {bad}; nothing written")
        out.append({"source": "fidelity-only check by mexport bundle create (vs the float PyTorch model)", "data": source,
                          "photos": [s.name for s in samples], "passed": True, "summary": rep.summary,
                          "gates": [g.__dict__ for g in rep.gates]})
    return out


def _spec_info(spec) -> dict[str, Any]:
    h, w = spec.refine_size
    mean, std = spec.mean, spec.std
    return {
        "spec": spec.to_dict(),
        "host_preprocessing": [
            "decode the photo to 8-bit RGB (apply EXIF orientation; composite transparency over white)",
            f"resize to {w}x{h} ({spec.aspect}" + (", centred, zero (black) padding" if spec.aspect == "letterbox" else ", aspect ratio not kept")
            + f") with {spec.photo_resize} filtering",
            "float32 = pixel / 255 (a pixel-buffer input does this inside the model: see the input's image scale)",
        ],
        "normalization": {"where": "inside the model", "mean": list(mean), "std": list(std),
                          "formula": "(x - mean[c]) / std[c] with x = pixel / 255, RGB order"},
        "resizes": {
            "coarse_downsample": {**spec.coarse_downsample.__dict__, "from": list(spec.refine_size), "to": list(spec.coarse_size),
                                  "coordinates": "align_corners" if spec.coarse_downsample.align_corners else "half_pixel",
                                  "describe": spec.coarse_downsample.describe()},
            "coarse_upsample": {**spec.coarse_upsample.__dict__, "from": list(spec.coarse_size), "to": list(spec.refine_size),
                                "coordinates": "align_corners" if spec.coarse_upsample.align_corners else "half_pixel",
                                "describe": spec.coarse_upsample.describe()},
        },
        "host_postprocessing": [
            "alpha is float32 in [0, 1] at the refine size" + (", undo the letterbox (crop the photo's box)" if spec.aspect == "letterbox" else ""),
            f"resize alpha to the photo's size with {spec.output_resize} filtering; clamp to [0, 1]",
        ],
    }


def create_bundle(paths: list[str | Path], out: str | Path, report: Path | None = None, model: str | None = None,
                  photos: tuple[str, ...] = GOLDEN_PHOTOS, log: Callable[[str], Any] = lambda s: None) -> BundleResult:
    """Write a bundle of ``paths`` (files or export directories) to ``out`` (``.zip``, or a directory)."""
    from ..io import check_target, output_lock, staging
    from ..validate.artifacts import discover
    from .archive import move_dir, write_zip
    from .golden import golden_photos

    artifacts = discover(list(paths))
    if not artifacts:
        raise InputError("no artifacts given")
    if not photos:
        raise InputError("at least one golden photo is needed")
    for a in artifacts:
        if a.provenance.pipeline_spec.extra_inputs:
            raise InputError(f"{a.label}: golden vectors for models with extra inputs need real data for them; not supported yet")
    out = Path(out)
    as_zip = out.suffix.lower() == ".zip"
    check_target(out.parent if as_zip else out, directory=True)
    if not as_zip and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise InputError(f"{out} exists and is not a bundle directory; refusing to replace it")
    if as_zip and out.is_dir():
        raise InputError(f"cannot write {out}: it is a directory")
    photo_arrays = golden_photos(tuple(photos))  # before the slow work: a bad name fails now
    with output_lock(out), staging(out.parent, "bundle", out) as work:
        staging_dir = work / "bundle"
        staging_dir.mkdir()
        manifest = _stage(artifacts, staging_dir, report, model, photos, photo_arrays, log)
        if as_zip:
            write_zip(staging_dir, out)
        else:
            move_dir(staging_dir, out, work / "old")
        return BundleResult(out, manifest)


def _stage(artifacts, staging: Path, report: Path | None, model: str | None, photos: tuple[str, ...], photo_arrays,
           log: Callable[[str], Any]) -> dict[str, Any]:
    """Everything a bundle holds, written into ``staging``; returns the manifest."""
    from ..photos import prepare
    from ..runtimes import get_runtime
    from .card import render_readme

    if report is not None:
        log(f"reading validation results from {report}")
        validation = validation_from_report(report, artifacts, staging)
    else:
        log("no --report: checking fidelity against the float model (as `mexport validate` does)")
        validation = fidelity_only(artifacts, model)

    dirs = _bundle_dirs(artifacts)
    copied: dict[Path, str] = {}
    entries: list[dict[str, Any]] = []
    for a, checked in zip(artifacts, validation):
        target = get_runtime(a.target)
        models: dict[str, dict[str, Any]] = {}
        for role, src in a.paths.items():
            src = src.resolve()
            bpath = f"models/{dirs[src.parent]}/{src.name}"
            if src not in copied:
                _copy(src, staging / bpath)
                copied[src] = bpath
                for extra in target.companions(src):
                    _copy(extra, staging / bpath.rsplit("/", 1)[0] / extra.name)
            prov = target.read_provenance(src)
            models[role] = {"file": bpath, "directory": src.is_dir(), "provenance": json.loads(prov.to_json()),
                            **target.describe(src, prov)}
        art_id, slug = _ident(a, dirs[next(iter(a.paths.values())).resolve().parent])
        compute = next((m.get("compute_precision") for m in models.values() if m.get("compute_precision")), None)
        tol = tolerance_for(a.precision, compute)
        entries.append({"id": art_id, "slug": slug, "format": a.target, "precision": a.precision, "kind": a.kind,
                        "model": a.provenance.model, "weights_sha256": a.provenance.weights_sha256,
                        "models": models, "pipeline": _spec_info(a.provenance.pipeline_spec),
                        "validation": _round(checked), "tolerance": tol.to_dict(), "golden": []})

    log(f"golden vectors on {', '.join(photos)}")
    sets: dict[str, Any] = {}
    for a, entry in zip(artifacts, entries):
        spec = a.provenance.pipeline_spec
        h, w = spec.refine_size
        set_id = f"{w}x{h}-{spec.aspect}-{spec.photo_resize}"
        nhwc = any(i["layout"] == "NHWC" for m in entry["models"].values() for i in m["inputs"])
        s = sets.setdefault(set_id, {"id": set_id, "shape_nchw": [1, 3, h, w], "photos": {}})
        runner = a.runner(threads=1)
        for name, photo in photo_arrays:
            base = f"golden/{set_id}/{name}"
            x, _ = prepare(photo, spec)
            if name not in s["photos"]:
                write_png(staging / base / "image.png", x)
                write_f32(staging / base / "input.nchw.f32", x)
                s["photos"][name] = {"image": f"{base}/image.png", "input_nchw": f"{base}/input.nchw.f32"}
            if nhwc and "input_nhwc" not in s["photos"][name]:
                write_f32(staging / base / "input.nhwc.f32", x.transpose(0, 2, 3, 1))
                s["photos"][name]["input_nhwc"] = f"{base}/input.nhwc.f32"
            alpha = runner(x)
            if not np.isfinite(alpha).all():
                raise FidelityError(f"{entry['id']}: NaN or Inf in its alpha for golden photo {name}; nothing written")
            exp = f"{base}/expected/{entry['slug']}.f32"
            write_f32(staging / exp, alpha)
            entry["golden"].append({"photo": name, "set": set_id, "expected": exp, "shape": [int(d) for d in alpha.shape]})

    golden = {
        "photos": list(photos),
        "source": "scikit-image's bundled photos (CC0), preprocessed by mexport.photos.prepare",
        "encoding": "raw float32, little-endian, row-major (C order), no header; image.png is 8-bit RGB",
        "sets": [dict(v, photos=dict(sorted(v["photos"].items()))) for _, v in sorted(sets.items())],
        "tolerances": {k: t.to_dict() for k, t in TOLERANCES.items()},
        "expected_from": "each artifact run on this machine by mexport's runner for its format ("
                         + ", ".join(sorted({get_runtime(a.target).runner_label for a in artifacts})) + "), one thread",
    }
    manifest: dict[str, Any] = {
        "format": FORMAT, "schema": SCHEMA, "mexport_version": __version__,
        "artifacts": entries, "golden": golden,
        "validation_files": [f"{VALIDATION_DIR}/validate.json", f"{VALIDATION_DIR}/report.html"] if report is not None else [],
        "tree_sha256": "sha256 over sorted 'relative/path<NUL>sha256<LF>' lines of a directory artifact's files",
    }
    (staging / "README.md").write_text(render_readme(manifest))

    files = {}
    for p in sorted(q for q in staging.rglob("*") if q.is_file()):
        rel = p.relative_to(staging).as_posix()
        files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    for entry in entries:
        for m in entry["models"].values():
            if m["directory"]:
                sub = {k: v["sha256"] for k, v in files.items() if k.startswith(m["file"] + "/")}
                m["sha256"] = tree_sha256(sub, m["file"])
                m["size"] = sum(files[k]["size"] for k in sub)
            else:
                m["sha256"], m["size"] = files[m["file"]]["sha256"], files[m["file"]]["size"]
    manifest["files"] = files
    (staging / MANIFEST).write_bytes(dumps(manifest))
    return manifest
