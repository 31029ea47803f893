"""onnxruntime's quantization of an ONNX graph: fp16, dynamic int8, and static int8 (QDQ) driven
by a :class:`~mexport.quantize.recipe.Recipe`.

Recipe layer precisions map onto onnxruntime options:
- "int8" (default): per-channel uint8 weights (zero point 128), uint8 activations.
  uint8 activations, not ORT 1.32's default int8: with int8 activations the x86 CPU kernels fuse
  only 47 of U^2-Net-p's 119 convs into QLinearConv and the model runs at 0.8x fp32; with uint8 all
  119 fuse (2.4-2.7x fp32, with int8 weights on an AVX-512 VNNI CPU).
  uint8 weights, not int8: onnxruntime's x86 kernel for uint8 x int8 (U8S8) sums pairs of products
  in 16 bits (VPMADDUBSW), which saturates on CPUs without AVX-VNNI (its quantizer's docs say so
  under ``reduce_range``). The same int8-weight model measured 38.4 dB alpha PSNR vs float on
  astronaut with the QDQ arithmetic run as written (graph optimizations off) and 21.8 dB with the
  fused kernels, on an AMD EPYC (Zen 3, AVX2, no VNNI); on the AVX-512 VNNI machine the earlier
  reports were made on, the same kind of model passed. A model must not depend on the CPU that
  runs it: U8U8 sums in 32 bits on every CPU. Measured on that AVX2 machine (reference model,
  default recipe): 35.7 dB median on the export check against 31.5 with int8 weights, 721 ms
  against 541 ms (1 thread). U8U8 is the slower kernel on x86; on a CPU without int8 dot-product
  instructions int8 is then no faster than fp32 (reports/onnx.md; it was 1.49x fp32 with int8
  weights on AVX-512 VNNI). ``reduce_range`` (7-bit int8 weights), ORT's other remedy, kept the
  speed (480 ms) but lost a bit everywhere: 31.1 dB, below the check.
  A recipe with ``symmetric_activations`` keeps int8 weights: onnxruntime has no int8 x uint8 format.
- "float": a Conv's weights and outputs in 16 bits (weights per-channel); every other op excluded
  from quantization (``nodes_to_exclude``: it runs in float). Convs are not excluded: onnxruntime's
  CPU graph optimizer ``WeightBiasQuantization`` (on by default) re-quantizes a float Conv sitting
  between Q/DQ nodes with per-tensor int8 weights when the session loads, silently undoing the
  exclusion (6 dB on U^2-Net-p) unless every app disables it. 16-bit weights are within ~1e-5 of
  float and survive any session. Elementwise ops and resizes have no such pass, and in 16-bit QDQ
  they cost a quantize/dequantize pair each (the refiner's full-resolution ops: +6 ms over float).
- "int16": 16-bit weights and 16-bit outputs for the layer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...quantize.recipe import Recipe


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over prepared feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - ORT calls it for some methods
        pass


def weight_grid(calibration) -> str:
    """The 8-bit weight grid of a static int8 export (mexport.quantize.bias_correction.int8_weight)."""
    return "int8" if calibration.symmetric_activations else "uint8"


def to_fp16(model):
    """float16 weights and compute, float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(model, keep_io_types=True)
    # The converter appends its input Casts at the end of the node list; the checker (rightly)
    # wants topological order.
    wrapped = OnnxModel(model)
    wrapped.topological_sort()
    return wrapped.model


