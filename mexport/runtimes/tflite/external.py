"""A LiteRT runner whose interpreter lives in another Python (``--tflite-python PATH``).

App teams pin old runtimes: tflite-runtime 2.14 needs numpy < 2 and cannot share mexport's
environment. :class:`SubprocessLiteRTRunner` starts ``worker.py`` (numpy and the runtime
only) in that Python once, keeps it for every call, and reports which runtime and version ran the
model. Layout and quantized I/O are converted here, with the tensor details the old runtime itself
reported; a model the old runtime cannot load raises :class:`UnsupportedOpError` naming the op.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactRunError, InputError, UnsupportedOpError
from ...spec import PipelineSpec
from .runner import contract_input_names, decode, encode

WORKER = Path(__file__).with_name("worker.py")

# The interpreter's own words when op registration fails (tensorflow/lite/core/model_builder and
# op_resolver): a known op at a version it lacks, an opcode newer than its schema, a custom op.
_VERSION = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
_CODE = re.compile(r"Op builtin_code out of range: (\d+)")
_CUSTOM = re.compile(r"Encountered unresolved custom op: ([^\s.]+)")


def blocking_op(message: str, model: bytes | None = None) -> tuple[str, int | None] | None:
    """(op, version) that a runtime's load error names, or None if the error is about something
    else. An opcode the old runtime has never heard of comes back as a number: its name and version
    are looked up in the model with this environment's newer schema."""
    if m := _VERSION.search(message):
        return m.group(1), int(m.group(2))
    if m := _CUSTOM.search(message):
        return f"CUSTOM:{m.group(1)}", None
    if m := _CODE.search(message):
        code = int(m.group(1))
        from ai_edge_litert import schema_py_generated as fb

        names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        version = None
        if model is not None:
            root = fb.Model.GetRootAsModel(model, 0)
            for i in range(root.OperatorCodesLength()):
                c = root.OperatorCodes(i)
                if max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) == code:
                    version = c.Version()
        return names.get(code, f"builtin code {code}"), version
    return None


