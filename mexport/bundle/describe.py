"""What an app team needs to know about one model file, read from the file itself, per format.

Each reader is registered by target name and returns the same shape of record: ``inputs`` and
``outputs`` (name, shape, dtype, layout, quantization), ``min_runtime`` (what the file needs from
the runtime), and format facts. The file is the authority here, not the exporter's intentions: a
converter that silently changed a dtype or layout shows up in the manifest as it is.

A registered target without a reader gets the pipeline contract's shapes, marked as such
(``"source": "pipeline contract"``), never passed off as read from the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..registry import Registry
from ..spec import Provenance

Reader = Callable[[Path, Provenance], dict[str, Any]]
READERS: Registry[Reader] = Registry("format reader")

# The first onnxruntime release that runs each ONNX opset (onnxruntime.ai/docs/reference/compatibility.html).
ORT_FOR_OPSET = {13: "1.7", 14: "1.8", 15: "1.10", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.16", 20: "1.17", 21: "1.20"}
# Core ML specification version -> the first OS releases that load it.
COREML_OS = {7: "iOS 16 / macOS 13", 8: "iOS 17 / macOS 14", 9: "iOS 18 / macOS 15"}


def describe(target: str, path: Path, provenance: Provenance) -> dict[str, Any]:
    """The record for one model file of a registered ``target``."""
    try:
        reader = READERS.get(target)
    except InputError:
        return contract_description(provenance)
    return reader(Path(path), provenance)


def layout_of(shape: list[int]) -> str:
    """NCHW or NHWC from a 4-D shape (channels are the small axis); 'unknown' when ambiguous."""
    if len(shape) != 4:
        return "unknown"
    c_first, c_last = shape[1], shape[3]
    if 0 < c_first <= 4 < c_last:
        return "NCHW"
    if 0 < c_last <= 4 < c_first:
        return "NHWC"
    return "unknown"


def tensor(name: str, shape: list[int], dtype: str, quantization: dict | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype, "layout": layout_of(list(shape)),
            "quantization": quantization, **extra}


def contract_description(prov: Provenance) -> dict[str, Any]:
    """Shapes the pipeline contract promises for a role, for formats mexport has no reader for."""
    spec = prov.pipeline_spec
    h, w = spec.coarse_size if prov.role == "coarse" else spec.refine_size
    inputs = [tensor("image", [1, 3, h, w], "float32")]
    if prov.role == "refine":
        inputs.append(tensor("coarse_alpha", [1, 1, *spec.coarse_size], "float32"))
    inputs += [tensor(e.name, [1, e.channels, h, w], "float32") for e in spec.extra_inputs]
    out = "coarse_alpha" if prov.role == "coarse" else "alpha"
    return {"source": "pipeline contract (mexport has no reader for this format)", "inputs": inputs,
            "outputs": [tensor(out, [1, 1, h, w], "float32")], "min_runtime": None}


@READERS.register("onnx")
def describe_onnx(path: Path, prov: Provenance) -> dict[str, Any]:
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def value(v) -> dict[str, Any]:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return tensor(v.name, dims, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name)

    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    opset = opsets.get("ai.onnx")
    ops = sorted({n.op_type for n in model.graph.node})
    quantized = any(op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger") for op in ops)
    return {
        "source": "onnx graph",
        "inputs": [value(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [value(v) for v in model.graph.output],
        "min_runtime": {"onnx_opset": opset, "opsets": dict(sorted(opsets.items())), "ir_version": int(model.ir_version),
                        "onnxruntime": f">= {ORT_FOR_OPSET[opset]}" if opset in ORT_FOR_OPSET else None},
        "ops": ops,
        "quantized_inside": quantized,
    }


@READERS.register("ort")
def describe_ort(path: Path, prov: Provenance) -> dict[str, Any]:
    """ORT format: tensors from an onnxruntime session, ops and format version from the flatbuffer.
    onnxruntime reads its own and older ORT format versions, not newer ones, so the runtime an app
    ships must be at least the onnxruntime that wrote the file (onnxruntime.ai, "ORT model format")."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    from ..export.ort import load_session

    sess = load_session(path)
    dtypes = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}

    def value(v) -> dict[str, Any]:
        return tensor(v.name, [d if isinstance(d, int) else -1 for d in v.shape], dtypes.get(v.type, v.type))

    root = InferenceSession.InferenceSession.GetRootAsInferenceSession(bytearray(path.read_bytes()), 0)
    g = root.Model().Graph()
    ops = sorted({((g.Nodes(i).Domain() or b"").decode() + ":" if g.Nodes(i).Domain() else "") + g.Nodes(i).OpType().decode()
                  for i in range(g.NodesLength())})
    writer = prov.converters.get("onnxruntime")
    return {
        "source": "onnxruntime session + ORT flatbuffer",
        "inputs": [value(v) for v in sess.get_inputs()],
        "outputs": [value(v) for v in sess.get_outputs()],
        "min_runtime": {"ort_format_version": (root.OrtVersion() or b"").decode(),
                        "onnxruntime": f">= {writer}" if writer else None,
                        "required_operators_config": path.with_name(f"{prov.role}.required_operators.config").name},
        "ops": ops,
        "quantized_inside": any(op.startswith("com.microsoft:QLinear") or op.endswith("QuantizeLinear") for op in ops),
    }


