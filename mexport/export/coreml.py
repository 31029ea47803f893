"""Core ML target: coremltools ML Program packages (``.mlpackage``), weight compression with
``coremltools.optimize.coreml``, provenance in ``user_defined_metadata``, and validation on Linux
through mexport's MIL executor (``mexport.validate.mil_executor``), since ``MLModel.predict``
exists only on macOS.

Precision names (the keys of ``mexport.validate.fidelity.DEFAULT_MIN_PSNR``):
``fp32`` / ``fp16`` (compute precision, no compression), ``weights-int8`` (per-channel linear
int8), ``weights-int4`` (per-block int4, iOS18+), ``palette8/6/4`` (k-means palettization),
``w8a8`` (int8 weights and activations, calibrated on photos on the torch side, iOS17+).

fp16 compute keeps the layers the model declares precision-sensitive in fp32
(``mexport.export.coreml_mixed``); the package's metadata names them (``mexport.fp32_layers``).
"""

from __future__ import annotations

import json
import platform
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError
from ..spec import Provenance
from .base import ExportOptions, Target, parse_provenance, register_target

PROVENANCE_KEY = "mexport.provenance"
SPEC_KEY = "mexport.spec"
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
W8A8_MIN_TARGET = "iOS17"  # MIL quantize/dequantize ops (activation quantization) start at iOS17
SPEC_VERSIONS = {"iOS16": 7, "iOS17": 8, "iOS18": 9}  # Core ML specification version per target
COMPUTE = ("fp16", "fp32")
COMPRESSIONS = ("int8", "int4", "palette4", "palette6", "palette8")
PRECISION_OF_COMPRESSION = {"int8": "weights-int8", "int4": "weights-int4", "palette4": "palette4",
                            "palette6": "palette6", "palette8": "palette8"}
COMPRESSION_OF_PRECISION = {v: k for k, v in PRECISION_OF_COMPRESSION.items()}
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


@dataclass(frozen=True)
class CoreMLOptions(ExportOptions):
    """``precision`` is the name thresholds are looked up by; the other fields say how to get it.

    Either name a compressed precision (``precision="palette6"``) or give ``compression=`` with a
    compute precision (``precision="fp32", compression="int8"`` -> fp32 compute, int8 weights,
    ``precision`` becomes ``weights-int8``). Conflicting combinations are rejected.
    """

    precision: str = "fp16"
    compute_precision: str | None = None
    compression: str | None = None
    w8a8: bool = False
    deployment_target: str | None = None  # iOS16, or iOS17 for w8a8
    image_input: bool = True
    fp32_layers: tuple[str, ...] | None = None  # with fp16 compute; None: the model's declared layers

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalize in place
        w8a8 = self.w8a8 or self.precision == "w8a8"
        if self.deployment_target is None:
            set_("deployment_target", W8A8_MIN_TARGET if w8a8 else "iOS16")
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise ValueError(f"deployment_target must be one of {DEPLOYMENT_TARGETS}, got {self.deployment_target!r}")
        if self.compute_precision is not None and self.compute_precision not in COMPUTE:
            raise ValueError(f"compute_precision must be one of {COMPUTE}, got {self.compute_precision!r}")
        if self.compression is not None and self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS} or None, got {self.compression!r}")
        if self.fp32_layers is not None:
            set_("fp32_layers", tuple(self.fp32_layers))
        if w8a8:
            if self.compression is not None or self.precision in COMPRESSION_OF_PRECISION:
                raise ValueError("w8a8 quantizes the weights itself; it takes no weight compression")
            if self.precision not in ("w8a8",) + COMPUTE:
                raise ValueError(f"precision {self.precision!r} conflicts with w8a8")
            compute = self.compute_precision or (self.precision if self.precision in COMPUTE else "fp16")
            if self.precision in COMPUTE and compute != self.precision:
                raise ValueError(f"precision {self.precision!r} conflicts with compute_precision {compute!r}")
            set_("compute_precision", compute)
            set_("precision", "w8a8")
            set_("w8a8", True)
            if DEPLOYMENT_TARGETS.index(self.deployment_target) < DEPLOYMENT_TARGETS.index(W8A8_MIN_TARGET):
                raise InputError(f"w8a8 needs deployment target {W8A8_MIN_TARGET} or later (activation quantize/"
                                 f"dequantize ops); got {self.deployment_target}")
        elif self.precision in COMPRESSION_OF_PRECISION:
            named = COMPRESSION_OF_PRECISION[self.precision]
            if self.compression not in (None, named):
                raise ValueError(f"precision {self.precision!r} conflicts with compression {self.compression!r}")
            set_("compression", named)
            set_("compute_precision", self.compute_precision or "fp16")
        elif self.precision in COMPUTE:
            if self.compute_precision not in (None, self.precision):
                raise ValueError(f"precision {self.precision!r} conflicts with compute_precision {self.compute_precision!r}")
            set_("compute_precision", self.precision)
            if self.compression is not None:
                set_("precision", PRECISION_OF_COMPRESSION[self.compression])
        else:
            raise ValueError(f"Core ML precision must be one of {', '.join(CoreMLTarget.precisions)}, got {self.precision!r}")
        if self.compression == "int4" and self.deployment_target not in ("iOS18",):
            raise InputError(f"int4 per-block weights need deployment_target iOS18 or later (constexpr_blockwise_shift_scale); "
                             f"got {self.deployment_target}")
        super().__post_init__()
        if not self.w8a8 and (self.calib is not None or self.calib_count is not None or self.calib_method is not None):
            raise ValueError("calibration photos apply to w8a8 only (the other Core ML precisions need no data)")


