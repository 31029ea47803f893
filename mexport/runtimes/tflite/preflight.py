"""LiteRT's preflight: ops XNNPACK will not take (they run on the builtin kernels), and the
rewrites the export applies so it does. Ops litert-torch cannot lower are named when its conversion
fails (``convert.unlowerable_ops``): its registry alone misses the ops it decomposes or wraps as
composites itself (bilinear resizes), so asking it before converting gave false alarms."""

from __future__ import annotations

from ...capture import where
from ...findings import Finding
from .convert import XNNPACK_MAX_CONCAT_INPUTS


def _name(target) -> str:
    return getattr(getattr(target, "overloadpacket", target), "__name__", str(target))


def preflight(program, module, args: tuple, role: str) -> list[Finding]:
    import copy

    import torch

    from .rewrites import INT8_PASSES, PASSES, graph_module, pads_with_inf

    out: list[Finding] = []
    gm = graph_module(program)
    for p in PASSES:  # what the export will rewrite (on a copy: the program is the caller's)
        out += [Finding("tflite", role, "rewrite", *line.split(": ", 1)) for line in p(copy.deepcopy(gm))]
    for p in INT8_PASSES:
        out += [Finding("tflite", role, "rewrite", w, "int8 only: " + m) for w, m in
                (line.split(": ", 1) for line in p(copy.deepcopy(gm)))]
    rewritten = copy.deepcopy(gm)
    for p in PASSES:
        p(rewritten)
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
        elif name == "cat" and len(n.args[0]) > XNNPACK_MAX_CONCAT_INPUTS:
            out.append(Finding("tflite", role, "warning", where(n), f"concatenation of {len(n.args[0])} tensors: XNNPACK takes at most "
                               f"{XNNPACK_MAX_CONCAT_INPUTS}", "concatenate in groups of at most 4"))
    return list(dict.fromkeys(out))  # one finding per construct, not per traced call
