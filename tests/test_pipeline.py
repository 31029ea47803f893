"""The float pipeline: graphs, the pair path, the refiner's budget, and the Runner protocol."""

import numpy as np
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


def test_refiner_budget_and_macs():
    r = Refiner()
    macs = count_macs(r, torch.zeros(1, 3, 1024, 1024), torch.zeros(1, 1, 1024, 1024))
    assert macs <= 4e9  # the budget: <= 4 GMAC at 1024x1024
    assert abs(macs - Refiner.macs_per_pixel() * 1024 * 1024) / macs < 1e-6


def test_reference_macs(reference_pipeline):
    m = pipeline_macs(reference_pipeline)
    assert 19e9 < m["coarse"] < 21e9  # U^2-Net-p at 320x320: about 20 GMAC (the paper's figure)
    assert m["fused"] == m["coarse"] + m["refine"]


def test_refiner_starts_as_identity():
    up = torch.rand(1, 1, 64, 64)
    x = torch.rand(1, 3, 64, 64)
    # identity up to the clamp's float rounding (relu6(6x)/6)
    assert torch.allclose(Refiner()(x, up), up, atol=1e-6, rtol=0)


def test_refiner_deployed_form_is_the_reference_maths(reference_pipeline):
    """Refiner.forward (normalization folded into the coefficients, clamp fused, no pipeline clamp)
    computes Refiner.reference, the form it was trained in, with the trained weights."""
    r = reference_pipeline.refine
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 128, 128, generator=g)
    up = torch.rand(2, 1, 128, 128, generator=g) ** 3  # mostly near 0: a wide band
    with torch.no_grad():
        deployed = r(x, up)
        ref = r.reference(reference_pipeline.normalize(x), up)
    assert (deployed - ref).abs().max().item() < 2e-6
    band = (ref - up).abs() > 1e-3
    assert band.float().mean() > 0.05  # the refiner really moved the alpha: the check compares something
    assert deployed.min() >= -1e-6 and deployed.max() <= 1 + 1e-6  # convex blend: no clamp needed


def test_refiner_photo_pool_traces_with_torch_fx():
    """Core ML W8A8 quantizes the recipe's int8 modules through torch.fx (refine.pool is one): a
    kernel shaped from the input did not trace ("int() argument must be ... not 'Proxy'")."""
    pool = Refiner().pool
    gm = torch.fx.symbolic_trace(pool)
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(gm(x), pool(x)) and pool(x).shape == (1, 3, 4, 4)
