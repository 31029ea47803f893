"""The project's shallow refine network (v3): a learned guided filter held inside the coarse
network's own local range.

What it must do: add full-resolution detail where the coarse alpha is uncertain (edges, hair, fur),
and leave it alone where the coarse network is confident, whatever the texture. v2 blended a
learned colour model into a band around the coarse edge; on people and animals it never saw it
copied texture into the alpha (holes in the astronaut's suit, blocks on an impala's horns: animals
SAD +206 %, portraits +31 %, reports/reference_model.md). v3 makes that impossible by construction:

    out = clamp(r, lo, hi),   lo / hi = min / max of the coarse alpha within RANGE_RADIUS

The refined alpha at a pixel can only take values that the coarse network itself predicted within
RANGE_RADIUS x LOWRES_FACTOR pixels (8 px at 1024x1024). In a confident interior (coarse near 1
everywhere around) lo = hi = 1: no hole can appear, and no texture can paint a confident
background. Near an edge the range spans [0, 1] and the learned model moves the edge onto the
photo's own edge, sharpens it, or softens it into hair. This is BackgroundMattingV2's "refine only
where the coarse pass is unsure" with the uncertainty read off the coarse alpha's local range
instead of a predicted error map (a second head that can itself be wrong on unseen photos), and
RobustVideoMatting's deep guided filter (Wu et al., CVPR 2018) as the refined value r:

    r = A . [R, G, B, coarse] + b

with A and b predicted by a small CNN at 1/4 resolution from the box-pooled photo and coarse
alpha, upsampled bilinearly and applied to the full-resolution photo. No convolution runs at full
resolution; the cost is ``macs_per_pixel`` (about 0.5 GMAC at 1024x1024, a test holds it <= 1).
It starts as the identity (A picks coarse, b = 0).

The clamp is spelled lo + relu(r - lo) - relu(r - hi) (equal for lo <= hi) on r already clamped
to [0, 1] by a RELU6, and the min of the range as 1 - max(1 - x): RELU, RELU6, MAX_POOL_2D, ADD and
SUB run in int8 on XNNPACK, so the whole full-resolution part can be int8 (v2's band, with a slope
of 32 per unit of coarse alpha, could not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import box_pool

LOWRES_FACTOR = 4
RANGE_RADIUS = 2


class Refiner(nn.Module):
    """Inputs: the photo [N,3,H,W] in [0, 1], NOT normalized (``takes_raw_image``: the pipeline's
    normalization is folded into the coefficients, see ``forward``), and the coarse alpha upsampled
    to [N,1,H,W] (H, W divisible by 4). Output: refined alpha [N,1,H,W], inside the coarse alpha's
    local range and so in [0, 1] up to float rounding (``output_in_unit_range``)."""

    takes_raw_image = True
    output_in_unit_range = True

    def __init__(self, width: int = 16, radius: int = RANGE_RADIUS, mean: tuple[float, ...] = (0.485, 0.456, 0.406),
                 std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.lowres = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.coef = nn.Conv2d(width, 5, 1)  # A_r, A_g, A_b, A_alpha, b
        self.pool = PhotoPool(mean, std)
        self.range = LocalRange(radius)
        self.phases = PhaseSpace(LOWRES_FACTOR)
        with torch.no_grad():
            self.coef.weight.zero_()
            self.coef.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, image: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """The deployed form of ``reference`` (same maths up to float rounding; a test holds them
        together), spelled for speed on XNNPACK, in int8 as in float:

        - Full resolution is handled in *phase space*: the photo and the coarse alpha are
          pixel-unshuffled into 16 phases of 256x256 (``PhaseSpace``), every bilinear x4 upsample
          of a 1/4-resolution map is a fixed 3x3 depthwise conv into those 16 phases, and the
          result is pixel-shuffled back. XNNPACK vectorizes over channels: measured on this CPU, a
          one-channel RESIZE_BILINEAR to 1024x1024 takes 3.6 ms in fp32 and 3.8 ms in int8, the
          same upsample as a phase conv 0.7 ms, and the colour dot product as a 48->16 1x1 conv
          1.6 ms instead of 4.9 ms for a 3->1 conv at full resolution.
        - A.((I - mean) / std) + b = (A / std).I + (b + A.shift) with shift = -mean / std: the
          normalization folds into the coefficients, so the full-resolution photo is never
          normalized; the box pools are means over the 16 phases.
        - At 6x scale, so that clamping r to [0, 1] first (which changes nothing: lo and hi are in
          [0, 1]) is a RELU6 fused into the add that forms r: with r bounded, the ReLU spelling of
          the clamp cannot lose lo to cancellation, however large the coefficients."""
        ph = self.phases
        photo, c = ph.unshuffle3(image), ph.unshuffle1(coarse_up)
        low_c = ph.mean1(c)
        coef = self.coef(self.lowres(torch.cat([self.pool(ph.mean3(photo)), low_c], 1)))
        a_rgb, a_c, b = coef[:, :3] * self.pool.inv_std, coef[:, 3:4], coef[:, 4:5]
        b = b + (coef[:, :3] * self.pool.shift).sum(1, keepdim=True)
        lo, hi = self.range(coarse_up)
        dot = ph.colour_sum(ph.up3(6.0 * a_rgb) * photo)
        r6 = F.relu6(dot + ph.up1(6.0 * a_c) * c + ph.up1(6.0 * b))
        return ph.shuffle(clamp_between(r6, ph.up1(6.0 * lo), ph.up1(6.0 * hi)) / 6.0)

    def reference(self, image_norm: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        """The refiner as trained and as the module doc defines it, on the normalized photo: the
        specification ``forward`` is tested against."""
        r = self._refine(image_norm, coarse_up)
        lo, hi = (F.interpolate(t, size=r.shape[2:], mode="bilinear", align_corners=False) for t in self.range(coarse_up))
        return torch.minimum(torch.maximum(r, lo), hi)

    def _refine(self, image: torch.Tensor, coarse_up: torch.Tensor) -> torch.Tensor:
        guide = torch.cat([image, coarse_up], 1)
        coef = F.interpolate(self.coef(self.lowres(box_pool(guide, LOWRES_FACTOR))), size=image.shape[2:], mode="bilinear",
                             align_corners=False)
        return (coef[:, :4] * guide).sum(1, keepdim=True) + coef[:, 4:]

    @property
    def reach_px(self) -> float:
        """How far (Euclidean, in full-resolution pixels) a coarse value can influence the range:
        the bilinear upsample mixes cells within 1 of a pixel's own, the range looks ``radius``
        cells further, each cell is 4 px: 4r + 7 px along an axis, times sqrt(2) on a diagonal."""
        return (LOWRES_FACTOR * self.range.radius + LOWRES_FACTOR + 3) * 2**0.5

    @staticmethod
    def macs_per_pixel(width: int = 16) -> float:
        """The 1/4-resolution CNN's MACs per full-resolution pixel (what models.macs counts)."""
        return (9 * (4 * width + 3 * width * width) + width * 5) / LOWRES_FACTOR**2

    @staticmethod
    def resampling_macs_per_pixel() -> float:
        """The phase-space convs' MACs per full-resolution pixel: the box pools, 7 channels of
        bilinear upsampling and the colour sum. They are pooling and resizing spelled as convs
        (models.macs, by custom, counts neither), but a device runs them as convs."""
        n = LOWRES_FACTOR**2
        return ((3 * n * 3 + n) + 7 * n * 9 + 3 * n * n) / n


