"""``mexport validate``: every artifact on its runtime against the float reference, with gates.

Fidelity (alpha PSNR, max abs, MAD) is measured on the refine-size tensors, where the artifact's
own arithmetic shows; accuracy vs ground truth (SAD, MSE, Grad, Conn) on the alpha restored to the
photo's size, for the artifact and for the float model side by side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..io import jsonable
from .accuracy import GTSample, gt_metrics
from .artifacts import Artifact, discover, reference_for
from .fidelity import compare, default_threshold

SCHEMA = 1
BASELINE_SCHEMA = 1


@dataclass(frozen=True)
class Gates:
    """Thresholds. ``min_psnr=None`` applies the per-precision default; the others apply only when
    set, and the *_increase / latency gates need a baseline."""

    min_psnr: float | None = None
    max_sad_increase: float | None = None
    max_grad_increase: float | None = None
    max_latency_ratio: float | None = None

    def __post_init__(self) -> None:
        for k in ("min_psnr", "max_sad_increase", "max_grad_increase", "max_latency_ratio"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{k} must be a finite number, got {v!r}")  # NaN compares false: a gate that never fails
        if self.min_psnr is not None and not 0 < self.min_psnr < 200:
            raise ValueError("min_psnr must be between 0 and 200 dB")
        for k in ("max_sad_increase", "max_grad_increase"):
            v = getattr(self, k)
            if v is not None and v < 0:
                raise ValueError(f"{k} must be >= 0 (a relative increase, 0.05 = 5 %)")
        if self.max_latency_ratio is not None and self.max_latency_ratio <= 0:
            raise ValueError("max_latency_ratio must be > 0")


@dataclass
class GateResult:
    gate: str
    value: float
    threshold: float
    passed: bool
    detail: str = ""


@dataclass
class ArtifactReport:
    label: str
    target: str
    precision: str
    kind: str
    size_bytes: int
    runner: str
    photos: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    gates: list[GateResult] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None  # what ran it, e.g. {"name": "tflite-runtime", "version": "2.14.0"}

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class ValidationReport:
    artifacts: list[ArtifactReport]
    data: str
    photos: list[str]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "schema": SCHEMA, "passed": self.passed, "data": self.data, "photos": self.photos, "versions": self.versions,
            "artifacts": [{
                "label": a.label, "target": a.target, "precision": a.precision, "kind": a.kind, "size_bytes": a.size_bytes,
                "runner": a.runner, "runtime": a.runtime, "passed": a.passed, "summary": a.summary, "latency": a.latency,
                "gates": [g.__dict__ for g in a.gates], "photos": a.photos,
            } for a in self.artifacts],
        })


def load_samples(data: Path | None, only: list[str] | None = None) -> tuple[list[GTSample], str]:
    """Photos with optional ground truth: the alphamatting layout (image/, alpha/, trimap1/) or a
    plain folder of photos; without --data, scikit-image's held-out evaluation photos."""
    from ..photos import DEFAULT_EVAL, default_photos, list_photos, load_photo
    from .accuracy import load_gt_samples

    if data is None:
        return [GTSample(n, p, None) for n, p in default_photos(DEFAULT_EVAL)], "scikit-image: " + ", ".join(DEFAULT_EVAL)  # type: ignore[arg-type]
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"--data {data}: not a directory")
    if (data / "image").is_dir():
        with_gt = {s.name: s for s in load_gt_samples(data)}
        samples = [with_gt.get(p.stem) or GTSample(p.stem, load_photo(p), None) for p in list_photos(data / "image")]
    else:
        samples = [GTSample(p.stem, load_photo(p), None) for p in list_photos(data)]
    if only:
        missing = sorted(set(only) - {s.name for s in samples})
        if missing:
            raise InputError(f"--only: no photo named {', '.join(missing)} in {data}")
        samples = [s for s in samples if s.name in only]
        return samples, f"{data} ({', '.join(only)})"
    return samples, str(data)


BASELINE_NUMBERS = ("median_psnr", "sad_mean", "grad_mean", "p50_ms")


