"""Rewrites into ops the XNNPACK delegate takes, exact by construction, applied before litert-torch.

Measured with ai-edge-litert 2.x (tests/test_zoo.py): ``F.max_pool2d`` with padding lowers to
PADV2 (-inf) + MAX_POOL_2D, and PADV2 runs on the builtin kernels; nearest upsampling lowers to
RESIZE_NEAREST_NEIGHBOR, which XNNPACK does not take (``expand``-based repeats give BROADCAST_TO,
which it does not take either). Each pass below matches one such op in the exported ATen graph and
spells it with ops XNNPACK has:

- a padded max pool whose input cannot be negative (ReLU, ReLU6, sigmoid, ... in front): zero
  padding (PAD, delegated) then an unpadded pool; max(x >= 0, 0) over a window holding at least one
  real pixel is max(x), so the result is identical;
- an integer-factor nearest upsample: each axis repeated by concatenating the tensor with itself
  along a new axis, then a reshape (CONCATENATION and RESHAPE, delegated); identical values;
- ``clamp(x, 0, 1)``, which litert-torch lowers to RELU_0_TO_1 (not delegated), as
  ``relu6(6x) / 6`` (RELU6, delegated): equal up to float rounding (one ulp);
- int8 only (XNNPACK has no int8 kernel for these; float it has): hard-swish as
  ``(x / 6) * relu6(x + 3)``, and an average pool as a depthwise conv with weights 1/k^2, times a
  constant map of k^2 / (pixels inside the image) where the padding does not count (the same
  maths; int8 rounds each op on its own).

No library does this for litert-torch (its own passes lower ops, they do not choose delegated
spellings), hence hand-written. A pass that does not match leaves the module as it was.
"""

from __future__ import annotations

from typing import Any, Callable

from ...capture import where

# ATen ops whose output is never negative: a max pool after them may pad with zeros.
NON_NEGATIVE = ("relu", "relu_", "relu6", "sigmoid", "hardsigmoid", "abs", "softmax", "_softmax", "exp", "clamp_min_0")


def _name(target) -> str:
    return getattr(getattr(target, "overloadpacket", target), "__name__", str(target))


def _calls(gm, *targets) -> list:
    """The graph's calls of ``targets``, listed first: the passes replace nodes as they go."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in targets]


def _args(n, count: int) -> list:
    return list(n.args) + [None] * (count - len(n.args))


def _pair(v, default) -> list[int]:
    v = default if v is None or v == [] else v
    v = [v] * 2 if isinstance(v, int) else list(v)
    return v * 2 if len(v) == 1 else v


def _non_negative(node) -> bool:
    import torch

    if node.op != "call_function":
        return False
    name = _name(node.target)
    if name in NON_NEGATIVE:
        return True
    if name in ("hardtanh", "hardtanh_", "clamp") and len(node.args) > 1:
        low = node.args[1]
        return isinstance(low, (int, float)) and low >= 0
    return node.target is torch.ops.aten.clamp_min.default and node.args[1] >= 0


def _replace(gm, n, build) -> None:
    """Insert what ``build(op)`` makes before ``n`` (each new node keeps ``n``'s module path, for
    recipes and messages), route ``n``'s users to its result, drop ``n``."""
    g = gm.graph
    meta = {k: v for k, v in n.meta.items() if k in ("nn_module_stack", "stack_trace", "source_fn_stack")}

    def op(fn, *a):
        made = g.call_function(fn, a)
        made.meta = dict(meta)
        return made

    with g.inserting_before(n):
        out = build(op)
    if "val" in n.meta:  # the same value: later passes read shapes from it
        out.meta["val"] = n.meta["val"]
    n.replace_all_uses_with(out)
    g.erase_node(n)


