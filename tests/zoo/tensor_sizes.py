"""Shape arithmetic on tensors, the way models converted from ONNX (onnx2torch) and some research
code compute resize sizes and crop bounds: ``torch.tensor(x.shape)`` maths, then ``.tolist()`` /
``.item()``. Data-dependent for torch.export; constant at the spec's fixed shapes."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, conv_bn, seeded, spread


class TensorSizes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2))
        self.mid = conv_bn(32, 16)
        self.head = nn.Conv2d(16 + 3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = torch.tensor(x.shape[-2:])
        y = self.mid(self.enc(x))
        y = F.interpolate(y, size=(hw * 2).tolist(), mode="bilinear", align_corners=False)  # 2x too large ...
        h = (hw[0] // 1).item()
        y = y[:, :, : h * 2 : 2, : int(hw[1]) * 2 : 2]  # ... then cropped and subsampled by tensor bounds
        return torch.sigmoid(self.head(torch.cat([y, x], 1)))


def factory() -> MattingModel:
    seeded(21)
    coarse = spread(TensorSizes(), 21, lambda m: m.head)
    return MattingModel(coarse=coarse, refine=None, spec=ZOO_SPEC, name="zoo-tensor-sizes")
