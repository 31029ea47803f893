"""ExecuTorch's runner for .pte programs (``executorch.runtime``), called like the graph it runs
(see mexport.runner.Runner): NCHW float32 in, 1x1xHxW float32 alpha out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ArtifactRunError, InputError
from ...runtime import contract_input_names, native_logs_silenced, parse_provenance
from ...spec import PipelineSpec, Provenance
from .convert import PROVENANCE_METHOD


def load_program(path: Path):
    from executorch.runtime import Runtime

    try:
        with native_logs_silenced():
            return Runtime.get().load_program(Path(path))
    except Exception as e:  # the runtime raises RuntimeError/ValueError with the reason
        raise InputError(f"{path}: ExecuTorch cannot load it ({str(e).splitlines()[0][:300] if str(e) else type(e).__name__})") from None


def program_provenance(program, path: Path) -> Provenance:
    if PROVENANCE_METHOD not in program.method_names:
        raise InputError(f"{path}: no mexport provenance record in the program (no {PROVENANCE_METHOD} method)")
    value = program.load_method(PROVENANCE_METHOD).execute([])[0]
    return parse_provenance(value, path)


def read_provenance(path: Path) -> Provenance:
    if not Path(path).exists():
        raise InputError(f"artifact not found: {path}")
    return program_provenance(load_program(path), path)


def set_threads(threads: int | None) -> None:
    """XNNPACK's thread pool in ExecuTorch's Python bindings, set before a method loads (the only
    setter the bindings offer is marked experimental and unsafe while a method runs)."""
    if threads:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        with native_logs_silenced():
            _unsafe_reset_threadpool(int(threads))


class ExecutorchRunner:
    """A .pte's ``forward`` through ``executorch.runtime``; ``threads`` sizes XNNPACK's thread pool."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from importlib.metadata import version

        self.path = Path(path)
        set_threads(threads)
        self.program = load_program(self.path)
        self.provenance = program_provenance(self.program, self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        with native_logs_silenced():
            self.method = self.program.load_method("forward")
        self.input_names = contract_input_names(self.provenance)
        self.threads = threads
        self.runtime = {"name": "executorch", "version": version("executorch")}
        self.name = f"executorch:{self.path.name}:{self.provenance.precision}"

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        import torch

        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feed = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in inputs]
        try:
            out = self.method.execute(feed)[0]
        except Exception as e:  # the runtime raises RuntimeError with its error code
            raise ArtifactRunError(f"ExecuTorch failed to run {self.path.name}: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
        return out.numpy().astype(np.float32)