def load_baseline(path: Path) -> dict[str, Any]:
    """The baseline file, every field checked (and "inf"/"nan", as reports write them, made floats):
    it is read before any artifact runs, so a bad one fails in a second, not after the validation."""
    path = Path(path)
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"baseline not found: {path} (create it with --update-baseline)") from None
    except IsADirectoryError:
        raise InputError(f"baseline {path} is a directory, not a JSON file") from None
    except OSError as e:
        raise InputError(f"cannot read baseline {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"baseline {path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise InputError(f"baseline {path}: not a baseline (a JSON object with schema and artifacts), got a {type(d).__name__}")
    if d.get("schema") != BASELINE_SCHEMA:
        raise InputError(f"baseline {path} has schema {d.get('schema')!r}, expected {BASELINE_SCHEMA}")
    unknown = sorted(set(d) - {"schema", "artifacts"})
    if unknown:  # another file of mexport's (a recipe, a report) given as the baseline
        raise InputError(f"baseline {path}: unknown fields {unknown}; a baseline holds schema and artifacts")
    arts = d.get("artifacts", {})
    if not isinstance(arts, dict):
        raise InputError(f"baseline {path}: 'artifacts' must map artifact labels to their results, got a {type(arts).__name__}")
    for label, e in arts.items():
        if not isinstance(e, dict):
            raise InputError(f"baseline {path}: artifacts[{label!r}] must be an object, got {e!r}")
        for k in BASELINE_NUMBERS:
            if k in e:
                e[k] = _number(e[k], f"baseline {path}: artifacts[{label!r}].{k}")
    return d


def _number(v: Any, what: str) -> float:
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{what} must be a number, got {v!r}")
    return float(v)


def baseline_entry(a: ArtifactReport) -> dict[str, Any]:
    s = a.summary
    e = {"median_psnr": s.get("median_psnr"), "precision": a.precision, "target": a.target}
    for k in ("sad", "grad"):
        if f"{k}_mean" in s:
            e[f"{k}_mean"] = s[f"{k}_mean"]
    if a.latency and "p50_ms" in a.latency:
        e["p50_ms"] = a.latency["p50_ms"]
    return jsonable(e)


def write_baseline(report: ValidationReport, path: Path) -> None:
    from ..io import atomic_write_bytes

    d = {"schema": BASELINE_SCHEMA, "artifacts": {a.label: baseline_entry(a) for a in report.artifacts}}
    atomic_write_bytes(Path(path), (json.dumps(d, indent=2, sort_keys=True) + "\n").encode())


def apply_gates(a: ArtifactReport, gates: Gates, baseline: dict[str, Any] | None) -> None:
    s = a.summary
    threshold = gates.min_psnr if gates.min_psnr is not None else default_threshold(a.precision)
    a.gates.append(GateResult("finite-output", 0.0 if s["all_finite"] else 1.0, 0.0, bool(s["all_finite"]),
                              "NaN or Inf in the alpha" if not s["all_finite"] else ""))
    a.gates.append(GateResult("min-median-alpha-psnr", s["median_psnr"], threshold,
                              bool(s["all_finite"] and s["median_psnr"] >= threshold), "median alpha PSNR vs float, dB"))
    base = (baseline or {}).get("artifacts", {}).get(a.label)
    for metric, limit in (("sad", gates.max_sad_increase), ("grad", gates.max_grad_increase)):
        if limit is None:
            continue
        if not base or f"{metric}_mean" not in base or f"{metric}_mean" not in s:
            a.gates.append(GateResult(f"max-{metric}-increase", math.nan, limit, False,
                                      "no baseline value or no ground truth to compare with"))
            continue
        inc = s[f"{metric}_mean"] / base[f"{metric}_mean"] - 1 if base[f"{metric}_mean"] else math.inf
        a.gates.append(GateResult(f"max-{metric}-increase", inc, limit, inc <= limit, f"mean {metric.upper()} vs ground truth, relative to baseline"))
    if gates.max_latency_ratio is not None:
        limit = gates.max_latency_ratio
        lat = a.latency or {}
        ref = lat.get("reference")
        if ref is not None and "p50_ms" in lat and "p50_ms" in ref:
            # The honest comparison: both artifacts timed in this run, in alternating turns.
            ratio = lat["p50_ms"] / ref["p50_ms"]
            a.gates.append(GateResult("max-latency-ratio", ratio, limit, ratio <= limit,
                                      f"p50 / p50 of {ref['label']}, timed interleaved in this run ({lat['runs']} runs each)"))
        elif ref is not None:
            a.gates.append(GateResult("max-latency-ratio", math.nan, limit, False,
                                      lat.get("error") or ref.get("error", "no latency baseline artifact")))
        elif "p50_ms" not in lat or not base or "p50_ms" not in base:
            a.gates.append(GateResult("max-latency-ratio", math.nan, limit, False,
                                      "no latency measured, or no --latency-baseline artifact and no p50 in the baseline file"))
        else:
            ratio = lat["p50_ms"] / base["p50_ms"]
            a.gates.append(GateResult("max-latency-ratio", ratio, limit, ratio <= limit,
                                      "p50 / the baseline file's p50, which an earlier run measured: not interleaved, so load "
                                      "on either run shows up as a ratio (give --latency-baseline ARTIFACT to time both now)"))


def validate_artifact(artifact: Artifact, samples: list[GTSample], model: str | None = None, threads: int | None = None,
                      progress: Callable[[], Any] | None = None, keep_alphas: bool = False,
                      references: dict | None = None, runner_kw: dict[str, dict] | None = None) -> tuple[ArtifactReport, dict]:
    """``references`` is a cache shared across the artifacts of one run: the float model is built,
    and its alpha computed per photo, once per (model, weights) instead of once per artifact.
    ``runner_kw`` maps a target to options for its runner (``{"tflite": {"python": PATH}}``)."""
    from ..photos import prepare, restore
    from ..runner import TorchRunner

    references = {} if references is None else references
    key = (model or artifact.provenance.model, artifact.provenance.weights_sha256)
    if key not in references:
        references[key] = (reference_for(artifact, model), {})
    pipeline, ref_alphas = references[key]
    spec = pipeline.spec
    runner = artifact.runner(threads=threads, **(runner_kw or {}).get(artifact.target, {}))
    torch_ref = TorchRunner(pipeline)

    def ref(x: np.ndarray, name: str) -> np.ndarray:
        if name not in ref_alphas:
            ref_alphas[name] = torch_ref(x)
        return ref_alphas[name]

    rep = ArtifactReport(artifact.label, artifact.target, artifact.precision, artifact.kind, artifact.size_bytes(), runner.name,
                         runtime=getattr(runner, "runtime", None))
    alphas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in samples:
        x, place = prepare(s.photo, spec)
        out, want = runner(x), ref(x, s.name)
        f = compare(s.name, out, want)
        row: dict[str, Any] = {"photo": s.name, "psnr": f.psnr, "max_abs": f.max_abs, "mad": f.mad, "finite": f.finite}
        a_out, a_ref = restore(np.nan_to_num(out, nan=0.0), place, spec), restore(want, place, spec)
        if s.alpha is not None:
            row["gt"] = gt_metrics(a_out, s)
            row["gt_float"] = gt_metrics(a_ref, s)
        if keep_alphas:
            alphas[s.name] = (a_out, a_ref)
        rep.photos.append(row)
        if progress:
            progress()
    psnrs = [r["psnr"] for r in rep.photos]
    rep.summary = {
        "photos": len(rep.photos), "all_finite": all(r["finite"] for r in rep.photos),
        "median_psnr": float(np.median(psnrs)), "mean_psnr": float(np.mean(psnrs)), "min_psnr": float(np.min(psnrs)),
        "worst_photo": rep.photos[int(np.argmin(psnrs))]["photo"], "max_abs": float(max(r["max_abs"] for r in rep.photos)),
    }
    gt_rows = [r for r in rep.photos if "gt" in r]
    if gt_rows:
        for k in ("sad", "mse", "grad", "conn"):
            vals = [r["gt"][k] for r in gt_rows]
            fvals = [r["gt_float"][k] for r in gt_rows]
            rep.summary.update({f"{k}_mean": float(np.mean(vals)), f"{k}_median": float(np.median(vals)), f"{k}_worst": float(np.max(vals)),
                                f"{k}_float_mean": float(np.mean(fvals))})
    return rep, alphas


def validate(paths: list[str | Path], data: Path | None = None, model: str | None = None, gates: Gates = Gates(),
             baseline: Path | None = None, threads: int | None = None, progress=None, keep_alphas: bool = False,
             only: list[str] | None = None, latency: Callable | None = None, runner_kw: dict[str, dict] | None = None,
             checks: Callable[[list[Artifact]], Any] | None = None):
    """Validate artifacts; returns the report and, with keep_alphas, the alphas for the HTML report.

    ``progress(stage, done, total, detail)`` is called after each photo of each artifact.
    ``latency(artifacts)``, when given (``--bench``, a latency gate), returns one latency record
    per artifact, attached before the gates run: timing is the benchmarks' business
    (:mod:`mexport.bench`), which the API hands in. ``checks(artifacts)`` runs after discovery,
    before any artifact runs (inputs that depend on them). ``runner_kw`` maps a runtime to options
    for its runner (``{"tflite": {"python": PATH}}``)."""
    artifacts = discover(paths)
    if not artifacts:
        raise InputError("no artifacts given")
    if checks is not None:
        checks(artifacts)
    samples, source = load_samples(data, only)
    base = load_baseline(baseline) if baseline is not None and Path(baseline).exists() else None
    if baseline is not None and base is None and (gates.max_sad_increase is not None or gates.max_grad_increase is not None
                                                  or gates.max_latency_ratio is not None):
        raise InputError(f"baseline not found: {baseline} (create it with --update-baseline)")
    reports, all_alphas, references = [], {}, {}
    done, total = 0, len(artifacts) * len(samples)
    for art in artifacts:
        def tick(label: str = art.label) -> None:
            nonlocal done
            done += 1
            if progress:
                progress("validate", done, total, label)

        rep, alphas = validate_artifact(art, samples, model, threads, tick, keep_alphas, references, runner_kw)
        reports.append(rep)
        all_alphas[art.label] = alphas
    if latency is not None:
        for rep, rec in zip(reports, latency(artifacts)):
            rep.latency = rec
    for rep in reports:
        apply_gates(rep, gates, base)
    from ..runtimes import versions

    return ValidationReport(reports, source, [s.name for s in samples], versions=versions()), all_alphas, samples
