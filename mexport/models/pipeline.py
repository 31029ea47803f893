"""The float reference: the two networks wrapped into the graphs every target exports.

``MattingPipeline`` exposes three graphs, which are the export contract:
- ``coarse_graph(image_c, *extra_c)``: photo at coarse size in [0, 1] -> coarse alpha;
- ``refine_graph(image, coarse_alpha, *extra)``: photo at refine size + coarse alpha -> alpha;
- ``forward(image, *extra)`` (the fused graph): photo at refine size -> alpha, doing the
  downsample between the networks itself, so a device feeds one tensor.
Normalization happens inside every graph. Everything runs on static shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..quantize.recipe import Int8Declarations
from ..spec import PipelineSpec, ResizeStep
from .ops import box_pool, clamp01


def resize(x: torch.Tensor, size: tuple[int, int], step: ResizeStep) -> torch.Tensor:
    """Apply one spec resize step; the exported graphs and the host-side pair runner both call this."""
    for _ in range(step.box_prefilter):
        x = box_pool(x, 2)
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if step.mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=step.align_corners)


@dataclass
class MattingModel:
    """What a model factory returns: the coarse net, the optional refine net, and the spec.

    ``coarse(x_norm, *extra)`` maps the normalized photo at coarse size to alpha in [0, 1];
    ``refine(x_norm, coarse_up, *extra)`` maps the normalized photo at refine size and the coarse
    alpha upsampled to refine size to alpha (clamped to [0, 1] by the pipeline). A refine module
    with ``takes_raw_image = True`` gets the photo in [0, 1] instead (and normalizes it, or folds
    the normalization, itself); one with ``output_in_unit_range = True`` promises [0, 1] itself. A single-network
    model (MODNet-style) has ``refine=None``: its coarse alpha is upsampled to refine size.
    """

    coarse: nn.Module
    spec: PipelineSpec
    refine: nn.Module | None = None
    name: str = ""
    weights_sha256: str = ""
    int8: Int8Declarations = field(default_factory=Int8Declarations)  # measured int8 knowledge: the default int8 recipe
    license: str = ""  # of the weights, for model cards and Core ML's metadata
    notes: dict[str, str] = field(default_factory=dict)  # what was done to the model, by module path (e.g. re-centring)

    def __post_init__(self) -> None:
        if not isinstance(self.int8, Int8Declarations):
            raise TypeError(f"MattingModel.int8 must be mexport.quantize.recipe.Int8Declarations, got {type(self.int8).__name__}")


class MattingPipeline(nn.Module):
    def __init__(self, model: MattingModel) -> None:
        super().__init__()
        self.model_info = model
        self.spec = model.spec
        self.coarse = model.coarse
        self.refine = model.refine
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @property
    def has_refine(self) -> bool:
        return self.refine is not None

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.spec.coarse_size, self.spec.coarse_downsample)

    def coarse_graph(self, image: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.coarse(self.normalize(image), *extra)

    def refine_graph(self, image: torch.Tensor, coarse_alpha: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        up = resize(coarse_alpha, self.spec.refine_size, self.spec.coarse_upsample)
        if self.refine is None:
            return clamp01(up)
        # A refiner may take the raw photo and fold the normalization into its own maths, and may
        # promise an output in [0, 1]; otherwise it gets the normalized photo and the contract's
        # [0, 1] is enforced here (both save full-resolution passes: see Refiner.forward).
        raw = getattr(self.refine, "takes_raw_image", False)
        out = self.refine(image if raw else self.normalize(image), up, *extra)
        return out if getattr(self.refine, "output_in_unit_range", False) else clamp01(out)

    def forward(self, image: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        coarse = self.coarse_graph(self.downsample(image), *(self.downsample(e) for e in extra))
        return self.refine_graph(image, coarse, *extra)

    def graph(self, role: str) -> nn.Module:
        """The module exported for a role: 'coarse', 'refine' or 'fused'."""
        return _RoleGraph(self, role)

    def example_inputs(self, role: str, batch: int = 1) -> tuple[torch.Tensor, ...]:
        s = self.spec
        size = s.coarse_size if role == "coarse" else s.refine_size
        img = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
        extra = tuple(torch.rand(batch, e.channels, *size, generator=torch.Generator().manual_seed(1)) for e in s.extra_inputs)
        if role == "refine":
            return (img, torch.rand(batch, 1, *s.coarse_size, generator=torch.Generator().manual_seed(2)), *extra)
        return (img, *extra)

    def input_names(self, role: str) -> list[str]:
        names = ["image"] + (["coarse_alpha"] if role == "refine" else [])
        return names + [e.name for e in self.spec.extra_inputs]

    @staticmethod
    def output_name(role: str) -> str:
        return "coarse_alpha" if role == "coarse" else "alpha"

    def roles(self) -> list[str]:
        return ["coarse", "refine", "fused"] if self.has_refine else ["coarse", "fused"]


class _RoleGraph(nn.Module):
    def __init__(self, pipe: MattingPipeline, role: str) -> None:
        super().__init__()
        if role not in ("coarse", "refine", "fused"):
            raise ValueError(f"unknown role {role!r}")
        if role == "refine" and not pipe.has_refine:
            raise ValueError("this model has no refine network")
        self.pipe = pipe
        self.role = role

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.role == "coarse":
            return self.pipe.coarse_graph(*inputs)
        if self.role == "refine":
            return self.pipe.refine_graph(*inputs)
        return self.pipe(*inputs)
