"""Latency: each artifact measured in its own subprocess (clean memory, no shared thread pools).

Reports load time, first inference, steady-state p50/p90/p99 after warm-up, peak RSS of the
measuring process, with the machine and runtime versions next to the numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import MexportError


def _worker(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from .artifacts import discover
    from .interleave import peak_rss_mb

    (art,) = discover(cfg["paths"])  # the paths of one artifact: a fused file, or a coarse+refine pair
    # Import the runtime before timing, so "load" is the runtime reading the model, not Python imports.
    import onnxruntime  # noqa: F401
    import ai_edge_litert.interpreter  # noqa: F401

    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    # With --tflite-python, "load" includes starting that Python and its runtime: what an app pays too.
    runner = art.runner(threads=cfg["threads"], **cfg.get("runner_kw", {}).get(art.target, {}))
    load_ms = (time.perf_counter() - t0) * 1e3
    spec = art.provenance.pipeline_spec
    x = np.random.default_rng(0).random((1, 3, *spec.refine_size), dtype=np.float32)
    t = time.perf_counter()
    runner(x)
    first_ms = (time.perf_counter() - t) * 1e3
    for _ in range(cfg["warmup"]):
        runner(x)
    times = []
    for _ in range(cfg["runs"]):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
    rss = peak_rss_mb()
    return {"threads": cfg["threads"], "load_ms": load_ms, "first_ms": first_ms, "runs": cfg["runs"],
            "p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "p99_ms": float(np.percentile(times, 99)), "min_ms": float(min(times)),
            "peak_rss_mb": rss, "baseline_rss_mb": rss0, "runner": runner.name, "runtime": getattr(runner, "runtime", None)}


def measure(paths: list[str], label: str, threads: int = 1, runs: int = 10, warmup: int = 2, timeout: float = 900,
            runner_kw: dict[str, dict] | None = None) -> dict[str, Any]:
    """Measure one artifact (by discover() label) in a fresh Python process; ``runner_kw`` maps a
    target to its runner's options (``{"tflite": {"python": PATH}}`` for an older LiteRT runtime)."""
    from .validate import runtime_versions

    cfg = {"paths": [str(p) for p in paths], "label": label, "threads": threads, "runs": runs, "warmup": warmup,
           "runner_kw": runner_kw or {}}
    proc = subprocess.run([sys.executable, "-m", "mexport.validate.latency", json.dumps(cfg)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MexportError(f"latency measurement of {label} failed: {last}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["versions"] = runtime_versions()
    return out


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
