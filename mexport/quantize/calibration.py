"""Calibration photos and the per-role inputs derived from them.

Every role is calibrated on what it sees in the real pipeline: the coarse graph on downsampled
photos, the refine graph on full-size photos plus the float coarse alpha, the fused graph on the
full-size photos. The float pipeline computes the in-between tensors.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..photos import DEFAULT_CALIB, default_photos, list_photos, load_photo, photo_folder

MIN_CALIB_PHOTOS = 4


class FewCalibrationPhotos(UserWarning):
    pass


@dataclass(frozen=True)
class CalibrationSet:
    photos: tuple[tuple[str, np.ndarray], ...]
    source: str
    folder: Path | None = None  # where extra inputs (a trimap/ beside image/) are read from

    def extras(self, spec) -> dict | None:
        """The extra inputs a model's spec asks for, per photo (None for a model without any)."""
        from ..photos import load_extras

        if not spec.extra_inputs:
            return None
        if self.folder is None:
            raise InputError("int8 calibration needs this model's extra inputs (" + ", ".join(e.name for e in spec.extra_inputs)
                             + ") with each photo: give --calib DIR with DIR/image/ and one folder per extra input beside it")
        return load_extras(self.folder, list(self.photos), spec)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for name, arr in sorted(self.photos, key=lambda p: p[0]):
            h.update(name.encode() + str(arr.shape).encode() + arr.tobytes())
        return h.hexdigest()


def load_calibration(folder: str | Path | None = None, count: int | None = None) -> CalibrationSet:
    """Photos from a folder (every JPEG/PNG/WebP in it, sorted), or the default scikit-image set.
    An empty or unreadable folder is an InputError; fewer than 4 photos is a warning."""
    if folder is None:
        photos = default_photos(DEFAULT_CALIB)
        source = "default (scikit-image: " + ", ".join(DEFAULT_CALIB) + ")"
    else:
        paths = list_photos(photo_folder(folder))
        photos = [(p.stem, load_photo(p)) for p in paths]
        source = str(folder)
    if count is not None:
        if count < 1:
            raise InputError("the number of calibration photos must be >= 1")
        photos = photos[:count]
    if len(photos) < MIN_CALIB_PHOTOS:
        warnings.warn(f"only {len(photos)} calibration photos; {MIN_CALIB_PHOTOS}+ give steadier int8 ranges", FewCalibrationPhotos, stacklevel=2)
    return CalibrationSet(tuple(photos), source, Path(folder) if folder is not None else None)


def role_inputs(pipeline, role: str, photos, max_photos: int | None = None, extras: dict | None = None) -> list[dict[str, np.ndarray]]:
    """Inputs of a role's graph, by input name, one dict per photo (float pipeline in between);
    ``extras``: the model's extra inputs per photo name (``CalibrationSet.extras``)."""
    import torch

    from ..photos import prepared_inputs

    names = pipeline.input_names(role)
    out = []
    for name, photo in list(photos)[:max_photos]:
        x, *extra = (torch.from_numpy(a) for a in prepared_inputs(photo, None if extras is None else extras[name], pipeline.spec))
        with torch.inference_mode():
            if role == "coarse":
                vals = [pipeline.downsample(x), *(pipeline.downsample(e) for e in extra)]
            elif role == "refine":
                vals = [x, pipeline.coarse_graph(pipeline.downsample(x), *(pipeline.downsample(e) for e in extra)), *extra]
            else:
                vals = [x, *extra]
        out.append({n: v.numpy().astype(np.float32) for n, v in zip(names, vals)})
    return out


def observe(graph, feeds: list[dict[str, np.ndarray]], pre_hooks: dict) -> None:
    """Run ``graph`` over ``feeds`` (one dict of inputs per photo) in inference mode with each
    module's forward pre-hook of ``pre_hooks`` ({module: hook(module, args)}) installed, and remove
    them after, whatever happens: how the calibration-time statistics (bias shifts, input ranges)
    are gathered."""
    import torch

    handles = [m.register_forward_pre_hook(h) for m, h in pre_hooks.items()]
    try:
        with torch.inference_mode():
            for f in feeds:
                graph(*(torch.as_tensor(v) for v in f.values()))
    finally:
        for h in handles:
            h.remove()
