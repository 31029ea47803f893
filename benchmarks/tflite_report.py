"""Writes reports/tflite.md: every TFLite variant of every role of a model -- latency (1 and 2
threads, interleaved, median of repeats), size, XNNPACK fallbacks, alpha PSNR vs float on real photos;
then whether the fused fp32 and mexport int8 models load on tflite-runtime 2.14 (the old runtime app
teams pin, run in .venv-tflite-runtime, created by scripts/tflite_runtime_venv.sh when missing), or
which op blocks them, and their latency and outputs there vs ai-edge-litert.

    .venv/bin/python benchmarks/tflite_report.py [--model u2netp-refine]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOS = ROOT.parent / "shared" / "data" / "alphamatting" / "image"
OLD_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"


def old_runtime_python() -> Path:
    """.venv-tflite-runtime's Python, made by the same script setup.sh runs if it is missing."""
    import subprocess

    ready = OLD_PYTHON.exists() and subprocess.run([str(OLD_PYTHON), "-c", "import tflite_runtime"], capture_output=True).returncode == 0
    if not ready:
        subprocess.run(["bash", str(ROOT / "scripts" / "tflite_runtime_venv.sh")], check=True)
    return OLD_PYTHON


def old_runtime_row(path: Path, evals: list[dict[str, np.ndarray]], refs: list[np.ndarray], input_names: list[str], python: Path,
                    repeats: int) -> dict:
    """One .tflite on the old runtime (its own process) beside ai-edge-litert (this process), 1 thread:
    does it load, or which op blocks it; outputs on every eval feed (max abs difference between the
    runtimes, each runtime's median alpha PSNR vs the float graph's ``refs``); how many nodes the old
    runtime's XNNPACK took; latency, median of ``repeats`` interleaved invokes, each timed inside its
    runtime's own process, so the file exchange with the worker is not counted."""
    from mexport.errors import UnsupportedOpError
    from mexport.runtimes.tflite.runner import LiteRTRunner, encode
    from mexport.runtimes.tflite.external import SubprocessLiteRTRunner
    from mexport.validate.metrics import alpha_psnr

    new = LiteRTRunner(path, threads=1)
    row = {"new": new.runtime}
    try:
        old = SubprocessLiteRTRunner(path, python, threads=1)
    except UnsupportedOpError as e:
        return {**row, "old": {"name": e.runtime, "version": e.runtime_version}, "loads": False,
                "blocked_by": f"{e.op}" + (f" v{e.op_version}" if e.op_version is not None else "")}
    with old:
        diffs, p_old, p_new = [], [], []
        for f, ref in zip(evals, refs):
            a, b = old(*(f[n] for n in input_names)), new(*(f[n] for n in input_names))
            diffs.append(float(np.abs(a - b).max()))
            p_old.append(alpha_psnr(a, ref))
            p_new.append(alpha_psnr(b, ref))
        x = [evals[0][n] for n in input_names]
        feed = {n: encode(a, d, new.nhwc) for n, a, d in zip(new.input_names, x, new.inputs)}
        t_old, t_new = [], []
        for _ in range(repeats):  # interleaved: load from elsewhere lands on both runtimes alike
            t_old += old.invoke_ms(*x, repeat=1)
            t0 = time.perf_counter()
            new.runner(**feed)
            t_new.append((time.perf_counter() - t0) * 1e3)
        return {**row, "old": old.runtime, "loads": True, "max_abs": max(diffs), "old_xnnpack": old.delegation(),
                "psnr_old": float(np.median(p_old)), "psnr_new": float(np.median(p_new)),
                "old_ms": float(np.median(t_old)), "new_ms": float(np.median(t_new))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="u2netp-refine")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "reports" / "tflite.md"))
    args = ap.parse_args()

    import torch
    from ai_edge_litert.interpreter import Interpreter

    from mexport.api import load_pipeline
    from mexport.runtimes import get_runtime
    from mexport.runtimes.tflite import convert as tfl
    from mexport.runtimes.tflite import flatbuffer as fbuf
    from mexport.runtimes.tflite import inspection as insp
    from mexport.export import make_provenance
    from mexport.models.recenter import plain_form
    from mexport.photos import load_photo, skimage_photo_path
    from mexport.runtimes.tflite import quantize as q
    from mexport.quantize.calibration import load_calibration, role_inputs
    from mexport.quantize.recipe import Recipe
    from mexport.validate.metrics import alpha_psnr

    pipe = load_pipeline(args.model)
    t = get_runtime("tflite")
    photos = [(f"GT{i}", load_photo(PHOTOS / f"GT{i}.png")) for i in (15, 16, 17, 18)]
    photos += [(n, load_photo(skimage_photo_path(n))) for n in ("chelsea", "motorcycle_right")]
    opts8 = t.Options(precision="int8")
    # Integer variants convert the model's plain form, as `mexport tflite` does (models/recenter.py).
    plain = plain_form(pipe)
    recipe, cal = t.prepare_quantization(plain, opts8)
    naive = Recipe(name="naive-int8")
    tmp = Path(tempfile.mkdtemp(prefix="tflrep-"))
    rows, old_rows, fp32_rows = [], [], []
    old_python = old_runtime_python()
    for role in pipe.roles():
        opts = t.Options()
        module, _, _ = tfl.export_module(pipe, role, opts)
        data = tfl.litert_convert(module, role, tfl.sample_inputs(pipe, role, opts))
        feeds = [tfl.feed(f, opts) for f in role_inputs(plain, role, cal.photos, recipe.calibration.max_photos)]

        def convert(p):
            return tfl.litert_convert(tfl.export_module(p, role, opts)[0], role, tfl.sample_inputs(p, role, opts))

        data_plain = convert(plain)
        data_plain = data if data_plain == data else data_plain  # a role without re-centred layers (refine)
        # mexport's int8 converts the recipe's re-parameterized copy (split convs), as `mexport tflite --int8` does
        split = tfl.quantization_pipeline(plain, opts8, recipe)
        data8 = data_plain if split is plain else convert(split)
        variants = {"fp32": ("fp32", data), "fp16": ("fp16", q.quantize_fp16(data)),
                    "dynamic int8": ("dynamic-int8", q.quantize_dynamic_int8(data_plain)),
                    "naive int8 (static_wi8_ai8)": ("int8", q.quantize_static(data_plain, role, feeds, naive, plain)[0]),
                    "mexport int8 (tflite-int8)": ("int8", q.quantize_static(data8, role, feeds, recipe, split)[0])}
        evals = role_inputs(pipe, role, photos)
        graph = pipe.graph(role)
        with torch.inference_mode():
            refs = [graph(*(torch.from_numpy(f[n]) for n in pipe.input_names(role))).numpy() for f in evals]
        paths = {}
        for name, (prec, d) in variants.items():
            p = tmp / f"{role}-{name.split()[0]}-{len(paths)}.tflite"
            p.write_bytes(fbuf.finalize(d, make_provenance(pipe, t, role, t.Options(precision=prec) if prec != "int8" else opts8)))
            paths[name] = p
            run = t.runner(p)
            ps = [alpha_psnr(run(*(f[n] for n in pipe.input_names(role))), r) for f, r in zip(evals, refs)]
            fb = insp.delegation(d)["fallback_ops"]
            rows.append({"role": role, "variant": name, "bytes": len(d), "psnr_med": float(np.median(ps)), "psnr_min": float(np.min(ps)),
                         "fallback": ", ".join(f"{k} x{v}" for k, v in fb.items()) or "none"})
        fp32_rows.append({"role": role, **fp32_fidelity(paths["fp32"], graph, evals, refs, pipe.input_names(role))})
        if data_plain is not data:  # the same graph without the re-centring: what the fp32 export was before it
            pp = tmp / f"{role}-plain-fp32.tflite"
            pp.write_bytes(fbuf.finalize(data_plain, make_provenance(pipe, t, role, t.Options())))
            pgraph = plain.graph(role)
            with torch.inference_mode():
                prefs = [pgraph(*(torch.from_numpy(f[n]) for n in pipe.input_names(role))).numpy() for f in evals]
            fp32_rows.append({"role": f"{role}, plain form", **fp32_fidelity(pp, pgraph, evals, prefs, pipe.input_names(role))})
        for threads in (1, 2):
            its = {}
            for name, p in paths.items():
                it = Interpreter(model_path=str(p), num_threads=threads)
                it.allocate_tensors()
                for d in it.get_input_details():
                    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
                it.invoke()
                its[name] = it
            times = {n: [] for n in its}
            for _ in range(args.repeats):
                for n, it in its.items():  # interleaved: load changes hit every variant alike
                    t0 = time.perf_counter()
                    it.invoke()
                    times[n].append((time.perf_counter() - t0) * 1e3)
            for r in rows:
                if r["role"] == role and r["variant"] in times:
                    r[f"ms{threads}"] = float(np.median(times[r["variant"]]))
        if role == "fused":
            for name in ("fp32", "mexport int8 (tflite-int8)"):
                old_rows.append({"variant": name, **old_runtime_row(paths[name], evals, refs, pipe.input_names(role), old_python, args.repeats)})
        print(role, "done", flush=True)
    load = os.getloadavg()
    lines = [f"# TFLite (LiteRT) variants of {args.model}", "",
             f"Generated by `.venv/bin/python benchmarks/tflite_report.py --model {args.model}`.", "",
             f"Latency: ai_edge_litert Interpreter with XNNPACK, median of {args.repeats} interleaved invokes after warm-up. "
             f"Machine: {os.cpu_count()} cores, shared; load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
             "(1/5/15 min), so absolute times are inflated; ratios within a role are the useful numbers.",
             "PSNR: alpha PSNR vs the float PyTorch graph of the same role on GT15-GT18 (alphamatting) + chelsea + motorcycle_right. "
             "Calibration: mexport's default photos (" + cal.source + "). Fallback: nodes XNNPACK did not take.", "",
             "| role | variant | 1 thread ms | 2 threads ms | speedup vs fp32 (1 thr) | size MB | PSNR median dB | PSNR min dB | XNNPACK fallback |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        base = next(x for x in rows if x["role"] == r["role"] and x["variant"] == "fp32")
        psnr = lambda v: "inf" if not np.isfinite(v) else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {r['role']} | {r['variant']} | {r['ms1']:.0f} | {r['ms2']:.0f} | {base['ms1'] / r['ms1']:.2f}x | "
                     f"{r['bytes'] / 1e6:.2f} | {psnr(r['psnr_med'])} | {psnr(r['psnr_min'])} | {r['fallback']} |")
    lines += fp32_section(fp32_rows)
    lines += old_runtime_section(old_rows, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from mexport.io import atomic_write_text

    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


def fp32_fidelity(path: Path, graph, evals: list[dict[str, np.ndarray]], refs: list[np.ndarray], input_names: list[str]) -> dict:
    """The fp32 file against torch fp32 (``refs``), with LiteRT's builtin kernels and with XNNPACK, and
    both against the same graph in float64: max abs over the eval feeds."""
    import copy

    import torch

    from mexport.runtimes.tflite.runner import LiteRTRunner

    builtin, xnn = LiteRTRunner(path, xnnpack=False), LiteRTRunner(path)
    exact = copy.deepcopy(graph).double()
    out = {"builtin": 0.0, "xnnpack": 0.0, "torch_fp64": 0.0, "builtin_fp64": 0.0}
    for f, ref in zip(evals, refs):
        x = [f[n] for n in input_names]
        with torch.inference_mode():
            r64 = exact(*(torch.from_numpy(a).double() for a in x)).numpy()
        b = builtin(*x)
        for k, v in (("builtin", np.abs(b - ref)), ("xnnpack", np.abs(xnn(*x) - ref)), ("torch_fp64", np.abs(ref - r64)),
                     ("builtin_fp64", np.abs(b - r64))):
            out[k] = max(out[k], float(v.max()))
    return out


def fp32_section(fp32_rows: list[dict]) -> list[str]:
    lines = ["", "## fp32 against torch, graph by graph", "",
             "Max abs difference in alpha over the photos above. The refine graph is fed torch's own coarse alpha, so its "
             "row is the refiner's arithmetic alone; the fused row adds U^2-Net-p's fp32 rounding, which the refine "
             "network passes on near edges (refiner v2's band amplified it up to 32x). The fp64 columns run the same graph in "
             "float64: torch fp32's own distance from it is the model's fp32 noise floor. Rows marked 'plain form' "
             "convert the model without its re-centred bias channel (mexport.models.recenter; integer precisions "
             "convert that form) and compare with torch running that form. Measured by the command above.", "",
             "| graph | LiteRT builtin kernels vs torch | LiteRT XNNPACK vs torch | torch fp32 vs fp64 | LiteRT builtin vs fp64 |",
             "|---|---:|---:|---:|---:|"]
    for r in fp32_rows:
        lines.append(f"| {r['role']} | {r['builtin']:.2e} | {r['xnnpack']:.2e} | {r['torch_fp64']:.2e} | {r['builtin_fp64']:.2e} |")
    return lines


def old_runtime_section(old_rows: list[dict], repeats: int) -> list[str]:
    if not old_rows:
        return []
    o, n = old_rows[0]["old"], old_rows[0]["new"]
    old, new = f"{o['name']} {o['version']}", f"{n['name']} {n['version']}"
    lines = ["", f"## The fused model on {old}", "",
             f"Apps pin older runtimes. Each fused model run by {old} in its own Python (`--tflite-python "
             f".venv-tflite-runtime/bin/python`) and by {new} in this one, 1 thread each, XNNPACK on as each runtime "
             f"defaults. Latency: median of {repeats} interleaved invokes, each timed inside its runtime's process. "
             "Outputs on the photos above: max abs difference between the two runtimes, and each runtime's median alpha PSNR "
             f"vs the float PyTorch graph. XNNPACK: nodes {old}'s default delegate took (counted after a run), and what it left "
             "to the builtin kernels.", "",
             f"| variant | loads on {old} | blocked by | {old} ms | {new} ms | ratio | max abs difference | PSNR vs float, {old} "
             f"| PSNR vs float, {new} | XNNPACK on {old} |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in old_rows:
        if not r["loads"]:
            lines.append(f"| {r['variant']} | no | {r['blocked_by']} | — | — | — | — | — | — | — |")
            continue
        psnr = lambda v: "inf" if not np.isfinite(v) else f"{v:.1f}"  # noqa: E731
        x = r["old_xnnpack"]
        left = ", ".join(f"{k} x{v}" for k, v in sorted(x["fallback_ops"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['variant']} | yes | — | {r['old_ms']:.0f} | {r['new_ms']:.0f} | {r['old_ms'] / r['new_ms']:.2f}x | "
                     f"{r['max_abs']:.2e} | {psnr(r['psnr_old'])} | {psnr(r['psnr_new'])} | "
                     f"{x['delegated']}/{x['nodes']} nodes" + (f"; builtin: {left}" if left else "") + " |")
    return lines


if __name__ == "__main__":
    main()
