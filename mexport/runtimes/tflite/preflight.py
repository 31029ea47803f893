"""LiteRT's preflight: ops XNNPACK will not take (they run on the builtin kernels), and the
rewrites the export applies so it does. Ops litert-torch cannot lower are named when its conversion
fails (``convert.unlowerable_ops``): its registry alone misses the ops it decomposes or wraps as
composites itself (bilinear resizes), so asking it before converting gave false alarms."""

from __future__ import annotations

from ...capture import module_path, where
from ...findings import Finding
from .convert import XNNPACK_MAX_CONCAT_INPUTS


def _name(target) -> str:
    return getattr(getattr(target, "overloadpacket", target), "__name__", str(target))


def _activations_after(node, hops: int = 3) -> list:
    """The first activations reading ``node``, through up to ``hops`` concats/adds/muls (IBNorm's
    concat): litert-torch fuses an activation into the op before it, so it shares that op's precision."""
    found, frontier = [], [node]
    for _ in range(hops):
        nxt = []
        for m in frontier:
            for u in m.users:
                (found if _name(u.target) in ("relu", "relu6", "hardtanh", "leaky_relu", "gelu", "silu") else nxt).append(u)
        if found:
            return found
        frontier = nxt
    return found


def preflight(captured, role: str) -> list[Finding]:
    import torch

    from .rewrites import INT8_PASSES, PASSES, pads_with_inf

    # what the export will do: fold shape scalars (capture), then rewrite (each pass set on a fresh graph)
    folded = [Finding("tflite", role, "rewrite", *line.split(": ", 1)) for line in captured.rewrites]  # one per scalar
    rewritten, int8 = captured.graph_module(), captured.graph_module()
    out = [Finding("tflite", role, "rewrite", *line.split(": ", 1)) for p in PASSES for line in p(rewritten)]
    out += [Finding("tflite", role, "rewrite", w, "int8 only: " + m, precisions=("int8",))
            for p in INT8_PASSES for w, m in (line.split(": ", 1) for line in p(int8))]
    for n in rewritten.graph.nodes:
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload):
            continue
        name = _name(n.target)
        if name == "upsample_nearest2d":
            out.append(Finding("tflite", role, "warning", where(n), "nearest resize by a factor that is not a product of 2, 3 and 4 "
                               "becomes RESIZE_NEAREST_NEIGHBOR, which XNNPACK does not take", "resize by an integer factor, or bilinear"))
        elif name == "max_pool2d" and pads_with_inf(n):
            out.append(Finding("tflite", role, "warning", where(n), "max pool with padding on an input that may be negative pads with "
                               "-inf (PADV2), which XNNPACK does not take", "put the pool after a ReLU (mexport then pads with 0), or pad explicitly"))
        elif name == "slice" and len(n.args) > 4 and n.args[4] not in (1, None):
            out.append(Finding("tflite", role, "warning", where(n), f"slice with step {n.args[4]} becomes STRIDED_SLICE with stride > 1, "
                               "which XNNPACK does not take", "a strided 1x1 depthwise conv or avg pool subsamples on the delegate"))
        elif name in ("where", "gt", "lt", "ge", "le", "eq", "ne"):
            out.append(Finding("tflite", role, "warning", where(n), f"{name} becomes a comparison or SELECT_V2, which XNNPACK does "
                               "not take", "blend arithmetically (m*a + (1-m)*b, m a clamped ramp), or accept the builtin kernels"))
        elif name == "instance_norm":
            keep = ", ".join(f'"{p}": "float"' for p in dict.fromkeys([module_path(n)] + [module_path(a) for a in _activations_after(n)]))
            out.append(Finding("tflite", role, "warning", where(n), "int8 only: InstanceNorm's statistics (RSQRT and the ADD, RELU "
                               "around it) run on the builtin kernels", f"keep it and the activation after it float in a recipe: "
                               f'{{"layers": {{{keep}}}}}', precisions=("int8",)))
        elif name == "cat" and len(n.args[0]) > XNNPACK_MAX_CONCAT_INPUTS:
            out.append(Finding("tflite", role, "warning", where(n), f"concatenation of {len(n.args[0])} tensors: XNNPACK takes at most "
                               f"{XNNPACK_MAX_CONCAT_INPUTS}", "concatenate in groups of at most 4"))
    return folded + list(dict.fromkeys(out))  # one finding per construct, not per traced call