def fp32_layers(pipeline, options: "CoreMLOptions", recipe=None) -> dict[str, bool]:
    """Module paths that compute in fp32 (True) or not (False; a narrower path inside a kept one) in
    an fp16-compute program: the options' list, else the W8A8 recipe's float layers, else the
    model's default int8 recipe's (the layers it declares in ``meta["int8_float_layers"]``: the
    weight imbalance that breaks int8 costs fp16 its 40 dB too, see coreml_mixed). Empty for a
    model that declares none: plain fp16."""
    if options.fp32_layers is not None:
        return {k: True for k in options.fp32_layers}
    if recipe is None:
        from ..quantize.recipes import model_default_recipe

        recipe = model_default_recipe(pipeline, "coreml")
    # a coarse-only model (u2netp) shares its meta with the refined one: drop the absent refiner's keys
    layers = {k: v == "float" for k, v in recipe.layers.items() if k.split(".")[0] != "refine" or pipeline.has_refine}
    return layers if any(layers.values()) else {}


def _ct_target(name: str):
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
        return torch.jit.trace(copy.deepcopy(graph).eval(), example, check_trace=False)


def _io_types(pipeline, role: str, image_input: bool):
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
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=int(compression[len("palette"):]), granularity="per_tensor",
                                weight_threshold=WEIGHT_THRESHOLD)
    return cto.OptimizationConfig(global_config=op, op_name_configs=skip)


def compress(mlmodel, compression: str, keep: tuple[str, ...] = ()):
    """Compress every conv weight except those of ``keep`` (module paths), which stay in the
    program's float precision: U^2-Net-p's int8-hostile layers (MattingModel.meta)."""
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
    from ..validate.mil_executor import KERNELS

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
CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"


