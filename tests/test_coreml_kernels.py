"""The MIL executor's kernels against torch, through coremltools' own conversion of each torch op:
what coremltools emits for an op is its semantics, and the executor must reproduce it. Each case
also asserts which MIL op carries it, so a converter that stops emitting it shows here. Then whole
blocks of common mobile backbones (MobileNetV3, MODNet's IBNorm, a transformer-style mixer, a
transposed-conv decoder), random-initialised, in fp32 and fp16 programs."""

import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import coremltools as ct
import torch.nn.functional as F

from mexport.errors import CannotVerifyError
from mexport.runtimes.coreml.mil_executor import SUPPORTED_OPS, MilExecutor


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _randomized(m: nn.Module) -> nn.Module:
    """Norm layers with non-trivial statistics and affine parameters (fresh ones are identities)."""
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        for name in ("weight", "bias"):
            p = getattr(mod, name, None)
            if isinstance(p, nn.Parameter) and isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d, nn.LayerNorm,
                                                                 nn.GroupNorm, nn.PReLU)):
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name == "weight" else 0.0))
    return m.eval()


def run(m: nn.Module, x: torch.Tensor, tmp_path, precision="fp32"):
    """(executor output, torch output, the program's op types)."""
    m = _randomized(m)
    with torch.no_grad():
        want = m(x).numpy()
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mm = ct.convert(torch.jit.trace(m, x), inputs=[ct.TensorType(name="x", shape=x.shape)], convert_to="mlprogram",
                            minimum_deployment_target=ct.target.iOS16, skip_model_load=True,
                            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16)
    finally:
        logging.disable(logging.NOTSET)
    path = tmp_path / "m.mlpackage"
    mm.save(str(path))
    ex = MilExecutor(path)
    (out,) = ex(x=x.numpy()).values()
    return out, want, {op.op_type for op in ex.package.main.operations}


G = torch.Generator().manual_seed(1)
X = torch.randn(1, 8, 16, 16, generator=G)

