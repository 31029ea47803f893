"""Bias correction: the float bias of each int8 layer moved so that, on the calibration photos, the
layer's int8-rounded weights give the same mean output as its float weights.

Rounding a layer's weights to int8 adds dW = round(W) - W; its output then moves by dW * x. Over
one output channel the rounding errors of a few hundred weights do not cancel, so the move has a
mean, E[dW * x] = dW * E[x], which every later layer carries along. On the reference model that
mean, not the noise around it, is most of what weight rounding costs: in torch simulation on
photos the correction never saw (fold 0), weights-only int8 went from 45.3 / 22.6 dB median /
worst-photo alpha PSNR vs float to 51.7 / 26.5 dB (reports/sensitivity.md measures it on onnxruntime, on held-out photos).

This is the analytic form of Nagel et al.'s bias correction ("Data-Free Quantization", ICCV 2019;
AIMET's ``bias_correction``), with E[x] measured on the calibration photos in one float forward
pass instead of derived from batch-norm statistics (the reference model has none left). Written by
hand: the quantizers mexport drives (onnxruntime, ai-edge-quantizer) do not offer it, and AIMET
does not install on this Python.

The grid it corrects for is the runtime's ``Runtime.weight_grid`` (:func:`int8_weight`), per
output channel (per tensor without ``per_channel``): symmetric int8 for LiteRT, uint8 around zero
point 128 for onnxruntime. Only the layers a recipe keeps
int8 are corrected: a float layer has no rounding to correct. Layers covered: Conv2d (any groups)
and Linear; a ConvTranspose2d is left as it is (its output channels are not its weight's first axis).

Where it is applied: an export corrects the model in torch, before converting (mexport.export);
`mexport sensitivity`'s trials patch the bias constants of the converted float graph instead (no
conversion per trial), and a test holds the two equal. Known gap: a conv into which the exporter
folds a constant factor (``4 * conv(x)`` becomes one conv with 4x weights and bias) is corrected by
an export but not by the trials, which find its constants scaled or, in ONNX, held by Constant
nodes; onnxruntime's quantizer also leaves such a conv's weights float, so its export gets a bias
moved by a shift no rounding causes (of the size of that shift). The reference model has no such
conv (all 123 of its convs keep their weights as initializers).
"""

from __future__ import annotations

import copy

import numpy as np

from .calibration import observe

PREFIX = "pipe."  # role graphs hold the pipeline under this attribute (mexport.models.pipeline)


WEIGHT_GRIDS = ("int8", "uint8")


def int8_weight(w, per_channel: bool = True, grid: str = "int8"):
    """``w`` rounded to a runtime's 8-bit weight grid (per output channel, or per tensor), in float:
    ``int8`` symmetric on [-127, 127], scale max|w| / 127 (ai-edge-quantizer; onnxruntime's QInt8);
    ``uint8`` on [0, 255] with zero point 128, scale 2 max|w| / 255 (onnxruntime's QUInt8 weights,
    what mexport's ONNX int8 uses: symmetric, since its per-channel QLinearConv needs one zero
    point for all channels), so a channel's largest positive weight is clipped to 127 steps.

    On the uint8 grid every channel's largest weight sits exactly half a step between two codes
    (127.5 steps), so which way it rounds is decided by the last bit of the division. It is done
    here in onnxruntime's own arithmetic (``quant_utils.compute_scale_zp`` / ``quantize_nparray``:
    the scale computed in float64 and stored as float32, float32 weights divided by it, rounded
    half to even): in float64, 12 of the 64 largest weights of U^2-Net-p's ``stage2d.dec.4.0``
    rounded the other way, each one step (0.044) on an input of ~228, and bias correction then
    moved those channels' biases by ~10 the wrong way (21 dB instead of 36 on held-out photos)."""
    import torch

    if grid not in WEIGHT_GRIDS:
        raise ValueError(f"unknown weight grid {grid!r}; valid: {', '.join(WEIGHT_GRIDS)}")
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else ()
    if grid == "int8":
        absmax = flat.abs().amax(1).clamp_min(1e-12).view(shape)
        scale = absmax / 127.0
        return torch.round(w / scale).clamp(-127, 127) * scale
    w32 = w.float()
    absmax = flat.float().abs().amax(1).view(shape).double().clamp_min(1e-12)
    scale = (2.0 * absmax / 255.0).float()
    return (torch.round(w32 / scale).clamp(-128, 127).double() * scale.double()).to(w.dtype)


