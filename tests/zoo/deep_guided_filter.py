"""A coarse network with RobustVideoMatting's deep guided filter as the refine network: box-filter
statistics of photo and coarse alpha at low resolution, a small conv net turns them into the local
linear model's A and b, which are upsampled and applied to the full-resolution photo."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, conv_bn, realistic_norms, seeded
from .resnet_unet import ResNetUNet


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, borders averaging only the pixels inside (guided filter's N)."""
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


class DeepGuidedFilterRefiner(nn.Module):
    def __init__(self, r: int = 1, eps: float = 1e-3) -> None:
        super().__init__()
        self.r, self.eps = r, eps
        self.guide = nn.Conv2d(3, 1, 1)
        self.conv = nn.Sequential(conv_bn(4 + 1, 16, 1), conv_bn(16, 16, 1), nn.Conv2d(16, 1, 1))

    def forward(self, image: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        size = image.shape[2:]
        x_lr = F.avg_pool2d(image, 2)
        g_lr = self.guide(x_lr)
        y_lr = F.avg_pool2d(coarse_up, 2)
        mean_x, mean_y = box(g_lr, self.r), box(y_lr, self.r)
        cov = box(g_lr * y_lr, self.r) - mean_x * mean_y
        var = box(g_lr * g_lr, self.r) - mean_x * mean_x
        a = self.conv(torch.cat([cov, var, mean_x, mean_y, y_lr], 1))
        b = mean_y - a * mean_x
        a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return a * self.guide(image) + b


def factory() -> MattingModel:
    seeded(15)
    return MattingModel(coarse=realistic_norms(ResNetUNet(), 15), refine=realistic_norms(DeepGuidedFilterRefiner(), 16),
                        spec=ZOO_SPEC, name="zoo-deep-guided-filter")
