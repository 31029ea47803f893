"""Why a layer is int8-hostile, measured in torch in seconds: its weight and input ranges, its
outlier input channels, and the signal-to-quantization-noise ratio of its output when it alone
runs in int8.

This is the quick ranking: it orders the slow trials on the target runtime (the most suspicious
layers are measured first, so a budget that runs out leaves the least suspicious ones untried) and
names suspects when an int8 export fails its check. The decisions are never taken on it; they are
taken on the runtime (mexport.sensitivity.search).

Written by hand: the simulation below is the textbook int8 scheme the runtimes use (per-output-
channel symmetric int8 weights, per-tensor asymmetric uint8 inputs, MinMax ranges); no library
reports it per PyTorch module path for a whole model in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bias_correction import int8_weight

# An input channel is an outlier when its weight x activation product is this many times the
# median channel's: the reference model's stage2d.dec.4 channel 14 is ~1000x, a healthy conv's worst ~3-5x.
OUTLIER_RATIO = 16.0


@dataclass(frozen=True)
class LayerStats:
    path: str
    kind: str
    weight_min: float
    weight_max: float
    input_min: float
    input_max: float
    output_min: float
    output_max: float
    sqnr_db: float  # output SQNR with this layer alone in int8 (weights and input)
    weight_sqnr_db: float  # the same with float input: the weights' share
    outlier_channels: tuple[int, ...]  # input channels whose |w| x |x| product dwarfs the others'
    outlier_ratio: float  # the largest channel product over the median one

    def cause(self) -> str:
        why = []
        if self.outlier_channels:
            why.append(f"input channel(s) {list(self.outlier_channels)} carry {self.outlier_ratio:.0f}x the median channel's |w|*|x|")
        if self.weight_sqnr_db - self.sqnr_db > 6:
            why.append(f"input range {self.input_min:.3g}..{self.input_max:.3g} in 8 bits")
        elif self.weight_sqnr_db < 35:
            why.append(f"weights {self.weight_min:.3g}..{self.weight_max:.3g} in 8 bits")
        return "; ".join(why) or "no outlier: ordinary int8 rounding"


def _fake_quant_input(x, lo: float, hi: float):
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255.0
    zero = round(-lo / scale)
    return (torch.round(x / scale + zero).clamp(0, 255) - zero) * scale


def _sqnr(ref, got) -> float:
    noise = float(((ref - got) ** 2).mean())
    signal = float((ref ** 2).mean())
    return 10 * np.log10(signal / noise) if noise > 0 else float("inf")


def layer_stats(graph, inputs: list[tuple], prefix: str = "pipe.") -> list[LayerStats]:
    """Every Conv2d / ConvTranspose2d / Linear of ``graph`` (a role graph: its module paths start
    with ``prefix``, which is dropped), measured on ``inputs`` (a few photos' tensors). Worst first."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    seen: dict[str, dict] = {}
    hooks = []

    def hook(name, mod):
        def fn(m, args, out):
            x = args[0].detach()
            s = seen.setdefault(name, {"x": [], "lo": np.inf, "hi": -np.inf, "olo": np.inf, "ohi": -np.inf, "chan": None})
            s["lo"], s["hi"] = min(s["lo"], float(x.min())), max(s["hi"], float(x.max()))
            s["olo"], s["ohi"] = min(s["olo"], float(out.min())), max(s["ohi"], float(out.max()))
            dims = [d for d in range(x.dim()) if d != (x.dim() - 1 if isinstance(m, nn.Linear) else 1)]
            amax = x.abs().amax(dim=dims)
            s["chan"] = amax if s["chan"] is None else torch.maximum(s["chan"], amax)
            if len(s["x"]) < 2:  # two photos are enough for the SQNR
                s["x"].append(x)
        return fn

    for name, mod in graph.named_modules():
        if isinstance(mod, kinds):
            hooks.append(mod.register_forward_hook(hook(name, mod)))
    try:
        with torch.inference_mode():
            for args in inputs:
                graph(*(torch.as_tensor(a) for a in args))
    finally:
        for h in hooks:
            h.remove()
    mods = dict(graph.named_modules())
    out = []
    with torch.inference_mode():
        for name, s in seen.items():
            m = mods[name]
            w = m.weight.detach()
            wq = int8_weight(w if not isinstance(m, nn.ConvTranspose2d) else w.transpose(0, 1))
            if isinstance(m, nn.ConvTranspose2d):
                wq = wq.transpose(0, 1)
            run = {nn.Conv2d: lambda x, ww: m._conv_forward(x, ww, m.bias),
                   nn.Linear: lambda x, ww: F.linear(x, ww, m.bias),
                   nn.ConvTranspose2d: lambda x, ww: F.conv_transpose2d(x, ww, m.bias, m.stride, m.padding, m.output_padding,
                                                                      m.groups, m.dilation)}[type(m)]
            full, wonly = [], []
            for x in s["x"]:
                ref = run(x, w)
                full.append(_sqnr(ref, run(_fake_quant_input(x, s["lo"], s["hi"]), wq)))
                wonly.append(_sqnr(ref, run(x, wq)))
            # per input channel: largest |w| reading it times the largest |x| it carries
            wi = w.abs().transpose(0, 1) if not isinstance(m, nn.ConvTranspose2d) else w.abs()
            per_in = wi.reshape(wi.shape[0], -1).amax(1)
            groups = getattr(m, "groups", 1)
            chan = s["chan"]
            if groups > 1 or per_in.numel() != chan.numel():
                outliers, ratio = (), 1.0
            else:
                prod = (per_in * chan).numpy()
                med = float(np.median(prod)) or 1e-12
                ratio = float(prod.max() / med)
                outliers = tuple(int(i) for i in np.flatnonzero(prod > OUTLIER_RATIO * med)) if ratio > OUTLIER_RATIO else ()
            path = name[len(prefix):] if name.startswith(prefix) else name
            out.append(LayerStats(path, type(m).__name__, float(w.min()), float(w.max()), s["lo"], s["hi"], s["olo"], s["ohi"],
                                  float(min(full)), float(min(wonly)), outliers, ratio))
    return sorted(out, key=lambda s: s.sqnr_db)


def quick_ranking(pipeline, photos, top: int = 3) -> list[LayerStats]:
    """The ``top`` most int8-hostile layers of the fused graph on two of ``photos``: seconds."""
    from ..photos import prepare

    graph = pipeline.graph("fused")
    inputs = [(prepare(p, pipeline.spec)[0],) for _, p in list(photos)[:2]]
    return layer_stats(graph, inputs)[:top]
