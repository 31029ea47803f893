"""The project's own shallow refiner: a learned guided filter, trained, confined to a band.

Cost has to stay small at 1024x1024 (budget 4 GMAC; this one is about 0.5 GMAC, see
``macs_per_pixel``, and no convolution runs at full resolution). A small CNN looks at the photo and
coarse alpha box-pooled to 1/4 resolution and predicts, per pixel, a local linear model
alpha = A . [R, G, B, coarse] + b (the deep guided filter of Wu et al., CVPR 2018, as used by
RobustVideoMatting). A and b are upsampled bilinearly and applied to the full-resolution photo,
which is what brings back edges the 320 px coarse net cannot see. It starts as the identity
(A picks coarse, b = 0), so training can only move it away from "upsampled coarse" where that helps.

A first version also had a two-layer 3x3 head at full resolution (0.45 GMAC, half of its cost and
most of its latency: 117 -> 74 ms in LiteRT fp32 without it). Without the head it generalizes better
on held-out GT15-GT18 (reports/reference_model.md), so it went.

The correction is confined to a band around the coarse alpha's uncertain region (like
BackgroundMattingV2, which refines only where the coarse pass is unsure): band = 4c(1-c) at 1/4
resolution, dilated by a max filter of radius BAND_RADIUS (16 px at full resolution), times
BAND_GAIN, clamped to [0, 1]. The radius was picked on training photos GT01, 03, ..., 13 (best SAD +
Grad change over radius 4-12), never on the held-out ones. The gain is capped at 8 for deployment:
gains of 16-32 scored better on those photos, but the band's slope (4 x gain per unit of coarse
alpha) turns the 1/255 steps of an int8 coarse alpha into visible blend errors (gain 32: fused ONNX
int8 34.0 / 30.7 dB on chelsea / motorcycle_right, with the refiner itself in float). Outside the band the output is the
coarse alpha exactly. Training fits the unbanded correction; the band applies at inference.
Measured on held-out GT15-GT18: without the band the refiner, trained on 14 photos, hazed the definite
background of unseen photos (whole-image SAD +139 %, though the unknown band improved 25 %); with the
band also inside the training loss it learned larger in-band corrections that generalized worse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import box_pool, clamp01

LOWRES_FACTOR = 4
BAND_RADIUS = 4
BAND_GAIN = 8.0


class Refiner(nn.Module):
    """Inputs: the photo [N,3,H,W] in [0, 1], NOT normalized (``takes_raw_image``: the pipeline's
    normalization is folded into the coefficients, see ``forward``), and the coarse alpha upsampled
    to [N,1,H,W] (H, W divisible by 4). Output: refined alpha [N,1,H,W], in [0, 1] up to float
    rounding whenever coarse_up is (``output_in_unit_range``: the pipeline adds no clamp)."""

    takes_raw_image = True
    output_in_unit_range = True

    def __init__(self, width: int = 16, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.lowres = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.coef = nn.Conv2d(width, 5, 1)  # A_r, A_g, A_b, A_alpha, b
        self.band = Band()
        self.pool = PhotoPool(LOWRES_FACTOR, mean, std)
        with torch.no_grad():
            self.coef.weight.zero_()
            self.coef.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, image: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """The deployed form of ``reference`` (same maths, equal up to float rounding; a test holds
        them within 2e-6). Everything that can move to 1/4 resolution does, because the
        full-resolution elementwise passes are memory-bound and were most of the refiner's time
        (LiteRT fp32 refine graph 58 -> 37 ms, reports/tflite.md; in int8 exports they were float passes beside an int8
        coarse net):
        - box pooling is linear, so the photo is pooled raw and normalized at 1/4 resolution, and
          A.((I - mean) / std) + b = (A / std).I + (b + A.shift), shift = -mean / std: the normalization folds into
          the coefficients, and the full-resolution photo is never normalized;
        - coefficients are split at 1/4 resolution and upsampled per part (no full-resolution
          concat or slice);
        - the clamp of the refined alpha is a RELU6 fused into the add that forms it, on 6x the
          coefficients (upsampling is linear);
        - the blend c + band.(clamp(r) - c), a convex combination of values in [0, 1], is clamped
          the same way, so the pipeline's final clamp is left out (``output_in_unit_range``)."""
        low_c = box_pool(coarse_up, LOWRES_FACTOR)
        low = torch.cat([self.pool(image), low_c], 1)
        coef = self.coef(self.lowres(low))
        a_rgb, a_c, b = coef[:, :3] * self.pool.inv_std, coef[:, 3:4], coef[:, 4:5]
        b = b + (coef[:, :3] * self.pool.shift).sum(1, keepdim=True)
        size = image.shape[2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        dot = F.conv2d(up(6.0 * a_rgb) * image, torch.ones(1, 3, 1, 1, dtype=image.dtype, device=image.device))
        refined6 = F.relu6(dot + up(6.0 * a_c) * coarse_up + up(6.0 * b))
        # Blended at 6x scale too, so the clamp that keeps float rounding (measured: -4e-9 and
        # 1 + 1e-7 on real photos) inside the contract's [0, 1] is again a RELU6 fused into the add.
        c6 = 6.0 * coarse_up
        return F.relu6(c6 + up(self.band(low_c)) * (refined6 - c6)) / 6.0

    def reference(self, image_norm: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """The refiner as trained and as the module doc defines it, on the normalized photo:
        kept as the specification ``forward`` is tested against."""
        refined, low = self._refine(image_norm, coarse_up)
        band = F.interpolate(self.band(low[:, 3:4]), size=refined.shape[2:], mode="bilinear", align_corners=False)
        return coarse_up + band * (clamp01(refined) - coarse_up)

    def unbanded(self, image_norm: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """The correction before the band, on the normalized photo: what training fits (a band in
        the loss let the net learn large in-band corrections that generalized worse: measured,
        see the module doc)."""
        return self._refine(image_norm, coarse_up)[0]

    def _refine(self, image: torch.Tensor, coarse_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        guide = torch.cat([image, coarse_up], 1)
        low = box_pool(guide, LOWRES_FACTOR)
        coef = self.coef(self.lowres(low))
        coef = F.interpolate(coef, size=image.shape[2:], mode="bilinear", align_corners=False)
        a, b = coef[:, :4], coef[:, 4:]
        return (a * guide).sum(1, keepdim=True) + b, low

    @staticmethod
    def macs_per_pixel(width: int = 16) -> float:
        """Conv MACs per full-resolution pixel (the guided apply and the band are elementwise)."""
        low = 9 * (4 * width + 3 * width * width) + width * 5
        return low / LOWRES_FACTOR**2


class PhotoPool(nn.Module):
    """The photo box-pooled to 1/4 resolution and normalized there (pooling is linear, so this is
    the pooled normalized photo). A module of its own so that a quantization recipe can name it
    (``refine.pool``): it reads the full-resolution photo, which an int8 graph has already quantized
    for the coarse net, and converters fuse the normalization into the pool's depthwise conv."""

    def __init__(self, k: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.k = k
        # Not in the state dict: the weights file holds the trained parameters only. A multiply-add,
        # not (x - mean) / std: coremltools 9.0's fuse_bias_conv negates a subtracted constant in
        # place (`bias_value *= -1`), and a constant used twice (``shift`` is also used by the
        # refiner's coefficient fold) then reaches its other op negated (measured: Core ML refine
        # graph off by 1.0 in alpha).
        m, sd = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("inv_std", (1.0 / sd).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-m / sd).view(1, 3, 1, 1), persistent=False)
        # box_pool's kernel as a buffer: torch.fx (Core ML W8A8 quantizes this module) cannot
        # trace a kernel shaped from the input.
        self.register_buffer("kernel", torch.full((3, 1, k, k), 1.0 / (k * k)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, stride=self.k, groups=3) * self.inv_std + self.shift


class Band(nn.Module):
    """The blend weight, at 1/4 resolution, from the box-pooled coarse alpha (see the module doc).
    A module of its own so that quantization recipes can name it (``refine.band``): its gain
    amplifies int8 rounding of the coarse alpha."""

    def forward(self, c_low: torch.Tensor) -> torch.Tensor:
        return clamp01(dilate(4 * c_low * (1 - c_low), BAND_RADIUS) * BAND_GAIN)


def dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square max filter as two 1-D passes: the same result as one (2r+1)^2 max pool, but 2(2r+1)
    instead of (2r+1)^2 comparisons per pixel (LiteRT/XNNPACK: 0.8 ms instead of 20 ms at 256x256)."""
    k = 2 * radius + 1
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
