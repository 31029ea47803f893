"""Named quantization recipes, registered by decorator. Each is a measured result: see reports/."""

from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .recipe import Calibration, Recipe

RECIPES: Registry[Callable[[], Recipe]] = Registry("quantization recipe")
register_recipe = RECIPES.register


@register_recipe("naive-int8")
def naive_int8() -> Recipe:
    """Every layer int8, MinMax, per-channel weights: what a user gets from the tools' defaults."""
    return Recipe(name="naive-int8", default="int8", calibration=Calibration("minmax", per_channel=True))


@register_recipe("onnx-int8")
def onnx_int8() -> Recipe:
    """mexport's default int8 for onnxruntime (QDQ, per-channel weights, MinMax). Two convs stay float."""
    return Recipe(
        name="onnx-int8",
        default="int8",
        calibration=Calibration("minmax", per_channel=True, symmetric_activations=False),
        layers={
            "coarse.stage2d.dec.4": "float",
            "coarse.stage1d.dec.4": "float",
        },
        notes=(
            "coarse.stage2d.dec.4 (32->64 ch at 160x160, over cat(upsample(dec.3), enc.0)): one input channel reaches "
            "~228 while the others peak at 3-23, and that channel's weights reach 5.6 while every other input "
            "channel's stay <= 0.16. A per-output-channel int8 scale sized for 5.6 rounds the other channels' "
            "weights to 0-3 levels: the layer's output SQNR falls to about -7 dB and every layer after it inherits "
            "the damage (naive int8: ~13-15 dB median alpha PSNR). coarse.stage1d.dec.4 has the same pattern, "
            "weaker (12x weight imbalance). Both are kept in float; measured in reports/onnx.md and reports/tflite.md."
        ),
    )
