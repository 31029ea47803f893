"""What an app team needs to know about a .tflite, read from the file itself (the LiteRT
interpreter and the flatbuffer): tensors with their quantization, op versions, the runtime it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...runtime import tensor
from ...spec import Provenance


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