def make_deterministic(path: Path) -> None:
    """Make two exports of one model byte-identical, across processes and days:

    - coremltools names the package's items with random UUIDs (uuid4 in ModelPackage): replaced
      by UUIDs derived from each item's path;
    - the model spec's protobuf maps (``user_defined_metadata`` and the program's attributes) are
      serialized in hash-table order, which differs from process to process: it is written again
      with protobuf's deterministic serialization (sorted map keys);
    - ``conversion_date`` (a day) is dropped; the provenance records what made the package."""
    from coremltools.proto import Model_pb2

    from ..validate.mil_executor import package_files

    spec_file, _ = package_files(path)
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    user = spec.description.metadata.userDefined
    if CONVERSION_DATE_KEY in user:
        del user[CONVERSION_DATE_KEY]
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))
    manifest = path / "Manifest.json"
    m = json.loads(manifest.read_text())
    renamed = {}
    for old, entry in m["itemInfoEntries"].items():
        renamed[old] = str(uuid.uuid5(uuid.NAMESPACE_URL, "mexport:" + entry["path"])).upper()
    m["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(m["itemInfoEntries"].items(), key=lambda kv: renamed[kv[0]])}
    m["rootModelIdentifier"] = renamed[m["rootModelIdentifier"]]
    manifest.write_text(json.dumps(m, indent=4, sort_keys=True) + "\n")


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_spec(path: Path):
    from coremltools.proto import Model_pb2

    from ..validate.mil_executor import package_files

    spec_file, _ = package_files(path)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as e:
        raise InputError(f"{path}: the model spec does not parse ({e})") from None
    return spec


def set_metadata(mlmodel, pipeline, role: str, prov: Provenance, options: "CoreMLOptions") -> None:
    info = pipeline.model_info
    spec = pipeline.spec
    mlmodel.author = "mexport"
    mlmodel.version = prov.mexport_version
    mlmodel.license = info.meta.get("license") or LICENSES.get(info.name, "unspecified (set MattingModel.meta['license'])")
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


@register_target("coreml")
class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    precisions = ("fp32", "fp16", "weights-int8", "weights-int4", "palette8", "palette6", "palette4", "w8a8")
    Options = CoreMLOptions

    def __init__(self) -> None:
        self._w8a8: dict[tuple, Any] = {}  # calibrated once per export, shared by its roles

    def converter_versions(self) -> dict[str, str]:
        import coremltools
        import torch

        return {"torch": torch.__version__, "coremltools": coremltools.__version__}

    def prepare_quantization(self, pipeline, options: ExportOptions):
        """W8A8 only: the recipe (the model's default: its declared layers float) and the photos."""
        if not getattr(options, "w8a8", False):
            return None, None
        from dataclasses import replace

        from ..quantize.calibration import load_calibration
        from ..quantize.coreml_w8a8 import check_recipe
        from ..quantize.recipe import load_recipe
        from ..quantize.recipes import model_default_recipe

        recipe = load_recipe(options.recipe) if options.recipe else model_default_recipe(pipeline, "coreml")
        if options.recipe:
            recipe.require_known_layers(pipeline)
        if options.calib_method:
            recipe = replace(recipe, calibration=replace(recipe.calibration, method=options.calib_method))
        check_recipe(recipe)
        return recipe, load_calibration(options.calib, options.calib_count)

    def _graph_pipeline(self, pipeline, options: "CoreMLOptions", recipe, calibration):
        """The pipeline whose graphs are traced: the float one, or its W8A8 fake-quantized copy."""
        if not options.w8a8:
            return pipeline
        if recipe is None or calibration is None:
            raise ConversionError("w8a8 needs a recipe and calibration photos (prepare_quantization)")
        from ..quantize.coreml_w8a8 import quantized_pipeline

        key = (id(pipeline), recipe.sha256(), calibration.sha256)
        if key not in self._w8a8:
            self._w8a8 = {key: quantized_pipeline(pipeline, recipe, calibration)}
        return self._w8a8[key]

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None, progress=None) -> dict[str, Any]:
        import coremltools as ct

        from .coreml_mixed import Fp32Layers, module_scopes

        if not isinstance(options, CoreMLOptions):
            options = CoreMLOptions(**{k: getattr(options, k) for k in ExportOptions.__dataclass_fields__})
        graph_pipeline = self._graph_pipeline(pipeline, options, recipe, calibration)
        traced = trace(graph_pipeline.graph(role), pipeline.example_inputs(role))
        inputs, outputs = _io_types(pipeline, role, options.image_input)
        layers = fp32_layers(pipeline, options, recipe) if options.compute_precision == "fp16" else {}
        selector = Fp32Layers(module_scopes(traced), layers) if layers else None
        if selector is not None:
            precision = ct.transform.FP16ComputePrecision(op_selector=selector)
        else:
            precision = ct.precision.FLOAT16 if options.compute_precision == "fp16" else ct.precision.FLOAT32
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlmodel = ct.convert(traced, source="pytorch", inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                     compute_precision=precision, minimum_deployment_target=_ct_target(options.deployment_target),
                                     skip_model_load=True)
        except Exception as e:  # coremltools raises many types; the first line names the op
            raise ConversionError(f"coremltools could not convert the {role} graph: {str(e).splitlines()[0][:300]}") from None
        kept32: tuple[str, ...] = ()
        if selector is not None:
            unmatched = [k for k, n in selector.matched.items() if n == 0]
            if role == "fused" and unmatched:  # the fused graph holds every layer of the model
                raise ConversionError(f"fp32 layers {', '.join(unmatched)} match no op of the traced model; "
                                      "check the layer names (module paths like coarse.stage2d.dec.4)")
            kept32 = tuple(k for k, n in selector.matched.items() if n)
        float_layers = ()
        if options.compression:
            float_layers = tuple(pipeline.model_info.meta.get("int8_float_layers", {}))
            mlmodel = compress(mlmodel, options.compression, float_layers)
            check_finite_weights(mlmodel._mil_program, f"{role} ({options.compression})")
        elif options.w8a8:
            from ..quantize.coreml_w8a8 import float_layers as recipe_float_layers

            float_layers = recipe_float_layers(recipe)
            check_finite_weights(mlmodel._mil_program, f"{role} (w8a8)")
        set_metadata(mlmodel, pipeline, role, provenance, options)
        mlmodel.user_defined_metadata["mexport.fp32_layers"] = ",".join(kept32) or "none"
        # narrower layers inside those that the recipe lets compute in fp16 (refine.lowres)
        mlmodel.user_defined_metadata["mexport.fp16_inside_fp32_layers"] = ",".join(sorted(selector.exceptions) if selector else []) or "none"
        mlmodel.user_defined_metadata["mexport.fp32_convs"] = str(selector.convs if selector is not None else 0)
        mlmodel.user_defined_metadata["mexport.float_layers"] = ",".join(float_layers) or "none"
        mlmodel.save(str(path))
        make_deterministic(path)
        report = structure_report(path, pipeline=pipeline, role=role, options=options)
        if report["problems"]:
            raise ConversionError(f"{path.name} fails its structural check: " + "; ".join(report["problems"]))
        return report["facts"]

    def runner(self, path: Path, threads: int | None = None, **kw):
        if platform.system() == "Darwin" and not kw.get("emulate", False):
            from ..validate.coreml_runner import CoreMLRunner

            return CoreMLRunner(path, compute_units=kw.get("compute_units", "ALL"))
        from ..validate.coreml_runner import CoreMLEmulatedRunner

        return CoreMLEmulatedRunner(path, threads=threads)

    def read_provenance(self, path: Path) -> Provenance:
        spec = read_spec(Path(path))
        value = spec.description.metadata.userDefined.get(PROVENANCE_KEY)
        if value is None:
            raise InputError(f"{path}: no mexport provenance record in its metadata")
        return parse_provenance(value, path)


