"""ResNet encoder (BasicBlocks, max-pool stem: GFM's and P3M-Net's backbone family) with a decoder
that upsamples by ``F.interpolate(scale_factor=2)``."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, BasicBlock, conv_bn, seeded, spread


class ResNetUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 7, 2)  # 1/2
        self.pool = nn.MaxPool2d(3, 2, 1)  # 1/4
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, 2)  # 1/8
        self.layer3 = BasicBlock(32, 48, 2)  # 1/16
        self.dec3 = conv_bn(48 + 32, 32)
        self.dec2 = conv_bn(32 + 16, 16)
        self.dec1 = conv_bn(16 + 16, 16)
        self.head = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.stem(x)
        s2 = self.layer1(self.pool(s1))
        s3 = self.layer2(s2)
        y = self.layer3(s3)
        y = self.dec3(torch.cat([F.interpolate(y, scale_factor=2.0, mode="bilinear"), s3], 1))
        y = self.dec2(torch.cat([F.interpolate(y, scale_factor=2.0, mode="bilinear"), s2], 1))
        y = self.dec1(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), s1], 1))
        return torch.sigmoid(F.interpolate(self.head(y), scale_factor=2.0, mode="bilinear"))


def factory() -> MattingModel:
    seeded(12)
    coarse = spread(ResNetUNet(), 12, lambda m: m.head)
    return MattingModel(coarse=coarse, refine=None, spec=ZOO_SPEC, name="zoo-resnet-unet")
