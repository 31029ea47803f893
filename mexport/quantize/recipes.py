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