def pads_with_inf(n) -> bool:
    """A max pool whose padding litert-torch spells as PADV2(-inf): padding that is not TFLite's
    SAME (stride 1, odd kernel, padding k // 2 is SAME and stays one delegated MAX_POOL_2D)."""
    _, kernel, stride, padding = _args(n, 4)[:4]
    kernel = _pair(kernel, 1)
    stride, padding = _pair(stride, kernel), _pair(padding, 0)
    if not any(padding):
        return False
    return not all(s == 1 and k % 2 == 1 and p == k // 2 for k, s, p in zip(kernel, stride, padding))


def padded_max_pool(gm) -> list[str]:
    import torch

    aten = torch.ops.aten
    done = []
    for n in _calls(gm, aten.max_pool2d.default):
        x, kernel, stride, padding, dilation, ceil_mode = _args(n, 6)
        if not pads_with_inf(n) or not _non_negative(x):
            continue
        ph, pw = _pair(padding, 0)
        stride = stride or kernel
        _replace(gm, n, lambda op, x=x, k=kernel, s=stride, d=dilation, c=ceil_mode, ph=ph, pw=pw: op(
            aten.max_pool2d.default, op(aten.constant_pad_nd.default, x, [pw, pw, ph, ph], 0.0), k, s, [0, 0], d or [1, 1], bool(c)))
        done.append(f"{where(n)}: max pool padding {ph},{pw} -> zero PAD (input >= 0) + unpadded pool")
    return done


def _factors(r: int) -> list[int] | None:
    """r as a product of factors <= 4 (XNNPACK takes concatenations of at most 4 inputs), or None."""
    out = []
    while r > 1:
        f = next((f for f in (4, 3, 2) if r % f == 0), None)
        if f is None:
            return None
        out.append(f)
        r //= f
    return out


def nearest_upsample(gm) -> list[str]:
    import torch

    aten = torch.ops.aten
    done = []
    for n in _calls(gm, aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default):
        x = n.args[0]
        val_in, val_out = x.meta.get("val"), n.meta.get("val")
        if val_in is None or val_out is None:
            continue
        (h, w), (oh, ow) = tuple(val_in.shape[2:]), tuple(val_out.shape[2:])
        if oh % h or ow % w or (oh == h and ow == w):
            continue
        rh, rw = oh // h, ow // w
        fh, fw = _factors(rh), _factors(rw)
        if fh is None or fw is None:
            continue
        b, c = val_in.shape[:2]

        def build(op, x=x, b=b, c=c, h=h, w=w, fh=fh, fw=fw):
            y = x
            for f in fw:  # (b, c, h, w) -> (b, c, h, w, f) -> (b, c, h, w*f)
                y = op(aten.reshape.default, op(aten.cat.default, [op(aten.unsqueeze.default, y, 4)] * f, 4), [b, c, h, w * f])
                w *= f
            for f in fh:  # (b, c, h, w) -> (b, c, h, f, w) -> (b, c, h*f, w)
                y = op(aten.reshape.default, op(aten.cat.default, [op(aten.unsqueeze.default, y, 3)] * f, 3), [b, c, h * f, w])
                h *= f
            return y

        _replace(gm, n, build)
        done.append(f"{where(n)}: nearest upsample x{rh},{rw} -> CONCATENATION + RESHAPE")
    return done


def clamp_unit(gm) -> list[str]:
    import torch

    aten = torch.ops.aten
    done = []
    for n in _calls(gm, aten.clamp.default):
        x, low, high = _args(n, 3)
        if low != 0 or high != 1:
            continue
        _replace(gm, n, lambda op, x=x: op(aten.div.Tensor, op(aten.relu6.default, op(aten.mul.Tensor, x, 6.0)), 6.0))
        done.append(f"{where(n)}: clamp(0, 1) -> RELU6(6x)/6 (RELU_0_TO_1 is not delegated)")
    return done


def int8_hardswish(gm) -> list[str]:
    import torch

    aten = torch.ops.aten
    done = []
    for n in _calls(gm, aten.hardswish.default, aten.hardswish_.default):
        # (x/6) * relu6(x+3): litert-torch folds x*relu6(x+3)/6 and x*(relu6(x+3)/6) back into HARD_SWISH
        _replace(gm, n, lambda op, x=n.args[0]: op(aten.mul.Tensor, op(aten.mul.Tensor, x, 1.0 / 6.0),
                                                    op(aten.relu6.default, op(aten.add.Tensor, x, 3.0))))
        done.append(f"{where(n)}: hard-swish -> (x/6)*relu6(x+3) (no int8 HARD_SWISH in XNNPACK)")
    return done


def int8_avg_pool(gm) -> list[str]:
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    done = []
    for n in _calls(gm, aten.avg_pool2d.default):
        x, kernel, stride, padding, ceil_mode, count_pad, divisor = _args(n, 7)
        kernel = _pair(kernel, 1)
        stride, padding = _pair(stride, kernel), _pair(padding, 0)
        count_pad = True if count_pad is None else count_pad
        if ceil_mode or divisor is not None or x.meta.get("val") is None:
            continue
        channels, h, w = (int(d) for d in x.meta["val"].shape[1:])
        name = f"_mexport_avg_pool_{len(done)}_{n.name}"
        gm.register_buffer(name, torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1])))
        # count_include_pad=False: the conv's mean over k^2 rescaled by k^2 / (pixels inside), a
        # constant map of the output's size (a broadcast MUL, which XNNPACK takes in int8)
        scale = None
        if any(padding) and not count_pad:
            inside = F.avg_pool2d(torch.ones(1, 1, h, w), kernel, stride, padding, count_include_pad=True)
            gm.register_buffer(name + "_scale", 1.0 / inside)
            scale = name + "_scale"
        with gm.graph.inserting_before(n):
            weight = gm.graph.get_attr(name)
            scale = gm.graph.get_attr(scale) if scale else None

        def build(op, x=x, w=weight, s=stride, p=padding, c=channels, scale=scale):
            y = op(aten.conv2d.default, x, w, None, s, p, [1, 1], c)
            return op(aten.mul.Tensor, y, scale) if scale is not None else y

        _replace(gm, n, build)
        what = "average pool (inside the image only)" if scale is not None else "average pool"
        done.append(f"{where(n)}: {kernel[0]}x{kernel[1]} {what} -> depthwise conv"
                    + (" x constant map" if scale is not None else "") + " (no int8 AVERAGE_POOL_2D in XNNPACK)")
    return done


PASSES: tuple[Callable[[Any], list[str]], ...] = (padded_max_pool, nearest_upsample, clamp_unit)
INT8_PASSES: tuple[Callable[[Any], list[str]], ...] = (int8_hardswish, int8_avg_pool)


def xnnpack_rewrites(captured, int8: bool = False) -> tuple[Any, list[str]]:
    """The captured module rewritten by every pass that matches (a GraphModule, module paths kept
    for recipes), and one line per rewrite; the captured module itself when nothing matched."""
    gm = captured.graph_module()
    done = [line for p in PASSES + (INT8_PASSES if int8 else ()) for line in p(gm)]
    if not done:
        return captured.module, []
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm, done
