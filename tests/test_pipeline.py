"""The float pipeline: graphs, the pair path, the refiner's budget, and the Runner protocol."""

import numpy as np
import pytest
import torch

from mexport.models.macs import count_macs, pipeline_macs
from mexport.models.refiner import Refiner
from mexport.runner import PairRunner, Runner, TorchRunner


class _GraphRunner:
    """A runner over one role's torch graph: what an exported coarse or refine model computes."""

    def __init__(self, pipeline, role):
        self.graph, self.spec, self.name = pipeline.graph(role), pipeline.spec, role

    def __call__(self, *inputs):
        with torch.inference_mode():
            return self.graph(*(torch.from_numpy(a) for a in inputs)).numpy()


def test_fused_equals_coarse_then_refine_through_the_host_side_pair(reference_pipeline):
    """The in-between downsample done on the host (PairRunner) is exactly what the fused graph does."""
    x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    fused = TorchRunner(reference_pipeline)
    pair = PairRunner(_GraphRunner(reference_pipeline, "coarse"), _GraphRunner(reference_pipeline, "refine"), reference_pipeline.spec)
    assert isinstance(fused, Runner) and isinstance(pair, Runner)
    a, b = fused(x), pair(x)
    assert a.shape == (1, 1, 1024, 1024) and 0.0 <= a.min() and a.max() <= 1.0
    assert np.abs(a - b).max() == 0.0


def test_refiner_budget_and_macs(reference_pipeline):
    r = reference_pipeline.refine
    macs = count_macs(r, torch.zeros(1, 3, 1024, 1024), torch.zeros(1, 1, 1024, 1024))
    assert abs(macs - Refiner.macs_per_pixel() * 1024 * 1024) / macs < 1e-6
    # issue #16's budget: the refine network stays <= 1 GMAC at 1024x1024, its resampling convs included
    assert macs + Refiner.resampling_macs_per_pixel() * 1024 * 1024 <= 1e9


def test_reference_macs(reference_pipeline):
    m = pipeline_macs(reference_pipeline)
    assert 19e9 < m["coarse"] < 21e9  # U^2-Net-p at 320x320: about 20 GMAC (the paper's figure)
    assert m["fused"] == m["coarse"] + m["refine"]


def test_refiner_starts_as_identity():
    # a coarse alpha as the pipeline gives it: upsampled from a lower resolution (a pixel-level noise
    # alpha could leave the range of its 4x4 pooled neighbourhood)
    up = torch.nn.functional.interpolate(torch.rand(1, 1, 20, 20), size=(64, 64), mode="bilinear", align_corners=False)
    x = torch.rand(1, 3, 64, 64)
    # identity up to the float rounding of lo + relu(r - lo) - relu(r - hi)
    assert torch.allclose(Refiner()(x, up), up, atol=1e-6, rtol=0)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_refiner_cannot_touch_what_the_coarse_net_is_sure_of(radius):
    """By construction, whatever the weights and the texture: with coarse alpha exactly 1 in an
    interior and exactly 0 in a background, a refiner with wild random coefficients (A up to +-50)
    on a photo of pure noise and stripes leaves every pixel farther than its reach from the coarse
    edge exactly as the coarse net had it, and the GT-free check is 0. Near the edge it did move."""
    from mexport.validate.metrics import confident_change_share

    g = torch.Generator().manual_seed(radius)
    r = Refiner(radius=radius).eval()
    with torch.no_grad():
        for p in r.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 3)
        r.coef.weight.mul_(10)
    H = 256
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    disc = ((yy - 128.0) ** 2 + (xx - 128.0) ** 2).sqrt()
    coarse = (disc < 70).float()[None, None]  # confident: exactly 0 or 1
    coarse = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(coarse, (2, 2, 2, 2), mode="replicate"), 5, 1)  # a soft edge
    photo = torch.rand(1, 3, H, H, generator=g)
    photo[:, :, :, ::3] = 1 - photo[:, :, :, ::3]  # stripes across the edge
    with torch.no_grad():
        out = r(photo, coarse)
    far = ((disc - 70).abs() > r.reach_px + 2)[None, None]  # + the 2 px the 5x5 blur adds to the edge
    assert (out - coarse)[far].abs().max().item() < 1e-6
    assert confident_change_share(coarse[0, 0].numpy(), out[0, 0].numpy(), far_px=r.reach_px) == 0.0
    assert (out - coarse)[~far].abs().max().item() > 0.2  # the wild refiner really acted near the edge
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


def test_refiner_deployed_form_is_the_reference_maths(reference_pipeline):
    """Refiner.forward (normalization folded into the coefficients, the clamp spelled with ReLUs)
    computes Refiner.reference, the form it was trained in, with the trained weights."""
    r = reference_pipeline.refine
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 128, 128, generator=g)
    up = torch.rand(2, 1, 128, 128, generator=g) ** 3  # everywhere uncertain: a wide range to act in
    with torch.no_grad():
        deployed = r(x, up)
        ref = r.reference(reference_pipeline.normalize(x), up)
    assert (deployed - ref).abs().max().item() < 2e-6
    moved = (ref - up).abs() > 1e-3
    assert moved.float().mean() > 0.05  # the refiner really moved the alpha: the check compares something
    assert deployed.min() >= -1e-6 and deployed.max() <= 1 + 1e-6  # inside the coarse range: no clamp needed


def test_refiner_traces_with_torch_fx(reference_pipeline):
    """Core ML W8A8 quantizes the recipe's int8 modules through torch.fx (the whole refine network,
    v3): no kernel shaped from the input, no branch on a shape ("int() argument must be ... not
    'Proxy'" was refine.pool's kernel once)."""
    r = reference_pipeline.refine
    gm = torch.fx.symbolic_trace(r)
    g = torch.Generator().manual_seed(4)
    x, c = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 1, 64, 64, generator=g)
    with torch.no_grad():
        assert torch.allclose(gm(x, c), r(x, c)) and gm(x, c).shape == (1, 1, 64, 64)


def test_phase_space_is_bilinear_upsampling_and_box_pooling():
    """The deployed refiner's hand-written phase kernels against PyTorch's own ops."""
    import torch.nn.functional as F

    from mexport.models.ops import box_pool
    from mexport.models.refiner import PhaseSpace

    ph, g = PhaseSpace(4), torch.Generator().manual_seed(5)
    for ch, up in ((1, ph.up1), (3, ph.up3)):
        low = torch.rand(1, ch, 13, 17, generator=g)
        want = F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)
        assert (ph.shuffle(up(low)) - want).abs().max().item() < 1e-6  # edges included
    img = torch.rand(1, 3, 52, 68, generator=g)
    assert torch.equal(ph.unshuffle3(img), F.pixel_unshuffle(img, 4)) and torch.equal(ph.unshuffle1(img[:, :1]), F.pixel_unshuffle(img[:, :1], 4))
    assert (ph.mean3(ph.unshuffle3(img)) - box_pool(img, 4)).abs().max().item() < 1e-6
    assert (ph.mean1(ph.unshuffle1(img[:, :1])) - box_pool(img[:, :1], 4)).abs().max().item() < 1e-6
    assert torch.equal(ph.colour_sum(ph.unshuffle3(img)), ph.unshuffle1(img.sum(1, keepdim=True)))
