"""Input-channel splitting: an exact re-parameterization of a conv so that its weights quantize well.

A per-output-channel int8 weight scale is set by the largest weight of that output channel. When
one input channel carries weights 35x larger than every other (U^2-Net-p's ``stage2d.dec.4``: 5.6
against <= 0.16, on an input channel that reaches 228 while the rest peak at 3-72), that scale
rounds the other channels' weights to 0-3 levels. conv(x) = conv_{W without those channels}(x) +
conv_{those channels' W}(x[those channels]): the first conv quantizes with scales sized for the
ordinary weights; the second is small (one input channel here) and can stay float, since its
outlier weights times its outlier activations need more than 8 bits (measured: its partial sum
off by up to 10 in int8, where the whole layer's output spans 0-25).

Written by hand: the quantizers mexport drives (ai-edge-quantizer, onnxruntime, coremltools)
rescale or keep layers float, but none splits a conv by input channel; AIMET's cross-layer
equalization rescales channel pairs, which cannot help when the outlier is in the product of
weight and activation (the product is invariant under rescaling).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InputError


class SplitConv(nn.Module):
    """``conv`` as ``main`` (every input channel, the split ones' weights zeroed, no bias) plus
    ``side`` (the split channels only, with the bias). The zeroed weights cost nothing extra: main
    is the same conv shape, and slicing the whole input without those channels would cost a copy."""

    def __init__(self, conv: nn.Conv2d, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.channels = tuple(channels)
        kw = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                  padding_mode=conv.padding_mode)
        self.main = nn.Conv2d(conv.in_channels, conv.out_channels, bias=False, **kw)
        self.side = nn.Conv2d(len(self.channels), conv.out_channels, bias=conv.bias is not None, **kw)
        idx = list(self.channels)
        with torch.no_grad():
            w = conv.weight.detach().clone()
            self.side.weight.copy_(w[:, idx])
            w[:, idx] = 0
            self.main.weight.copy_(w)
            if conv.bias is not None:
                self.side.bias.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Slices, not an index list: each lowers to one SLICE (a gather would not).
        parts = [x[:, c:c + 1] for c in self.channels]
        return self.main(x) + self.side(parts[0] if len(parts) == 1 else torch.cat(parts, 1))


def split_inputs(pipeline, splits: dict[str, tuple[int, ...]]):
    """A copy of ``pipeline`` with each conv named in ``splits`` replaced by its :class:`SplitConv`
    (the user's pipeline is not touched). Same maths up to float rounding."""
    if not splits:
        return pipeline
    out = copy.deepcopy(pipeline)
    for key, channels in splits.items():
        parent_key, _, attr = key.rpartition(".")
        try:
            conv = out.get_submodule(key)
            parent = out.get_submodule(parent_key) if parent_key else out
        except AttributeError:
            raise InputError(f"recipe split_inputs: {key!r} is not a module of {pipeline.model_info.name}") from None
        if type(conv) is not nn.Conv2d or conv.groups != 1:
            raise InputError(f"recipe split_inputs: {key!r} is a {type(conv).__name__}, not a plain (groups=1) Conv2d")
        bad = [c for c in channels if not 0 <= c < conv.in_channels]
        if bad or len(set(channels)) >= conv.in_channels:
            raise InputError(f"recipe split_inputs: {key!r} has {conv.in_channels} input channels; cannot split off {list(channels)}")
        new = SplitConv(conv, tuple(channels))
        if attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
    return out
