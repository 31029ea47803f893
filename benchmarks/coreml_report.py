"""Write reports/coreml.md: size and emulated fidelity of every Core ML precision of the reference model.

    .venv/bin/python benchmarks/coreml_report.py [--model u2netp-refine] [--precision fp16 ...] [--out FILE]

Fidelity is the fused model's alpha vs the float PyTorch pipeline at refine size, run by mexport's
MIL executor (Linux emulation of the saved program, fp16 rounding after every op), on
scikit-image's evaluation photos plus alphamatting GT15..GT18. Latency needs Core ML (macOS only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (row label, precision, options): "fp16 (plain)" is fp16 compute without the model's fp32 layers,
# to show what they buy.
PRECISIONS = [("fp32", "fp32", {}), ("fp16", "fp16", {}), ("fp16 (plain)", "fp16", {"fp32_layers": ()}),
              ("weights-int8", "weights-int8", {}), ("weights-int4", "weights-int4", {"deployment_target": "iOS18"}),
              ("palette8", "palette8", {}), ("palette6", "palette6", {}), ("palette4", "palette4", {}), ("w8a8", "w8a8", {})]
ALPHAMATTING = ROOT.parent / "shared" / "data" / "alphamatting" / "image"


def default_model() -> str:
    from mexport.models.u2netp_refine import REFINER_FILE, packaged_weights_dir

    return "u2netp-refine" if (packaged_weights_dir() / REFINER_FILE).is_file() else "u2netp"


def photos():
    from mexport.photos import DEFAULT_EVAL, default_photos, load_photo

    return default_photos(DEFAULT_EVAL) + [(f"GT{i}", load_photo(ALPHAMATTING / f"GT{i}.png")) for i in (15, 16, 17, 18)]


def mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def main(argv=None) -> None:
    import warnings

    warnings.simplefilter("ignore")
    from mexport.api import load_pipeline
    from mexport.export import export
    from mexport.runtimes import get_runtime
    from mexport.runner import TorchRunner
    from mexport.validate.fidelity import default_threshold, fidelity, photo_tensors

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--precision", action="append", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "coreml.md")
    args = ap.parse_args(argv)
    model = args.model or default_model()
    pipeline = load_pipeline(model)
    target = get_runtime("coreml")
    ps = photos()
    tensors = photo_tensors(ps, pipeline.spec)
    ref = TorchRunner(pipeline)
    refs = {id(t[0]): ref(*t) for _, t in tensors}  # the float reference, computed once

    def reference(image, *extra):
        return refs[id(image)]

    rows = []
    for label, precision, kw in PRECISIONS:
        if args.precision and label not in args.precision:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = export("coreml", pipeline, Path(tmp) / "art", target.Options(precision=precision, check=False, **kw))
            convert_s = time.perf_counter() - t0
            runner = target.runner(result.files["fused"])
            t0 = time.perf_counter()
            f = fidelity(runner, reference, tensors)
            exec_s = (time.perf_counter() - t0) / len(tensors)
            facts = result.facts
            rows.append({"precision": label, "target": target.Options(precision=precision, **kw).deployment_target,
                         "fp32_layers": (", ".join(f"`{k}`" for k in facts["fused"]["fp32_layers"]) or "-")
                         + "".join(f" (`{k}` fp16)" for k in facts["fused"]["fp16_inside_fp32_layers"]),
                         "sizes": {r: facts[r]["bytes"] for r in facts}, "bits": facts["fused"]["bits_per_conv_weight"],
                         "constexpr": ", ".join(sorted(facts["fused"]["constexpr_ops"])) or "-",
                         "median": f.median_psnr, "min": f.min_psnr, "max_abs": f.max_abs, "threshold": default_threshold(precision),
                         "convert_s": convert_s, "exec_s": exec_s})
            print(label, f.summary(), f"{exec_s:.1f} s/photo emulated", flush=True)
            write(args.out, rows, pipeline, model, ps)
    print(f"wrote {args.out}")


def write(out: Path, rows, pipeline, model: str, ps) -> None:
    from mexport.validate.fidelity import default_threshold  # noqa: F401 - rows carry thresholds

    roles = pipeline.roles()
    lines = [
        "# Core ML target: sizes and emulated fidelity",
        "",
        f"Made by `.venv/bin/python benchmarks/coreml_report.py` (model `{model}`"
        + ("" if model == "u2netp-refine" else ": the refiner weights were not trained yet, so this is U^2-Net-p alone, "
           "its alpha upsampled to 1024x1024") + ").",
        "",
        f"Fidelity: the fused package ({pipeline.spec.refine_size[1]}x{pipeline.spec.refine_size[0]} in, alpha out) run by "
        "mexport's MIL executor on Linux, vs the float PyTorch pipeline, alpha PSNR (peak 1) over "
        f"{len(ps)} photos ({', '.join(n for n, _ in ps)}). The executor rounds each op's result to the dtype the "
        "program declares for it (fp16 after every fp16 op); a device's Neural Engine/GPU kernels accumulate "
        "differently, so these are estimates of the program's numerics, not device measurements. Latency needs "
        "Core ML itself: macOS only.",
        "",
        "fp16 compute keeps the layers the model declares precision-sensitive in fp32, with the ops that build "
        "their inputs (`fp32 layers` column; `mexport.runtimes.coreml.mixed`); `fp16 (plain)` is the same program "
        "without them. fp32 ops do not run on the Neural Engine.",
        "",
        "| precision | deployment target | fp32 layers | " + " | ".join(f"{r} MB" for r in roles)
        + " | bits/conv weight | compressed weights op | median PSNR dB | min PSNR dB | max abs | gate dB | pass | emulated s/photo | latency |",
        "|" + "---|" * (12 + len(roles)),
    ]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['target']} | {r['fp32_layers']} | " + " | ".join(mb(r["sizes"][ro]) for ro in roles)
                     + f" | {r['bits']} | {r['constexpr']} | {r['median']:.1f} | {r['min']:.1f} | {r['max_abs']:.2g} | "
                     f"{r['threshold']:.0f} | {'yes' if r['median'] >= r['threshold'] else 'NO'} | {r['exec_s']:.1f} | macOS only |")
    lines += ["", "Compression: `weights-int8` per-channel symmetric int8; `weights-int4` per-block symmetric int4 "
              "(block = largest divisor of the input channels up to 32; needs iOS18); `paletteN` per-tensor k-means. "
              "Weights with fewer than 128 values (biases, 1-channel heads) stay float. `w8a8`: int8 weights and "
              "activations (MIL quantize/dequantize, iOS17+), calibrated on scikit-image's calibration photos on the torch "
              "side with `coremltools.optimize.torch.quantization.LinearQuantizer` (MinMax observers, affine "
              "activations); the model's default recipe keeps its declared layers float (`recipe.json`).", ""]
    from mexport.io import atomic_write_text

    atomic_write_text(out, "\n".join(lines))


if __name__ == "__main__":
    main()
