"""The reference model: U^2-Net-p (coarse, rembg's trained weights) + mexport's trained refiner."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from ..errors import WeightsError
from ..spec import PipelineSpec
from ..quantize.recipe import Int8Declarations
from .pipeline import MattingModel
from .registry import register_model

# Layers that int8 weights break, measured (reports/onnx.md, reports/tflite.md): every target's
# default int8 recipe keeps them in float (TFLite's only partly: INT8_SPLIT_INPUTS below). The
# weight imbalance is in U^2-Net-p's trained weights.
INT8_FLOAT_LAYERS = {
    "coarse.stage2d.dec.4": (
        "32->64 ch conv at 160x160 over cat(upsample(dec.3), enc.0): one input channel reaches ~228 while the others "
        "peak at 3-23, and its weights reach 5.6 while every other input channel's stay <= 0.16; a per-output-channel "
        "int8 scale sized for 5.6 rounds the others to 0-3 levels (layer SQNR about -7 dB), and every later layer "
        "inherits it: naive int8 gives 13-15 dB median alpha PSNR"),
    "coarse.stage1d.dec.4": "the same pattern at 320x320, weaker (12x weight imbalance); about +1 dB on the worst photo",
}
# The refine network (v3) is int8 throughout: its output is clamped to the coarse alpha's local
# range, so no gain amplifies int8 rounding (v2's band did: 4 x 8 per unit of coarse alpha).

# Both coarse layers above owe their imbalance to one input channel (measured on the calibration
# photos). Where the target can split it off into a conv of its own (Recipe.split_inputs, TFLite),
# the rest of the layer's conv goes back to int8 and only that small conv and the add stay float.
INT8_SPLIT_INPUTS = {
    "coarse.stage2d.dec.4.0": ([14], "input channel 14 (dec.3's output) reaches 228 with weights up to 5.6; the other "
                                     "31 peak at 3-72 with weights <= 0.16. Fused LiteRT int8 4-8 ms faster (reports/tflite.md: "
                                     "162 -> 158 ms), alpha PSNR unchanged within 0.3 dB"),
    "coarse.stage1d.dec.4.0": ([12], "input channel 12 reaches 54 with weights up to 1.06; the other 31 peak at <= 11 "
                                     "with weights <= 0.12"),
}
# Float accuracy: the channel that stage2d.dec.3 writes at 226-228 on every photo (U^2-Net-p's "bias
# channel", models/recenter.py) travels to dec.4 shifted by -226. Same maths (fp64: within 1e-7 of
# the unshifted model, the rounding of two biases). Measured on GT15-GT18, chelsea, motorcycle_right:
# torch fp32 moves from 1.0e-4 to 3.5e-5 of fp64 in the fused alpha; LiteRT fp32 from 1.2e-4
# (builtin) / 2.0e-4 (XNNPACK) of torch to 1.1e-5 / 8.1e-5; LiteRT fp16's export check (chelsea,
# motorcycle_right, median alpha PSNR) from 43.6 to 71.2 dB, ONNX fp16's to 63.4 dB. Integer
# precisions convert the plain form (mexport.export.base: measured, it quantizes better).
RECENTER = {"coarse.stage2d.dec.3": (14, 226.0, "output channel 14 sits at 226.1-228.0 on every photo (bias 228); "
                                                   "dec.4 reads it with weights to -5.6 against a bias of 1361")}
INT8 = Int8Declarations(float_layers=INT8_FLOAT_LAYERS, split_inputs=INT8_SPLIT_INPUTS)
NOTES = {k: f"recentered: channel {ch} shifted by -{c:g}: {why}" for k, (ch, c, why) in RECENTER.items()}

REFINER_FILE = "refiner.safetensors"
REFINER_RECORD = "refiner.json"


def packaged_weights_dir() -> Path:
    return Path(str(resources.files("mexport.models") / "weights"))


def refiner_record() -> dict:
    path = packaged_weights_dir() / REFINER_RECORD
    if not path.is_file():
        raise WeightsError(f"refiner weights record not found at {path}: run `mexport train-refiner`")
    return json.loads(path.read_text())


def load_u2netp(check_sha: bool = True):
    """U^2-Net-p with rembg's trained weights, its bias channel re-centred (RECENTER)."""
    from .recenter import recenter
    from .u2netp import U2NetP
    from .weights import U2NETP_SHA256, load_into, u2netp_path

    coarse = U2NetP()
    load_into(coarse, u2netp_path(), U2NETP_SHA256 if check_sha else None)
    for key, (channel, c, _) in RECENTER.items():
        rsu_path, _, i = key.removeprefix("coarse.").rpartition(".dec.")
        dec, i = coarse.get_submodule(rsu_path).dec, int(i)
        dec[i], dec[i + 1] = recenter(dec[i], dec[i + 1], channel, c)
    return coarse


def build_u2netp_refine(refiner_path: Path | None = None, check_sha: bool = True) -> MattingModel:
    from .refiner import Refiner
    from .weights import U2NETP_SHA256, load_into, sha256_file

    coarse = load_u2netp(check_sha)
    spec = PipelineSpec()
    if refiner_path is None:
        refiner_path = packaged_weights_dir() / REFINER_FILE
        record = refiner_record()
        expected = record["sha256"] if check_sha else None
    else:  # weights made by `mexport train-refiner -o DIR`: their record lies beside them
        beside = Path(refiner_path).with_suffix(".json")
        record = json.loads(beside.read_text()) if beside.is_file() else {"config": {}}
        expected = None
    shape = {k: record["config"][k] for k in ("width", "radius") if k in record["config"]}
    refine = Refiner(**shape, mean=spec.mean, std=spec.std)  # it folds the pipeline's normalization in
    load_into(refine, refiner_path, expected)
    digest = hashlib.sha256(f"{U2NETP_SHA256}:{sha256_file(refiner_path)}".encode()).hexdigest()
    return MattingModel(coarse=coarse, refine=refine, spec=spec, name="u2netp-refine", weights_sha256=digest,
                        int8=INT8, notes=dict(NOTES), license="Apache-2.0 (U^2-Net weights); refiner: MIT (mexport)")


@register_model("u2netp-refine")
def u2netp_refine() -> MattingModel:
    return build_u2netp_refine()


@register_model("u2netp")
def u2netp_coarse_only() -> MattingModel:
    """U^2-Net-p alone, its alpha upsampled to refine size: the baseline the refiner must beat."""
    from .weights import U2NETP_SHA256

    return MattingModel(coarse=load_u2netp(), refine=None, spec=PipelineSpec(), name="u2netp", weights_sha256=U2NETP_SHA256,
                        int8=INT8, notes=dict(NOTES), license="Apache-2.0 (U^2-Net weights)")
