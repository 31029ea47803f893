"""The Runner protocol: every artifact, and the float pipeline itself, is called the same way.

A runner takes the fused graph's inputs as numpy arrays in the contract's layout (NCHW float32,
photo in [0, 1] at refine size, extra inputs likewise) and returns alpha as 1x1xHxW float32. A
runner for an NHWC or uint8 artifact converts internally, so one fidelity function serves all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .spec import PipelineSpec

if TYPE_CHECKING:  # torch is heavy: runners of exported artifacts must not pay for it
    from .models.pipeline import MattingPipeline


@runtime_checkable
class Runner(Protocol):
    name: str
    spec: PipelineSpec

    def __call__(self, image: np.ndarray, *extra: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """The float reference, reachable through the same protocol as every artifact."""

    def __init__(self, pipeline: "MattingPipeline", threads: int | None = None) -> None:
        self.pipeline = pipeline.eval()
        self.spec = pipeline.spec
        self.name = f"torch-fp32:{pipeline.model_info.name}"
        self.threads = threads

    def __call__(self, image: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.pipeline(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                                *(torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32)) for e in extra))
        want = (image.shape[0], 1, *image.shape[2:])
        if tuple(out.shape) != want:  # a model of the user's: its contract, checked where it is first run
            from .errors import InputError

            raise InputError(f"model {self.pipeline.model_info.name!r} returns alpha of shape {tuple(out.shape)}; "
                             f"the contract is one channel at the input's size, {want}")
        return out.numpy().astype(np.float32)


class PairRunner:
    """A coarse + refine pair of runners, doing the in-between downsample on the host exactly as
    the fused graph does it (the same torch op)."""

    def __init__(self, coarse: Runner, refine: Runner, spec: PipelineSpec, name: str = "") -> None:
        self.coarse, self.refine, self.spec = coarse, refine, spec
        self.name = name or f"pair({coarse.name}, {refine.name})"
        self.runtime = getattr(coarse, "runtime", None)  # both halves run on the same runtime

    def __call__(self, image: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        import torch

        from .models.pipeline import resize

        def down(a: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            return resize(t, self.spec.coarse_size, self.spec.coarse_downsample).numpy()

        coarse_alpha = self.coarse(down(image), *(down(e) for e in extra))
        return self.refine(image, coarse_alpha, *extra)


def run_photo(runner: Runner, photo: np.ndarray, extra: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """Photo (HxWx3 uint8) -> alpha at the photo's size, through the spec's host-side steps."""
    from .photos import prepare, restore

    tensor, placement = prepare(photo, runner.spec)
    return restore(runner(tensor, *extra), placement, runner.spec)
