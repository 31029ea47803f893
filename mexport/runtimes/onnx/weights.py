"""Weights out of an ONNX file, for models whose published weights are ONNX (rembg's U^2-Net-p)."""

from __future__ import annotations

from typing import Any


def conv_layers(onnx_bytes: bytes) -> list[dict[str, Any]]:
    """Every Conv node of the graph, in graph order: its output name, weight and bias arrays and
    attributes (dilations, pads, group...)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        out.append({"output": node.output[0], "weight": init[node.input[1]], "bias": init[node.input[2]],
                    "attrs": {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}})
    return out
