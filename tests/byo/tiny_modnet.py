"""A second, tiny, different architecture brought in through the BYO interface.

MODNet-style: one shared encoder, two decoders (a low-resolution semantic branch and a
full-resolution detail branch) fused into one alpha. A single network: no refiner. Random but
seeded weights, so its hash is stable; it exists to prove mexport is not tied to U^2-Net-p.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel, PipelineSpec


class TinyModNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.semantic = nn.Conv2d(16, 1, 1)
        self.detail = nn.Sequential(nn.Conv2d(3 + 8 + 1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.enc1(x)
        f2 = self.enc2(f1)
        sem = F.interpolate(self.semantic(f2), size=x.shape[2:], mode="bilinear", align_corners=False)
        up1 = F.interpolate(f1, size=x.shape[2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(sem + self.detail(torch.cat([x, up1, sem], 1)))


def factory() -> MattingModel:
    torch.manual_seed(1234)
    spec = PipelineSpec(coarse_size=(64, 64), refine_size=(128, 128))
    return MattingModel(coarse=TinyModNet(), refine=None, spec=spec, name="tiny-modnet")