def bias_shifts(pipeline, feeds: list[dict[str, np.ndarray]], per_channel: bool = True, grid: str = "int8") -> dict[str, np.ndarray]:
    """Per layer (module path in ``pipeline``), the mean output move E[dW * x] that rounding the
    weights to ``grid`` (:func:`int8_weight`) causes, measured on ``feeds`` (the fused graph's
    inputs, one dict per photo)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    graph = pipeline.graph("fused")
    sums: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}  # a module called twice per forward is averaged over its calls

    def record(name: str, linear: bool):
        def hook(m, args):
            x = args[0].detach().double()
            dims = tuple(range(x.dim() - 1)) if linear else (0, *range(2, x.dim()))
            sums[name] = sums.get(name, 0) + x.mean(dims)
            calls[name] = calls.get(name, 0) + 1
        return hook

    observe(graph, feeds, {m: record(name, isinstance(m, nn.Linear)) for name, m in graph.named_modules()
                           if isinstance(m, (nn.Conv2d, nn.Linear))})
    mods = dict(graph.named_modules())
    out = {}
    with torch.inference_mode():
        for name, s in sums.items():
            m = mods[name]
            ex = s / calls[name]
            w = m.weight.detach().double()
            dw = int8_weight(w, per_channel, grid) - w
            if isinstance(m, nn.Linear):
                shift = dw @ ex
            else:  # E[x] as a constant map under the kernel: the conv of it is sum(dW * E[x]) per output channel
                const = ex.view(1, -1, 1, 1).expand(1, -1, *m.kernel_size)
                shift = F.conv2d(const, dw, groups=m.groups, dilation=1).reshape(-1)
            path = name[len(PREFIX):] if name.startswith(PREFIX) else name
            out[path] = shift.float().numpy()
    return out


def corrected_shifts(shifts: dict[str, np.ndarray], recipe) -> dict[str, np.ndarray]:
    """The shifts a recipe applies: those of the layers it keeps int8, each to subtract from the bias."""
    return {p: s for p, s in shifts.items() if recipe.precision_of(p) == "int8"}


def bias_corrected(pipeline, recipe, feeds: list[dict[str, np.ndarray]], grid: str = "int8"):
    """A copy of ``pipeline`` with the bias of every layer ``recipe`` keeps int8 corrected (a layer
    without a bias gets one); ``pipeline`` itself when the recipe asks for no bias correction."""
    import torch
    from torch import nn

    if "bias_correction" not in recipe.repairs:
        return pipeline
    shifts = corrected_shifts(bias_shifts(pipeline, feeds, recipe.calibration.per_channel, grid), recipe)
    out = copy.deepcopy(pipeline)
    with torch.no_grad():
        for path, shift in shifts.items():
            m = out.get_submodule(path)
            if m.bias is None:
                m.bias = nn.Parameter(torch.zeros(m.weight.shape[0]))
            m.bias -= torch.from_numpy(shift)
    return out


def write_shifts(pipeline, feeds: list[dict[str, np.ndarray]], path, calibration, grid: str = "int8"):
    """The shifts measured on the calibration inputs, written to ``path`` (npz) and returned: what
    `mexport sensitivity`'s trials read for the recipes that ask for the repair (a float pass over
    the calibration photos, seconds, once per search)."""
    np.savez(path, **bias_shifts(pipeline, feeds[:calibration.max_photos], calibration.per_channel, grid))
    return path


def load_shifts(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
