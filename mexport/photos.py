"""Reading photos safely, the default photo sets, and the host-side steps around the graphs.

The host-side steps (``prepare`` / ``restore``) are what a device does outside the model; every
runner, float or exported, goes through them, so an artifact and its reference see the same tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .spec import PipelineSpec

MAX_PIXELS = 100_000_000
MIN_SIDE = 32
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

# scikit-image's bundled colour photos (CC0), read from its installed wheel, never fetched.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina")
# Calibration and evaluation must not share photos: calibration gets these six...
DEFAULT_CALIB = ("astronaut", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "retina")
# ...and export-time checks and reports evaluate on these (plus GT15-GT18 when a data dir is given).
DEFAULT_EVAL = ("chelsea", "motorcycle_right")


def resolve_photo_arg(arg: str | Path) -> Path:
    """A path, or ``skimage:NAME`` for one of scikit-image's bundled photos (read from its wheel)."""
    s = str(arg)
    if s.startswith("skimage:"):
        return skimage_photo_path(s.split(":", 1)[1])
    return Path(arg)


def skimage_photo_path(name: str) -> Path:
    import skimage

    root = Path(skimage.__file__).parent / "data"
    hits = sorted(root.glob(f"{name}.*"))
    if not hits:
        raise InputError(f"scikit-image photo {name!r} is not in the installed wheel ({root})")
    return hits[0]


@contextlib.contextmanager
def _no_bomb_warning():
    """PIL warns (two lines on stderr) about an image over its limit before mexport's own check,
    which refuses it in one line; the warning would only repeat that."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def load_photo(path: str | Path) -> np.ndarray:
    """Any JPEG/PNG/WebP -> HxWx3 uint8 RGB, EXIF orientation applied. Bad input -> InputError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputError(f"photo not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    prev = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with _no_bomb_warning(), Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{path}: {im.width}x{im.height} is over the {MAX_PIXELS // 1_000_000} megapixel limit")
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = _to_rgb(im)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{path}: image is over the {MAX_PIXELS // 1_000_000} megapixel limit (decompression bomb)") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read (JPEG, PNG or WebP expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: broken or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = prev
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise InputError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} is too small (need at least {MIN_SIDE} px a side)")
    return rgb


