"""The data that travels with every model and artifact: the preprocessing spec and provenance.

Both are frozen dataclasses checked in ``__post_init__`` and round-trip through JSON, because app
teams must reproduce the spec on the device and validators must find an artifact's reference.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

ASPECTS = ("stretch", "letterbox")
RESIZE_MODES = ("bilinear", "nearest")
ROLES = ("coarse", "refine", "fused")


def _pair(v: Any, what: str) -> tuple[int, int]:
    t = tuple(int(x) for x in v)
    if len(t) != 2 or min(t) < 8:
        raise ValueError(f"{what} must be (height, width) with both >= 8, got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class ResizeStep:
    """One resize inside the graph: ``box_prefilter`` 2x average pools, then ``mode`` interpolation.

    The box prefilter is our anti-aliasing: ``antialias=True`` bilinear exists in neither TFLite
    nor ONNX before opset 18, while a 2x2 average pool runs everywhere.
    """

    mode: str = "bilinear"
    align_corners: bool = False
    box_prefilter: int = 0

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if self.box_prefilter < 0:
            raise ValueError("box_prefilter must be >= 0")
        if self.mode == "nearest" and self.align_corners:
            raise ValueError("align_corners only applies to bilinear")

    def describe(self) -> str:
        pre = f"{self.box_prefilter}x 2x2 average pool, then " if self.box_prefilter else ""
        coords = "align_corners=True" if self.align_corners else "half-pixel centers (align_corners=False)"
        return f"{pre}{self.mode} ({coords}, no antialias)"


@dataclass(frozen=True)
class ExtraInput:
    """An input beyond the photo, e.g. a trimap, given at refine resolution in [0, 1]."""

    name: str
    channels: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name in ("image", "alpha"):
            raise ValueError(f"extra input name {self.name!r} must be an identifier other than image/alpha")
        if self.channels < 1:
            raise ValueError("extra input channels must be >= 1")


@dataclass(frozen=True)
class PipelineSpec:
    """Everything a device must do around the networks, and what the graphs do inside.

    Host side (device code): photo -> RGB float32 in [0, 1] (pixel / 255) -> resize to
    ``refine_size`` (``aspect``: stretch, or letterbox with zero padding, centred) -> NCHW tensor.
    Inside the fused graph: normalize with mean/std -> coarse input by ``coarse_downsample`` ->
    coarse net -> ``coarse_upsample`` to refine size -> refine net -> alpha in [0, 1].
    Host side again: undo the letterbox, resize alpha to the photo size with ``output_resize``.
    """

    coarse_size: tuple[int, int] = (320, 320)
    refine_size: tuple[int, int] = (1024, 1024)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    aspect: str = "stretch"
    photo_resize: str = "bilinear"
    coarse_downsample: ResizeStep = field(default_factory=lambda: ResizeStep("bilinear", False, 1))
    coarse_upsample: ResizeStep = field(default_factory=lambda: ResizeStep("bilinear", False, 0))
    output_resize: str = "bilinear"
    extra_inputs: tuple[ExtraInput, ...] = ()

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalize in place
        set_("coarse_size", _pair(self.coarse_size, "coarse_size"))
        set_("refine_size", _pair(self.refine_size, "refine_size"))
        set_("mean", tuple(float(x) for x in self.mean))
        set_("std", tuple(float(x) for x in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if self.aspect not in ASPECTS:
            raise ValueError(f"aspect must be one of {ASPECTS}, got {self.aspect!r}")
        for name in ("photo_resize", "output_resize"):
            if getattr(self, name) not in RESIZE_MODES:
                raise ValueError(f"{name} must be one of {RESIZE_MODES}")
        for name in ("coarse_downsample", "coarse_upsample"):
            v = getattr(self, name)
            if isinstance(v, dict):
                set_(name, ResizeStep(**v))
        set_("extra_inputs", tuple(e if isinstance(e, ExtraInput) else ExtraInput(**e) for e in self.extra_inputs))
        k = 2 ** self.coarse_downsample.box_prefilter
        if any(r % k for r in self.refine_size) or any(r // k < c for r, c in zip(self.refine_size, self.coarse_size)):
            raise ValueError(
                f"refine_size {self.refine_size} must be divisible by {k} and, after "
                f"{self.coarse_downsample.box_prefilter} 2x pools, not smaller than coarse_size {self.coarse_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PipelineSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown spec fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "PipelineSpec":
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> "PipelineSpec":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Provenance:
    """What every artifact embeds, so a validator can find its float reference and anyone can redo it."""

    model: str
    weights_sha256: str
    spec: dict
    role: str
    target: str
    precision: str
    recipe: str | None = None
    calib_sha256: str | None = None
    calib_method: str | None = None
    mexport_version: str = ""
    converters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "weights_sha256", "role", "target", "precision", "mexport_version"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in ("recipe", "calib_sha256", "calib_method"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string or null, got {getattr(self, name)!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if len(self.weights_sha256) != 64:
            raise ValueError("weights_sha256 must be a sha256 hex digest")
        if not isinstance(self.spec, dict) or not isinstance(self.converters, dict):
            raise ValueError("spec and converters must be objects")
        PipelineSpec.from_dict(self.spec)  # raises if the spec is not valid

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str | bytes) -> "Provenance":
        """ValueError for anything that is not a valid record (it comes from a file from anywhere)."""
        try:
            d = json.loads(s)
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
            raise ValueError(str(e)) from None

    @property
    def pipeline_spec(self) -> PipelineSpec:
        return PipelineSpec.from_dict(self.spec)
