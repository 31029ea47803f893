"""Op spellings that every exporter keeps delegable (XNNPACK takes no int8 AVERAGE_POOL_2D and no
RELU_0_TO_1, in any precision); the maths is the same as the plain spelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """F.avg_pool2d(x, k) as a depthwise conv with weights 1/k^2 and stride k (1/4 and 1/16 are
    exact in float and in int8): XNNPACK runs the conv in int8, not the int8 average pool."""
    c = int(x.shape[1])  # a constant in traced graphs: exporters need the kernel's shape
    w = torch.full((c, 1, k, k), 1.0 / (k * k), dtype=x.dtype, device=x.device)
    return F.conv2d(x, w, stride=k, groups=c)


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """x.clamp(0, 1) up to float rounding. litert-torch turns every min/max spelling of it into
    RELU_0_TO_1, which XNNPACK does not take; RELU6 it takes."""
    return F.relu6(x * 6.0) / 6.0
