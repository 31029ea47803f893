"""BackgroundMattingV2's base + patch refiner: the refiner cuts the full-resolution photo and coarse
alpha into 8x8 patches, runs a small conv net on each patch as a batch, and keeps its result where
the coarse alpha is uncertain (BGMv2's error map; here 4a(1-a), pooled per patch). BGMv2 picks the
top-k patches; a static graph refines all of them and gates the result, BGMv2's "full" mode."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, conv_bn, realistic_norms, seeded
from .mbv3_unet import MobileNetV3UNet

P = 8


def to_patches(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // P, P, w // P, P).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * (h // P) * (w // P), c, P, P)


def from_patches(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    c = x.shape[1]
    x = x.reshape(1, h // P, w // P, c, P, P).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(1, c, h, w)


class PatchRefiner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_bn(4, 16), conv_bn(16, 8), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, image: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[2:]
        delta = from_patches(self.net(to_patches(torch.cat([image, coarse_up], 1))), h, w)
        err = F.avg_pool2d(4 * coarse_up * (1 - coarse_up), P)
        gate = F.interpolate(torch.clamp((err - 0.1) * 4, 0, 1), scale_factor=float(P), mode="nearest")
        return coarse_up + gate * torch.tanh(delta)


def factory() -> MattingModel:
    seeded(17)
    return MattingModel(coarse=realistic_norms(MobileNetV3UNet(), 17), refine=realistic_norms(PatchRefiner(), 18),
                        spec=ZOO_SPEC, name="zoo-bgmv2-patch")
