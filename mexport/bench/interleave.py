"""Interleaved latency: every variant in its own long-lived process, timed in turns.

Each subject (an exported artifact, or a model's float pipeline run by torch eager) is loaded once
per thread count, in a process of its own (its own memory and thread pool, no runtime imported by
another subject; torch re-creates its thread pool whenever the count changes, so one process never
switches). The parent then asks each process for one timed run in turn, round after round, so a
burst of load from elsewhere on a shared machine lands on every variant alike instead of on
whichever one happened to be running during it. The order rotates every round, so no variant
always runs right after the same neighbour.

The processes talk JSON lines over a private pipe: the worker moves its stdout to stderr first,
so a runtime that prints ("Created TensorFlow Lite XNNPACK delegate") cannot corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MexportError


@dataclass(frozen=True)
class Subject:
    """What to time: artifact ``paths`` (one artifact, as :func:`discover` finds it), or ``model``
    (a model name or BYO reference) whose float pipeline torch runs eagerly."""

    label: str
    paths: tuple[str, ...] = ()
    model: str | None = None
    runner_kw: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)  # per target, e.g. {"tflite": {"python": PATH}}

    def __post_init__(self) -> None:
        if bool(self.paths) == bool(self.model):
            raise ValueError(f"{self.label}: give artifact paths or a model, not both or neither")


class Worker:
    """The parent's handle on one subject's process."""

    def __init__(self, subject: Subject, threads: int, warmup: int) -> None:
        self.subject, self.threads = subject, threads
        self._err = tempfile.TemporaryFile(mode="w+")
        cfg = {"paths": list(subject.paths), "model": subject.model, "threads": threads, "warmup": warmup,
               "runner_kw": subject.runner_kw}
        self.proc = subprocess.Popen([sys.executable, "-m", "mexport.bench.interleave", json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True, bufsize=1)
        try:
            self.ready = self._ask(None)  # sent once loaded and warmed up
        except MexportError:
            self._err.close()
            raise

    def _fail(self) -> MexportError:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._err.seek(0)
        lines = [s for s in self._err.read().strip().splitlines() if s.strip()] or ["no output"]
        return MexportError(f"latency worker for {self.subject.label} ({self.threads} threads) failed: {lines[-1][:300]}")

    def _ask(self, msg: dict[str, Any] | None) -> dict[str, Any]:
        try:
            if msg is not None:
                self.proc.stdin.write(json.dumps(msg) + "\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
        except OSError:  # the process is gone: a broken pipe
            line = ""
        if not line:
            raise self._fail()
        return json.loads(line)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def time(self) -> float:
        """One timed run, in milliseconds."""
        return float(self._ask({"run": 1})["ms"])

    def close(self) -> dict[str, Any]:
        """Stop the process; returns its peak memory."""
        try:
            out = self._ask({"quit": True})
            self.proc.wait(timeout=30)
            return out
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._err.close()


def interleaved_latency(subjects: list[Subject], threads: tuple[int, ...] = (1, 2), rounds: int = 10, warmup: int = 2,
                        settle_s: float = 0.02, progress: Callable[[str, int, int, str], Any] | None = None) -> dict[str, Any]:
    """Time every subject ``rounds`` times at every thread count, interleaved; returns per label
    and thread count the p50/p90/min, the samples, load and first-run times and peak memory. A
    subject whose process fails to load or dies gets ``error`` instead, and the others go on.

    ``settle_s`` is a pause between turns: onnxruntime and XNNPACK worker threads spin for a moment
    after a run, and that spinning must not be charged to the next subject on a 2-core machine."""
    if rounds < 1 or not threads or min(threads) < 1:
        raise ValueError("rounds and thread counts must be >= 1")
    if len({s.label for s in subjects}) != len(subjects):
        raise ValueError("subject labels must be unique")
    out: dict[str, Any] = {s.label: {"rounds": rounds, "warmup": warmup, "threads": {}} for s in subjects}
    workers: list[Worker] = []
    try:
        pairs = [(s, t) for t in threads for s in subjects]
        for i, (s, t) in enumerate(pairs):
            try:
                workers.append(Worker(s, t, warmup))
            except MexportError as e:
                out[s.label]["error"] = str(e)
            if progress:
                progress("load", i + 1, len(pairs), f"{s.label}, {t} thr")
        samples: dict[Worker, list[float]] = {w: [] for w in workers}
        for r in range(rounds if workers else 0):
            k = r % len(workers)
            for w in workers[k:] + workers[:k]:
                if not w.alive:  # died in an earlier turn
                    continue
                try:
                    samples[w].append(w.time())
                except MexportError as e:
                    out[w.subject.label]["error"] = str(e)
                time.sleep(settle_s)
            if progress:
                progress("latency", r + 1, rounds, f"round {r + 1} of {rounds}")
        for w in workers:
            v = samples[w]
            if len(v) < rounds:
                continue
            end = w.close()
            out[w.subject.label]["runner"] = w.ready["runner"]
            out[w.subject.label]["runtime"] = w.ready.get("runtime")
            out[w.subject.label]["threads"][w.threads] = {
                "p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
                "p99_ms": float(np.percentile(v, 99)), "min_ms": float(min(v)),
                "load_ms": w.ready["load_ms"], "first_ms": w.ready["first_ms"], "peak_rss_mb": end["peak_rss_mb"],
                "samples_ms": [round(x, 3) for x in v]}
        return out
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()


def latency_records(artifacts: list, thread_counts: tuple[int, ...] = (1,), runs: int = 10, warmup: int = 2,
                    runner_kw: dict[str, dict[str, Any]] | None = None,
                    progress: Callable[[str, int, int, str], Any] | None = None) -> list[dict[str, Any]]:
    """Latency of discovered artifacts (``mexport bench``, ``validate --bench``): one record per
    artifact and thread count, all timed interleaved, each in its own process; a failure to load or
    run raises, naming the artifact."""
    from ..runtimes import versions as runtime_versions

    subjects = [Subject(f"{a.label} #{i}", paths=tuple(str(p) for p in a.paths.values()), runner_kw=runner_kw or {})
                for i, a in enumerate(artifacts)]
    lat = interleaved_latency(subjects, tuple(thread_counts), runs, warmup, progress=progress)
    versions = runtime_versions()
    rows = []
    for a, s in zip(artifacts, subjects):
        res = lat[s.label]
        if "error" in res:
            raise MexportError(f"latency measurement of {a.label} failed: {res['error']}")
        for t in thread_counts:
            m = {k: v for k, v in res["threads"][t].items() if k != "samples_ms"}
            rows.append({"label": a.label, "threads": t, "runs": runs, **m, "runner": res["runner"], "runtime": res.get("runtime"),
                         "versions": versions, "method": "each artifact in its own process, timed in interleaved turns"})
    return rows


# ----------------------------------------------------------------------------- worker side

def _runner(cfg: dict[str, Any]):
    """The runner at the configured thread count, the input it takes, and its load time."""
    t0 = time.perf_counter()
    if cfg["model"]:
        from ..models import MattingPipeline, load_model
        from ..runner import TorchRunner

        run = TorchRunner(MattingPipeline(load_model(cfg["model"])), threads=cfg["threads"])
    else:
        from ..runtimes import get_runtime
        from ..validate.artifacts import discover

        found = discover(cfg["paths"])
        if len(found) != 1:
            raise MexportError(f"{cfg['paths']}: expected one artifact, found {len(found)}")
        # The runtime imported before the clock starts: "load" is the runtime reading the model,
        # not Python importing it. With --tflite-python it includes starting that Python and its
        # runtime: what an app pays too.
        get_runtime(found[0].target).preload()
        t0 = time.perf_counter()
        run = found[0].runner(threads=cfg["threads"], **cfg.get("runner_kw", {}).get(found[0].target, {}))
    load_ms = (time.perf_counter() - t0) * 1e3
    x = np.random.default_rng(0).random((1, 3, *run.spec.refine_size), dtype=np.float32)
    return run, x, load_ms


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a worker started by a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve(cfg: dict[str, Any], reply: Callable[[dict[str, Any]], None]) -> None:
    run, x, load_ms = _runner(cfg)
    t0 = time.perf_counter()
    run(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(cfg["warmup"]):
        run(x)
    reply({"load_ms": load_ms, "first_ms": first_ms, "runner": run.name, "runtime": getattr(run, "runtime", None)})
    for line in sys.stdin:
        if json.loads(line).get("quit"):
            reply({"peak_rss_mb": peak_rss_mb()})
            return
        t0 = time.perf_counter()
        run(x)
        reply({"ms": (time.perf_counter() - t0) * 1e3})


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the runtimes print goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def reply(d: dict[str, Any]) -> None:
        protocol.write(json.dumps(d) + "\n")
        protocol.flush()

    _serve(json.loads(sys.argv[1]), reply)


if __name__ == "__main__":
    main()
