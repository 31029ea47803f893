"""Photo fragility: how far int8-sized rounding noise moves a photo's float matte, whatever the
recipe's particular roundings happen to be.

An int8 model is one draw of rounding errors. On most photos any draw gives nearly the same matte;
on a few (a thin object on a busy background, a portrait whose hair meets a dark wall) the float
model sits near a decision, and on the reference model one draw differs from another by up to
14 dB there. Such a photo's alpha PSNR vs float is a lottery ticket: a search that tunes on it
learns the draw, not the model, and a per-photo gate that blocks a release on it blocks on luck.
Measured (reports/fragility.md): the worst held-out photo of every cross-validated
`mexport sensitivity` recipe that misses the per-photo target, on ONNX and LiteRT, is one this
module calls fragile or at risk; 32 of the 37 shared photos are robust.

The noise model is the textbook one for rounding (uniform, independent, one step wide):
- weights: uniform in +-step/2 with step = max|W| / 127 per output channel, the grid of
  :func:`mexport.quantize.bias_correction.int8_weight`;
- every quantized layer's input: uniform in +-step/2 with step = (max - min) / 255 over the
  calibration photos (MinMax, asymmetric uint8, zero included), the activation grid of the
  quantizers mexport drives.
Layers a recipe keeps float get no noise. Each draw is seeded, so a run is reproducible.
Not modelled:
- clipping to the calibration range (in torch simulation on the reference model, clipping alone
  left the median photo where weights-only int8 had it and moved the worst by 0.1 dB, where
  rounding to the same ranges cost 6 dB of median);
- the requantized outputs of other ops that a runtime may add (LiteRT keeps concatenations,
  additions and resizes in int8 too). LiteRT's GT04 at 16.7 dB lies 9 dB below every draw: an
  error of that runtime's graph, not luck.

A second, runtime-free reference: the float model's matte on the photo re-saved as JPEG quality 95
(an imperceptible change) against its matte on the photo. A photo on which even that moves the
matte below a gate is one the float model itself does not pin down.

Written by hand: noise-injection sensitivity exists in research code for classification
(HAWQ-style), not for a per-photo matte metric in any library mexport can install.
"""

from __future__ import annotations

import io
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

