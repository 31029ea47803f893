"""Named quantization recipes, registered by decorator. Each is a measured result: see reports/."""

from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .recipe import Calibration, Recipe, load_recipe

RECIPES: Registry[Callable[[], Recipe]] = Registry("quantization recipe")
register_recipe = RECIPES.register


@register_recipe("naive-int8")
def naive_int8() -> Recipe:
    """Every layer int8, MinMax, per-channel weights: what a user gets from the tools' defaults."""
    return Recipe(name="naive-int8", default="int8", calibration=Calibration("minmax", per_channel=True))


def model_default_recipe(pipeline, target: str, splits: bool = False) -> Recipe:
    """mexport's default int8 for a model, named after the runtime ``target``: everything int8
    (per-channel weights, MinMax) except the layers the model declares int8-hostile
    (``MattingModel.meta["int8_float_layers"]``, measured), minus narrower layers inside them it
    declares safe again (``meta["int8_layers"]``). For a runtime that splits convs (``splits``), a
    conv the model declares in ``meta["int8_split_inputs"]`` (conv path -> (input channels, why))
    is split and its ``main`` part goes back to int8."""
    meta = pipeline.model_info.meta
    keep = meta.get("int8_float_layers", {})
    back = meta.get("int8_layers", {})  # narrower keys inside a float one, back to int8
    split_convs = meta.get("int8_split_inputs", {}) if splits else {}
    notes = "; ".join([f"{k}: {v}" for k, v in {**keep, **back}.items()]
                      + [f"{k}: input channels {list(ch)} split off ({why}); {k}.main int8" for k, (ch, why) in split_convs.items()])
    return Recipe(name=f"{target}-int8", default="int8", calibration=Calibration("minmax", per_channel=True),
                  layers={**{k: "float" for k in keep}, **{k: "int8" for k in back}, **{f"{k}.main": "int8" for k in split_convs}},
                  split_inputs={k: tuple(ch) for k, (ch, _) in split_convs.items()}, notes=notes or "no layer kept in float")


def resolve_recipe(options, pipeline, target: str, splits: bool = False) -> Recipe:
    """The recipe an export applies: ``options.recipe`` (checked against the model's modules now,
    before any conversion), else the model's default for ``target``; ``options.calib_method``
    overrides its calibration method. The runtime then refuses what it cannot apply."""
    from dataclasses import replace

    if options.recipe:
        recipe = load_recipe(options.recipe)
        # not for the model's own default: it may name the absent refiner of its coarse-only variant
        recipe.require_known_layers(pipeline)
    else:
        recipe = model_default_recipe(pipeline, target, splits)
    if options.calib_method:
        recipe = replace(recipe, calibration=replace(recipe.calibration, method=options.calib_method))
    return recipe
