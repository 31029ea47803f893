"""Multiply-accumulates of a graph, counted on a real forward pass with hooks.

Counts convolutions and linear layers (where >99 % of this project's MACs are); elementwise ops,
pooling and resizes are not MACs and are left out, as is customary.
"""

from __future__ import annotations


def count_macs(module, *inputs) -> int:
    import torch
    from torch import nn

    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def pipeline_macs(pipeline) -> dict[str, int]:
    return {role: count_macs(pipeline.graph(role), *pipeline.example_inputs(role)) for role in pipeline.roles()}