# case -> (module, MIL op it must produce)
CASES = {
    "batch_norm": (nn.BatchNorm2d(8), "batch_norm"),
    "instance_norm": (nn.InstanceNorm2d(8, affine=True), "instance_norm"),
    "layer_norm over C,H,W": (nn.LayerNorm([8, 16, 16]), "layer_norm"),
    "layer_norm over channels (channels-last)": (Fn(lambda x: F.layer_norm(x.permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)), "layer_norm"),
    "group_norm": (nn.GroupNorm(2, 8), "square"),
    "split": (Fn(lambda x: torch.cat([a * (i + 1) for i, a in enumerate(torch.split(x, [3, 5], 1))], 1)), "split"),
    "chunk": (Fn(lambda x: torch.chunk(x, 2, 1)[0] - torch.chunk(x, 2, 1)[1]), "split"),
    "hardswish": (nn.Hardswish(), "sigmoid_hard"),
    "hardsigmoid": (nn.Hardsigmoid(), "sigmoid_hard"),
    "silu": (nn.SiLU(), "silu"),
    "gelu": (nn.GELU(), "gelu"),
    "gelu tanh": (nn.GELU(approximate="tanh"), "gelu"),
    "softmax": (nn.Softmax(1), "softmax"),
    "leaky_relu": (nn.LeakyReLU(0.1), "leaky_relu"),
    "elu": (nn.ELU(0.7), "elu"),
    "prelu": (nn.PReLU(8), None),
    "avg_pool ceil_mode": (nn.AvgPool2d(3, 2, ceil_mode=True), "avg_pool"),
    "avg_pool ceil_mode padded": (nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False), "avg_pool"),
    "max_pool ceil_mode": (nn.MaxPool2d(3, 2, ceil_mode=True), "max_pool"),
    "global average pool": (nn.AdaptiveAvgPool2d(1), None),
    "conv_transpose": (nn.ConvTranspose2d(8, 4, 4, 2, 1), "conv_transpose"),
    "conv_transpose odd": (nn.ConvTranspose2d(8, 4, 3, 2, 1, output_padding=1), "conv_transpose"),
    "conv_transpose grouped": (nn.ConvTranspose2d(8, 8, 2, 2, groups=2), "conv_transpose"),
    "linear": (Fn(lambda x: F.linear(x.mean((2, 3)), torch.linspace(-1, 1, 24).view(3, 8), torch.tensor([0.1, -0.2, 0.3]))), "linear"),
    "matmul": (Fn(lambda x: x.flatten(2) @ x.flatten(2).transpose(1, 2)), "matmul"),
    "reduce_min": (Fn(lambda x: x.amin(1, keepdim=True)), "reduce_min"),
    "std": (Fn(lambda x: x.std(1, keepdim=True)), None),
    "abs, log": (Fn(lambda x: torch.log(x.abs() + 1)), "log"),
    "rsqrt": (Fn(lambda x: torch.rsqrt(x.abs() + 1)), "rsqrt"),
    "exp": (Fn(lambda x: torch.exp(x * 0.5)), "exp"),
    "stack": (Fn(lambda x: torch.stack([x, 2 * x], 1).sum(1)), "stack"),
    "where": (Fn(lambda x: torch.where(x > 0.2, x, x * 0.1)), "select"),
    "ones_like": (Fn(lambda x: torch.where(x > 0.5, torch.ones_like(x), x)), "fill_like"),
    "pixel_unshuffle": (nn.PixelUnshuffle(2), "pixel_unshuffle"),
    "floor, ceil, sign": (Fn(lambda x: torch.floor(2 * x) + torch.ceil(3 * x) + torch.sign(x)), "floor"),
    "less": (Fn(lambda x: torch.where(x < 0.1, x, -x)), "less"),
    "greater_equal": (Fn(lambda x: torch.where(x >= 0.3, x, 2 * x)), "greater_equal"),
    "less_equal": (Fn(lambda x: torch.where(x <= -0.5, x, 3 * x)), "less_equal"),
    "equal": (Fn(lambda x: torch.where(torch.round(x) == 0, x, 4 * x)), "equal"),
    "not_equal": (Fn(lambda x: torch.where(torch.round(x) != 1, x, 5 * x)), "not_equal"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_torch_through_coremltools(case, tmp_path):
    m, op = CASES[case]
    out, want, ops = run(m, X, tmp_path)
    if op is not None:
        assert op in ops, sorted(ops)
    assert out.shape == want.shape and np.abs(out - want).max() < 2e-5 * max(1.0, np.abs(want).max()), np.abs(out - want).max()


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: expand 1x1, depthwise 3x3 (stride 2 when downsampling), SE, project."""

    def __init__(self, cin, cexp, cout, stride):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, cexp, 1, bias=False), nn.BatchNorm2d(cexp), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(cexp, cexp, 3, stride, 1, groups=cexp, bias=False), nn.BatchNorm2d(cexp), nn.Hardswish())
        self.se = SqueezeExcite(cexp)
        self.project = nn.Sequential(nn.Conv2d(cexp, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class IBNorm(nn.Module):
    """MODNet's: BatchNorm on the first half of the channels, InstanceNorm on the other."""

    def __init__(self, c):
        super().__init__()
        self.bn, self.inorm = nn.BatchNorm2d(c // 2), nn.InstanceNorm2d(c - c // 2, affine=False)
        self.half = c // 2

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        return torch.cat([self.bn(a), self.inorm(b)], 1)


BLOCKS = {
    "MobileNetV3 stem + blocks": lambda: nn.Sequential(
        nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
        InvertedResidual(16, 48, 16, 1), InvertedResidual(16, 64, 24, 2)),
    "MODNet IBNorm conv": lambda: nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), IBNorm(16), nn.ReLU(), nn.Conv2d(16, 1, 1), nn.Sigmoid()),
    "mixer (layer_norm, gelu, softmax attention)": lambda: Fn(lambda x: _mixer(x)),
    "decoder (conv_transpose, group_norm, silu)": lambda: nn.Sequential(
        nn.ConvTranspose2d(8, 8, 4, 2, 1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1)),
}


def _mixer(x):
    t = F.layer_norm(x.flatten(2).transpose(1, 2), (8,))  # tokens: (1, 256, 8)
    att = torch.softmax(t @ t.transpose(1, 2) / 8**0.5, -1)
    return F.gelu(att @ t).transpose(1, 2).reshape(x.shape)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_backbone_blocks_run_on_the_executor(block, tmp_path):
    torch.manual_seed(0)
    m = BLOCKS[block]()
    out, want, ops = run(m, X, tmp_path)
    assert ops <= SUPPORTED_OPS
    assert np.abs(out - want).max() < 1e-4 * max(1.0, np.abs(want).max())
    (tmp_path / "fp16").mkdir()
    out16, _, _ = run(m, X, tmp_path / "fp16", precision="fp16")  # every op rounded to fp16, as a device does
    err = np.abs(out16 - want).max() / max(1.0, np.abs(want).max())
    assert 1e-6 < err < 2e-2, err  # fp16 rounding visible, and small


def test_an_op_without_a_kernel_still_cannot_be_verified(tmp_path):
    with pytest.raises(CannotVerifyError, match="cannot verify.*cumsum"):
        run(Fn(lambda x: torch.cumsum(x, 1)), X, tmp_path)
