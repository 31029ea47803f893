"""Re-centring a near-constant channel (mexport.models.recenter): same maths, fewer fp32 rounding errors."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mexport.models.recenter import BorderFix, Floor, plain_form, recenter


class Pair(nn.Module):
    """Two conv+ReLU with an upsample and a concat between them, as in an RSU decoder."""

    def __init__(self, dilation: int) -> None:
        super().__init__()
        self.dec = nn.ModuleList([nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.ReLU()),
                                  nn.Sequential(nn.Conv2d(7, 5, 3, padding=dilation, dilation=dilation), nn.ReLU())])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.dec[0](x), size=skip.shape[2:], mode="bilinear", align_corners=False)
        return self.dec[1](torch.cat([h, skip], 1))


@pytest.mark.parametrize("dilation", [1, 2])
def test_recentred_pair_computes_the_same_function_border_included(dilation):
    torch.manual_seed(0)
    m = Pair(dilation).eval()
    with torch.no_grad():
        m.dec[0][0].bias[2] = 300.0  # a bias channel: ~300 everywhere
        m.dec[1][0].bias -= 300.0 * m.dec[1][0].weight[:, 2].sum((1, 2))  # and a bias that cancels it inside
    r = copy.deepcopy(m)
    r.dec[0], r.dec[1] = recenter(m.dec[0], m.dec[1], channel=2, c=300.0)
    assert isinstance(r.dec[0][1], Floor) and isinstance(r.dec[1][1], BorderFix)
    back = plain_form(r)
    assert type(back.dec[0][1]) is nn.ReLU and len(back.dec[1]) == 2 and plain_form(back) is back
    assert torch.equal(back.dec[0][0].bias, m.dec[0][0].bias) and torch.equal(back.dec[1][0].bias, m.dec[1][0].bias)
    x, skip = torch.randn(2, 6, 8, 8), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        want = m.double()(x.double(), skip.double())
        got = r.double()(x.double(), skip.double())
        # Without the border fix the ring would be off by c times the padded taps' weights (~100 here).
        unfixed = copy.deepcopy(r)
        unfixed.dec[1][1] = nn.Identity()
        off = (unfixed(x.double(), skip.double()) - want).abs()
    assert float(want.abs().max()) > 1  # not a dead ReLU
    assert float((got - want).abs().max()) <= 1e-4  # the biases are stored in fp32
    assert float(off[..., dilation:-dilation, dilation:-dilation].max()) <= 1e-4 < float(off.max())


def test_recenter_refuses_what_it_cannot_shift_exactly():
    a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    with pytest.raises(ValueError, match="stride-1"):
        recenter(a, nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.ReLU()), 0, 1.0)
    with pytest.raises(ValueError, match="conv\\+ReLU"):
        recenter(a, nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Sigmoid()), 0, 1.0)


def test_reference_model_is_recentred_and_closer_to_fp64(reference_pipeline, alphamatting):
    """U^2-Net-p's bias channel (stage2d.dec.3 -> dec.4): the shifted model is the loaded one in
    fp64, and in fp32 nearer to it. Measured in the coarse graph's alpha, where the shift acts, on
    GT15 and GT18: 4.1e-6 against 3.7e-5. (The fused alpha shows it too, 1.8e-5 against 4.5e-5, but
    the refine network's clamp to the coarse alpha's local range damps both, so the coarse graph is
    the honest place to measure.)"""
    from mexport.models.u2netp import U2NetP
    from mexport.models.weights import load_into, u2netp_path
    from mexport.photos import load_photo, prepare

    dec = reference_pipeline.coarse.stage2d.dec
    assert isinstance(dec[3][1], Floor) and isinstance(dec[4][1], BorderFix)
    loaded = U2NetP()
    load_into(loaded, u2netp_path())
    plain = plain_form(reference_pipeline)
    assert plain is not reference_pipeline and plain_form(plain) is plain
    for a, b in zip(plain.coarse.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)  # the loaded weights, bit for bit
    exact = copy.deepcopy(plain).double()
    coarse = {"shifted": [], "plain": []}
    fused = {"shifted": [], "plain": []}
    for i in (15, 18):
        x = torch.from_numpy(prepare(load_photo(alphamatting / "image" / f"GT{i}.png"), reference_pipeline.spec)[0])
        with torch.no_grad():
            t64 = exact(x.double()).numpy()
            assert np.abs(copy.deepcopy(reference_pipeline).double()(x.double()).numpy() - t64).max() <= 1e-6
            small = reference_pipeline.downsample(x)
            c64 = exact.coarse_graph(small.double()).numpy()
            for name, model in (("shifted", reference_pipeline), ("plain", plain)):
                coarse[name].append(float(np.abs(model.coarse_graph(small).numpy() - c64).max()))
                fused[name].append(float(np.abs(model(x).numpy() - t64).max()))
    print(f"fp32 vs fp64, coarse alpha: re-centred {max(coarse['shifted']):.2e}, plain {max(coarse['plain']):.2e}; "
          f"fused: {max(fused['shifted']):.2e}, {max(fused['plain']):.2e}")
    assert max(coarse["shifted"]) <= 1e-5 and max(coarse["plain"]) >= 2e-5
    assert max(fused["shifted"]) < max(fused["plain"])
