"""MODNet: a low-resolution semantic branch with squeeze-excite, a high-resolution detail branch and
a fusion branch, normalized by IBNorm (BatchNorm on half the channels, InstanceNorm on the other)."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, SqueezeExcite, seeded, spread


class IBNorm(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.bn_ch = ch // 2
        self.bn = nn.BatchNorm2d(self.bn_ch)
        self.inorm = nn.InstanceNorm2d(ch - self.bn_ch, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.bn(x[:, : self.bn_ch]), self.inorm(x[:, self.bn_ch :])], 1)  # MODNet's own slicing


class ConvIBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2), IBNorm(cout), nn.ReLU())


class MODNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc2 = ConvIBN(3, 16, 3, 2)  # 1/2
        self.enc4 = ConvIBN(16, 24, 3, 2)  # 1/4
        self.enc8 = ConvIBN(24, 32, 3, 2)  # 1/8
        self.se = SqueezeExcite(32, 8)
        self.lr = ConvIBN(32, 16, 5)
        self.lr_out = nn.Conv2d(16, 1, 3, padding=1)
        self.hr = ConvIBN(3 + 16, 16)
        self.hr2 = ConvIBN(16 + 16, 16)
        self.hr_out = nn.Conv2d(16 + 3, 1, 3, padding=1)
        self.fusion = nn.Sequential(ConvIBN(16 + 1, 16, 5), nn.Conv2d(16, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e2 = self.enc2(x)
        e4 = self.enc4(e2)
        lr = self.lr(self.se(self.enc8(e4)))
        semantic = torch.sigmoid(self.lr_out(lr))
        x2 = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        hr = self.hr(torch.cat([x2, e2], 1))
        lr2 = F.interpolate(lr, size=hr.shape[2:], mode="bilinear", align_corners=False)
        hr = self.hr2(torch.cat([hr, lr2], 1))
        hr_up = F.interpolate(hr, scale_factor=2.0, mode="bilinear", align_corners=False)
        detail = torch.sigmoid(self.hr_out(torch.cat([hr_up, x], 1)))
        sem_up = F.interpolate(semantic, size=x.shape[2:], mode="bilinear", align_corners=False)
        lr_up = F.interpolate(lr, size=x.shape[2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.fusion(torch.cat([lr_up, sem_up], 1)) + 2 * detail - 1)


def factory() -> MattingModel:
    seeded(13)
    coarse = spread(MODNet(), 13, lambda m: m.fusion[1])
    return MattingModel(coarse=coarse, refine=None, spec=ZOO_SPEC, name="zoo-modnet-ibnorm")
