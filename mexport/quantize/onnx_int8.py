"""Static int8 (QDQ) for ONNX with onnxruntime's quantizer, driven by a :class:`Recipe`.

Recipe layer precisions map onto onnxruntime options: "float" -> ``nodes_to_exclude``; "int16" ->
a 16-bit ``TensorQuantOverrides`` entry for the layer's weights and output; "int8" -> the default.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from .recipe import Recipe, load_recipe


def default_recipe() -> Recipe:
    from .recipes import RECIPES

    return RECIPES.get("onnx-int8")()


def resolve_recipe(options) -> Recipe:
    recipe = load_recipe(options.recipe) if options.recipe else default_recipe()
    if options.calib_method:
        from dataclasses import replace

        recipe = replace(recipe, calibration=replace(recipe.calibration, method=options.calib_method))
    return recipe


def quantize_static(model, feeds: list[dict[str, np.ndarray]], recipe: Recipe):
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    from ..export.onnx import _Reader, module_path

    if not feeds:
        raise InputError("no calibration inputs")
    exclude, overrides = [], {}
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        prec = recipe.precision_of(module_path(node.name))
        if prec == "float":
            exclude.append(node.name)
        elif prec == "int16":
            for t in list(node.output) + [i for i in node.input if i in inits]:
                overrides[t] = [{"quant_type": QuantType.QInt16}]
    cal = recipe.calibration
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[cal.method]
    extra = {"ActivationSymmetric": cal.symmetric_activations, "CalibPercentile": cal.percentile}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        ort_quantize_static(
            str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=cal.per_channel,
            activation_type=QuantType.QUInt8 if not cal.symmetric_activations else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=exclude, extra_options=extra,
        )
        return onnx.load(dst)
