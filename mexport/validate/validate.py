"""``mexport validate``: every artifact on its runtime against the float reference, with gates.

Fidelity (alpha PSNR, max abs, MAD) is measured on the refine-size tensors, where the artifact's
own arithmetic shows; accuracy vs ground truth (SAD, MSE, Grad, Conn) on the alpha restored to the
photo's size, for the artifact and for the float model side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..io import jsonable
from .accuracy import GTSample, gt_metrics
from .artifacts import Artifact, discover, reference_for
from .fidelity import compare
from .gates import FEW_PHOTOS, Gates, GateResult, apply_gates, spread  # noqa: F401  (Gates, GateResult: the API's names)

SCHEMA = 2  # 2: per-photo gates (GateResult.photos, per_photo), the PSNR spread, photo hashes


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
    baseline: dict[str, Any] | None = None  # the baseline entry compared with: its key and the photos matched

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failing_photos(self) -> list[str]:
        """Every photo a gate failed on, each once, in the order the gates named them (worst first)."""
        return list(dict.fromkeys(p for g in self.gates if not g.passed for p in g.photos))


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
                "gates": [g.__dict__ for g in a.gates], "photos": a.photos, "baseline": a.baseline,
                "failing_photos": a.failing_photos,
            } for a in self.artifacts],
        })


def load_samples(data: Path | None, only: list[str] | None = None) -> tuple[list[GTSample], str]:
    """Photos with optional ground truth: the alphamatting layout (image/, alpha/, trimap1/) or a
    plain folder of photos; without --data, scikit-image's held-out evaluation photos."""
    samples, source, _ = load_samples_available(data, only)
    return samples, source


def load_samples_available(data: Path | None, only: list[str] | None = None) -> tuple[list[GTSample], str, set[str]]:
    """:func:`load_samples`, and the names of every photo in ``data`` (--only picks some of them)."""
    from ..photos import DEFAULT_EVAL, default_photos, list_photos, load_photo
    from .accuracy import load_gt_samples

    if data is None:
        samples = [GTSample(n, p, None) for n, p in default_photos(DEFAULT_EVAL)]  # type: ignore[arg-type]
        return samples, "scikit-image: " + ", ".join(DEFAULT_EVAL), {s.name for s in samples}
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"--data {data}: not a directory")
    folder = data / "image" if (data / "image").is_dir() else data
    available = {p.stem for p in list_photos(folder)}
    if only:
        missing = sorted(set(only) - available)
        if missing:
            raise InputError(f"--only: no photo named {', '.join(missing)} in {data}")
    if folder != data:
        with_gt = {s.name: s for s in load_gt_samples(data, None if not only else [n for n in sorted(available) if n in only])}
        samples = [with_gt.get(p.stem) or GTSample(p.stem, load_photo(p), None) for p in list_photos(folder)
                   if not only or p.stem in only]
    else:
        samples = [GTSample(p.stem, load_photo(p), None) for p in list_photos(folder) if not only or p.stem in only]
    if only:
        return samples, f"{data} ({', '.join(only)})", available
    return samples, str(data), available


