"""A compute-bound probe: large 1x1 convolutions, packaged as a matting model.

A runtime's "peak" here is what it achieves on the friendliest work there is, a 1x1 convolution
(a plain matrix multiply) with 256 input and output channels over 128x128 pixels, about 1.07 GMAC
a layer. Packaged as a :class:`MattingModel`, the probe goes through exactly the path the real
model does: the same ``export()``, the same quantizer and recipe, the same runner, the same timing
worker. So "the model reaches X % of peak" compares like with like: one runtime, one precision,
one thread count. The thin layers at either end (3 -> 256 and 256 -> 1 channels) are under 2 % of
the MACs; they are counted, not hidden.
"""

from __future__ import annotations

CHANNELS = 256
SIZE = 128
LAYERS = 2
MODEL = "mexport.bench.peak:factory"


def factory():
    import torch
    from torch import nn

    from ..models.pipeline import MattingModel
    from ..spec import PipelineSpec, ResizeStep

    torch.manual_seed(0)  # a stable weights hash, so the exported probes find their reference

    class Conv1x1Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(3, CHANNELS, 1), nn.ReLU()]
            for _ in range(LAYERS):
                layers += [nn.Conv2d(CHANNELS, CHANNELS, 1), nn.ReLU()]
            self.body = nn.Sequential(*layers, nn.Conv2d(CHANNELS, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.body(x))

    # coarse size = refine size and no box pre-filter: the graph's resizes are no-ops.
    spec = PipelineSpec(coarse_size=(SIZE, SIZE), refine_size=(SIZE, SIZE), coarse_downsample=ResizeStep("bilinear", False, 0))
    return MattingModel(coarse=Conv1x1Stack().eval(), refine=None, spec=spec)  # named by its reference, so it reloads
