"""What a .tflite holds and what XNNPACK takes of it: ops with versions, tensor dtypes, the share of
weights stored as int8 / fp16, the delegation of every node. An export whose inspection fails
(a quantized model that came out float, a graph LiteRT cannot prepare) is a failed export."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ConversionError
from .flatbuffer import model_t

def op_name(code) -> str:
    from ai_edge_litert import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    b = max(code.builtinCode, code.deprecatedBuiltinCode)
    if b == fb.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode))
    return names.get(b, str(b))


def tensor_type_name(t: int) -> str:
    from ai_edge_litert import schema_py_generated as fb

    return {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}.get(t, str(t))


def inspect(data: bytes, num_threads: int = 1) -> dict[str, Any]:
    """Facts about one .tflite: ops with versions, tensor dtypes, the share of weight bytes and
    elements stored as int8 / fp16, XNNPACK delegation, size."""
    import collections

    m = model_t(data)
    g = m.subgraphs[0]
    ops = collections.Counter()
    for op in g.operators:
        c = m.operatorCodes[op.opcodeIndex]
        ops[f"{op_name(c)}/v{c.version}"] += 1
    dtypes = collections.Counter(tensor_type_name(t.type) for t in g.tensors)
    weights = collections.Counter()
    for t in g.tensors:
        buf = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data) and t.shape is not None and len(t.shape) >= 2:
            weights[tensor_type_name(t.type)] += int(np.prod(t.shape))
    total = sum(weights.values()) or 1
    io = {}
    for kind, idxs in (("inputs", g.inputs), ("outputs", g.outputs)):
        io[kind] = [{"name": g.tensors[i].name.decode() if isinstance(g.tensors[i].name, bytes) else g.tensors[i].name,
                     "shape": [int(s) for s in g.tensors[i].shape], "dtype": tensor_type_name(g.tensors[i].type),
                     **_quant(g.tensors[i])} for i in idxs]
    return {"bytes": len(data), "ops": dict(sorted(ops.items())), "tensor_dtypes": dict(sorted(dtypes.items())),
            "weight_elements": dict(weights), "int8_weight_share": weights["INT8"] / total,
            "fp16_weight_share": weights["FLOAT16"] / total, **io, "xnnpack": delegation(data, num_threads)}


def _quant(t) -> dict[str, Any]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return {}
    return {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}


def delegation(data: bytes, num_threads: int = 1) -> dict[str, Any]:
    """Which nodes XNNPACK takes. After allocate_tensors() the interpreter lists the original nodes
    followed by one DELEGATE node per partition; walking back from a partition's outputs to its
    inputs recovers the nodes it replaced. Nodes in no partition run on the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=data, num_threads=num_threads)
        it.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConversionError(f"LiteRT cannot prepare the converted model: {first[:300]}") from None
    return delegation_of(it._get_ops_details())  # the only Python view of the execution plan


def delegation_of(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`delegation` from an interpreter's ``_get_ops_details()``, whichever runtime it came
    from (an older one reports its plan through the --tflite-python worker)."""
    import collections

    orig = [o for o in nodes if o["op_name"] != "DELEGATE"]
    partitions = [o for o in nodes if o["op_name"] == "DELEGATE"]
    producer = {int(t): o["index"] for o in orig for t in o["outputs"]}
    covered: set[int] = set()
    for d in partitions:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in stop or t not in producer or producer[t] in covered:
                continue
            n = producer[t]
            covered.add(n)
            stack.extend(int(x) for x in nodes[n]["inputs"] if x >= 0)
    fallback = [o for o in orig if o["index"] not in covered]
    return {"nodes": len(orig), "partitions": len(partitions), "delegated": len(covered), "fallback": len(fallback),
            "fallback_ops": dict(collections.Counter(o["op_name"] for o in fallback)),
            "fallback_nodes": [o["index"] for o in fallback]}



def check_precision(facts: dict[str, Any], precision: str, role: str) -> None:
    """A quantized export that came out float is a failed export, not a smaller success."""
    if precision in ("int8", "dynamic-int8") and facts["int8_weight_share"] <= 0.0:
        raise ConversionError(f"{role}: {precision} export has no int8 weights: the quantizer left the model float")
    if precision == "fp16" and facts["fp16_weight_share"] <= 0.0:
        raise ConversionError(f"{role}: fp16 export has no float16 weights: the quantizer left the model float32")