def validate_artifact(artifact: Artifact, samples: list[GTSample], model: str | None = None, threads: int | None = None,
                      progress: Callable[[], Any] | None = None, keep_alphas: bool = False,
                      references: dict | None = None, runner_kw: dict[str, dict] | None = None) -> tuple[ArtifactReport, dict]:
    """``references`` is a cache shared across the artifacts of one run: the float model is built,
    and its alpha (and that alpha's ground-truth metrics) computed per photo, once per (model,
    weights) instead of once per artifact.
    ``runner_kw`` maps a target to options for its runner (``{"tflite": {"python": PATH}}``)."""
    from ..photos import prepare, restore
    from ..runner import TorchRunner

    references = {} if references is None else references
    key = (model or artifact.provenance.model, artifact.provenance.weights_sha256)
    if key not in references:
        references[key] = (reference_for(artifact, model), {})
    pipeline, ref_alphas = references[key]
    spec = pipeline.spec
    if spec.extra_inputs:  # not read here yet: the export-time check reads them (--check-data)
        raise InputError("mexport validate does not read extra inputs (" + ", ".join(e.name for e in spec.extra_inputs)
                         + ") yet; the export-time check does: export with --check-data DIR (DIR/image/ and DIR/<input>/)")
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
            # The float alpha is the same for every artifact of the run: its metrics are too.
            if ("gt_float", s.name) not in ref_alphas:
                ref_alphas[("gt_float", s.name)] = gt_metrics(a_ref, s)
            row["gt_float"] = dict(ref_alphas[("gt_float", s.name)])
        if keep_alphas:
            alphas[s.name] = (a_out, a_ref)
        rep.photos.append(row)
        if progress:
            progress()
    psnrs = [r["psnr"] for r in rep.photos]
    sp = spread(psnrs)
    rep.summary = {
        "photos": len(rep.photos), "all_finite": all(r["finite"] for r in rep.photos),
        "median_psnr": float(np.median(psnrs)), "mean_psnr": float(np.mean(psnrs)), "min_psnr": float(np.min(psnrs)),
        "p10_psnr": sp["p10"], "p90_psnr": sp["p90"],
        "worst_photo": rep.photos[int(np.argmin(psnrs))]["photo"], "max_abs": float(max(r["max_abs"] for r in rep.photos)),
    }
    if len(psnrs) < FEW_PHOTOS:
        rep.summary["warning"] = (f"only {len(psnrs)} photos: a median and a worst photo over so few say little; "
                                  f"validate on {FEW_PHOTOS} or more (--data)")
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
             checks: Callable[[list[Artifact]], Any] | None = None, update_baseline: Path | None = None,
             fragility: Path | None = None):
    """Validate artifacts; returns the report and, with keep_alphas, the alphas for the HTML report.

    ``progress(stage, done, total, detail)`` is called after each photo of each artifact.
    ``latency(artifacts)``, when given (``--bench``, a latency gate), returns one latency record
    per artifact, attached before the gates run: timing is the benchmarks' business
    (:mod:`mexport.bench`), which the API hands in. ``checks(artifacts)`` runs after discovery,
    before any artifact runs (inputs that depend on them). ``runner_kw`` maps a runtime to options
    for its runner (``{"tflite": {"python": PATH}}``). ``baseline`` is compared with, photo by photo
    (:mod:`mexport.validate.baseline`); ``update_baseline`` is a baseline file this run's results
    are written into (checked before anything runs, written after). ``fragility``: a
    ``fragility.json`` (`mexport fragility`) whose verdicts annotate a failed per-photo gate; the
    gate still fails."""
    from . import baseline as bl
    from ..quantize.fragility import annotate, read_verdicts

    verdicts = read_verdicts(fragility) if fragility is not None else None

    artifacts = discover(paths)
    if not artifacts:
        raise InputError("no artifacts given")
    if checks is not None:
        checks(artifacts)
    baseline_gates = gates.max_sad_increase is not None or gates.max_grad_increase is not None
    if baseline is not None and not Path(baseline).exists() and (baseline_gates or gates.max_latency_ratio is not None):
        raise InputError(f"baseline not found: {baseline} (create it with --update-baseline)")
    # Read (and checked) only when a gate compares with it: --baseline alone changes nothing.
    uses_baseline = baseline_gates or gates.max_latency_ratio is not None
    base = bl.load(baseline) if baseline is not None and uses_baseline and Path(baseline).exists() else None
    old = bl.load_for_update(update_baseline) if update_baseline is not None else None
    samples, source, available = load_samples_available(data, only)
    hashes = {s.name: bl.photo_sha256(s) for s in samples}
    matched = bl.match(base, artifacts, hashes, available, source, baseline) if base is not None else {}
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
        none = ("--update-baseline: this run writes the baseline, so it compares with none" if update_baseline is not None
                else "no --baseline given")
        entry, why = matched.get(rep.label, (None, none if base is None else None))
        if entry is not None:
            rep.baseline = {"key": entry["key"], "matched_photos": sorted(set(entry["photos"]) & set(hashes)),
                            "baseline_photos": entry["n_photos"]}
        apply_gates(rep, gates, entry, why)
        if verdicts is not None:
            for g in rep.gates:
                note = annotate(g.photos, verdicts) if g.gate == "min-photo-alpha-psnr" and not g.passed else ""
                if note:
                    g.detail += f"; {note}"
    if update_baseline is not None:
        bl.write(old, reports, artifacts, hashes, source, update_baseline)
    from ..runtimes import versions

    return ValidationReport(reports, source, [s.name for s in samples], versions=versions()), all_alphas, samples
