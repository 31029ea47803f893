"""A model shaped like onnx2torch's output (an ONNX model brought into PyTorch): one FX graph whose
Shape, Resize and Slice are modules taking sizes and bounds as tensors and reading them with
``.tolist()`` and ``.numpy()``, which torch.export's default (non-strict) tracing cannot run. rembg's U^2-Net-p
through onnx2torch fails the same way, and its strict mode too."""

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel

from .blocks import ZOO_SPEC, conv_bn, seeded, spread


class Shape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.shape)


class Resize(nn.Module):
    def forward(self, x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:  # as OnnxResize checks its input's rank: torch.fx cannot trace this module
            raise NotImplementedError(f"{x.dim()}D input is not implemented")
        return F.interpolate(x, size=sizes.tolist()[2:], mode="bilinear", align_corners=False)  # as onnx2torch's OnnxResize


class Slice(nn.Module):
    def forward(self, x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        h, w = (int(v) for v in ends.detach().cpu().numpy())  # as onnx2torch's OnnxSlice
        return x[:, :, :h, :w]


class OnnxStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 32, 3, 2))
        self.mid = conv_bn(32, 16)
        self.shape, self.resize, self.slice = Shape(), Resize(), Slice()
        self.head = nn.Conv2d(16 + 3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shape(x)
        y = self.resize(self.mid(self.enc(x)), s + 2)  # 2 pixels too large, as a padded ONNX Resize ...
        y = self.slice(y, s[2:])  # ... then cut back by a Slice whose ends come from Shape
        return torch.sigmoid(self.head(torch.cat([y, x], 1)))


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (Shape, Resize, Slice)) or super().is_leaf_module(m, qualname)


def factory() -> MattingModel:
    seeded(23)
    model = spread(OnnxStyle(), 23, lambda m: m.head)
    graph = torch.fx.GraphModule(model, _Tracer().trace(model))
    return MattingModel(coarse=graph, refine=None, spec=ZOO_SPEC, name="zoo-onnx-graph")