class SubprocessLiteRTRunner:
    """The Runner protocol over a worker process in ``python``; ``runtime`` says what ran it
    ({"name", "version", "python"}). Call :meth:`close` (or drop the runner) to end the worker."""

    def __init__(self, path: str | Path, python: str | Path, threads: int | None = None, xnnpack: bool = True) -> None:
        from .flatbuffer import read_provenance

        self.path = Path(path)
        self.provenance = read_provenance(self.path)
        self.spec = PipelineSpec.from_dict(self.provenance.spec)
        self.python = str(python)
        self.threads, self.xnnpack = threads, xnnpack
        self._tmp = tempfile.TemporaryDirectory(prefix="mexport-litert-")
        self._err = tempfile.TemporaryFile(mode="w+")
        try:
            self.proc = subprocess.Popen([self.python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._err, text=True, bufsize=1)
        except OSError as e:
            self._cleanup()
            raise InputError(f"--tflite-python {self.python}: cannot start it ({e.strerror or e})") from None
        try:
            hello = self._recv()
            if not hello["ok"]:
                raise InputError(f"--tflite-python {self.python}: {hello['error']} (install tflite-runtime or ai-edge-litert there)")
            self.runtime = {"name": hello["runtime"], "version": hello["version"], "python": self.python}
            self._load()
        except BaseException:
            self.close()
            raise
        self.name = f"{self.runtime['name']}-{self.runtime['version']}:{self.path.name}:{self.provenance.precision}" \
                    + ("" if xnnpack else ":builtin")

    # ------------------------------------------------------------------ protocol with the worker

    def _recv(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""  # type: ignore[union-attr]
        if not line:
            raise ArtifactRunError(f"{self.python} ended while running {self.path.name}: {self._stderr_tail()}")
        return json.loads(line)

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:  # a broken pipe: the worker is gone
            raise ArtifactRunError(f"{self.python} ended while running {self.path.name}: {self._stderr_tail()}") from None
        return self._recv()

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._err.seek(0)
        lines = [s for s in self._err.read().splitlines() if s.strip()]
        return lines[-1][:300] if lines else f"exit code {self.proc.returncode}, no output"

    def _load(self) -> None:
        r = self._ask({"cmd": "load", "model": str(self.path), "threads": self.threads or 1, "xnnpack": self.xnnpack})
        rt = f"{self.runtime['name']} {self.runtime['version']}"
        if not r["ok"]:
            op = blocking_op(r["error"], self.path.read_bytes())
            if op is not None:
                name, version = op
                what = f"op {name}" + (f" version {version}" if version is not None else "")
                raise UnsupportedOpError(f"{self.path.name}: {rt} ({self.python}) cannot load it: it has no {what} "
                                         f"(the runtime said: {r['error'].splitlines()[0][:200]})",
                                         runtime=self.runtime["name"], runtime_version=self.runtime["version"],
                                         op=name, op_version=version)
            raise InputError(f"{self.path.name}: {rt} ({self.python}) cannot load it ({r['error'].splitlines()[0][:300]})")
        sigs = r["signatures"]
        if len(sigs) != 1:
            raise InputError(f"{self.path}: expected one signature, found {sorted(sigs)}")
        self.signature, sig = next(iter(sigs.items()))
        contract = contract_input_names(self.provenance, self.spec)
        if sorted(sig["inputs"]) != sorted(contract):
            raise InputError(f"{self.path}: inputs {sorted(sig['inputs'])} are not the contract's {contract}")
        self.input_names = contract
        self.inputs = [sig["inputs"][n] for n in contract]
        self.output_name = next(iter(sig["outputs"]))
        self.output = sig["outputs"][self.output_name]
        shape = self.output["shape"]
        self.nhwc = int(shape[-1]) == 1 and int(shape[1]) != 1

    # ------------------------------------------------------------------ runner

    def _feed_file(self, inputs: tuple[np.ndarray, ...]) -> str:
        if len(inputs) != len(self.input_names):
            raise InputError(f"{self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}")
        feed = Path(self._tmp.name) / "in.npz"
        np.savez(feed, **{n: encode(a, d, self.nhwc) for n, a, d in zip(self.input_names, inputs, self.inputs)})
        return str(feed)

    def _run(self, inputs: tuple[np.ndarray, ...], repeat: int, keep: bool) -> dict[str, Any]:
        out = Path(self._tmp.name) / "out.npz"
        r = self._ask({"cmd": "run", "signature": self.signature, "inputs": self._feed_file(inputs),
                       "outputs": str(out) if keep else None, "repeat": repeat})
        if not r["ok"]:
            raise ArtifactRunError(f"{self.runtime['name']} {self.runtime['version']} failed to run {self.path.name}: "
                                   f"{r['error'].splitlines()[0][:300]}")
        return r

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        self._run(inputs, 1, keep=True)
        with np.load(Path(self._tmp.name) / "out.npz") as z:
            y = z[self.output_name]
        return decode(y, self.output, self.nhwc)

    def invoke_ms(self, *inputs: np.ndarray, repeat: int = 1) -> list[float]:
        """Times of ``repeat`` invokes, measured inside the worker: the runtime's cost without
        this process's file exchange, for comparing runtimes."""
        return self._run(inputs, repeat, keep=False)["ms"]

    def delegation(self) -> dict[str, Any]:
        """What the old runtime's default delegate (XNNPACK) took, as :func:`tflite.delegation`
        counts it. Call after a run: tflite-runtime 2.14 delegates at the first invoke."""
        from .inspection import delegation_of

        r = self._ask({"cmd": "plan"})
        if not r["ok"]:
            raise ArtifactRunError(f"{self.runtime['name']} {self.runtime['version']}: no execution plan ({r['error'][:200]})")
        return delegation_of(r["nodes"])

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if proc is not None and proc.stdout:
            proc.stdout.close()
        self._cleanup()

    def _cleanup(self) -> None:
        self._err.close()
        self._tmp.cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "SubprocessLiteRTRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
