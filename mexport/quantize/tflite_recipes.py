"""Named recipes for the TFLite (LiteRT) target; each is a measured result: see reports/tflite.md."""

from __future__ import annotations

from .recipe import Calibration, Recipe
from .recipes import RECIPES, register_recipe

if "tflite-int8" not in RECIPES.names():

    @register_recipe("tflite-int8")
    def tflite_int8() -> Recipe:
        """Full int8 (per-channel int8 weights, per-tensor int8 activations, global min/max) with
        U^2-Net-p's two weight-imbalanced decoder convs kept float."""
        return Recipe(
            name="tflite-int8", default="int8", calibration=Calibration("minmax", per_channel=True),
            layers={"coarse.stage2d.dec.4": "float", "coarse.stage1d.dec.4": "float"},
            notes=("coarse.stage2d.dec.4 (conv over cat(upsample(dec.3), enc.0), 32->64 ch at 160x160): one input "
                   "channel reaches 228 with weights up to 5.57 vs <= 0.16 elsewhere, so a per-output-channel int8 "
                   "weight scale wipes the other channels (layer SQNR -7.3 dB; whole model 13 dB -> 40 dB when kept "
                   "float). coarse.stage1d.dec.4: the same pattern, 12x weaker. A layer missing from the model "
                   "(another architecture) is an error: pass --recipe."),
        )
