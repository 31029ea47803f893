import math

import numpy as np
import pytest

from mexport.validate import metrics
from mexport.validate.fidelity import DEFAULT_MIN_PSNR, compare, default_threshold


def test_psnr_max_abs_mad_hand_computed():
    a = np.zeros((2, 2))
    b = np.array([[0.1, 0.0], [0.0, 0.0]])
    # MSE = 0.01 / 4 = 0.0025 -> PSNR = 10 log10(1 / 0.0025) = 26.0206 dB
    assert metrics.alpha_psnr(b, a) == pytest.approx(26.0206, abs=1e-4)
    assert metrics.max_abs(b, a) == pytest.approx(0.1)
    assert metrics.mad(b, a) == pytest.approx(0.025)
    assert math.isinf(metrics.alpha_psnr(a, a))


def test_sad_mse_with_and_without_trimap():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 0.5)
    assert metrics.sad(b, a) == pytest.approx(16 * 0.5 / 1000)
    assert metrics.mse(b, a) == pytest.approx(0.25)
    trimap = np.zeros((4, 4))
    trimap[1:3, 1:3] = 128
    assert metrics.sad(b, a, trimap) == pytest.approx(4 * 0.5 / 1000)
    assert metrics.sad(a, b) == metrics.sad(b, a)  # symmetric
    assert metrics.sad(2 * b, 2 * a) == pytest.approx(2 * metrics.sad(b, a))  # scales linearly


def test_grad_is_zero_for_identical_and_for_flat_and_grows_with_blur():
    from scipy import ndimage

    step = np.zeros((32, 32))
    step[:, 16:] = 1.0
    assert metrics.grad(step, step) == 0.0
    blurred = ndimage.gaussian_filter(step, 3)
    more = ndimage.gaussian_filter(step, 6)
    assert 0 < metrics.grad(blurred, step) < metrics.grad(more, step)
    # the kernel is the unit-L1 Gaussian derivative of DIM's gaussgradient.m
    hx, hy = metrics.gauss_gradient_kernels(1.4)
    assert hx.shape == (9, 9) and np.abs(hx).sum() == pytest.approx(1.0) and np.allclose(hx, -hx[:, ::-1])


def test_separable_gradient_equals_dims_2d_convolution():
    """The two 1-D passes give DIM's 9x9 2-D convolution (edges replicated) on a real-looking matte."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((40, 57)), 2)
    hx, hy = metrics.gauss_gradient_kernels(1.4)
    b = (a - a.min()) / (a.max() - a.min())
    want = np.sqrt(ndimage.convolve(b, hx, mode="nearest") ** 2 + ndimage.convolve(b, hy, mode="nearest") ** 2)
    got = metrics.gradient_magnitude(a)
    assert np.abs(got - want).max() < 1e-12 and want.max() > 0.05


def test_matting_errors_equal_the_metrics_one_by_one():
    rng = np.random.default_rng(1)
    t = (rng.random((48, 40)) > 0.5).astype(np.float64)
    p = np.clip(t + rng.normal(0, 0.2, t.shape), 0, 1)
    tri = np.full(t.shape, 128.0)
    tri[:10] = 0
    tri[-10:] = 255
    got = metrics.matting_errors(p, t, tri)
    for name in ("sad", "mse", "grad", "conn"):
        f = getattr(metrics, name)
        assert got[name] == pytest.approx(f(p, t), rel=1e-12) and got[name] > 0
        assert got[name + "_unknown"] == pytest.approx(f(p, t, tri), rel=1e-12) and got[name + "_unknown"] < got[name]
    assert set(metrics.matting_errors(p, t)) == {"sad", "mse", "grad", "conn"}


def test_conn_hand_computed():
    t = np.zeros((3, 3))
    t[1, :] = 1.0
    p = t.copy()
    p[1, 2] = 0.0
    # Target: an opaque row of 3 pixels; the prediction misses its last pixel. At every threshold
    # the largest common component is pixels (1,0) and (1,1): they keep level 1.0; pixel (1,2)
    # drops out at the first threshold and gets level 0.0. For (1,2): pred - level = 0 -> phi = 1;
    # target - level = 1 >= 0.15 -> phi = 0. Every other pixel agrees: Conn = |1 - 0| / 1000.
    assert metrics.conn(p, t) == pytest.approx(1 / 1000)
    assert metrics.conn(t, t) == 0.0


def test_compare_flags_non_finite_output():
    ref = np.zeros((1, 1, 4, 4), np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = np.nan
    r = compare("x", out, ref)
    assert not r.finite and r.psnr == -math.inf


def test_default_thresholds_table():
    assert default_threshold("int8") == 32.0 and default_threshold("fp16") == 40.0
    assert DEFAULT_MIN_PSNR["fp32"] > DEFAULT_MIN_PSNR["fp16"] > DEFAULT_MIN_PSNR["int8"]
    from mexport.errors import InputError

    with pytest.raises(InputError, match="valid"):
        default_threshold("int3")
