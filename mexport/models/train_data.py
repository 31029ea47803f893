"""Training data for the refiner: real foregrounds with alphas, real backgrounds, augmented composites.

Foregrounds are named ``family/photo`` (``alphamatting/GT05``, ``portraits-p3m/p_07141906``) and
read from a data root holding one folder per family (``image/``, ``alpha/``), as ``../shared/data``
does. Backgrounds are scikit-image's bundled photos (CC0) and the photographs of Debian's
``mate-backgrounds`` package (``/usr/share/backgrounds/mate/nature``), read from disk, never
fetched. Evaluation photos (scikit-image's astronaut, chelsea, motorcycle_right: the GT-free
check and the export checks run on them) are never backgrounds.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes

FAMILIES = ("alphamatting", "portraits-p3m", "animals-am2k")
SKIMAGE_BACKGROUNDS = ("coffee", "rocket", "motorcycle_left", "hubble_deep_field", "brick", "grass", "gravel", "retina")
DEBIAN_BACKGROUNDS = Path("/usr/share/backgrounds/mate/nature")  # Debian package mate-backgrounds
DEBIAN_PACKAGE = "mate-backgrounds"
BACKGROUND_LICENCES = {
    "skimage": "CC0 (scikit-image's bundled data)",
    DEBIAN_PACKAGE: "GPL-2+ (photographs by several authors: /usr/share/doc/mate-backgrounds/copyright); "
                    "read at training time, never copied into mexport or its artifacts",
}
MAX_SIDE = 1024  # foregrounds and backgrounds are kept at most this large: composites are 1024x1024


@dataclass(frozen=True)
class Foreground:
    name: str
    image: np.ndarray  # HxWx3 uint8, the real photo
    alpha: np.ndarray  # HxW float32
    fg: np.ndarray  # HxWx3 float32 in [0, 1], foreground colours estimated from the photo and alpha


def family_photos(root: Path, family: str) -> list[str]:
    from ..photos import list_photos

    folder = Path(root) / family
    if not (folder / "image").is_dir() or not (folder / "alpha").is_dir():
        raise InputError(f"{folder}: expected image/ and alpha/ folders")
    return [f"{family}/{p.stem}" for p in list_photos(folder / "image") if (folder / "alpha" / f"{p.stem}.png").is_file()]


def _shrink(img, max_side: int):
    from PIL import Image

    scale = max_side / max(img.size)
    return img if scale >= 1 else img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)


def load_pair(root: Path, name: str, max_side: int = MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(photo uint8, alpha float32) for ``family/photo``, shrunk to ``max_side``; 16-bit alphas kept."""
    from PIL import Image

    from ..photos import list_photos, load_photo

    family, _, stem = name.partition("/")
    folder = Path(root) / family
    hits = [p for p in list_photos(folder / "image") if p.stem == stem]
    if not hits:
        raise InputError(f"{name}: no photo {stem} in {folder / 'image'}")
    photo = _shrink(Image.fromarray(load_photo(hits[0])), max_side)
    with Image.open(folder / "alpha" / f"{stem}.png") as im:
        a = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I") else 255.0
    if a.ndim == 3:
        a = a[..., 0]
    alpha = Image.fromarray(a / peak, mode="F").resize(photo.size, Image.BILINEAR)
    return np.asarray(photo), np.clip(np.asarray(alpha, dtype=np.float32), 0, 1)


def load_foregrounds(root: Path, names: list[str], cache: Path) -> list[Foreground]:
    """Photo, alpha and foreground colours (pymatting's ``estimate_foreground_ml``, cached by the
    content of photo and alpha: it takes seconds per photo)."""
    from pymatting import estimate_foreground_ml

    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        img, alpha = load_pair(root, name)
        key = hashlib.sha256(img.tobytes() + alpha.tobytes()).hexdigest()[:20]
        f = cache / f"fg_{key}.npy"
        if f.is_file():
            fg = np.load(f)
        else:
            fg = np.clip(estimate_foreground_ml(img.astype(np.float64) / 255.0, alpha.astype(np.float64)), 0, 1).astype(np.float32)
            buf = io.BytesIO()
            np.save(buf, fg)
            atomic_write_bytes(f, buf.getvalue())  # a killed run must not leave a truncated cache entry
        out.append(Foreground(name, img, alpha, fg))
    return out