PREFIX = "pipe."  # role graphs hold the pipeline under this attribute (mexport.models.pipeline)
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Fragility:
    """One photo: alpha PSNR vs float under each noise draw, under the JPEG re-save, and (for the
    worst photos, see :func:`photo_fragility`) which blocks' noise costs most: the MSE each block's
    noise alone causes, as a share of the sum over blocks."""

    photo: str
    draws: tuple[float, ...]
    jpeg_db: float
    blocks: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self):
        if not self.draws:
            raise ValueError("a Fragility needs at least one noise draw")
        if any(not 0 <= share <= 1 for _, share in self.blocks):
            raise ValueError("block shares are fractions in [0, 1]")

    @property
    def low(self) -> float:
        return min(self.draws)

    @property
    def median(self) -> float:
        return float(np.median(self.draws))

    @property
    def high(self) -> float:
        return max(self.draws)

    def verdict(self, photo_db: float) -> str:
        """``fragile``: most draws fall below ``photo_db``; ``at risk``: some do; ``robust``: none."""
        if self.median < photo_db:
            return "fragile"
        return "at risk" if self.low < photo_db else "robust"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Alpha PSNR (peak 1) as :func:`mexport.validate.metrics.alpha_psnr`, but capped at 120 dB where
    that one gives inf (identical mattes: a dark photo's zero alpha), so fragility.json stays JSON."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def quantized_layers(graph, recipe=None) -> dict[str, object]:
    """The layers an int8 export quantizes (Conv2d, ConvTranspose2d, Linear), by module path in the
    pipeline, less those ``recipe`` keeps float."""
    from torch import nn

    out = {}
    for name, m in graph.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            path = name[len(PREFIX):] if name.startswith(PREFIX) else name
            if recipe is None or recipe.precision_of(path) == "int8":
                out[path] = m
    return out


def input_ranges(graph, layers: dict[str, object], feeds: list[dict[str, np.ndarray]]) -> dict[str, tuple[float, float]]:
    """MinMax of each layer's input over the calibration ``feeds``, zero included (uint8 asymmetric)."""
    from .calibration import observe

    seen: dict[str, tuple[float, float]] = {}

    def record(path):
        def hook(m, args):
            lo, hi = seen.get(path, (0.0, 0.0))
            seen[path] = (min(lo, float(args[0].min())), max(hi, float(args[0].max())))
        return hook

    observe(graph, feeds, {m: record(p) for p, m in layers.items()})
    return seen


def _weight_step(m):
    """The int8 weight grid's step per output channel (axis 1 of a transposed conv's weight), shaped to broadcast."""
    from torch import nn

    w = m.weight
    axis = 1 if isinstance(m, nn.ConvTranspose2d) else 0
    return w.abs().amax(dim=[d for d in range(w.dim()) if d != axis], keepdim=True) / 127.0


@contextmanager
def rounding_noise(layers: dict[str, object], ranges: dict[str, tuple[float, float]], seed: int,
                   only: Callable[[str], bool] = lambda path: True) -> Iterator[None]:
    """Within the block, ``layers`` (those ``only`` accepts) carry one seeded draw of int8-sized
    noise on their weights and inputs; the weights are restored after."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    saved, hooks = {}, []
    try:
        with torch.no_grad():
            for path, m in layers.items():
                if not only(path):
                    continue
                w = m.weight
                saved[path] = w.detach().clone()
                w += (torch.rand(w.shape, generator=gen) - 0.5) * _weight_step(m)
        for path, m in layers.items():
            if not only(path) or path not in ranges:
                continue
            lo, hi = ranges[path]
            step = max(hi - lo, 1e-12) / 255.0
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, step=step: (args[0] + (torch.rand(args[0].shape, generator=gen) - 0.5) * step,) + args[1:]))
        yield
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for path, w in saved.items():
                layers[path].weight.copy_(w)


def jpeg_resaved(photo: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """``photo`` (H x W x 3 uint8) after a JPEG round trip through Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def block_of(path: str) -> str:
    """A layer's block: the first two parts of its path (``coarse.stage1``), or all of a shorter one."""
    return ".".join(path.split(".")[:2])


def photo_fragility(pipeline, photos: list[tuple[str, np.ndarray]], feeds: list[dict[str, np.ndarray]], draws: int = 8,
                    seed: int = 0, photo_db: float = 30.0, recipe=None, split: int = 3,
                    progress: Callable[[int, int], object] = lambda done, total: None) -> list[Fragility]:
    """Every photo's :class:`Fragility` on ``pipeline``'s fused graph, with input ranges from the
    calibration ``feeds``; draw ``k`` uses seed ``seed + k`` on every photo. Worst median first.

    ``split``: for that many of the photos with a draw below ``photo_db`` (worst median first),
    each block's noise alone, two draws: where the noise enters. On a fragile photo the effects do
    not add up (all of the reference model's ``coarse.stage1`` float, where half the noise enters,
    left its portraits' draws as low as before: README, "Fragile photos")."""
    import torch

    from ..photos import prepare

    if draws < 1:
        raise ValueError("draws must be >= 1")
    graph = pipeline.graph("fused")
    layers = quantized_layers(graph, recipe)
    ranges = input_ranges(graph, layers, feeds)

    def run(x):
        with torch.inference_mode():
            return graph(torch.from_numpy(x)).numpy()

    measured = []
    for i, (name, photo) in enumerate(photos):
        x = prepare(photo, pipeline.spec)[0]
        ref = run(x)
        jpeg = psnr(run(prepare(jpeg_resaved(photo), pipeline.spec)[0]), ref)
        got = []
        for k in range(draws):
            with rounding_noise(layers, ranges, seed + k):
                got.append(psnr(run(x), ref))
        measured.append(Fragility(name, tuple(got), jpeg))
        progress(i + 1, len(photos))
    measured.sort(key=lambda f: f.median)
    arrays = dict(photos)
    for i, f in enumerate(measured[:split]):
        if f.low >= photo_db:
            break
        x = prepare(arrays[f.photo], pipeline.spec)[0]
        ref = run(x).astype(np.float64)
        mse = {}
        for b in sorted({block_of(p) for p in layers}):
            errs = []
            for k in range(min(draws, 2)):
                with rounding_noise(layers, ranges, seed + k, only=lambda p, b=b: block_of(p) == b):
                    errs.append(float(np.mean((run(x) - ref) ** 2)))
            mse[b] = float(np.mean(errs))
        total = sum(mse.values()) or 1.0
        measured[i] = replace(f, blocks=tuple(sorted(((b, v / total) for b, v in mse.items()), key=lambda t: -t[1])))
    return measured


def read_verdicts(path) -> dict[str, dict]:
    """A ``fragility.json`` (`mexport fragility`) as photo name -> its entry (verdict, median, low,
    high, ...), each also under its bare stem (``GT10`` for ``alphamatting/GT10``) when that stem
    names one photo only: `mexport validate` names photos by stem."""
    from ..errors import InputError
    from ..io import read_json

    d = read_json(path, "fragility", f"fragility file not found: {path}")
    photos = d.get("photos") if isinstance(d, dict) else None
    if not isinstance(photos, list) or any(not isinstance(p, dict) or not {"photo", "verdict", "median", "low", "high"} <= set(p)
                                           for p in photos):
        raise InputError(f"{path}: not a fragility.json written by `mexport fragility` (no photos with verdicts)")
    out = {p["photo"]: p for p in photos}
    stems: dict[str, list] = {}
    for p in photos:
        stems.setdefault(p["photo"].rsplit("/", 1)[-1], []).append(p)
    out.update({s: ps[0] for s, ps in stems.items() if len(ps) == 1 and s not in out})
    return out


def annotate(failed: list[str], verdicts: dict[str, dict]) -> str:
    """What a fragility file says of the photos a per-photo gate failed on ("" if nothing)."""
    said = [f"{n} is {verdicts[n]['verdict']} (int8-sized noise: {verdicts[n]['low']:.1f}-{verdicts[n]['high']:.1f} dB, "
            f"median {verdicts[n]['median']:.1f})" for n in failed if n in verdicts and verdicts[n]["verdict"] != "robust"]
    robust = [n for n in failed if n in verdicts and verdicts[n]["verdict"] == "robust"]
    parts = []
    if said:
        parts.append("; ".join(said) + ": a recipe holds such a photo by luck")
    if robust:
        parts.append(f"{', '.join(robust)} robust to int8-sized noise: a real loss")
    return "; ".join(parts)
