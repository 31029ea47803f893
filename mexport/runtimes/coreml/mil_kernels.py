"""Kernels of the MIL executor for what coremltools emits from common mobile backbones and matting
heads: MobileNetV3 (batch_norm, sigmoid_hard, thresholded_relu for hardswish, split, reductions),
MODNet's IBNorm (batch_norm + instance_norm), transformer-ish blocks (layer_norm, gelu, softmax,
linear, matmul), decoders (conv_transpose, crop, pixel_unshuffle) and the comparisons behind
``torch.where``.

Each follows the MIL op definitions (coremltools.converters.mil.mil.ops.defs, iOS15-iOS17): written
here from those definitions, with float32 arithmetic inside an op like the executor's other
kernels, because no library runs a MIL program off macOS. The generic helpers (``_f32``, ``_unary``,
``_binary``) live here and the executor imports them. tests/test_coreml_kernels.py holds every
kernel to torch through coremltools' own conversion of the torch op.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import CannotVerifyError


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _unary(fn: Callable) -> Callable:
    return lambda op, get: fn(_f32(get("x")))


def _binary(fn: Callable) -> Callable:
    """Elementwise on x and y, in float32 when either is floating (comparisons included)."""
    def kernel(op, get):
        x, y = get("x"), get("y")
        if np.issubdtype(np.asarray(x).dtype, np.floating) or np.issubdtype(np.asarray(y).dtype, np.floating):
            x, y = _f32(x), _f32(y)
        return fn(x, y)

    return kernel


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return _f32(v).reshape((1, -1) + (1,) * (rank - 2))


def _normalized(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _affine(y: np.ndarray, get, shape: tuple[int, ...]) -> np.ndarray:
    """The optional ``gamma`` scale and ``beta`` shift of a norm op, reshaped to ``shape``."""
    gamma, beta = get("gamma", None), get("beta", None)
    if gamma is not None:
        y = y * _f32(gamma).reshape(shape)
    if beta is not None:
        y = y + _f32(beta).reshape(shape)
    return y


def _per_channel(x: np.ndarray) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def _k_batch_norm(op, get):
    x = _f32(get("x"))
    mean, var = _channel(get("mean"), x.ndim), _channel(get("variance"), x.ndim)
    return _affine((x - mean) / np.sqrt(var + float(get("epsilon", 1e-5))), get, _per_channel(x))


def _k_instance_norm(op, get):
    """Per sample and channel, over every axis after the channel one (MIL: rank 3 or 4)."""
    x = _f32(get("x"))
    return _affine(_normalized(x, tuple(range(2, x.ndim)), float(get("epsilon", 1e-5))), get, _per_channel(x))


def _k_layer_norm(op, get):
    """Over ``axes`` (all of them when absent); gamma and beta have the normalized axes' shape."""
    x = _f32(get("x"))
    axes = get("axes", None)
    axes = tuple(range(x.ndim)) if axes is None else tuple(int(a) % x.ndim for a in np.atleast_1d(axes))
    y = _normalized(x, axes, float(get("epsilon", 1e-5)))
    return _affine(y, get, tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim)))


