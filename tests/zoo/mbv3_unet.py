"""MobileNetV3 U-Net (the most common mobile matting backbone: MODNet's and RVM's encoder):
hardswish stem, inverted residuals with squeeze-excite, a bilinear U-Net decoder."""

import torch
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, InvertedResidual, UpBlock, conv_bn, seeded, spread


class MobileNetV3UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.Hardswish)  # 1/2
        self.b1 = InvertedResidual(16, 16, 16, 3, 2, True, nn.ReLU)  # 1/4
        self.b2 = InvertedResidual(16, 72, 24, 3, 2, False, nn.ReLU)  # 1/8
        self.b3 = InvertedResidual(24, 88, 24, 3, 1, False, nn.ReLU)
        self.b4 = InvertedResidual(24, 96, 40, 5, 2, True, nn.Hardswish)  # 1/16
        self.up3 = UpBlock(40, 24, 32)
        self.up2 = UpBlock(32, 16, 16)
        self.up1 = UpBlock(16, 16, 16)
        self.up0 = UpBlock(16, 3, 8)
        self.head = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.stem(x)
        s2 = self.b1(s1)
        s3 = self.b3(self.b2(s2))
        y = self.up3(self.b4(s3), s3)
        y = self.up0(self.up1(self.up2(y, s2), s1), x)
        return torch.sigmoid(self.head(y))


def factory() -> MattingModel:
    seeded(11)
    coarse = spread(MobileNetV3UNet(), 11, lambda m: m.head)
    return MattingModel(coarse=coarse, refine=None, spec=ZOO_SPEC, name="zoo-mbv3-unet")
