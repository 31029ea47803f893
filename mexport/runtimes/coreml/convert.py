"""Core ML conversion: a traced role graph through coremltools into an ML Program package
(``.mlpackage``), fp16 compute with the model's precision-sensitive layers in fp32 (``mixed``),
weight compression with ``coremltools.optimize.coreml``, and mexport's metadata (provenance in
``user_defined_metadata``). Traced conversion needs numpy < 2.4 with coremltools 9.0.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...errors import ConversionError
from ...spec import Provenance
from .options import DEPLOYMENT_TARGETS, CoreMLOptions

PROVENANCE_KEY = "mexport.provenance"
SPEC_KEY = "mexport.spec"
SPEC_VERSIONS = {"iOS16": 7, "iOS17": 8, "iOS18": 9}  # Core ML specification version per target
# Weights with fewer values stay float: biases and 1-channel heads are a fraction of a percent of
# the bytes, and k-means with 16 clusters on a 16-value bias is meaningless.
WEIGHT_THRESHOLD = 128
INT4_BLOCK = 32
# The constexpr op each compression must leave in the program, per deployment target.
EXPECTED_CONSTEXPR = {
    "int8": {"iOS16": "constexpr_affine_dequantize", "iOS17": "constexpr_affine_dequantize", "iOS18": "constexpr_blockwise_shift_scale"},
    "int4": {"iOS18": "constexpr_blockwise_shift_scale"},
    **{f"palette{n}": {t: "constexpr_lut_to_dense" for t in DEPLOYMENT_TARGETS} for n in (4, 6, 8)},
}
LICENSES = {"u2netp": "Apache-2.0 (U^2-Net-p weights, Qin et al., github.com/xuebinqin/U-2-Net)",
            "u2netp-refine": "Apache-2.0 (U^2-Net-p weights, Qin et al.); refiner: mexport's own weights"}




def fp32_layers(pipeline, options: "CoreMLOptions", recipe=None) -> dict[str, bool]:
    """Module paths that compute in fp32 (True) or not (False; a narrower path inside a kept one) in
    an fp16-compute program: the options' list, else the W8A8 recipe's float layers, else the
    model's default int8 recipe's (the layers it declares in ``MattingModel.int8.float_layers``: the
    weight imbalance that breaks int8 costs fp16 its 40 dB too, see mixed.py). Empty for a
    model that declares none: plain fp16."""
    if options.fp32_layers is not None:
        return {k: True for k in options.fp32_layers}
    if recipe is None:
        from ...quantize.recipes import model_default_recipe

        recipe = model_default_recipe(pipeline, "coreml")
    # a coarse-only model (u2netp) shares its meta with the refined one: drop the absent refiner's keys
    layers = {k: v == "float" for k, v in recipe.layers.items() if k.split(".")[0] != "refine" or pipeline.has_refine}
    return layers if any(layers.values()) else {}


def ct_target(name: str):
    import coremltools as ct

    return getattr(ct.target, name)


def trace(graph, example: tuple) -> Any:
    """TorchScript trace of a role's graph. Traced conversion needs numpy < 2.4 with coremltools 9.0
    (coremltools issue 2633: 'only 0-dimensional arrays can be converted to Python scalars')."""
    import torch

    if tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 4):
        raise ConversionError(f"coremltools cannot convert traced models with numpy {np.__version__} "
                              "(coremltools issue 2633); install numpy<2.4")
    import copy

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A copy: coremltools' passes fold constants in place, and a traced module's constants
        # share memory with the live model's weights (measured: the float reference drifted by
        # 0.13 after converting a graph whose normalization follows a fixed-weight conv).
        graph = copy.deepcopy(graph).eval()
        if hasattr(getattr(graph, "pipe", None), "normalize"):
            normalize_without_sub(graph.pipe)
        return torch.jit.trace(graph, example, check_trace=False)


def normalize_without_sub(pipe) -> None:
    """The pipeline's ``(x - mean) / std`` spelled ``(x + (-mean)) * (1 / std)`` (the same maths; the
    negation is exact) in the copy that is traced. coremltools 9.0's ``common::fuse_conv_bias`` folds
    a ``sub`` of a constant after a conv into the conv's bias by negating the constant in place
    (passes/defs/optimize_conv.py: ``bias_value *= -1`` on a view of its value), and every other op
    reading that constant then reads it negated. The pipeline's mean is read twice (coarse and refine
    normalization); with a coarse size of exactly half the refine size the coarse one follows the box
    pool's conv directly (measured: the tiny coarse+refine model's fused fp32 at 32 dB vs torch, and
    its weight-compressed exports too: compression converts the program again with every default
    pass). An ``add`` is folded without it; ``add`` then ``mul``, unlike ``mul`` then ``add``, is not
    turned into a batch_norm either (which the MIL executor has no kernel for). (models/refiner.py
    spells its own normalization without a sub for the same bug.)"""
    import types

    neg_mean, inv_std = -pipe.mean, 1.0 / pipe.std
    pipe.normalize = types.MethodType(lambda self, image: (image + neg_mean) * inv_std, pipe)


def io_types(pipeline, role: str, image_input: bool):
    """Fresh input/output descriptions on every call: ct.convert mutates the objects it is given."""
    import coremltools as ct

    ex = pipeline.example_inputs(role)
    names = pipeline.input_names(role)
    inputs = []
    for name, t in zip(names, ex):
        if name == "image" and image_input:
            # Pixels 0..255 -> [0, 1]: normalization with mean/std is inside the graph already.
            inputs.append(ct.ImageType(name=name, shape=tuple(t.shape), scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0],
                                       color_layout=ct.colorlayout.RGB))
        else:
            inputs.append(ct.TensorType(name=name, shape=tuple(t.shape), dtype=np.float32))
    # float32 output even in fp16 programs: the app reads alpha as Float32 without a conversion.
    outputs = [ct.TensorType(name=pipeline.output_name(role), dtype=np.float32)]
    return inputs, outputs


def _int4_block(in_channels: int) -> int:
    """The largest block of at most INT4_BLOCK input channels that divides them (coremltools skips
    a weight whose input channels the block size does not divide, e.g. the 3-channel first conv)."""
    return max(b for b in range(1, min(INT4_BLOCK, in_channels) + 1) if in_channels % b == 0)


def _keep_float(mlmodel, keep: tuple[str, ...]) -> dict:
    """``op_name_configs`` entries (None = leave uncompressed) for the weight consts of the given
    module paths: traced conversion names them ``pipe_<module path with _>_..._weight...``."""
    prefixes = tuple("pipe_" + k.replace(".", "_") + "_" for k in keep)
    names = {}
    for o in mlmodel._mil_program.functions["main"].operations:
        if o.op_type == "conv" and o.inputs["weight"].op.op_type == "const":
            name = o.inputs["weight"].op.name
            if name.startswith(prefixes):
                names[name] = None
    return names


def _compression_config(mlmodel, compression: str, keep: tuple[str, ...] = ()):
    import coremltools.optimize.coreml as cto

    skip = _keep_float(mlmodel, keep)

    if compression == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
        return cto.OptimizationConfig(global_config=op, op_name_configs=skip)
    if compression == "int4":
        per_op = {}
        for o in mlmodel._mil_program.functions["main"].operations:
            if o.op_type == "conv" and o.inputs["weight"].op.op_type == "const":
                w = o.inputs["weight"]
                per_op[w.op.name] = cto.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=_int4_block(int(w.shape[1])),
                    weight_threshold=WEIGHT_THRESHOLD)
        return cto.OptimizationConfig(op_name_configs={**per_op, **skip})
    nbits = int(compression[len("palette"):])
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD)
    return cto.OptimizationConfig(global_config=op, op_name_configs={**_few_values(mlmodel, 2**nbits), **skip})


def _few_values(mlmodel, palette: int) -> dict:
    """``op_name_configs`` entries for the weight consts with at most ``palette`` distinct values
    (fixed kernels such as one-hot pixel unshuffles and bilinear phase filters; small layers):
    coremltools' ``unique`` palettizer, whose palette is those values, exact. coremltools 9.0's
    k-means asked for more clusters than a tensor has distinct values returns a palette that does
    not hold them (measured: max error 10.6 on an 11-value bilinear kernel at palette8, which took
    the reference model from 41.6 to 18.5 dB)."""
    import coremltools.optimize.coreml as cto

    exact = cto.OpPalettizerConfig(mode="unique", granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD)
    out = {}
    for o in mlmodel._mil_program.functions["main"].operations:
        if o.op_type == "const" and o.outputs[0].val is not None and np.ndim(o.outputs[0].val) >= 2:
            v = np.asarray(o.outputs[0].val)
            if v.size >= WEIGHT_THRESHOLD and np.issubdtype(v.dtype, np.floating) and len(np.unique(v)) <= palette:
                out[o.name] = exact
    return out


def compress(mlmodel, compression: str, keep: tuple[str, ...] = ()):
    """Compress every conv weight except those of ``keep`` (module paths), which stay in the
    program's float precision: U^2-Net-p's int8-hostile layers (MattingModel.int8)."""
    import coremltools.optimize.coreml as cto

    config = _compression_config(mlmodel, compression, keep)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # U^2-Net-p has all-zero output channels: their per-channel scale is 0 and numpy warns about
        # 0/0; the NaN check after compression is what guards the result.
        warnings.simplefilter("ignore")
        if compression in ("int8", "int4"):
            return cto.linear_quantize_weights(mlmodel, config=config, joint_compression=False)
        return cto.palettize_weights(mlmodel, config=config, joint_compression=False)


def check_finite_weights(program, where: str) -> None:
    """Every const and decompressed constexpr weight must be finite (compression can make NaN)."""
    from .mil_executor import KERNELS

    env: dict[str, np.ndarray] = {}
    bad = []
    for op in program.functions["main"].operations:
        if op.op_type == "const":
            v = np.asarray(op.outputs[0].val)
            env[op.outputs[0].name] = v
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                bad.append(op.name)
        elif op.op_type.startswith("constexpr_"):
            def get(name, default=..., _op=op):
                var = _op.inputs.get(name)
                if var is None:
                    if default is ...:
                        raise KeyError(name)
                    return default
                return env.get(var.name, np.asarray(var.val) if var.val is not None else None)

            kernel = KERNELS.get(op.op_type)
            if kernel is None:
                raise ConversionError(f"{where}: compression produced {op.op_type}, which mexport cannot check")
            v = np.asarray(kernel(op, get))
            env[op.outputs[0].name] = v
            if not np.isfinite(v.astype(np.float32)).all():
                bad.append(op.name)
    if bad:
        raise ConversionError(f"{where}: NaN/Inf weights after compression in {', '.join(bad[:5])}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))


# coremltools stamps the day of conversion into the metadata: two exports on two days differ.

def set_metadata(mlmodel, pipeline, role: str, prov: Provenance, options: "CoreMLOptions") -> None:
    info = pipeline.model_info
    spec = pipeline.spec
    mlmodel.author = "mexport"
    mlmodel.version = prov.mexport_version
    mlmodel.license = info.license or LICENSES.get(info.name, "unspecified (set MattingModel.license)")
    mlmodel.short_description = (f"{info.name} {role} alpha matting ({prov.precision}, {options.deployment_target}), "
                                 f"exported by mexport {prov.mexport_version}")
    h, w = spec.coarse_size if role == "coarse" else spec.refine_size
    descriptions = {
        "image": f"RGB photo resized to {w}x{h} ({spec.aspect}); "
                 + ("pixels 0..255, scaled by 1/255 inside the model" if options.image_input else "float32 NCHW in [0, 1]"),
        "coarse_alpha": f"coarse alpha at {spec.coarse_size[1]}x{spec.coarse_size[0]} in [0, 1], from coarse.mlpackage",
        "coarse_alpha_out": f"coarse alpha at {w}x{h} in [0, 1] (feed it to refine.mlpackage)",
        "alpha": f"alpha matte at {w}x{h}, float32 in [0, 1]; resize to the photo with {spec.output_resize}",
    }
    for e in spec.extra_inputs:
        descriptions[e.name] = e.description or f"extra input {e.name}, {e.channels} channel(s) in [0, 1]"
    for name in pipeline.input_names(role):
        mlmodel.input_description[name] = descriptions[name]
    out = pipeline.output_name(role)
    mlmodel.output_description[out] = descriptions["coarse_alpha_out" if out == "coarse_alpha" else out]
    mlmodel.user_defined_metadata[PROVENANCE_KEY] = prov.to_json()
    mlmodel.user_defined_metadata[SPEC_KEY] = spec.to_json()
    mlmodel.user_defined_metadata["mexport.compute_precision"] = options.compute_precision
    mlmodel.user_defined_metadata["mexport.compression"] = options.compression or ("w8a8" if options.w8a8 else "none")
    mlmodel.user_defined_metadata["mexport.deployment_target"] = options.deployment_target
