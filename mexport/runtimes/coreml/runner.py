"""Runners for Core ML packages, called like the graph (see mexport.runner.Runner).

``CoreMLEmulatedRunner`` runs the package's ML Program with mexport's MIL executor (any OS);
``CoreMLRunner`` runs it with Core ML itself and exists only on macOS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from ...spec import PipelineSpec
from .package import read_provenance


def _feature_kinds(spec) -> dict[str, str]:
    return {i.name: i.type.WhichOneof("Type") for i in spec.description.input}


class CoreMLEmulatedRunner:
    """The package's program on numpy/torch CPU kernels (``mil_executor``).

    Inputs are the contract's NCHW float32 arrays in [0, 1]. An image input is fed as pixel values
    (x * 255) to the program, which scales them by 1/255 itself, exactly as Core ML feeds a pixel
    buffer; ``quantize_pixels=True`` also rounds them to whole 8-bit values, as a real
    CVPixelBuffer would (off by default so the comparison isolates the program's own numerics).
    """

    def __init__(self, path: str | Path, threads: int | None = None, quantize_pixels: bool = False) -> None:
        from .mil_executor import MilExecutor

        self.path = Path(path)
        self.executor = MilExecutor(self.path)
        self.provenance = read_provenance(self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        self.kinds = _feature_kinds(self.executor.package.spec)
        self.input_names = [i.name for i in self.executor.package.spec.description.input]
        self.output_name = self.executor.package.spec.description.output[0].name
        self.threads = threads
        self.quantize_pixels = quantize_pixels
        self.name = f"coreml-emulated:{self.path.name}:{self.provenance.precision}"

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feeds = {}
        for name, a in zip(self.input_names, inputs):
            a = np.asarray(a, dtype=np.float32)
            if self.kinds[name] == "imageType":
                a = a * 255.0
                if self.quantize_pixels:
                    a = np.clip(np.round(a), 0, 255)
            feeds[name] = a
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return np.asarray(self.executor(**feeds)[self.output_name], dtype=np.float32)


class CoreMLRunner:  # pragma: no cover - needs macOS; written to the coremltools API, never run here
    """Core ML's own ``MLModel.predict`` (macOS only) with the given compute units
    (ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE)."""

    def __init__(self, path: str | Path, compute_units: str = "ALL") -> None:
        import coremltools as ct


        self.path = Path(path)
        self.provenance = read_provenance(self.path)  # checks that the package names no file outside it
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        self.model = ct.models.MLModel(str(self.path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self.model.get_spec()
        self.kinds = _feature_kinds(spec)
        self.input_names = [i.name for i in spec.description.input]
        self.output_name = spec.description.output[0].name
        self.name = f"coreml:{self.path.name}:{self.provenance.precision}:{compute_units}"

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        from PIL import Image

        feeds = {}
        for name, a in zip(self.input_names, inputs):
            a = np.asarray(a, dtype=np.float32)
            if self.kinds[name] == "imageType":  # a pixel buffer holds 8-bit values
                feeds[name] = Image.fromarray(np.clip(np.round(a[0].transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8))
            else:
                feeds[name] = a
        return np.asarray(self.model.predict(feeds)[self.output_name], dtype=np.float32)