def clamp_between(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """min(max(x, lo), hi) for lo <= hi, spelled with ReLUs, which XNNPACK runs in int8. Exact up
    to float rounding only while x is of the order of lo and hi (x = 1e8 would cancel lo away):
    callers bound x first."""
    return lo + F.relu(x - lo) - F.relu(x - hi)


class LocalRange(nn.Module):
    """(min, max) of the coarse alpha over a window of (2r+1)^2 cells of 4x4 pixels, at 1/4
    resolution: the range the refined alpha must stay in. Each cell's min and max, not its mean: a
    mean can sit inside the values of its own pixels, and then even the identity refiner would
    move them (at the image border, where the bilinear upsample runs flat). With r >= 1 the bilinear
    upsample of the range only mixes cells within the window, so every coarse value lies inside its
    own pixel's range and the identity refiner is exact. A module of its own so that quantization
    recipes can name it (``refine.range``). Max filters as two 1-D passes (2(2r+1) comparisons
    instead of (2r+1)^2); the min as 1 - max(1 - x), which needs no NEG op."""

    def __init__(self, radius: int) -> None:
        super().__init__()
        if radius < 1:
            raise ValueError("radius must be >= 1 (0 would not contain the coarse alpha's own values)")
        self.radius = radius

    def forward(self, coarse_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def cells_max(x: torch.Tensor) -> torch.Tensor:
            return dilate(F.max_pool2d(x, LOWRES_FACTOR), self.radius)

        return 1.0 - cells_max(1.0 - coarse_up), cells_max(coarse_up)


class PhotoPool(nn.Module):
    """The photo's 1/4-resolution box pool, normalized there (pooling is linear, so this is the
    pooled normalized photo). A module of its own so that a quantization recipe can name it
    (``refine.pool``)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        # Not in the state dict: the weights file holds the trained parameters only. A multiply-add,
        # not (x - mean) / std: coremltools 9.0's fuse_bias_conv negates a subtracted constant in
        # place (`bias_value *= -1`), and a constant used twice (``shift`` is also used by the
        # refiner's coefficient fold) then reaches its other op negated (measured: Core ML refine
        # graph off by 1.0 in alpha).
        m, sd = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("inv_std", (1.0 / sd).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-m / sd).view(1, 3, 1, 1), persistent=False)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled * self.inv_std + self.shift


class PhaseSpace(nn.Module):
    """Full resolution as k x k phases of a 1/k-resolution grid: the pixel (k.y + i, k.x + j) of a
    channel is phase k.i + j of that channel at (y, x), channels major (PyTorch's pixel_unshuffle
    order). Hand-written because no library spells bilinear upsampling this way: its 2-D weights
    for align_corners=False are products of the 1-D ones, (1 + f, -f) or (1 - f, f) on the
    neighbours at offset f = (2i + 1 - k) / 2k, with the edge replicated as PyTorch clamps it. All
    kernels are buffers (not in the state dict; torch.fx and the converters see constants)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        w1 = torch.zeros(k, 3, dtype=torch.float64)
        for i in range(k):
            f = (2 * i + 1 - k) / (2 * k)
            if f < 0:
                w1[i, 0], w1[i, 1] = -f, 1 + f
            else:
                w1[i, 1], w1[i, 2] = 1 - f, f
        up = torch.einsum("ya,xb->yxab", w1, w1).reshape(k * k, 1, 3, 3).float()
        self.register_buffer("w_up1", up, persistent=False)
        self.register_buffer("w_up3", up.repeat(3, 1, 1, 1), persistent=False)
        n = k * k
        self.register_buffer("w_mean1", torch.full((1, n, 1, 1), 1.0 / n), persistent=False)
        self.register_buffer("w_mean3", torch.block_diag(*[torch.full((1, n), 1.0 / n)] * 3).view(3, 3 * n, 1, 1), persistent=False)
        self.register_buffer("w_sum3", torch.cat([torch.eye(n)] * 3, 1).view(n, 3 * n, 1, 1), persistent=False)
        one = torch.eye(n).view(n, 1, k, k)  # output phase k.i + j reads pixel (i, j) of its block
        one3 = torch.zeros(3 * n, 3, k, k)
        for c in range(3):
            one3[c * n : (c + 1) * n, c : c + 1] = one
        self.register_buffer("w_one1", one, persistent=False)
        self.register_buffer("w_one3", one3, persistent=False)

    def unshuffle1(self, x: torch.Tensor) -> torch.Tensor:
        """pixel_unshuffle of a 1-channel map, as a strided conv with one-hot weights: converters
        keep a conv in the NHWC layout of the convs around it, where pixel_unshuffle's reshapes
        made litert-torch run the phase-space ops in NCHW between transposes."""
        return F.conv2d(x, self.w_one1, stride=self.k)

    def unshuffle3(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w_one3, stride=self.k)

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.k)

    def mean1(self, x: torch.Tensor) -> torch.Tensor:
        """The box pool of a 1-channel map: the mean over its k x k phases."""
        return F.conv2d(x, self.w_mean1)

    def mean3(self, x: torch.Tensor) -> torch.Tensor:
        """The box pool of a 3-channel map, channel by channel."""
        return F.conv2d(x, self.w_mean3)

    def colour_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per phase, the sum over 3 colour channels: (3 k^2) -> k^2."""
        return F.conv2d(x, self.w_sum3)

    def up1(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear x k (align_corners=False) of a 1-channel 1/k-resolution map, in phases."""
        return F.conv2d(_edge_pad(x), self.w_up1)

    def up3(self, x: torch.Tensor) -> torch.Tensor:
        """The same for a 3-channel map, channel by channel (channels major, as unshuffle)."""
        return F.conv2d(_edge_pad(x), self.w_up3, groups=3)


def _edge_pad(x: torch.Tensor) -> torch.Tensor:
    """One pixel of edge replicated on every side, as SLICE + CONCATENATION: F.pad's replicate mode
    becomes MIRROR_PAD in LiteRT, which XNNPACK does not take. No branching on shapes, so that
    torch.fx traces it (Core ML W8A8 quantizes the refine network through torch.fx)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], 2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], 3)


def dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square max filter as two 1-D passes: the same result as one (2r+1)^2 max pool, but 2(2r+1)
    instead of (2r+1)^2 comparisons per pixel (LiteRT/XNNPACK: 0.8 ms instead of 20 ms at 256x256)."""
    k = 2 * radius + 1
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
