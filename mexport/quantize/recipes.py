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


def model_default_recipe(pipeline, target: str) -> Recipe:
    """mexport's default int8 for a model: everything int8 (per-channel weights, MinMax) except the
    layers the model declares int8-hostile (``MattingModel.meta["int8_float_layers"]``, measured),
    minus narrower layers inside them it declares safe again (``meta["int8_layers"]``)."""
    keep = pipeline.model_info.meta.get("int8_float_layers", {})
    back = pipeline.model_info.meta.get("int8_layers", {})  # narrower keys inside a float one, back to int8
    notes = "; ".join(f"{k}: {v}" for k, v in {**keep, **back}.items()) or "no layer kept in float"
    return Recipe(name=f"{target}-int8", default="int8", calibration=Calibration("minmax", per_channel=True),
                  layers={**{k: "float" for k in keep}, **{k: "int8" for k in back}}, notes=notes)
