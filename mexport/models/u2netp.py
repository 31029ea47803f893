"""U^2-Net-p, the small variant of U^2-Net (Qin et al., Pattern Recognition 2020), written from the paper.

The network is a two-level nested U: each stage is a Residual U-block (RSU-L), itself a small U-Net
of depth L whose output is added to its input projection. Stages 5 and 6 (and decoder stage 5) use
the dilated variant RSU-4F, which keeps resolution and grows the receptive field by dilation
instead of pooling. Six side outputs are upsampled to the input size, fused by a 1x1 conv and
passed through a sigmoid. U^2-Net-p uses 16 middle and 64 output channels in every block.

Only the fused output d0 is returned: it is what rembg uses and what we refine; the deep-supervision
side outputs matter only in training.

BatchNorm is absent on purpose: the trained weights we load (rembg's u2netp.onnx) have it folded
into each conv, so every "REBNCONV" here is conv (with bias) + ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Half-pixel bilinear, as in the ONNX (Resize linear, pytorch_half_pixel).
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class ConvReLU(nn.Sequential):
    """3x3 conv with dilation d (padding d keeps size) + ReLU; BN is folded into the conv."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.ReLU())


def pool(x: torch.Tensor) -> torch.Tensor:
    # ceil_mode keeps odd sizes from losing a row; the decoder upsamples back to the skip's size.
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of height L: encoder of L-1 convs with pooling between, a dilated bottom conv,
    and a decoder that concatenates skips; output = decoder(x) + conv_in(x)."""

    def __init__(self, height: int, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.height = height
        self.conv_in = ConvReLU(cin, cout)
        self.enc = nn.ModuleList([ConvReLU(cout, mid)] + [ConvReLU(mid, mid) for _ in range(height - 2)])
        self.bottom = ConvReLU(mid, mid, dilation=2)
        self.dec = nn.ModuleList([ConvReLU(2 * mid, mid) for _ in range(height - 2)] + [ConvReLU(2 * mid, cout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.conv_in(x)
        skips = []
        h = xin
        for i, conv in enumerate(self.enc):
            h = conv(h if i == 0 else pool(h))
            skips.append(h)
        h = self.bottom(h)
        for i, conv in enumerate(self.dec):
            skip = skips[-1 - i]
            if i > 0:
                h = upsample_like(h, skip)
            h = conv(torch.cat([h, skip], dim=1))
        return h + xin


class RSUF(nn.Module):
    """RSU-4F: like RSU-4 but with dilations 1, 2, 4 and bottom 8 instead of pooling."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.conv_in = ConvReLU(cin, cout)
        self.enc = nn.ModuleList([ConvReLU(cout, mid, 1), ConvReLU(mid, mid, 2), ConvReLU(mid, mid, 4)])
        self.bottom = ConvReLU(mid, mid, dilation=8)
        self.dec = nn.ModuleList([ConvReLU(2 * mid, mid, 4), ConvReLU(2 * mid, mid, 2), ConvReLU(2 * mid, cout, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.conv_in(x)
        skips = []
        h = xin
        for conv in self.enc:
            h = conv(h)
            skips.append(h)
        h = self.bottom(h)
        for i, conv in enumerate(self.dec):
            h = conv(torch.cat([h, skips[-1 - i]], dim=1))
        return h + xin


class U2NetP(nn.Module):
    """Input: normalized RGB, NCHW. Output: saliency/alpha in [0, 1], 1 channel, same size."""

    def __init__(self, mid: int = 16, width: int = 64) -> None:
        super().__init__()
        m, w = mid, width
        self.stage1 = RSU(7, 3, m, w)
        self.stage2 = RSU(6, w, m, w)
        self.stage3 = RSU(5, w, m, w)
        self.stage4 = RSU(4, w, m, w)
        self.stage5 = RSUF(w, m, w)
        self.stage6 = RSUF(w, m, w)
        self.stage5d = RSUF(2 * w, m, w)
        self.stage4d = RSU(4, 2 * w, m, w)
        self.stage3d = RSU(5, 2 * w, m, w)
        self.stage2d = RSU(6, 2 * w, m, w)
        self.stage1d = RSU(7, 2 * w, m, w)
        self.side = nn.ModuleList([nn.Conv2d(w, 1, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.stage1(x)
        h2 = self.stage2(pool(h1))
        h3 = self.stage3(pool(h2))
        h4 = self.stage4(pool(h3))
        h5 = self.stage5(pool(h4))
        h6 = self.stage6(pool(h5))
        d5 = self.stage5d(torch.cat([upsample_like(h6, h5), h5], 1))
        d4 = self.stage4d(torch.cat([upsample_like(d5, h4), h4], 1))
        d3 = self.stage3d(torch.cat([upsample_like(d4, h3), h3], 1))
        d2 = self.stage2d(torch.cat([upsample_like(d3, h2), h2], 1))
        d1 = self.stage1d(torch.cat([upsample_like(d2, h1), h1], 1))
        sides = [self.side[0](d1)]
        for conv, feat in zip(self.side[1:], (d2, d3, d4, d5, h6)):
            sides.append(upsample_like(conv(feat), d1))
        # fuse (1x1, 6->1) as two convs over 3-input concats: XNNPACK takes concats of <= 4 inputs,
        # and the bias stays inside a conv (a scalar-constant ADD of it fails XNNPACK's int8
        # scale-ratio check). Same weights, same maths.
        w = self.fuse.weight
        y = F.conv2d(torch.cat(sides[:3], 1), w[:, :3], self.fuse.bias) + F.conv2d(torch.cat(sides[3:], 1), w[:, 3:])
        return torch.sigmoid(y)
