"""The gates of ``mexport validate``: per-photo defaults per precision, and the optional baseline
and latency gates.

A median hides a broken photo (one photo at 17 dB among 18 good ones passes a median gate), so the
defaults gate every photo too: its alpha PSNR vs the float pipeline, and, where ground truth is
given, its SAD and Grad against the float model's on the same photo. What each gate failed on is
named (``GateResult.photos``), so the terminal, validate.json, JUnit and the reports can say which
photo to look at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .fidelity import DEFAULT_MIN_PSNR, default_threshold

# Minimum alpha PSNR vs float of the WORST photo, per precision. Measured on refine network v3's
# default exports (`mexport validate` on ../shared/data, 37 photos: 18 alphamatting, 6 portraits,
# 13 animals): ONNX int8 worst photos 25.1 / 20.4 / 26.4 dB (alphamatting GT10 / portrait
# p_22fc0130 / animal sample4), LiteRT int8 26.5 / 23.7 / 26.4 dB; the breakage this exists to catch
# is 17.1 dB (refine v2's ONNX int8 on GT10: max error 0.83, SAD +82 %). 22 dB is an RMS alpha error
# of 8 %: a visible halo, below what a release ships. Core ML weight compression (reports/coreml.md,
# 6 photos): weights-int8 41.8, palette8 38.6, palette6 22.2, w8a8 35.9 dB worst photo.
DEFAULT_MIN_PHOTO_PSNR: dict[str, float] = {
    "fp32": 60.0,
    "fp16": 35.0,
    "dynamic-int8": 22.0,
    "int8": 22.0,
    "w8a8": 22.0,
    "weights-int8": 30.0,
    "weights-int4": 22.0,
    "palette8": 28.0,
    "palette6": 20.0,
    "palette4": 18.0,
}

# Maximum increase of a photo's SAD (and Grad) vs ground truth over the float model's on the same
# photo, relative. Same measurements: the default int8 exports add at most 8 % on alphamatting's
# photos whose float SAD is above the floor below, at most 13 % on the animals; the one portrait
# above (p_22fc0130) adds 46-75 % (SAD 57.9 -> 84-101), which is a regression a user sees.
DEFAULT_MAX_PHOTO_INCREASE: dict[str, float] = {"fp32": 0.01, "fp16": 0.05}
LOSSY_MAX_PHOTO_INCREASE = 0.25
# A relative increase of a tiny number is noise (GT01: SAD 1.79 -> 2.65 is +48 % and 0.86 SAD, 860
# alpha units over 0.5 MP), so the increase is divided by at least these: SAD 5 (0.5 % of a 1 MP
# photo entirely wrong), Grad 0.5 (the alphamatting photos' Grad is 0.2-1.6).
SAD_FLOOR = 5.0
GRAD_FLOOR = 0.5
FLOORS = {"sad": SAD_FLOOR, "grad": GRAD_FLOOR}


def default_photo_psnr(precision: str) -> float:
    default_threshold(precision)  # the same error for an unknown precision
    return DEFAULT_MIN_PHOTO_PSNR[precision]


def default_photo_increase(precision: str) -> float:
    default_threshold(precision)
    return DEFAULT_MAX_PHOTO_INCREASE.get(precision, LOSSY_MAX_PHOTO_INCREASE)


assert set(DEFAULT_MIN_PHOTO_PSNR) == set(DEFAULT_MIN_PSNR)


@dataclass(frozen=True)
class Gates:
    """Thresholds. ``None`` for ``min_psnr``, ``min_photo_psnr`` and ``max_photo_*_increase``
    applies the per-precision default; the baseline gates (``max_sad_increase``,
    ``max_grad_increase``) and the latency gate apply only when set."""

    min_psnr: float | None = None
    max_sad_increase: float | None = None
    max_grad_increase: float | None = None
    max_latency_ratio: float | None = None
    min_photo_psnr: float | None = None
    max_photo_sad_increase: float | None = None
    max_photo_grad_increase: float | None = None

    def __post_init__(self) -> None:
        for k in ("min_psnr", "max_sad_increase", "max_grad_increase", "max_latency_ratio", "min_photo_psnr",
                  "max_photo_sad_increase", "max_photo_grad_increase"):
            v = getattr(self, k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{k} must be a finite number, got {v!r}")  # NaN compares false: a gate that never fails
        for k in ("min_psnr", "min_photo_psnr"):
            v = getattr(self, k)
            if v is not None and not 0 < v < 200:
                raise ValueError(f"{k} must be between 0 and 200 dB")
        for k in ("max_sad_increase", "max_grad_increase", "max_photo_sad_increase", "max_photo_grad_increase"):
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
    photos: list[str] = field(default_factory=list)  # the photos it failed on, worst first
    per_photo: dict[str, float] | None = None  # a per-photo gate's value on every photo


def photo_increase(row: dict[str, Any], metric: str) -> float:
    """A photo's SAD (Grad) vs ground truth over the float model's, relative, floored (see FLOORS)."""
    now, ref = row["gt"][metric], row["gt_float"][metric]
    return (now - ref) / max(ref, FLOORS[metric])


def spread(values: list[float]) -> dict[str, float]:
    import numpy as np

    with np.errstate(invalid="ignore"):  # a NaN alpha's PSNR is NaN; the finite-output gate reports it
        return {"p10": float(np.percentile(values, 10)), "median": float(np.median(values)),
                "p90": float(np.percentile(values, 90)), "n": len(values)}


# Below this many photos a median and a worst photo are anecdotes; the reports say so.
FEW_PHOTOS = 8


def apply_gates(a, gates: Gates, baseline_match: dict[str, Any] | None, baseline_error: str | None = None) -> None:
    """Append the gates' results to ``a`` (an ArtifactReport). ``baseline_match`` is this artifact's
    baseline entry matched to this run's photos (:func:`mexport.validate.baseline.match`), or None
    with ``baseline_error`` saying why there is none."""
    s = a.summary
    finite = bool(s["all_finite"])
    a.gates.append(GateResult("finite-output", 0.0 if finite else 1.0, 0.0, finite,
                              "NaN or Inf in the alpha" if not finite else "",
                              [r["photo"] for r in a.photos if not r["finite"]]))
    threshold = gates.min_psnr if gates.min_psnr is not None else default_threshold(a.precision)
    a.gates.append(GateResult("min-median-alpha-psnr", s["median_psnr"], threshold, finite and s["median_psnr"] >= threshold,
                              f"median alpha PSNR vs float over {len(a.photos)} photos, dB"))
    limit = gates.min_photo_psnr if gates.min_photo_psnr is not None else default_photo_psnr(a.precision)
    per = {r["photo"]: r["psnr"] for r in a.photos}
    bad = sorted((p for p, v in per.items() if not v >= limit), key=lambda p: per[p])
    a.gates.append(GateResult("min-photo-alpha-psnr", s["min_psnr"], limit, finite and not bad,
                              f"every photo's alpha PSNR vs float, dB; worst {s['worst_photo']}", bad, per))
    gt_rows = [r for r in a.photos if "gt" in r]
    for metric, given in (("sad", gates.max_photo_sad_increase), ("grad", gates.max_photo_grad_increase)):
        if not gt_rows:
            continue  # no ground truth: nothing to compare the float model's accuracy with
        limit = given if given is not None else default_photo_increase(a.precision)
        per = {r["photo"]: photo_increase(r, metric) for r in gt_rows}
        bad = sorted((p for p, v in per.items() if not v <= limit), key=lambda p: -per[p])
        worst = max(per, key=per.get)
        a.gates.append(GateResult(f"max-photo-{metric}-increase", per[worst], limit, not bad,
                                  f"each photo's {metric.upper()} vs ground truth over the float model's on that photo, relative "
                                  f"(divided by at least {FLOORS[metric]:g}); worst {worst}", bad, per))
    for metric, limit in (("sad", gates.max_sad_increase), ("grad", gates.max_grad_increase)):
        if limit is None:
            continue
        if baseline_match is None or not gt_rows:
            a.gates.append(GateResult(f"max-{metric}-increase", math.nan, limit, False,
                                      baseline_error if baseline_match is None and baseline_error else "no ground truth to compare with"))
            continue
        a.gates.append(_baseline_gate(a, metric, limit, baseline_match))
    _latency_gate(a, gates, baseline_match)


def _baseline_gate(a, metric: str, limit: float, match: dict[str, Any]) -> GateResult:
    """The sum over the photos in both runs, now vs then: a subset run compares like with like."""
    base_photos = match["photos"]
    rows = [r for r in a.photos if "gt" in r and r["photo"] in base_photos and metric in base_photos[r["photo"]]]
    how = f"{len(rows)} of this run's {len(a.photos)} photos matched the baseline's {match['n_photos']}"
    if not rows:
        return GateResult(f"max-{metric}-increase", math.nan, limit, False,
                          f"no photo of this run is in the baseline ({how}); update it with --update-baseline")
    now = sum(r["gt"][metric] for r in rows)
    then = sum(base_photos[r["photo"]][metric] for r in rows)
    inc = now / then - 1 if then else (0.0 if now == 0 else math.inf)
    per = {r["photo"]: (r["gt"][metric] - base_photos[r["photo"]][metric]) / max(base_photos[r["photo"]][metric], FLOORS[metric])
           for r in rows}
    bad = sorted((p for p, v in per.items() if v > limit), key=lambda p: -per[p]) if inc > limit else []
    return GateResult(f"max-{metric}-increase", inc, limit, inc <= limit,
                      f"{metric.upper()} vs ground truth summed over the photos in both, relative to the baseline ({how})",
                      bad, per)


def _latency_gate(a, gates: Gates, match: dict[str, Any] | None) -> None:
    if gates.max_latency_ratio is None:
        return
    limit = gates.max_latency_ratio
    lat = a.latency or {}
    ref = lat.get("reference")
    base_p50 = (match or {}).get("summary", {}).get("p50_ms")
    if ref is not None and "p50_ms" in lat and "p50_ms" in ref:
        # The honest comparison: both artifacts timed in this run, in alternating turns.
        ratio = lat["p50_ms"] / ref["p50_ms"]
        a.gates.append(GateResult("max-latency-ratio", ratio, limit, ratio <= limit,
                                  f"p50 / p50 of {ref['label']}, timed interleaved in this run ({lat['runs']} runs each)"))
    elif ref is not None:
        a.gates.append(GateResult("max-latency-ratio", math.nan, limit, False,
                                  lat.get("error") or ref.get("error", "no latency baseline artifact")))
    elif "p50_ms" not in lat or base_p50 is None:
        a.gates.append(GateResult("max-latency-ratio", math.nan, limit, False,
                                  "no latency measured, or no --latency-baseline artifact and no p50 in the baseline file"))
    else:
        ratio = lat["p50_ms"] / base_p50
        a.gates.append(GateResult("max-latency-ratio", ratio, limit, ratio <= limit,
                                  "p50 / the baseline file's p50, which an earlier run measured: not interleaved, so load "
                                  "on either run shows up as a ratio (give --latency-baseline ARTIFACT to time both now)"))
