"""The library API that the CLI and Python users call."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_OUT_SUFFIXES = (".png", ".webp")


def load_pipeline(model: str | None = None):
    from .models import DEFAULT_MODEL, MattingPipeline, load_model

    return MattingPipeline(load_model(model or DEFAULT_MODEL))


def save_image(img, path: Path) -> None:
    """PNG, or lossless WebP, by the suffix of ``path`` (which may be a temporary name)."""
    webp = path.suffix.lower() == ".webp"
    img.save(path, format="WEBP" if webp else "PNG", **({"lossless": True} if webp else {}))


def resolve_photo_arg(arg: str | Path) -> Path:
    """A path, or ``skimage:NAME`` for one of scikit-image's bundled photos (read from its wheel)."""
    s = str(arg)
    if s.startswith("skimage:"):
        from .photos import skimage_photo_path

        return skimage_photo_path(s.split(":", 1)[1])
    return Path(arg)


def cutout_paths(photos: list[Path], out: Path) -> list[Path]:
    """Where each cutout goes: OUT itself for one photo and an image suffix, else OUT/<stem>.png."""
    if not photos:
        raise InputError("no photos given")
    if out.suffix.lower() in (".jpg", ".jpeg"):
        raise InputError(f"{out}: JPEG cannot hold an alpha channel; use .png or .webp")
    if len(photos) == 1 and out.suffix.lower() in IMAGE_OUT_SUFFIXES:
        targets = [out]
    elif out.suffix.lower() in IMAGE_OUT_SUFFIXES:
        raise InputError(f"{len(photos)} photos need a directory for -o, not the file name {out}")
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} exists and is not a directory")
        targets = [out / f"{p.stem}.png" for p in photos]
        if len(set(targets)) != len(targets):
            raise InputError("two photos share a file name stem; cut them out into separate directories")
    inputs = {p.resolve() for p in photos}
    for t in targets:
        if t.resolve() in inputs:
            raise InputError(f"refusing to overwrite the input photo {t}")
    return targets


def cutout(photos: list[str | Path], out: str | Path, model: str | None = None, runner=None, progress=None) -> list[Path]:
    """Cut out each photo (RGBA, alpha = matte) with the float pipeline or a given runner. Every
    cutout is made before any is put in place, so a failure leaves no output at all."""
    from PIL import Image

    from .errors import ArtifactRunError
    from .io import install, staging
    from .photos import load_photo
    from .runner import TorchRunner, run_photo

    photos = [resolve_photo_arg(p) for p in photos]
    targets = cutout_paths(photos, Path(out))
    images = [load_photo(p) for p in photos]  # every input is checked before anything is written
    runner = runner or TorchRunner(load_pipeline(model))
    with staging(Path(out).parent, "cutout", out) as stage:
        staged = {}
        for i, (photo, img, target) in enumerate(zip(photos, images, targets)):
            alpha = run_photo(runner, img)
            if not np.isfinite(alpha).all():
                # NaN would become a fully transparent cutout, silently: the model is broken.
                why = f"{runner.name} gives NaN or Inf in the alpha of {photo}; nothing written"
                raise ArtifactRunError(why) if not isinstance(runner, TorchRunner) else InputError(f"model {why}")
            a8 = np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)
            staged[target] = stage / f"{i}{target.suffix}"
            save_image(Image.fromarray(np.dstack([img, a8]), "RGBA"), staged[target])
            if progress:
                progress()
        install(staged, stage / "old")
    return targets


def export(target: str, out: str | Path, model: str | None = None, precision: str = "fp32", target_options: dict | None = None,
           log=lambda s: None, progress=None, roles: tuple[str, ...] | None = None, **common):
    """Export the model to ``target`` into ``out``; see :func:`mexport.export.base.export`."""
    from .export import export as run_export
    from .export import get_target

    t = get_target(target)
    try:
        options = t.Options(precision=precision, **common, **(target_options or {}))
    except (TypeError, ValueError) as e:
        raise InputError(str(e)) from None
    return run_export(target, load_pipeline(model), out, options, log=log, progress=progress, roles=roles)
