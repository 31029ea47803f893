"""Re-centring a near-constant channel that one conv hands the next: the same maths, in fewer fp32 bits.

U^2-Net-p's trained weights carry a "bias channel": ``stage2d.dec.3`` writes an output channel that
sits at 226-228 on every photo (its bias is 228), and ``stage2d.dec.4`` reads it with weights down to
-5.6 against a bias of 1361 that cancels it. In fp32 that channel holds only ulp(226) = 1.5e-5 of
what varies in it, and the second conv's accumulators run near 1300, where one rounding step is
1.2e-4; refiner v2's band (slope up to 32 per unit of coarse alpha) then amplified the difference
between any two fp32 implementations of the model to 1-2e-4 in the alpha (measured: torch fp32 vs
fp64, LiteRT, onnxruntime; tests/test_tflite.py).

With c near the channel's value, the first conv writes y - c instead of y, and the second adds
its weights times c to its bias:

- first conv: relu(z) - c = max(z - c, -c), so its bias drops by c and its ReLU becomes a floor
  at -c on that channel (0 on the others);
- the upsample and concat between the two are affine with weights summing to 1, so they carry
  y - c unchanged;
- second conv: conv(y) = conv(y - c) + c * conv(ones). Inside the image conv(ones) is the sum of
  the channel's weights, folded into the bias in float64. On the border ring, where the original
  zero padding reads 0 rather than c, a small conv of a 0/1 ring mask with c times those weights
  subtracts the difference. That conv is exactly 0 inside, so the interior never sees a large
  number.

Integer quantization wants the opposite: the shifted channel's ReLU becomes a floor applied after
the conv, so the int8 conv output has to cover the pre-activation range, and the ring correction's
weights (c times the channel's) are outliers of their own; measured, the TFLite int8 export checked
1.5-2.3 dB lower. The pair therefore keeps its unshifted form, and ``plain_form`` gives it back for
exports that quantize to integers (mexport/export.py).

Written by hand: converters and quantizers fold constants the other way (into bigger biases), and
no library re-centres activations for fp32 accuracy.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Floor(nn.Module):
    """max(x, floor) per channel: the ReLU of a conv whose output channels come shifted by -shift."""

    def __init__(self, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("floor", -shift.view(1, -1, 1, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, self.floor)


class BorderFix(nn.Module):
    """Subtracts, on the border ring only, what the zero padding of a shifted input adds back
    (see the module doc). ``weight`` is c times the shifted channels' weights, summed over them."""

    def __init__(self, conv: nn.Conv2d, shift: torch.Tensor) -> None:
        super().__init__()
        s = shift.double().view(1, -1, 1, 1)
        self.register_buffer("weight", (conv.weight.detach().double() * s).sum(1, keepdim=True).float())
        self.pad, self.dilation = conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.pad
        # The 0/1 ring mask is made from x (x - x + 1, zero-padded, from 1), not as a constant: a
        # constant mask lets exporters fold the whole correction into a [C, H, W] constant (measured:
        # the fp32 .onnx grew from 4.7 to 11.2 MB). x - x is NaN where x is, so converters keep it
        # (x * 0 cost a 100 KB zero tensor in the .tflite), and a zero pad stays a PAD that XNNPACK
        # takes (a pad with value 1 became a PADV2 it leaves to the builtin kernels).
        ring = 1.0 - F.pad(x[:, :1] - x[:, :1] + 1.0, (pw, pw, ph, ph))
        return x - F.conv2d(ring, self.weight.to(x.dtype), dilation=self.dilation)


def recenter(first: nn.Sequential, second: nn.Sequential, channel: int, c: float) -> tuple[nn.Sequential, nn.Sequential]:
    """The pair (conv+ReLU, conv+ReLU) with ``first``'s output ``channel`` shifted by -c, as new
    modules, same maths. Module paths keep their conv at index 0 (quantization recipes and
    ``split_inputs`` name them): ``first`` becomes (conv, Floor), ``second`` (conv, BorderFix, ReLU).
    ``second`` must read ``first``'s channels first in its input (RSU decoders concatenate
    [upsampled h, skip])."""
    conv1, conv2 = first[0], second[0]
    if not (isinstance(first[1], nn.ReLU) and isinstance(second[1], nn.ReLU)):
        raise ValueError("recenter expects two conv+ReLU pairs")
    if conv2.padding_mode != "zeros" or conv2.stride != (1, 1) or conv2.groups != 1:
        raise ValueError("recenter: the second conv must be a plain zero-padded stride-1 conv")
    shift = torch.zeros(conv1.out_channels, dtype=torch.float64)
    shift[channel] = c
    shift_in = torch.zeros(conv2.in_channels, dtype=torch.float64)
    shift_in[: conv1.out_channels] = shift
    with torch.no_grad():
        new1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, conv1.kernel_size, padding=conv1.padding,
                         dilation=conv1.dilation)
        new1.weight.copy_(conv1.weight)
        new1.bias.copy_((conv1.bias.double() - shift).float())
        new2 = nn.Conv2d(conv2.in_channels, conv2.out_channels, conv2.kernel_size, padding=conv2.padding,
                         dilation=conv2.dilation)
        new2.weight.copy_(conv2.weight)
        new2.bias.copy_((conv2.bias.double() + (conv2.weight.double() * shift_in.view(1, -1, 1, 1)).sum((1, 2, 3))).float())
    new_first, new_second = nn.Sequential(new1, Floor(shift)), nn.Sequential(new2, BorderFix(conv2, shift_in), nn.ReLU())
    # Not a submodule (it would enter the state dict and module paths): plain_form's way back.
    object.__setattr__(new_first, "_plain_pair", copy.deepcopy((first, second)))
    return new_first, new_second


def has_recentred(model: nn.Module) -> bool:
    return any(hasattr(m, "_plain_pair") for m in model.modules())


def plain_form(model: nn.Module) -> nn.Module:
    """``model`` with every re-centred pair back as it was before ``recenter`` (a copy; ``model``
    itself when it has none, as any model not built with ``recenter``)."""
    if not has_recentred(model):
        return model
    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        if not isinstance(parent, (nn.Sequential, nn.ModuleList)):
            continue
        for i in range(len(parent) - 1):
            pair = getattr(parent[i], "_plain_pair", None)
            if pair is not None:
                parent[i], parent[i + 1] = pair
    return out