def _k_split(op, get):
    x = get("x")
    axis = int(get("axis")) % x.ndim
    sizes = get("split_sizes", None)
    if sizes is None:
        n = int(get("num_splits"))
        sizes = [x.shape[axis] // n] * n
    cuts = np.cumsum([int(s) for s in sizes])[:-1]
    return np.split(x, cuts, axis=axis)


def _k_gelu(op, get):
    from scipy.special import erf

    x = _f32(get("x"))
    mode = get("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1 + erf(x / np.sqrt(2.0)))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    raise CannotVerifyError(f"cannot verify: gelu mode {mode!r} of {op.name!r}")


def _k_softmax(op, get):
    x = _f32(get("x"))
    axis = int(get("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _k_prelu(op, get):
    x = _f32(get("x"))
    return np.where(x >= 0, x, x * _channel(get("alpha"), x.ndim))


def _k_conv_transpose(op, get):
    """Full transposed convolution, then the rows and columns the pads remove: ``custom`` pads
    [top, bottom, left, right] as given; otherwise the program's declared output size, split as
    'same' pads are (the larger half at the end)."""
    import torch
    import torch.nn.functional as F

    x, w = _f32(get("x")), _f32(get("weight"))
    if x.ndim != 4:
        raise CannotVerifyError(f"cannot verify: {x.ndim - 2}-D conv_transpose {op.name!r}")
    strides = [int(v) for v in get("strides", [1, 1])]
    dil = [int(v) for v in get("dilations", [1, 1])]
    groups = int(get("groups", 1))
    y = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=strides, dilation=dil, groups=groups).numpy()
    oh, ow = (int(d) for d in op.outputs[0].shape[2:])
    if get("pad_type", "valid") == "custom":
        t, _, l, _ = (int(v) for v in get("pad"))
    else:
        t, l = (y.shape[2] - oh) // 2, (y.shape[3] - ow) // 2
    if t < 0 or l < 0 or t + oh > y.shape[2] or l + ow > y.shape[3]:  # output_shape asking for more than the full result
        y = np.pad(y, ((0, 0), (0, 0), (max(-t, 0), max(t + oh - y.shape[2], 0)), (max(-l, 0), max(l + ow - y.shape[3], 0))))
        t, l = max(t, 0), max(l, 0)
    y = y[:, :, t:t + oh, l:l + ow]
    bias = get("bias", None)
    return y if bias is None else y + _channel(bias, 4)


def _k_linear(op, get):
    x, w = _f32(get("x")), _f32(get("weight"))
    y = x @ w.T
    bias = get("bias", None)
    return y if bias is None else y + _f32(bias)


def _k_matmul(op, get):
    x, y = _f32(get("x")), _f32(get("y"))
    if bool(get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _k_pixel_unshuffle(op, get):
    """(N, C, H r, W r) -> (N, C r^2, H, W), channel c*r*r + i*r + j holding pixel (i, j) of each r x r block."""
    x = get("x")
    r = int(get("downscale_factor"))
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


def _k_crop(op, get):
    """``crop_height`` / ``crop_width``: rows and columns removed from each end of the last two axes."""
    x = get("x")
    (t, b), (l, r) = ([int(v) for v in get(k)] for k in ("crop_height", "crop_width"))
    return x[..., t:x.shape[-2] - b, l:x.shape[-1] - r]


BACKBONE_KERNELS: dict[str, Callable] = {
    "batch_norm": _k_batch_norm,
    "instance_norm": _k_instance_norm,
    "layer_norm": _k_layer_norm,
    "split": _k_split,
    "stack": lambda op, get: np.stack(get("values"), axis=int(get("axis"))),
    "sigmoid_hard": lambda op, get: np.clip(float(get("alpha", 0.2)) * _f32(get("x")) + float(get("beta", 0.5)), 0, 1),
    "thresholded_relu": lambda op, get: np.where(_f32(get("x")) >= float(get("alpha", 1.0)), _f32(get("x")), 0).astype(np.float32),
    "silu": _unary(lambda x: x / (1 + np.exp(-x))),
    "gelu": _k_gelu,
    "softmax": _k_softmax,
    "leaky_relu": lambda op, get: np.where(_f32(get("x")) >= 0, _f32(get("x")), float(get("alpha", 0.01)) * _f32(get("x"))),
    "elu": lambda op, get: np.where(_f32(get("x")) > 0, _f32(get("x")), float(get("alpha", 1.0)) * np.expm1(_f32(get("x")))),
    "prelu": _k_prelu,
    "square": _unary(np.square),
    "round": _unary(np.round),  # half to even, as coremltools' own value inference and torch.round
    "floor": _unary(np.floor),
    "ceil": _unary(np.ceil),
    "sign": _unary(np.sign),
    "abs": _unary(np.abs),
    "exp": _unary(np.exp),
    "log": lambda op, get: np.log(_f32(get("x")) + float(get("epsilon", 1e-45))),
    "rsqrt": lambda op, get: 1 / np.sqrt(_f32(get("x")) + float(get("epsilon", 1e-12))),
    "conv_transpose": _k_conv_transpose,
    "crop": _k_crop,
    "linear": _k_linear,
    "matmul": _k_matmul,
    "pixel_unshuffle": _k_pixel_unshuffle,
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "select": lambda op, get: np.where(np.asarray(get("cond")).astype(bool), get("a"), get("b")),
    # torch.ones_like / zeros_like / full_like (DIM's trimap rule): a tensor shaped like ref_tensor
    "fill_like": lambda op, get: np.full(np.shape(get("ref_tensor")), get("value", 0.0), dtype=np.asarray(get("value", 0.0)).dtype),
}