def quantize_dynamic(model, recipe: Recipe | None):
    """Dynamic int8 keeps the same layers in float as the static recipe: the damage comes from the
    weights of those layers, which dynamic quantization quantizes too."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    exclude = [n.name for n, p in zip(model.graph.node, node_module_paths(model)) if recipe and recipe.precision_of(p) == "float"]
    # Weights computed in the graph (a fixed kernel built in forward, like the refiner's 1x1
    # channel sum) are not initializers, and onnxruntime's dynamic quantizer raises on them
    # ("Expected ... to be an initializer"): those ops stay float.
    inits = {i.name for i in model.graph.initializer}
    exclude += [n.name for n in model.graph.node
                if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] not in inits]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        ort_quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude)
        return onnx.load(dst)


def node_module_paths(model) -> list[str]:
    """Each node's module path. onnxsim names the nodes it fuses without a scope ('Mul_0' for the
    refiner's band * gain * 6): those inherit the path of the node producing their first non-constant
    input. Otherwise they fall to the recipe's default: an int8 Mul whose calibrated output range
    (0..192) is 32x the clamp that follows cut the band to 1/8 steps (fused PSNR 23.5 dB)."""
    from .convert import module_path

    made_by: dict[str, str] = {}
    paths = []
    for node in model.graph.node:  # topological order
        path = module_path(node.name)
        if not node.name.startswith("/"):
            path = next((made_by[i] for i in node.input if made_by.get(i)), path)
        for o in node.output:
            made_by[o] = path
        paths.append(path)
    return paths


def quantize_static(model, feeds: list[dict[str, np.ndarray]], recipe: Recipe, calibration_cache: Path | None = None):
    """``calibration_cache``: onnxruntime's file of calibrated ranges, written by the first call and
    read (instead of calibrating again) by later ones on the same float graph and method."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if not feeds:
        raise InputError("no calibration inputs")
    overrides: dict = {}
    exclude: list[str] = []
    inits = {i.name for i in model.graph.initializer}
    for node, path in zip(model.graph.node, node_module_paths(model)):
        prec = recipe.precision_of(path)
        conv = node.op_type in ("Conv", "ConvTranspose") and node.input[1] in inits
        if prec == "float" and not conv:
            exclude.append(node.name)
        if prec in ("float", "int16") and conv:
            overrides[node.input[1]] = [{"quant_type": QuantType.QInt16, "axis": 0}]
        if prec in ("float", "int16"):
            # Also for excluded nodes: an int8 consumer still quantizes their output, in 8 bits unless
            # told otherwise (the refiner's box-pooled coarse alpha lost 0.009, its band 0.04).
            for t in node.output:
                overrides[t] = [{"quant_type": QuantType.QUInt16}]
    cal = recipe.calibration
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[cal.method]
    extra = {"ActivationSymmetric": cal.symmetric_activations, "CalibPercentile": cal.percentile}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        ort_quantize_static(
            str(src), str(dst), CalibrationReader(feeds), quant_format=QuantFormat.QDQ, per_channel=cal.per_channel,
            activation_type=QuantType.QInt8 if cal.symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if weight_grid(cal) == "uint8" else QuantType.QInt8, calibrate_method=method, extra_options=extra, nodes_to_exclude=exclude,
            **({"calibration_cache_path": str(calibration_cache)} if calibration_cache else {}),
        )
        return onnx.load(dst)


def with_bias_shifts(model, shifts: dict[str, np.ndarray]):
    """A copy of the float ``model`` with ``shifts`` (module path -> per-output-channel amount)
    subtracted from the bias of each Conv / Gemm node of that module path
    (mexport.quantize.bias_correction); a node without a bias gets one. A bias initializer that
    several nodes share gets a copy of its own first."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    users: dict[str, int] = {}
    for node in out.graph.node:
        for i in node.input:
            users[i] = users.get(i, 0) + 1
    for node, path in zip(out.graph.node, node_module_paths(out)):
        shift = shifts.get(path)
        if shift is None or node.op_type not in ("Conv", "Gemm"):
            continue
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in inits:
                # a Constant node's output: the exporter folded a constant factor into this conv (the
                # shift would need it too), and onnxruntime's quantizer leaves its weights float
                continue
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        else:
            bias = np.zeros(shift.shape, np.float32)
        if bias.shape != shift.shape:
            continue
        name = f"{node.name or node.output[0]}/bias_corrected"
        out.graph.initializer.append(numpy_helper.from_array((bias - shift).astype(np.float32), name))
        if len(node.input) > 2:
            old = node.input[2]
            node.input[2] = name
            users[old] -= 1
            if users[old] == 0 and old in inits:
                out.graph.initializer.remove(inits.pop(old))
        else:
            node.input.append(name)
    return out
