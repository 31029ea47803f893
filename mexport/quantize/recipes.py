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
    """mexport's default int8 for a model, named after the runtime ``target``: the recipe of the
    model's own measured declarations (``MattingModel.int8``, :class:`Int8Declarations`), naive
    int8 for a model that declares nothing. ``splits``: the runtime splits convs."""
    return pipeline.model_info.int8.recipe(f"{target}-int8", splits)


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
