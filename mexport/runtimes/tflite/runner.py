"""LiteRT runners: in this process (ai_edge_litert), or in another Python (``--tflite-python``,
see external.py) for older runtimes such as tflite-runtime 2.14. Both follow the Runner
protocol: NCHW float32 in [0, 1] in, 1x1xHxW float32 alpha out; layout, uint8 and int8 I/O are
converted here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from ...runtime import native_logs_silenced
from ...spec import PipelineSpec


def encode(a: np.ndarray, detail: dict, nhwc: bool) -> np.ndarray:
    """Contract-layout float input -> what the tensor takes (layout, uint8 pixels, int8 codes)."""
    a = np.asarray(a, dtype=np.float32)
    if nhwc:
        a = a.transpose(0, 2, 3, 1)
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(a)
    scale, zero = detail["quantization"]
    if dtype == np.uint8 and scale == 0.0:  # --input uint8: 0-255 pixels, the graph divides by 255
        return np.ascontiguousarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8))
    info = np.iinfo(dtype)
    return np.ascontiguousarray(np.clip(np.round(a / scale + zero), info.min, info.max).astype(dtype))


def decode(y: np.ndarray, detail: dict, nhwc: bool) -> np.ndarray:
    if np.dtype(detail["dtype"]) != np.float32:
        scale, zero = detail["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    if nhwc:
        y = y.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y, dtype=np.float32)


def contract_input_names(provenance, spec: PipelineSpec) -> list[str]:
    """The role's inputs in the contract's order (signatures list them sorted by name)."""
    return ["image"] + (["coarse_alpha"] if provenance.role == "refine" else []) + [e.name for e in spec.extra_inputs]


class LiteRTRunner:
    """ai_edge_litert's Interpreter; ``threads`` sets num_threads, ``xnnpack=False`` runs the builtin kernels."""

    def __init__(self, path: str | Path, threads: int | None = None, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from .flatbuffer import read_provenance

        self.path = Path(path)
        self.provenance = read_provenance(self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        kw = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        try:
            with native_logs_silenced():
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads or 1, **kw)
                self.interpreter.allocate_tensors()
        except Exception as e:
            raise InputError(f"{self.path}: LiteRT cannot load it ({str(e).splitlines()[0][:300]})") from None
        sigs = self.interpreter.get_signature_list()
        self.signature = next(iter(sigs))
        # Signature inputs come back sorted by name; a runner takes them in the contract's order.
        contract = contract_input_names(self.provenance, self.spec)
        names = list(sigs[self.signature]["inputs"])
        if sorted(names) != sorted(contract):
            raise InputError(f"{self.path}: inputs {names} are not the contract's {contract}")
        self.input_names = contract
        self.output_name = sigs[self.signature]["outputs"][0]
        self.runner = self.interpreter.get_signature_runner(self.signature)
        details = self.runner.get_input_details()
        self.inputs = [details[n] for n in self.input_names]
        self.output = self.runner.get_output_details()[self.output_name]
        self.nhwc = int(self.output["shape"][-1]) == 1 and int(self.output["shape"][1]) != 1
        self.threads, self.xnnpack = threads, xnnpack
        self.runtime = {"name": "ai-edge-litert", "version": _litert_version()}
        self.name = f"litert:{self.path.name}:{self.provenance.precision}" + ("" if xnnpack else ":builtin")

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feed = {n: encode(a, d, self.nhwc) for n, a, d in zip(self.input_names, inputs, self.inputs)}
        try:
            y = self.runner(**feed)[self.output_name]
        except RuntimeError as e:
            from ...errors import ArtifactRunError

            raise ArtifactRunError(f"LiteRT failed to run {self.path.name}: {str(e).splitlines()[0]}") from None
        return decode(y, self.output, self.nhwc)


def _litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:  # ai_edge_litert importable but not installed as a distribution
        return "unknown"