def _to_rgb(im) -> np.ndarray:
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(a * (255.0 if a.max() <= 1 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Matting wants the photo as seen: composite transparency over white, not over garbage.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_matte(path: str | Path, photo_hw: tuple[int, int], what: str = "alpha") -> np.ndarray:
    """A ground-truth alpha (or trimap) as HxW float32 in [0, 1], at its photo's size. 16-bit PNGs
    keep their 16 bits (PIL's convert("L") clips them to 255: a binarised matte); 8-bit, palette,
    RGB(A) images are read as their luminance. Bad input -> InputError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    prev = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with _no_bomb_warning(), Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{what} {path}: {im.width}x{im.height} is over the {MAX_PIXELS // 1_000_000} megapixel limit")
            im.load()
            if im.mode in SIXTEEN_BIT:
                a = np.asarray(im, dtype=np.float64) / 65535.0
            elif im.mode == "F":
                a = np.asarray(im, dtype=np.float64)
            else:
                a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{what} {path}: over the {MAX_PIXELS // 1_000_000} megapixel limit") from None
    except UnidentifiedImageError:
        raise InputError(f"{what} {path}: not an image PIL can read (a grayscale PNG expected)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{what} {path}: broken or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = prev
    if a.shape != tuple(photo_hw):
        raise InputError(f"{what} {path} is {a.shape[1]}x{a.shape[0]}, its photo {photo_hw[1]}x{photo_hw[0]}")
    if not np.isfinite(a).all():
        raise InputError(f"{what} {path}: NaN or Inf values")
    return np.clip(a, 0.0, 1.0).astype(np.float32)


def list_photos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"photo folder not found: {folder}")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise InputError(f"no photos (JPEG, PNG, WebP) in {folder}")
    return photos


def default_photos(names: tuple[str, ...] = SKIMAGE_PHOTOS) -> list[tuple[str, np.ndarray]]:
    return [(n, load_photo(skimage_photo_path(n))) for n in names]


def photo_set_sha256(photos: list[tuple[str, np.ndarray]]) -> str:
    """A hash of a photo set's pixels (order-independent by name), recorded with calibrations."""
    h = hashlib.sha256()
    for name, arr in sorted(photos, key=lambda p: p[0]):
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Placement:
    """Where the photo sits inside the refine-size tensor, to undo it afterwards."""

    photo_hw: tuple[int, int]
    box: tuple[int, int, int, int]  # top, left, height, width inside the tensor


def prepare(photo: np.ndarray, spec: PipelineSpec) -> tuple[np.ndarray, Placement]:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1] at refine size, by the spec's aspect handling.

    The resize is done on uint8 pixels with PIL's bilinear (antialiased when shrinking), as a
    device resizes a bitmap, then divided by 255."""
    from PIL import Image

    th, tw = spec.refine_size
    h, w = photo.shape[:2]
    resample = Image.BILINEAR if spec.photo_resize == "bilinear" else Image.NEAREST
    if spec.aspect == "stretch":
        box = (0, 0, th, tw)
    else:
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        box = ((th - nh) // 2, (tw - nw) // 2, nh, nw)
    top, left, bh, bw = box
    resized = np.asarray(Image.fromarray(photo).resize((bw, bh), resample), dtype=np.uint8)
    canvas = np.zeros((th, tw, 3), dtype=np.uint8)
    canvas[top : top + bh, left : left + bw] = resized
    tensor = (canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor), Placement((h, w), box)


def photo_folder(folder: str | Path) -> Path:
    """Where a folder's photos are: FOLDER/image/ in the shared data layout, else FOLDER itself."""
    folder = Path(folder)
    return folder / "image" if (folder / "image").is_dir() else folder


def load_extras(folder: str | Path, photos: list[tuple[str, np.ndarray]], spec: PipelineSpec) -> dict[str, dict[str, np.ndarray]]:
    """A model's extra inputs (a trimap, ...) for each photo, by photo name: FOLDER/<input name>/
    <photo stem>.png beside FOLDER/image/, read like a matte (grayscale, [0, 1], the photo's
    size). Real data only: a photo without its file is an InputError naming the file."""
    folder = Path(folder)
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name, _ in photos}
    for e in spec.extra_inputs:
        if e.channels != 1:
            raise InputError(f"extra input {e.name!r} has {e.channels} channels: only 1-channel extra inputs are read from files")
        where = folder / e.name
        for name, photo in photos:
            found = sorted(where.glob(f"{name}.*")) if where.is_dir() else []
            if not found:
                raise InputError(f"extra input {e.name!r} for photo {name!r} not found: expected {where / name}.png "
                                 f"(a folder {e.name}/ beside image/, one file per photo)")
            out[name][e.name] = load_matte(found[0], photo.shape[:2], e.name)
    return out


def prepare_extra(extra: np.ndarray, placement: Placement, spec: PipelineSpec) -> np.ndarray:
    """HxW float32 in [0, 1] -> 1x1xHxW at refine size, placed like its photo; nearest resize (a
    trimap's three levels stay three levels)."""
    from PIL import Image

    th, tw = spec.refine_size
    top, left, bh, bw = placement.box
    resized = np.asarray(Image.fromarray(extra.astype(np.float32), mode="F").resize((bw, bh), Image.NEAREST), dtype=np.float32)
    canvas = np.zeros((th, tw), dtype=np.float32)
    canvas[top : top + bh, left : left + bw] = resized
    return np.ascontiguousarray(canvas[None, None])


def prepared_inputs(photo: np.ndarray, extras: dict[str, np.ndarray] | None, spec: PipelineSpec) -> tuple[np.ndarray, ...]:
    """The fused graph's inputs for one photo: the prepared photo, then each extra input in spec order."""
    x, placement = prepare(photo, spec)
    if not spec.extra_inputs:
        return (x,)
    if extras is None:
        raise InputError("this model needs extra inputs (" + ", ".join(e.name for e in spec.extra_inputs)
                         + "); give photos in a folder with image/ and one folder per extra input beside it")
    return (x, *(prepare_extra(extras[e.name], placement, spec) for e in spec.extra_inputs))


def restore(alpha: np.ndarray, placement: Placement, spec: PipelineSpec) -> np.ndarray:
    """1x1xHxW (or HxW) alpha at refine size -> HxW float32 alpha at the photo's size, in [0, 1]."""
    from PIL import Image

    a = np.asarray(alpha, dtype=np.float32).reshape(alpha.shape[-2:])
    top, left, bh, bw = placement.box
    a = a[top : top + bh, left : left + bw]
    h, w = placement.photo_hw
    resample = Image.BILINEAR if spec.output_resize == "bilinear" else Image.NEAREST
    out = np.asarray(Image.fromarray(np.ascontiguousarray(a), mode="F").resize((w, h), resample), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
