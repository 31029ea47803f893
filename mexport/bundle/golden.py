"""Golden vectors: real photos preprocessed exactly as a device must, each artifact's output on
them, and the tolerance another device's runtime must meet against that output.

Files (all little-endian, row-major, no header, so Kotlin's ``ByteBuffer.order(LITTLE_ENDIAN)``
and Swift's ``Data.withUnsafeBytes`` read them in one line):

- ``golden/<photo>/image.png``: the photo resized to the refine size, 8-bit RGB: what the device
  feeds a pixel-buffer (image) input, and what the float tensor is made of.
- ``golden/<photo>/input.nchw.f32``: ``image.png`` / 255 as float32, shape 1x3xHxW (and
  ``input.nhwc.f32``, 1xHxWx3, when an artifact in the bundle takes NHWC).
- ``golden/<photo>/expected/<artifact>.f32``: that artifact's alpha on this input, float32, 1x1xHxW.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

GOLDEN_PHOTOS = ("astronaut", "chelsea")


@dataclass(frozen=True)
class Tolerance:
    """How far another device's output may be from the expected output. Every bound given must hold,
    and the output must be finite."""

    numerics: str
    max_abs: float | None = None
    min_psnr_db: float | None = None
    max_mean_abs: float | None = None
    why: str = ""

    def check(self, out: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
        from ..validate import metrics

        out = np.asarray(out, dtype=np.float32).reshape(expected.shape)
        finite = bool(np.isfinite(out).all())
        err = np.abs(out.astype(np.float64) - expected.astype(np.float64)) if finite else None
        r = {"finite": finite,
             "max_abs": float(err.max()) if finite else math.inf,
             "mean_abs": float(err.mean()) if finite else math.inf,
             "psnr_db": float(metrics.alpha_psnr(out, expected)) if finite else -math.inf}
        failed = [] if finite else ["non-finite output"]
        if self.max_abs is not None and r["max_abs"] > self.max_abs:
            failed.append(f"max abs {r['max_abs']:.3g} > {self.max_abs:g}")
        if self.min_psnr_db is not None and r["psnr_db"] < self.min_psnr_db:
            failed.append(f"PSNR {r['psnr_db']:.1f} dB < {self.min_psnr_db:g} dB")
        if self.max_mean_abs is not None and r["mean_abs"] > self.max_mean_abs:
            failed.append(f"mean abs {r['mean_abs']:.3g} > {self.max_mean_abs:g}")
        r["passed"], r["failed"] = not failed, failed
        return r

    def describe(self) -> str:
        parts = [f"max abs <= {self.max_abs:g}" if self.max_abs is not None else "",
                 f"PSNR >= {self.min_psnr_db:g} dB" if self.min_psnr_db is not None else "",
                 f"mean abs <= {self.max_mean_abs:g}" if self.max_mean_abs is not None else ""]
        return " and ".join(p for p in parts if p) + " vs the expected alpha; finite"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


# Numerics classes. The expected outputs come from this machine's runtime (x86 CPU, or the MIL
# emulator for Core ML); the bounds are sized for a phone's runtime, not for this machine.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(
        "fp32", max_abs=1e-3,
        why="fp32 kernels on another CPU (ARM NEON/XNNPACK, Accelerate) differ from x86 only by summation "
            "order and FMA use: ~1e-6 relative per op, ~1e-5 at the alpha through a sigmoid. 1e-3 leaves 100x "
            "headroom and is still a quarter of one 8-bit alpha level. Run fp32 on the CPU: a GPU delegate with "
            "relaxed (fp16) precision needs the fp16 tolerance."),
    "fp16": Tolerance(
        "fp16", min_psnr_db=40.0, max_mean_abs=0.005,
        why="fp16 compute (Core ML on the Neural Engine or GPU, LiteRT GPU) rounds every activation to 11 "
            "significant bits, and devices accumulate in different orders and widths (the Neural Engine "
            "accumulates differently from the emulator that made the expected output). Two fp16 runs of "
            "one model differ far less than fp16 differs from fp32; mexport's own fp16 gate vs float is "
            "40 dB median, so 40 dB vs the expected fp16 output plus a mean bound of about one 8-bit level "
            "tolerates a different rounding path but catches a wrong input (BGR, 0..1 vs 0..255, a "
            "different resize) by a wide margin."),
    "int8": Tolerance(
        "int8", min_psnr_db=30.0, max_mean_abs=0.01,
        why="int8 kernels requantize with different rounding (ARM's rounding doubling high multiply vs "
            "float requantization on x86; XNNPACK vs MLAS vs the Neural Engine): an activation on a "
            "rounding boundary flips by one step and the flip propagates. 30 dB (RMS error ~0.03) and a "
            "mean absolute error of 0.01 (about 2.5 8-bit levels) allow that spread; a wrong input or "
            "wrong scale/zero point gives errors ten times larger."),
}

PRECISION_NUMERICS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "dynamic-int8": "int8", "w8a8": "int8"}
WEIGHT_ONLY = ("weights-int8", "weights-int4", "palette8", "palette6", "palette4")


def tolerance_for(precision: str, compute_precision: str | None = None) -> Tolerance:
    """Weight-only compression decompresses to the same weights everywhere, so the compute precision
    decides (fp16 unless the file records fp32); activation quantization is int8."""
    if precision in WEIGHT_ONLY:
        return TOLERANCES["fp32" if compute_precision == "fp32" else "fp16"]
    try:
        return TOLERANCES[PRECISION_NUMERICS[precision]]
    except KeyError:
        raise InputError(f"no golden-vector tolerance for precision {precision!r}; known: "
                         f"{', '.join(list(PRECISION_NUMERICS) + list(WEIGHT_ONLY))}") from None


def golden_photos(names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    from ..photos import default_photos

    return default_photos(tuple(names))


def write_f32(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.ascontiguousarray(a, dtype="<f4").tobytes())


def read_f32(data: bytes, shape: list[int] | tuple[int, ...], what: str) -> np.ndarray:
    n = int(np.prod(shape))
    if len(data) != 4 * n:
        raise InputError(f"{what}: {len(data)} bytes, expected {4 * n} for float32 {list(shape)}")
    return np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)


def write_png(path: Path, tensor: np.ndarray) -> None:
    """The 8-bit image the float tensor came from (prepare() divides uint8 pixels by 255)."""
    from PIL import Image

    pixels = np.clip(np.round(tensor[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    if not np.array_equal(pixels.astype(np.float32) / 255.0, tensor[0].transpose(1, 2, 0)):
        raise AssertionError("prepare() no longer yields uint8 / 255: the PNG would not match the tensor")
    path.parent.mkdir(parents=True, exist_ok=True)
    # No text chunks or timestamps: the same pixels give the same bytes.
    Image.fromarray(pixels, "RGB").save(path, format="PNG", optimize=False, compress_level=9)
