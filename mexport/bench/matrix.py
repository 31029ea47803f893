"""The benchmark matrix: one run that exports the model to every target and precision mexport
makes, then measures each variant beside torch fp32 eager on the same machine at the same time.

Per variant: latency (p50 of interleaved rounds, see :mod:`mexport.bench.interleave`), speed-up
vs torch fp32 at one thread, size, alpha PSNR vs float, SAD and Grad vs ground truth, and the
model's achieved GMAC/s against the runtime's own compute-bound peak (:mod:`mexport.bench.peak`,
exported and timed the same way, in the same rounds). Only the fused model is exported: it is what
an app runs, and converting coarse and refine as well would double the conversion time.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError, MexportError

SCHEMA = 1
Progress = Callable[[str, int, int, str], Any]


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    target: str  # "torch" for the float pipeline itself, else a runtime
    precision: str
    runtime: str
    timed: bool = True  # False: fidelity only (Core ML has no runtime off macOS; ours is an emulation)


def variants() -> tuple[Variant, ...]:
    """torch fp32 eager, then each registered runtime's benchmark precisions, in registry order."""
    from ..runtimes import get_runtime, names

    out = [Variant("torch-fp32", "torch fp32 (eager)", "torch", "fp32", "torch eager")]
    for name in names():
        rt = get_runtime(name)
        out += [Variant(f"{name}-{p}", f"{rt.title} {p.replace('-', ' ')}", name, p, rt.runner_label, timed=rt.timed)
                for p in rt.benchmark_precisions]
    return tuple(out)


@dataclass(frozen=True)
class MatrixConfig:
    """``photos``: names in ``data``'s image/ folder or ``skimage:NAME``; None = GT15-GT18 (with
    ``data``) plus scikit-image's held-out evaluation photos. ``rounds``: timed runs per variant and
    thread count, interleaved. ``work``: where the artifacts go (default: a temporary directory,
    removed afterwards)."""

    model: str | None = None
    data: Path | None = None
    photos: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 10
    warmup: int = 2
    peak: bool = True
    work: Path | None = None
    command: str = ""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.warmup < 0 or not self.threads or min(self.threads) < 1:
            raise InputError("--runs and thread counts must be >= 1, --warmup >= 0")
        known = {v.key for v in variants()}
        unknown = sorted(set(self.variants or ()) - known)
        if unknown:
            raise InputError(f"unknown variant {', '.join(unknown)}; valid: {', '.join(v.key for v in variants())}")
        if self.variants is not None and "torch-fp32" not in self.variants:
            raise InputError("the matrix needs torch-fp32: speed-ups are relative to it")

    def selected(self) -> list[Variant]:
        return [v for v in variants() if self.variants is None or v.key in self.variants]


def default_photo_names(data: Path | None) -> tuple[str, ...]:
    from ..photos import DEFAULT_EVAL

    gt = ("GT15", "GT16", "GT17", "GT18") if data is not None else ()
    return gt + tuple(f"skimage:{n}" for n in DEFAULT_EVAL)


def load_photos(data: Path | None, names: tuple[str, ...]):
    """GTSamples: ground truth (alpha, trimap) where ``data`` has it, photo only otherwise."""
    from ..photos import list_photos, load_photo, resolve_photo_arg
    from ..validate.accuracy import GTSample, load_gt_samples

    out = []
    for n in names:
        if n.startswith("skimage:"):
            out.append(GTSample(n.split(":", 1)[1], load_photo(resolve_photo_arg(n)), None))
            continue
        if data is None:
            raise InputError(f"photo {n!r} needs --data (or name a scikit-image photo as skimage:NAME)")
        folder = Path(data) / "image" if (Path(data) / "image").is_dir() else Path(data)
        found = [p for p in list_photos(folder) if p.stem == n]
        if not found:
            raise InputError(f"no photo named {n} in {folder}")
        with_gt = load_gt_samples(data, [n]) if (Path(data) / "image").is_dir() else []
        out.append(with_gt[0] if with_gt else GTSample(n, load_photo(found[0]), None))
    return out


# CPU flags of int8 dot-product instructions: whether onnxruntime's x86 U8S8 kernels can saturate,
# and what int8 latency a report's numbers stand for (mexport.runtimes.onnx.quantize)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "asimddp")


def machine_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    model, flags = "", set()
    try:
        for line in cpuinfo.read_text().splitlines():  # the first core's entries
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cpu = model or platform.processor() or ""
    dot = [f for f in INT8_DOT_FLAGS if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "system": platform.platform(),
            "int8_dot": ", ".join(dot) if dot else ("none" if flags else "unknown")}


