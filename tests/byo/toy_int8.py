"""Two toy matting models for `mexport sensitivity` (single network, 64 px; seeded weights).

``one_culprit``: a healthy conv stack with one ill-conditioned layer, ``coarse.bad``, built like
U^2-Net-p's ``stage2d.dec.4``: one input channel is 1 on every photo and is read with
weights 1000x the others' that its bias cancels, so a per-output-channel int8 scale sized for those
weights rounds the other channels' to a level or two.

``spread``: eight residual convs whose weights each carry one large outlier per output channel,
so every layer loses a little in int8 and no single one is to blame.

``saturating``: one conv, ``coarse.wide``, whose weights are all large and of one sign, read on
inputs near the top of their calibrated range: every pair of uint8 x int8 products exceeds 16 bits,
what onnxruntime's x86 U8S8 kernel saturates on CPUs without AVX-VNNI.

``biased_rounding``: one conv, ``coarse.biased``, whose weights all sit 0.45 of an int8 step above
a grid point, so int8 rounds every one of them the same way: its output moves by the same amount
on every pixel (a mean shift, what bias correction removes), where the noise around it is small.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import MattingModel, PipelineSpec


class OneCulprit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.bad = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            # channel 0 of mid's output: 1 everywhere (a "bias channel")
            self.mid[0].weight[0].fill_(0.0)
            self.mid[0].bias[0] = 1.0
            # bad reads it with weights 1000x the others' and cancels it in its bias
            self.bad.weight[:, 0].fill_(0.0)
            self.bad.weight[:, 0, 1, 1] = 100.0
            self.bad.bias.copy_(-100.0 + 0.1 * torch.randn(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bad(self.mid(self.stem(x))))
        return torch.sigmoid(12 * self.head(y))


class Spread(nn.Module):
    def __init__(self, depth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(depth))
        self.head = nn.Conv2d(16, 1, 3, padding=1)
        with torch.no_grad():
            for b in self.blocks:
                b.weight.mul_(0.5)
                b.weight[:, :, 0, 0] = 0.0
                b.weight[torch.arange(16), torch.arange(16), 0, 0] = 6.0  # one outlier per output channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        for b in self.blocks:
            y = y + 0.25 * torch.tanh(b(y))
        return torch.sigmoid(3 * self.head(y))


class BiasedRounding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.biased = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            # inputs with a large mean and a small spread: the shared rounding error adds up to a shift
            self.stem[0].weight.mul_(0.1)
            self.stem[0].bias.add_(1.0)
            step = 1.0 / 127  # each output channel's largest weight (1.0) sets the int8 step
            k = torch.randint(-12, 12, self.biased.weight.shape).float()
            self.biased.weight.copy_((k + 0.45) * step)
            self.biased.weight[:, 0, 0, 0] = 1.0
            self.biased.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.biased(self.stem(x)))
        return torch.sigmoid(4 * self.head(y))


class Saturating(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU())
        self.wide = nn.Conv2d(16, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            # every stem channel: the photo's brightness, on [0, ~1]; its calibrated top is the int8 top
            self.stem[0].weight.fill_(0.25 / 3)
            self.stem[0].bias.fill_(0.5)
            # weights 0.6..1 of each channel's largest: any two neighbours' products, at the input's
            # top (uint8 255) and int8 76..127, sum to 38,760..64,770, past int16's 32,767
            self.wide.weight.uniform_(0.6, 1.0)
            self.wide.bias.fill_(-0.5 * 144 * 0.8)
            self.head.weight.fill_(0.25 / 144)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(8 * self.head(self.wide(self.stem(x))))


def _model(net: nn.Module, name: str) -> MattingModel:
    spec = PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64))
    return MattingModel(coarse=net, refine=None, spec=spec, name=name)


def one_culprit() -> MattingModel:
    torch.manual_seed(7)
    return _model(OneCulprit(), "toy-one-culprit")


def spread() -> MattingModel:
    torch.manual_seed(8)
    return _model(Spread(), "toy-spread")


def saturating() -> MattingModel:
    torch.manual_seed(10)
    return _model(Saturating(), "toy-saturating")


def biased_rounding() -> MattingModel:
    torch.manual_seed(9)
    return _model(BiasedRounding(), "toy-biased-rounding")


class KnifeEdge(nn.Module):
    """alpha = sigmoid(40 * (brightness - t)): a photo of brightness t sits on the decision, where
    any noise moves the matte; a darker one sits far from it. ``gate`` reads, beside the three
    brightness channels, a constant channel of 50 with weight 0: its input range (0..50) makes its
    int8 input step 200x the stem's, so its rounding noise is what moves the matte."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.gate = nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            self.stem[0].weight.zero_()
            for c in range(3):
                self.stem[0].weight[c] = 1.0 / 27
            self.stem[0].bias.copy_(torch.tensor([3.0, 3.0, 3.0, 50.0]))
            self.gate.weight.copy_(torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]).view(1, 4, 1, 1))
            self.gate.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(40 * self.gate(self.stem(x)))


def knife_edge() -> MattingModel:
    """The threshold is set at mid-grey (128) through the spec's own normalization."""
    import numpy as np

    from mexport.photos import prepare

    model = _model(KnifeEdge(), "toy-knife-edge")
    net = model.coarse
    grey = torch.from_numpy(prepare(np.full((64, 64, 3), 128, np.uint8), model.spec)[0])
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.spec.mean, model.spec.std))
    with torch.no_grad():
        net.gate.bias.fill_(-float(net.gate(net.stem((grey - mean) / std)).mean()))
    return model