def _tflite_quant(d: dict) -> dict[str, Any] | None:
    q = d.get("quantization_parameters") or {}
    scales, zps = list(q.get("scales", [])), list(q.get("zero_points", []))
    if not scales:
        return None
    if len(scales) == 1:
        return {"scale": float(scales[0]), "zero_point": int(zps[0]),
                "real_value": "scale * (q - zero_point)"}
    return {"scales": [float(s) for s in scales], "zero_points": [int(z) for z in zps],
            "quantized_dimension": int(q.get("quantized_dimension", 0))}


def tflite_op_versions(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Builtin op -> version, and the flatbuffer's string metadata (min_runtime_version, ...)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # codes > 127 live only in BuiltinCode
        name = oc.CustomCode().decode() if oc.CustomCode() else names.get(code, f"BUILTIN_{code}")
        ops[name] = max(ops.get(name, 0), int(oc.Version()))
    meta: dict[str, str] = {}
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        b = model.Buffers(md.Buffer())
        if b is not None and b.DataLength() and b.DataLength() < 4096:
            raw = bytes(b.DataAsNumpy()).rstrip(b"\x00")
            try:
                meta[md.Name().decode()] = raw.decode()
            except UnicodeDecodeError:
                pass
    return dict(sorted(ops.items())), meta


@READERS.register("tflite")
def describe_tflite(path: Path, prov: Provenance) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(path))
    except Exception as e:  # the interpreter raises ValueError/RuntimeError with the reason
        raise InputError(f"{path}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from None

    def value(d: dict) -> dict[str, Any]:
        return tensor(d["name"], list(d["shape"]), np.dtype(d["dtype"]).name, _tflite_quant(d))

    ops, meta = tflite_op_versions(path)
    return {
        "source": "LiteRT interpreter + flatbuffer",
        "inputs": [value(d) for d in it.get_input_details()],
        "outputs": [value(d) for d in it.get_output_details()],
        "min_runtime": {"min_runtime_version": meta.get("min_runtime_version"), "op_versions": ops},
    }


@READERS.register("coreml")
def describe_coreml(path: Path, prov: Provenance) -> dict[str, Any]:
    from coremltools.proto import FeatureTypes_pb2

    from ..export.coreml import read_spec

    spec = read_spec(path)  # through the package's own checks: every file it names is inside it
    ud = dict(spec.description.metadata.userDefined)
    arr = FeatureTypes_pb2.ArrayFeatureType
    dtypes = {arr.FLOAT32: "float32", arr.FLOAT16: "float16", arr.DOUBLE: "float64", arr.INT32: "int32"}
    scales = _image_scales(path)

    def feature(f) -> dict[str, Any]:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            it = f.type.imageType
            color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
            scale, bias = scales.get(f.name, (None, None))
            return {"name": f.name, "shape": [1, 3 if color != "GRAYSCALE" else 1, int(it.height), int(it.width)],
                    "dtype": "uint8 pixels", "layout": f"image {color}", "quantization": None,
                    "image": {"color_layout": color, "scale": scale, "bias": bias,
                              "means": "pixel value * scale + bias inside the model, pixel in 0..255"},
                    "description": f.shortDescription}
        a = f.type.multiArrayType
        return tensor(f.name, list(a.shape), dtypes.get(a.dataType, "unknown"), description=f.shortDescription)

    version = int(spec.specificationVersion)
    return {
        "source": "Core ML model spec",
        "inputs": [feature(f) for f in spec.description.input],
        "outputs": [feature(f) for f in spec.description.output],
        "min_runtime": {"deployment_target": ud.get("mexport.deployment_target"), "specification_version": version,
                        "os": COREML_OS.get(version)},
        "compute_precision": ud.get("mexport.compute_precision"),
        "compression": ud.get("mexport.compression"),
    }


def _image_scales(path: Path) -> dict[str, tuple[float | None, list[float]]]:
    """ML Programs apply an ImageType's scale and bias as ops on the input (coremltools inserts a
    ``mul`` by the scale, then an ``add`` of the bias unless it is zero): read them there."""
    from ..validate.mil_executor import load_package

    main = load_package(path).main
    inputs = set(main.inputs)
    out: dict[str, tuple[float | None, list[float]]] = {}
    scaled: dict[str, str] = {}
    for op in main.operations:
        x = getattr(op.inputs.get("x"), "name", None)
        y = op.inputs.get("y")
        if op.op_type == "mul" and x in inputs and y is not None and y.val is not None:
            out[x] = (float(np.asarray(y.val).reshape(-1)[0]), [0.0, 0.0, 0.0])
            scaled[op.outputs[0].name] = x
        elif op.op_type == "add" and x in scaled and y is not None and y.val is not None:
            bias = np.asarray(y.val, dtype=np.float64).reshape(-1)
            out[scaled[x]] = (out[scaled[x]][0], [float(b) for b in np.broadcast_to(bias, (3,))])
    return out
