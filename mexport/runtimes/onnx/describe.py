"""What an app team needs to know about an .onnx or .ort file, read from the file itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...runtime import tensor
from ...spec import Provenance

# The first onnxruntime release that runs each ONNX opset (onnxruntime.ai/docs/reference/compatibility.html).
ORT_FOR_OPSET = {13: "1.7", 14: "1.8", 15: "1.10", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.16", 20: "1.17", 21: "1.20"}


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


def describe_ort(path: Path, prov: Provenance) -> dict[str, Any]:
    """ORT format: tensors from an onnxruntime session, ops and format version from the flatbuffer.
    onnxruntime reads its own and older ORT format versions, not newer ones, so the runtime an app
    ships must be at least the onnxruntime that wrote the file (onnxruntime.ai, "ORT model format")."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    from .runner import load_session

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
