"""A tiny coarse + refine model through the BYO interface: exports coarse, refine and fused files,
so pair handling (a coarse and a refine run as one pipeline) has something small to work on.
Random but seeded weights."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel, PipelineSpec


class Coarse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.enc(x))
        return torch.sigmoid(F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False))


class Refine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        return coarse_up + 0.1 * torch.tanh(self.body(torch.cat([x, coarse_up], 1)))


def factory() -> MattingModel:
    torch.manual_seed(4321)
    spec = PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64))
    return MattingModel(coarse=Coarse(), refine=Refine(), spec=spec, name="tiny-refine")
