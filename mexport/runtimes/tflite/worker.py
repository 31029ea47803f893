"""A LiteRT interpreter in another Python, driven over stdin/stdout by ``external.py``.

Run as a script file (``python worker.py``) by an interpreter that has no mexport: app teams
pin old runtimes (tflite-runtime 2.14 needs numpy < 2), so this file imports only the standard
library, numpy and the runtime. One JSON request per line on stdin, one JSON reply per line on
stdout; arrays travel as .npz files whose paths the request names. One process serves many calls,
so a validation run pays for starting Python and loading the model once, not once per photo.

Run as a script, this file puts its own folder first on ``sys.path``: no module beside it may be
named like a standard-library module or one the runtime imports (an ``inspect.py`` here broke
tflite_runtime's import).

Requests: {"cmd": "load", "model", "threads", "xnnpack"} -> signatures with tensor details;
{"cmd": "run", "signature", "inputs": NPZ, "outputs": NPZ, "repeat"} -> invoke times in ms;
{"cmd": "plan"} -> the interpreter's nodes (to count what its XNNPACK took); {"cmd": "quit"}. Every reply has "ok"; a failure carries the runtime's own message in "error".
"""

import json
import os
import sys
import time
import traceback


def _runtime():
    """The interpreter class and (name, version): tflite-runtime first, the name old apps pin."""
    try:
        import tflite_runtime
        from tflite_runtime import interpreter
        return interpreter, "tflite-runtime", getattr(tflite_runtime, "__version__", "unknown")
    except ImportError:
        pass
    import ai_edge_litert
    from ai_edge_litert import interpreter
    try:
        from importlib.metadata import version
        v = version("ai-edge-litert")
    except Exception:
        v = getattr(ai_edge_litert, "__version__", "unknown")
    return interpreter, "ai-edge-litert", v


def _detail(d):
    """A tensor detail as JSON: what the client needs to encode inputs and decode outputs."""
    q = d.get("quantization") or (0.0, 0)
    return {"name": d["name"], "index": int(d["index"]), "shape": [int(s) for s in d["shape"]],
            "dtype": str(d["dtype"].__name__ if hasattr(d["dtype"], "__name__") else d["dtype"]),
            "quantization": [float(q[0]), int(q[1])]}


class Worker:
    def __init__(self, module):
        self.module = module
        self.interpreter = None
        self.runners = {}

    def load(self, req):
        kw = {}
        if not req.get("xnnpack", True):
            kw["experimental_op_resolver_type"] = self.module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = self.module.Interpreter(model_path=req["model"], num_threads=int(req.get("threads") or 1), **kw)
        it.allocate_tensors()
        self.interpreter, self.runners = it, {}
        sigs = {}
        for key in it.get_signature_list():
            r = it.get_signature_runner(key)
            self.runners[key] = r
            sigs[key] = {"inputs": {n: _detail(d) for n, d in r.get_input_details().items()},
                         "outputs": {n: _detail(d) for n, d in r.get_output_details().items()}}
        return {"signatures": sigs}

    def run(self, req):
        import numpy as np

        runner = self.runners[req["signature"]]
        with np.load(req["inputs"]) as z:
            feed = {k: z[k] for k in z.files}
        times, out = [], None
        for _ in range(max(1, int(req.get("repeat", 1)))):
            t0 = time.perf_counter()
            out = runner(**feed)
            times.append((time.perf_counter() - t0) * 1e3)
        if req.get("outputs"):
            np.savez(req["outputs"], **out)
        return {"ms": times}

    def plan(self, req):
        """The execution plan, delegate partitions included (some runtimes apply their default
        delegate only at the first invoke: ask after a run)."""
        return {"nodes": [{"index": int(o["index"]), "op_name": o["op_name"], "inputs": [int(i) for i in o["inputs"]],
                           "outputs": [int(i) for i in o["outputs"]]} for o in self.interpreter._get_ops_details()]}


def main():
    # Replies get a private copy of stdout; fd 1 then points at stderr, so anything the runtime's
    # C++ side prints (delegate banners, warnings) cannot corrupt the reply stream.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj):
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        module, name, version = _runtime()
    except Exception as e:
        reply({"ok": False, "error": f"no LiteRT runtime importable: {e}", "python": sys.version.split()[0]})
        return
    import numpy as np

    reply({"ok": True, "runtime": name, "version": version, "numpy": np.__version__, "python": sys.version.split()[0],
           "executable": sys.executable})
    worker = Worker(module)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("cmd") == "quit":
            return
        try:
            reply({"ok": True, **getattr(worker, req["cmd"])(req)})
        except Exception as e:
            # The whole message: the runtime lists every op it could not resolve, one per line.
            reply({"ok": False, "error": str(e).strip() or type(e).__name__, "kind": type(e).__name__,
                   "trace": traceback.format_exc(limit=3)})


if __name__ == "__main__":
    main()
