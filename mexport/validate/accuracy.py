"""Accuracy against ground truth: the matting metrics on photos with true alphas (and trimaps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics


@dataclass(frozen=True)
class GTSample:
    name: str
    photo: np.ndarray
    alpha: np.ndarray
    trimap: np.ndarray | None = None


def load_gt_samples(data: Path, names: list[str] | None = None, trimap: str = "trimap1") -> list[GTSample]:
    """Read the alphamatting layout: image/NAME.png, alpha/NAME.png, optional trimap1/NAME.png."""
    from ..errors import InputError
    from ..photos import list_photos, load_matte, load_photo

    data = Path(data)
    photos = list_photos(data / "image") if (data / "image").is_dir() else list_photos(data)
    if names is not None:
        photos = [p for p in photos if p.stem in names]
        if len(photos) != len(names):
            raise InputError(f"{data}: missing some of {names}")
    out = []
    for p in photos:
        a = data / "alpha" / f"{p.stem}.png"
        if not a.is_file():
            continue
        t = data / trimap / f"{p.stem}.png"
        photo = load_photo(p)
        alpha = load_matte(a, photo.shape[:2], "alpha")
        tri = load_matte(t, photo.shape[:2], "trimap") if t.is_file() else None
        out.append(GTSample(p.stem, photo, alpha, tri))
    return out


def gt_metrics(pred: np.ndarray, sample: GTSample) -> dict[str, float]:
    """SAD, MSE, Grad, Conn over the whole image, and over the trimap's unknown region when known."""
    r = metrics.matting_errors(pred, sample.alpha, sample.trimap)
    order = ["sad", "mse", "grad", "conn"]
    return {k: r[k] for k in order} | {f"{k}_unknown": r[f"{k}_unknown"] for k in order if f"{k}_unknown" in r}