def background_files() -> list[tuple[str, Path]]:
    """(name, path) of every background photo, in a fixed order; an error names the missing package."""
    from ..photos import skimage_photo_path

    if not DEBIAN_BACKGROUNDS.is_dir():
        raise InputError(f"background photos not found at {DEBIAN_BACKGROUNDS}: install Debian's {DEBIAN_PACKAGE} "
                         f"(apt-get install {DEBIAN_PACKAGE}; scripts/setup.sh does)")
    files = [(f"skimage:{n}", skimage_photo_path(n)) for n in SKIMAGE_BACKGROUNDS]
    files += [(f"{DEBIAN_PACKAGE}:{p.name}", p) for p in sorted(DEBIAN_BACKGROUNDS.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
    return files


def load_backgrounds() -> tuple[list[np.ndarray], dict[str, str]]:
    """Background photos as float32 RGB in [0, 1] (at most MAX_SIDE), and {name: sha256} for the record."""
    from PIL import Image

    from ..photos import load_photo
    from .weights import sha256_file

    bgs, record = [], {}
    for name, path in background_files():
        bgs.append(np.asarray(_shrink(Image.fromarray(load_photo(path)), MAX_SIDE), dtype=np.float32) / 255.0)
        record[name] = sha256_file(path)
    return bgs, record


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).numpy() if a.ndim == 3 else t[0, 0].numpy()


def _window(h: int, w: int, smin: float, rng: np.random.Generator) -> tuple[slice, slice]:
    s = rng.uniform(smin, 1.0)
    ch, cw = max(8, int(h * s)), max(8, int(w * s))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return slice(y, y + ch), slice(x, x + cw)


def _jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gain, bias, sat, gamma = rng.uniform(0.75, 1.25), rng.uniform(-0.08, 0.08), rng.uniform(0.6, 1.3), rng.uniform(0.8, 1.25)
    gray = rgb.mean(-1, keepdims=True)
    return np.clip((gray + (rgb - gray) * sat) * gain + bias, 0, 1) ** gamma


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(rgb, (sigma, sigma, 0), mode="reflect")


def _jpeg(rgb8: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb8).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def make_composite(fg: Foreground, bg: np.ndarray | None, size: tuple[int, int], rng: np.random.Generator,
                   colour_blind: bool = True):
    """One augmented sample at ``size``: (photo HxWx3 float32 in [0, 1], quantized to 8 bits, alpha HxW).

    ``bg=None`` keeps the foreground's own photo (its real background). Augmentation: a random
    window (scale 0.6-1), flips, separate colour jitter of foreground and background, a defocused
    background, sensor noise and JPEG, all with fixed probabilities drawn from ``rng``."""
    ys, xs = _window(*fg.alpha.shape, 0.6, rng)
    colours = fg.image[ys, xs].astype(np.float32) / 255.0 if bg is None else fg.fg[ys, xs]
    alpha = fg.alpha[ys, xs]
    if rng.random() < 0.5:
        colours, alpha = colours[:, ::-1], alpha[:, ::-1]
    colours, alpha = _resize(colours, size), np.clip(_resize(alpha, size), 0, 1)
    if bg is None:
        img = _jitter(colours, rng)
    else:
        bys, bxs = _window(*bg.shape[:2], 0.4, rng)
        back = bg[bys, bxs]
        if rng.random() < 0.5:
            back = back[:, ::-1]
        back = _resize(back, size)
        if rng.random() < 0.4:
            back = _blur(back, rng.uniform(1.0, 4.0))
        front, back = _jitter(colours, rng), _jitter(back, rng)
        img = front * alpha[..., None] + back * (1 - alpha[..., None])
    if rng.random() < 0.15:
        img = _blur(img, rng.uniform(0.4, 1.0))  # a slightly soft lens, alpha unchanged
    if rng.random() < 0.3:
        img = img + rng.normal(0, rng.uniform(0.004, 0.02), img.shape)
    img8 = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img8 = _jpeg(img8, int(rng.integers(40, 96)))
    # Colour-blind on purpose: the refiner must follow the photo's edges near the coarse edge, not
    # learn which colours are foreground (trained on 14 objects, a refiner without this turned a
    # dark animal on light sand inside out along its outline). Channel order and polarity are
    # shuffled; a few composites are grey.
    if colour_blind:
        img8 = img8[..., rng.permutation(3)]
        if rng.random() < 0.3:
            img8 = 255 - img8
        if rng.random() < 0.1:
            img8 = np.repeat(np.round(img8.mean(-1, keepdims=True)).astype(np.uint8), 3, -1)
    return img8.astype(np.float32) / 255.0, alpha.astype(np.float32)
