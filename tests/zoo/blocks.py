"""Building blocks the zoo's architectures share, after the published designs they name."""

import torch
import torch.nn.functional as F
from torch import nn

from mexport import PipelineSpec

ZOO_SPEC = PipelineSpec(coarse_size=(64, 64), refine_size=(128, 128))


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


def realistic_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained BatchNorms are not identities: give running stats and affines spread like trained ones."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
            m.weight.data = 0.5 + torch.rand(m.num_features, generator=g)
            m.bias.data = 0.2 * torch.randn(m.num_features, generator=g)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean = 0.1 * torch.randn(m.num_features, generator=g)
            m.running_var = 0.5 + torch.rand(m.num_features, generator=g)
    return model


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    """MobileNetV3's SE: global average pool, 1x1 down, ReLU, 1x1 up, hard sigmoid."""

    def __init__(self, ch: int, reduced: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(ch, reduced, 1), nn.Conv2d(reduced, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise kxk, optional SE, 1x1 project, residual when shapes match."""

    def __init__(self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool, act: type[nn.Module]) -> None:
        super().__init__()
        self.expand = conv_bn(cin, exp, 1, act=act)
        self.dw = conv_bn(exp, exp, k, stride, groups=exp, act=act)
        self.se = SqueezeExcite(exp, max(8, exp // 4)) if se else nn.Identity()
        self.project = conv_bn(exp, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class BasicBlock(nn.Module):
    """ResNet-18/34's block, with the 1x1 strided projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class UpBlock(nn.Module):
    """U-Net decoder step: bilinear 2x upsample, concatenate the skip, conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


def spread(model: nn.Module, seed: int, head) -> nn.Module:
    """``realistic_norms``, and the output conv scaled so the alpha spans [0, 1] like a trained
    matte's (a random net's logits sit near 0: every alpha near 0.5 would make any error look small)."""
    realistic_norms(model, seed)
    conv = head(model)
    with torch.no_grad():
        x = torch.rand(1, 3, *ZOO_SPEC.coarse_size, generator=torch.Generator().manual_seed(seed))
        conv.weight.mul_(4.0 / max(1e-6, float(_logit_std(model, conv, x))))
    return model


def _logit_std(model: nn.Module, conv: nn.Module, x: torch.Tensor) -> float:
    seen = []
    h = conv.register_forward_hook(lambda m, i, o: seen.append(o.std()))
    try:
        model(x, torch.rand_like(x[:, :1])) if _takes_two(model) else model(x)
    finally:
        h.remove()
    return float(seen[0])


def _takes_two(model: nn.Module) -> bool:
    import inspect

    return len(inspect.signature(model.forward).parameters) == 2
