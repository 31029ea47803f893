"""LiteRT runners: in this process (ai_edge_litert), or in another Python (``--tflite-python``)
for older runtimes such as tflite-runtime 2.14. Both follow the Runner protocol: NCHW float32 in
[0, 1] in, 1x1xHxW float32 alpha out; layout, uint8 and int8 I/O are converted here."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError, MexportError
from ..spec import PipelineSpec


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


class LiteRTRunner:
    """ai_edge_litert's Interpreter; ``threads`` sets num_threads, ``xnnpack=False`` runs the builtin kernels."""

    def __init__(self, path: str | Path, threads: int | None = None, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from ..export.tflite import TfliteTarget

        self.path = Path(path)
        self.provenance = TfliteTarget().read_provenance(self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        kw = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads or 1, **kw)
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise InputError(f"{self.path}: LiteRT cannot load it ({str(e).splitlines()[0][:300]})") from None
        sigs = self.interpreter.get_signature_list()
        self.signature = next(iter(sigs))
        # Signature inputs come back sorted by name; a runner takes them in the contract's order.
        contract = ["image"] + (["coarse_alpha"] if self.provenance.role == "refine" else []) + [e.name for e in self.spec.extra_inputs]
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
        self.name = f"litert:{self.path.name}:{self.provenance.precision}" + ("" if xnnpack else ":builtin")

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feed = {n: encode(a, d, self.nhwc) for n, a, d in zip(self.input_names, inputs, self.inputs)}
        try:
            y = self.runner(**feed)[self.output_name]
        except RuntimeError as e:
            from ..errors import ArtifactRunError

            raise ArtifactRunError(f"LiteRT failed to run {self.path.name}: {str(e).splitlines()[0]}") from None
        return decode(y, self.output, self.nhwc)


_WORKER = r'''
import json, sys, numpy as np
cfg = json.loads(sys.argv[1])
try:
    from ai_edge_litert.interpreter import Interpreter
    import ai_edge_litert as rt; runtime = "ai-edge-litert"
except ImportError:
    from tflite_runtime.interpreter import Interpreter
    import tflite_runtime as rt; runtime = "tflite-runtime"
version = getattr(rt, "__version__", "?")
try:
    it = Interpreter(model_path=cfg["model"], num_threads=cfg["threads"])
    it.allocate_tensors()
except Exception as e:
    print(json.dumps({"ok": False, "runtime": runtime, "version": version, "error": str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})); sys.exit(0)
ins = {d["name"]: d for d in it.get_input_details()}
data = np.load(cfg["inputs"])
for name, d in ins.items():
    it.set_tensor(d["index"], data[name])
it.invoke()
o = it.get_output_details()[0]
np.save(cfg["output"], it.get_tensor(o["index"]))
print(json.dumps({"ok": True, "runtime": runtime, "version": version}))
'''


class SubprocessLiteRTRunner(LiteRTRunner):
    """Runs the model in another Python (an older runtime: tflite-runtime or ai-edge-litert) and
    reports which runtime and version ran it in ``runtime``. Encoding/decoding is done here, with the
    tensor details read by this process's ai_edge_litert."""

    def __init__(self, path: str | Path, python: str | Path, threads: int | None = None) -> None:
        super().__init__(path, threads=threads)
        self.python = str(python)
        self.runtime: dict | None = None
        probe = self._run(None)
        if not probe["ok"]:
            raise InputError(f"{self.path.name}: {probe['runtime']} {probe['version']} ({self.python}) cannot load it: {probe['error']}")
        self.name = f"{probe['runtime']}-{probe['version']}:{self.path.name}:{self.provenance.precision}"

    def _run(self, inputs: tuple[np.ndarray, ...] | None) -> dict:
        tensor_names = [d["name"] for d in self.interpreter.get_input_details()]
        by_sig = {d["index"]: n for n, d in zip(self.input_names, self.inputs)}
        with tempfile.TemporaryDirectory() as tmp:
            feeds = {}
            for d, tname in zip(self.interpreter.get_input_details(), tensor_names):
                sig_name = by_sig[d["index"]]
                a = inputs[self.input_names.index(sig_name)] if inputs is not None else np.zeros((1, *self._nchw_shape(d)), np.float32)
                feeds[tname] = encode(a, d, self.nhwc)
            np.savez(Path(tmp) / "in.npz", **feeds)
            cfg = {"model": str(self.path), "threads": self.threads or 1, "inputs": str(Path(tmp) / "in.npz"), "output": str(Path(tmp) / "out.npy")}
            proc = subprocess.run([self.python, "-c", _WORKER, json.dumps(cfg)], capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise MexportError(f"{self.python} failed running {self.path.name}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            if result["ok"] and inputs is not None:
                result["alpha"] = np.load(Path(tmp) / "out.npy")
            self.runtime = {k: result[k] for k in ("runtime", "version")}
            return result

    def _nchw_shape(self, d) -> tuple[int, ...]:
        s = [int(x) for x in d["shape"]][1:]
        return (s[2], s[0], s[1]) if self.nhwc else tuple(s)

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        out = self._run(inputs)
        if not out["ok"]:
            raise MexportError(f"{self.name}: {out['error']}")
        return decode(out["alpha"], self.output, self.nhwc)