def _export(target: str, precision: str, pipeline, out: Path) -> tuple[Path, float]:
    from ..export import export
    from ..runtimes import get_runtime

    t0 = time.perf_counter()
    result = export(target, pipeline, out, get_runtime(target).Options(precision=precision, check=False), roles=("fused",))
    return result.files["fused"], time.perf_counter() - t0


def _tick(progress: Progress | None, stage: str, total: int) -> Callable[[str], None]:
    done = 0

    def tick(detail: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(stage, done, total, detail)

    return tick


def run_matrix(cfg: MatrixConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Export, check and time every selected variant; returns the JSON-able result."""
    from ..io import jsonable
    from ..models import DEFAULT_MODEL, MattingPipeline, load_model
    from ..models.macs import count_macs
    from ..photos import prepare, restore
    from ..runner import TorchRunner
    from ..runtimes import versions
    from ..validate.accuracy import gt_metrics
    from ..validate.artifacts import discover
    from ..validate.validate import validate_artifact
    from .interleave import Subject, interleaved_latency
    from .peak import MODEL as PEAK_MODEL

    def load_pipeline(name: str):
        return MattingPipeline(load_model(name))

    model = cfg.model or DEFAULT_MODEL
    variants = cfg.selected()
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    pipeline = load_pipeline(model)
    samples = load_photos(cfg.data, cfg.photos or default_photo_names(cfg.data))
    macs = count_macs(pipeline.graph("fused"), *pipeline.example_inputs("fused"))
    timed = [v for v in variants if v.timed]
    peak_keys = sorted({(v.target, v.precision) for v in timed}) if cfg.peak else []

    work = Path(cfg.work) if cfg.work else Path(tempfile.mkdtemp(prefix="mexport-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # 1. exports: the model's fused graph per variant, and the peak probe per (runtime, precision)
        tick = _tick(progress, "export", sum(v.target != "torch" for v in variants) + sum(t != "torch" for t, _ in peak_keys))
        rows: dict[str, dict[str, Any]] = {}
        artifacts: dict[str, Path] = {}
        for v in variants:
            rows[v.key] = {"key": v.key, "variant": v.label, "target": v.target, "precision": v.precision, "runtime": v.runtime,
                           "timed": v.timed}
            if v.target == "torch":
                rows[v.key]["size_bytes"] = sum(t.numel() * t.element_size() for t in pipeline.state_dict().values())
                continue
            try:
                artifacts[v.key], rows[v.key]["export_s"] = _export(v.target, v.precision, pipeline, work / v.key)
                rows[v.key]["size_bytes"] = discover([artifacts[v.key]])[0].size_bytes()
            except MexportError as e:
                rows[v.key]["error"] = f"export failed: {e}"
            tick(v.label)
        peak_pipeline = load_pipeline(PEAK_MODEL) if peak_keys else None
        peak_macs = count_macs(peak_pipeline.graph("fused"), *peak_pipeline.example_inputs("fused")) if peak_pipeline else 0
        peak_subjects: dict[tuple[str, str], Subject] = {}
        peak_errors: dict[str, str] = {}
        peak_sizes: dict[str, int] = {}
        for target, precision in peak_keys:
            label = f"peak {target} {precision}"
            if target == "torch":
                peak_subjects[(target, precision)] = Subject(label, model=PEAK_MODEL)
                continue
            try:
                path, _ = _export(target, precision, peak_pipeline, work / f"peak-{target}-{precision}")
                peak_subjects[(target, precision)] = Subject(label, paths=(str(path),))
                peak_sizes[label] = discover([path])[0].size_bytes()
            except MexportError as e:
                peak_errors[label] = f"export failed: {e}"
            tick(label)

        # 2. fidelity vs float and accuracy vs ground truth; the float alphas are computed once
        ok = [v for v in variants if v.target != "torch" and "error" not in rows[v.key]]
        tick = _tick(progress, "fidelity", len(samples) * (1 + len(ok)))
        ref_alphas: dict[str, np.ndarray] = {}
        float_gt = []
        torch_ref = TorchRunner(pipeline, threads=max(cfg.threads))
        for s in samples:
            x, place = prepare(s.photo, pipeline.spec)
            ref_alphas[s.name] = torch_ref(x)
            if s.alpha is not None:
                float_gt.append(gt_metrics(restore(ref_alphas[s.name], place, pipeline.spec), s))
            tick(f"torch fp32 {s.name}")
        references = {(model, pipeline.model_info.weights_sha256): (pipeline, ref_alphas)}
        if float_gt and "torch-fp32" in rows:
            rows["torch-fp32"].update({"sad": float(np.mean([g["sad"] for g in float_gt])),
                                       "grad": float(np.mean([g["grad"] for g in float_gt]))})
        for v in ok:
            (art,) = discover([artifacts[v.key]])
            try:
                rep, _ = validate_artifact(art, samples, model, threads=max(cfg.threads), references=references,
                                           progress=lambda v=v: tick(v.label))
            except MexportError as e:
                rows[v.key]["error"] = f"run failed: {e}"
                continue
            summary = rep.summary
            rows[v.key].update({"median_psnr": summary["median_psnr"], "min_psnr": summary["min_psnr"],
                                "max_abs": summary["max_abs"], "all_finite": summary["all_finite"], "runner": rep.runner})
            if "sad_mean" in summary:
                rows[v.key].update({"sad": summary["sad_mean"], "grad": summary["grad_mean"]})

        # 3. latency: every timed variant and every peak probe, interleaved in the same rounds
        subjects = [Subject(rows[v.key]["variant"], model=model) if v.target == "torch"
                    else Subject(rows[v.key]["variant"], paths=(str(artifacts[v.key]),))
                    for v in timed if "error" not in rows[v.key]]
        subjects += list(peak_subjects.values())
        lat = interleaved_latency(subjects, tuple(cfg.threads), cfg.rounds, cfg.warmup, progress=progress) if subjects else {}
    finally:
        if cfg.work is None:
            shutil.rmtree(work, ignore_errors=True)

    # 4. derived columns; thread counts are string keys, as they will be in the JSON. A subject
    # whose timing failed at some thread count has no numbers there, and says why under "error".
    ts = [str(t) for t in cfg.threads]
    lat = {label: {**m, "threads": {str(t): v for t, v in m["threads"].items()}} for label, m in lat.items()}

    def p50s(label: str) -> dict[str, float]:
        return {t: v["p50_ms"] for t, v in lat.get(label, {}).get("threads", {}).items()}

    peaks: list[dict[str, Any]] = [{"label": k, "error": e} for k, e in peak_errors.items()]
    for (target, precision), subj in peak_subjects.items():
        m = lat[subj.label]
        peak = {"target": target, "precision": precision, "label": subj.label, "macs": peak_macs, "latency": m,
                "size_bytes": peak_sizes.get(subj.label), "p50_ms": p50s(subj.label),
                "gmacs_per_s": {t: peak_macs / (ms * 1e6) for t, ms in p50s(subj.label).items()}}
        if "error" in m:
            peak["error"] = f"latency failed: {m['error']}"
        peaks.append(peak)
    peak_of = {(p["target"], p["precision"]): p for p in peaks if "target" in p}
    base = p50s(rows["torch-fp32"]["variant"]).get(ts[0])
    for v in variants:
        r = rows[v.key]
        if v.target == "torch":
            r.update({"median_psnr": math.inf, "min_psnr": math.inf, "reference": True})
        if not v.timed or r["variant"] not in lat:
            continue
        m = lat[r["variant"]]
        r["latency"] = m
        if "error" in m:
            r["error"] = f"latency failed: {m['error']}"
        r["p50_ms"] = p50s(r["variant"])
        r["speedup_vs_torch"] = base / r["p50_ms"][ts[0]] if base and ts[0] in r["p50_ms"] else None
        r["gmacs_per_s"] = {t: macs / (ms * 1e6) for t, ms in r["p50_ms"].items()}
        p = peak_of.get((v.target, v.precision))
        if p:
            r["peak_gmacs_per_s"] = p["gmacs_per_s"]
            r["fraction_of_peak"] = {t: r["gmacs_per_s"][t] / p["gmacs_per_s"][t] for t in ts
                                     if t in r["gmacs_per_s"] and t in p["gmacs_per_s"]}
    load_end = os.getloadavg()
    return jsonable({
        "schema": SCHEMA, "command": cfg.command, "model": model, "weights_sha256": pipeline.model_info.weights_sha256,
        "macs": macs, "input_size": list(pipeline.spec.refine_size), "threads": list(cfg.threads), "rounds": cfg.rounds, "warmup": cfg.warmup,
        "photos": [s.name for s in samples], "gt_photos": [s.name for s in samples if s.alpha is not None],
        "machine": machine_info(), "load_average": {"start": list(load_start), "end": list(load_end)},
        "versions": versions(), "seconds": time.perf_counter() - t_start,
        "rows": [rows[v.key] for v in variants], "peaks": peaks,
    })


def write_matrix(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out`` (Markdown) and the JSON beside it, each written whole or not at all."""
    import json

    from ..io import atomic_write_bytes
    from .matrix_report import to_markdown

    out = Path(out)
    if out.suffix.lower() != ".md":
        raise InputError(f"--out {out}: expected a .md file (the JSON goes beside it)")
    js = out.with_suffix(".json")
    atomic_write_bytes(out, to_markdown(result).encode())
    atomic_write_bytes(js, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return out, js
