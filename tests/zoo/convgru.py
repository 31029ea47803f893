"""RobustVideoMatting's recurrent decoder: a ConvGRU over half the bottleneck's channels (RVM's
split), one frame at a time from a zero state, as a still-image export runs it."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, InvertedResidual, conv_bn, seeded, spread


class ConvGRU(nn.Module):
    def __init__(self, ch: int, k: int = 3) -> None:
        super().__init__()
        self.ih = nn.Sequential(nn.Conv2d(ch * 2, ch * 2, k, padding=k // 2), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(ch * 2, ch, k, padding=k // 2), nn.Tanh())

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = self.ih(torch.cat([x, h], 1)).split(x.shape[1], dim=1)
        c = self.hh(torch.cat([x, r * h], 1))
        return (1 - z) * h + z * c


class RecurrentMatting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)
        self.enc = nn.Sequential(InvertedResidual(16, 48, 24, 3, 2, False, nn.ReLU),
                                 InvertedResidual(24, 72, 32, 3, 2, True, nn.Hardswish))
        self.gru = ConvGRU(16)
        self.dec = conv_bn(32 + 16, 16)
        self.head = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        f = self.enc(s)
        a, b = f.split(f.shape[1] // 2, dim=1)
        b = self.gru(b, torch.zeros_like(b))
        y = F.interpolate(torch.cat([a, b], 1), size=s.shape[2:], mode="bilinear", align_corners=False)
        y = self.dec(torch.cat([y, s], 1))
        return torch.sigmoid(F.interpolate(self.head(y), size=x.shape[2:], mode="bilinear", align_corners=False))


def factory() -> MattingModel:
    seeded(14)
    coarse = spread(RecurrentMatting(), 14, lambda m: m.head)
    return MattingModel(coarse=coarse, refine=None, spec=ZOO_SPEC, name="zoo-convgru")
