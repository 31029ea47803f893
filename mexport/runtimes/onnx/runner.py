"""onnxruntime's runner for .onnx and .ort files (and a plain session for reading one), called like the graph it runs (see mexport.runner.Runner)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ArtifactRunError, InputError
from ...spec import PipelineSpec


class OnnxRunner:
    """onnxruntime (an .onnx or an ORT format .ort file), CPU provider, sequential execution;
    ``threads`` sets intra-op threads."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        from .convert import session_provenance

        self.path = Path(path)
        opts = ort.SessionOptions()
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InputError(f"{self.path}: onnxruntime cannot load it ({str(e).splitlines()[0][:300]})") from None
        # The session's metadata, not a second parse of the file: .onnx and .ort alike, and the
        # load time the benchmarks measure is one load.
        self.provenance = session_provenance(self.session, self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.name = f"onnxruntime:{self.path.name}:{self.provenance.precision}"
        self.threads = threads

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feed = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(self.input_names, inputs)}
        try:
            return self.session.run(None, feed)[0].astype(np.float32)
        except Exception as e:  # onnxruntime raises its own types (INVALID_ARGUMENT, RUNTIME_EXCEPTION)
            raise ArtifactRunError(f"onnxruntime failed to run {self.path.name}: {str(e).splitlines()[0][:300]}") from None


def load_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(f"{path}: onnxruntime cannot load it as an ORT format model ({str(e).splitlines()[0][:300]})") from None
