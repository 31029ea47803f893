"""Deep Image Matting: photo and trimap in (a second input, given at refine resolution), a VGG-style
encoder-decoder with max pools, and DIM's refinement stage (photo + coarse alpha -> residual)."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel
from mexport.spec import ExtraInput
from dataclasses import replace

from .blocks import ZOO_SPEC, conv_bn, realistic_norms, seeded, spread


class DIMEncoderDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Sequential(conv_bn(4, 16), conv_bn(16, 16))
        self.e2 = nn.Sequential(conv_bn(16, 32), conv_bn(32, 32))
        self.e3 = conv_bn(32, 48)
        self.d2 = conv_bn(48 + 32, 32)
        self.d1 = conv_bn(32 + 16, 16)
        self.head = nn.Conv2d(16, 1, 5, padding=2)

    def forward(self, x: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
        f1 = self.e1(torch.cat([x, trimap], 1))
        f2 = self.e2(F.max_pool2d(f1, 2))
        f3 = self.e3(F.max_pool2d(f2, 2))
        y = self.d2(torch.cat([F.interpolate(f3, scale_factor=2.0, mode="bilinear"), f2], 1))
        y = self.d1(torch.cat([F.interpolate(y, scale_factor=2.0, mode="bilinear"), f1], 1))
        alpha = torch.sigmoid(self.head(y))
        # DIM's trimap rule: known foreground and background are copied, only the unknown band is predicted
        return torch.where(trimap > 0.9, torch.ones_like(alpha), torch.where(trimap < 0.1, torch.zeros_like(alpha), alpha))


class DIMRefine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn(4, 16), conv_bn(16, 16), conv_bn(16, 16), nn.Conv2d(16, 1, 3, padding=1))

    def forward(self, image: torch.Tensor, coarse_up: torch.Tensor, trimap: torch.Tensor) -> torch.Tensor:
        return coarse_up + self.net(torch.cat([image, coarse_up], 1))


def factory() -> MattingModel:
    seeded(19)
    spec = replace(ZOO_SPEC, extra_inputs=(ExtraInput("trimap", 1, "0 background, 0.5 unknown, 1 foreground"),))
    coarse = spread(DIMEncoderDecoder(), 19, lambda m: m.head)
    return MattingModel(coarse=coarse, refine=realistic_norms(DIMRefine(), 20),
                        spec=spec, name="zoo-dim-trimap")