def structure_report(path: Path, pipeline=None, role: str | None = None, options: CoreMLOptions | None = None) -> dict[str, Any]:
    """Check a saved package's structure without running it: names, shapes, dtypes, the image
    input's scaling and colour layout, spec version, ops allowed at the deployment target, the
    constexpr ops the compression must leave, size and metadata. Collects every problem.
    Without ``pipeline``/``options`` the expectations come from the package's own provenance."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import FeatureTypes_pb2

    from ..validate.mil_executor import load_package

    path = Path(path)
    problems: list[str] = []
    pkg = load_package(path)
    spec = pkg.spec
    meta = spec.description.metadata
    ud = dict(meta.userDefined)
    prov = parse_provenance(ud[PROVENANCE_KEY], path) if PROVENANCE_KEY in ud else None
    if prov is None:
        problems.append("no mexport provenance in user_defined_metadata")
    role = role or (prov.role if prov else None)
    pspec = pipeline.spec if pipeline is not None else (prov.pipeline_spec if prov else None)
    target_name = options.deployment_target if options else ud.get("mexport.deployment_target", "iOS16")
    compression = (options.compression if options else (None if ud.get("mexport.compression", "none") == "none" else ud["mexport.compression"]))
    w8a8 = options.w8a8 if options else compression == "w8a8"
    if w8a8:  # its weights are int8 like --weights int8; its activations are checked below
        compression = "int8"
    image_input = options.image_input if options else None
    compute = options.compute_precision if options else ud.get("mexport.compute_precision")

    # names, shapes, dtypes
    if pspec is not None and role is not None:
        h, w = pspec.coarse_size if role == "coarse" else pspec.refine_size
        want_in = {"image": (1, 3, h, w)}
        if role == "refine":
            want_in["coarse_alpha"] = (1, 1, *pspec.coarse_size)
        for e in pspec.extra_inputs:
            want_in[e.name] = (1, e.channels, h, w)
        got_in = [i.name for i in spec.description.input]
        if got_in != list(want_in):
            problems.append(f"inputs {got_in}, expected {list(want_in)}")
        for i in spec.description.input:
            kind = i.type.WhichOneof("Type")
            if kind == "imageType":
                shape = (1, 3, i.type.imageType.height, i.type.imageType.width)
                if i.type.imageType.colorSpace != FeatureTypes_pb2.ImageFeatureType.RGB:
                    problems.append(f"input {i.name}: colour layout {FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(i.type.imageType.colorSpace)}, expected RGB")
                if image_input is False:
                    problems.append(f"input {i.name} is an image, a tensor was asked for")
            else:
                shape = tuple(i.type.multiArrayType.shape)
                if i.type.multiArrayType.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
                    problems.append(f"input {i.name}: dtype is not float32")
                if i.name == "image" and image_input:
                    problems.append("input image is a tensor, an ImageType was asked for")
            if i.name in want_in and shape != want_in[i.name]:
                problems.append(f"input {i.name}: shape {shape}, expected {want_in[i.name]}")
        out_name = "coarse_alpha" if role == "coarse" else "alpha"
        outs = list(spec.description.output)
        if [o.name for o in outs] != [out_name]:
            problems.append(f"outputs {[o.name for o in outs]}, expected [{out_name!r}]")
        for o in outs:
            if o.type.multiArrayType.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
                problems.append(f"output {o.name}: dtype is not float32")
            declared = tuple(pkg.main.outputs[0].shape)
            if declared != (1, 1, h, w):
                problems.append(f"output {o.name}: program shape {declared}, expected {(1, 1, h, w)}")

    # image scaling: the program must multiply the image input by 1/255 and add no bias
    image_ops = [op for op in pkg.main.operations if any(getattr(v, "name", None) == "image" for v in _flat_inputs(op))]
    if any(i.type.WhichOneof("Type") == "imageType" for i in spec.description.input):
        scale_ops = [op for op in image_ops if op.op_type == "mul"]
        if len(scale_ops) != 1:
            problems.append(f"image input: expected one scaling mul, found {[op.op_type for op in image_ops]}")
        else:
            y = scale_ops[0].inputs["y"].val
            if y is None or abs(float(np.asarray(y)) - 1 / 255) > 1e-9:
                problems.append(f"image input scale is {y}, expected 1/255")
            consumers = [op for op in pkg.main.operations if any(getattr(v, "name", None) == scale_ops[0].outputs[0].name for v in _flat_inputs(op))]
            if any(op.op_type == "add" for op in consumers):
                problems.append("image input has a bias add; expected bias 0")

    # spec version and ops allowed at the deployment target
    want_version = SPEC_VERSIONS[target_name]
    if spec.specificationVersion != want_version:
        problems.append(f"specification version {spec.specificationVersion}, expected {want_version} for {target_name}")
    tgt = _ct_target(target_name)
    ops: dict[str, int] = {}
    for op in pkg.main.operations:
        ops[op.op_type] = ops.get(op.op_type, 0) + 1
    for t in sorted(ops):
        if t != "const" and tgt not in SSAOpRegistry.core_ops.get(t, {}):
            problems.append(f"op {t} is not available at {target_name}")

    # compression: the expected constexpr op feeds every large conv weight; fp16 programs hold fp16
    constexpr = {t: n for t, n in ops.items() if t.startswith("constexpr_")}
    if w8a8:
        missing = [t for t in ("quantize", "dequantize") if t not in ops]
        if missing and any(op.op_type == "conv" for op in pkg.main.operations):
            problems.append(f"w8a8: no {' or '.join(missing)} op in the program (activations are not quantized)")
    if compression:
        want_op = EXPECTED_CONSTEXPR[compression].get(target_name)
        recorded = ud.get("mexport.float_layers")  # the layers the export left uncompressed
        if recorded is not None:
            float_layers = [] if recorded == "none" else recorded.split(",")
        else:
            float_layers = list(pipeline.model_info.meta.get("int8_float_layers", {})) if pipeline is not None else []
        keep = tuple("pipe_" + k.replace(".", "_") + "_" for k in float_layers)
        eligible = [op for op in pkg.main.operations if op.op_type == "conv" and op.inputs["weight"].op.op_type in ("const",) + tuple(constexpr)
                    and np.asarray(op.inputs["weight"].shape).prod() >= WEIGHT_THRESHOLD and not op.inputs["weight"].op.name.startswith(keep)]
        if eligible and (want_op is None or want_op not in constexpr):
            problems.append(f"compression {compression}: no {want_op or 'valid constexpr op'} in the program (found {sorted(constexpr) or 'none'})")
        for op in pkg.main.operations:
            if op.op_type == "conv":
                wv = op.inputs["weight"]
                if wv.op.op_type == "const" and np.asarray(wv.val).size >= WEIGHT_THRESHOLD and not wv.op.name.startswith(keep):
                    problems.append(f"conv {op.name}: weight of {np.asarray(wv.val).size} values left uncompressed")
    elif constexpr:
        problems.append(f"uncompressed export holds {sorted(constexpr)}")
    from coremltools.converters.mil.mil import types

    dtypes: dict[str, int] = {}
    for op in pkg.main.operations:
        if op.op_type != "const" and not op.op_type.startswith("constexpr_"):
            d = types.builtin_to_string(op.outputs[0].dtype)
            dtypes[d] = dtypes.get(d, 0) + 1
    conv_dtypes = [types.builtin_to_string(op.outputs[0].dtype) for op in pkg.main.operations if op.op_type == "conv"]
    fp32_convs = int(ud.get("mexport.fp32_convs", "0"))
    if compute == "fp32" and set(conv_dtypes) - {"fp32"}:
        problems.append(f"conv outputs are {sorted(set(conv_dtypes))}, expected fp32 compute")
    elif compute == "fp16":
        # fp16 compute with the model's precision-sensitive layers in fp32 (coreml_mixed): exactly the
        # convs the converter kept are fp32, every other conv is fp16
        if set(conv_dtypes) - {"fp16", "fp32"} or conv_dtypes.count("fp32") != fp32_convs:
            problems.append(f"conv outputs: {conv_dtypes.count('fp16')} fp16, {conv_dtypes.count('fp32')} fp32 "
                            f"(others: {sorted(set(conv_dtypes) - {'fp16', 'fp32'})}); expected fp16 compute with "
                            f"{fp32_convs} fp32 conv(s) of the layers {ud.get('mexport.fp32_layers', 'none')}")

    # size and metadata
    size = package_bytes(path)
    weight_file = pkg.weights_dir / "weight.bin"
    weight_bytes = weight_file.stat().st_size if weight_file.is_file() else 0
    n_weights = sum(int(np.prod(op.inputs["weight"].shape)) for op in pkg.main.operations if op.op_type == "conv")
    for key in ("author", "versionString", "license", "shortDescription"):
        if not getattr(meta, key):
            problems.append(f"metadata {key} is empty")
    for feat in list(spec.description.input) + list(spec.description.output):
        if not feat.shortDescription:
            problems.append(f"{feat.name} has no description")
    if SPEC_KEY not in ud:
        problems.append("no pipeline spec in user_defined_metadata")
    facts = {"bytes": size, "weight_bytes": weight_bytes, "blobs": pkg.blobs, "spec_version": spec.specificationVersion,
             "deployment_target": target_name, "compute_precision": compute, "compression": "w8a8" if w8a8 else (compression or "none"),
             "fp32_layers": [] if ud.get("mexport.fp32_layers", "none") == "none" else ud["mexport.fp32_layers"].split(","),
             "fp16_inside_fp32_layers": [] if ud.get("mexport.fp16_inside_fp32_layers", "none") == "none"
             else ud["mexport.fp16_inside_fp32_layers"].split(","),
             "op_dtypes": dict(sorted(dtypes.items())),
             "ops": dict(sorted(ops.items())), "constexpr_ops": constexpr, "conv_weight_values": n_weights,
             "bits_per_conv_weight": round(8 * weight_bytes / n_weights, 2) if n_weights else None}
    return {"problems": problems, "facts": facts}


def _flat_inputs(op) -> list:
    out = []
    for v in op.inputs.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out
