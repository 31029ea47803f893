"""What XNNPACK took of a lowered program, and whether a quantized program holds int8 weights.

After ``to_edge_transform_and_lower``, the program's graph holds one ``executorch_call_delegate``
per XNNPACK partition (the ops it took live in the lowered module) and, outside them, every op
left to ExecuTorch's portable kernels. Both are counted; the ones left are named."""

from __future__ import annotations

import collections
from typing import Any

# Bookkeeping nodes, not computation: a delegate call's outputs are picked with getitem.
STRUCTURAL = ("getitem", "executorch_call_delegate")


def _ops(graph) -> list[str]:
    return [_name(n.target) for n in graph.nodes if n.op == "call_function" and _name(n.target) not in STRUCTURAL]


def _name(target) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return str(getattr(target, "_name", None) or name).split("::")[-1]


def delegation(program) -> dict[str, Any]:
    """Nodes XNNPACK took (inside its partitions) and nodes left outside, with their ops."""
    gm = program.graph_module
    partitions = [n for n in gm.graph.nodes if n.op == "call_function" and _name(n.target) == "executorch_call_delegate"]
    delegated = 0
    for node in partitions:
        lowered = getattr(gm, node.args[0].target)
        delegated += len(_ops(lowered.original_module.graph))
    left = _ops(gm.graph)
    return {"nodes": delegated + len(left), "partitions": len(partitions), "delegated": delegated, "fallback": len(left),
            "fallback_ops": dict(collections.Counter(left))}


def int8_weights(program) -> int:
    """int8 constants (the quantized weights that convert_pt2e folded) in a captured program, before
    lowering hands them to the delegate."""
    import torch

    return sum(1 for t in [*program.constants.values(), *program.state_dict.values()]
               if isinstance(t, torch.Tensor) and t.dtype == torch.int8)
