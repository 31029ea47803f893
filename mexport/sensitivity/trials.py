"""Trials: one recipe in, one quantized fused model built and run on the photos, per-photo alpha
PSNR vs float out.

A trial is a plain function of picklable arguments (:func:`run_trial`) over state each worker
loads once (:func:`init_worker`): the target's trial builder and the photos' tensors and float
alphas, from files in the work directory. So any ``concurrent.futures.Executor`` runs them: the
default is a process pool on this machine's cores; a cluster engine's executor (Dask's, Ray's)
with the work directory on shared storage runs them the same way.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class TrialResult:
    key: str
    psnr: dict[str, float]  # photo -> alpha PSNR vs float (dB)
    seconds: float
    artifact: str | None = None  # kept file, when asked for

    @property
    def median(self) -> float:
        return float(np.median(list(self.psnr.values())))

    @property
    def worst(self) -> float:
        return float(min(self.psnr.values()))

    @property
    def worst_photo(self) -> str:
        return min(self.psnr, key=self.psnr.get)


def save_photo_set(path: Path, names: list[str], inputs: list[np.ndarray], refs: list[np.ndarray]) -> None:
    np.savez(path, names=np.array(names), **{f"x{i}": x for i, x in enumerate(inputs)}, **{f"r{i}": r for i, r in enumerate(refs)})


def _load_set(path: Path):
    data = np.load(path)
    names = [str(n) for n in data["names"]]
    return [(n, data[f"x{i}"], data[f"r{i}"]) for i, n in enumerate(names)]


def init_worker(trials, runtime: str, sets: tuple[tuple[str, str], ...], threads: int = 1) -> None:
    """Once per worker process: the trial builder and the photo sets ((name, npz file), ...)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    _STATE.clear()
    _STATE.update(trials=trials, runtime=runtime, sets={k: Path(v) for k, v in sets}, loaded={}, threads=threads)


def run_trial(setup: tuple, key: str, recipe: dict, photo_set: str, keep: str | None = None,
              only: tuple[str, ...] | None = None, exact: bool = False) -> TrialResult:
    """Build the fused model by ``recipe`` (a Recipe's dict), run it on ``photo_set`` (its photos
    named in ``only``, when given), compare. ``exact``: build it as the export will (the trial
    builder's own calibration of the recipe's graph), for a verdict; trials otherwise reuse ranges.
    ``setup`` are :func:`init_worker`'s arguments: a worker that has not seen them (any executor's,
    without an initializer) sets itself up on its first trial."""
    from ..quantize.recipe import Recipe

    if _STATE.get("setup") != setup:
        init_worker(*setup)
        _STATE["setup"] = setup
    from ..runtimes import open_runner
    from ..validate import metrics

    t0 = time.perf_counter()
    trials = _STATE["trials"]
    photos = _STATE["loaded"].get(photo_set)
    if photos is None:
        photos = _STATE["loaded"][photo_set] = _load_set(_STATE["sets"][photo_set])
    if only is not None:
        photos = [p for p in photos if p[0] in only]
    path = Path(keep) if keep else trials.workdir / "trials" / f"{os.getpid()}{_suffix(_STATE['runtime'])}"
    trials.build(Recipe.from_dict(recipe), path, exact=exact)
    try:
        runner = open_runner(_STATE["runtime"], {"fused": path}, threads=_STATE["threads"])
        psnr = {}
        for name, x, ref in photos:
            out = runner(x)
            psnr[name] = metrics.alpha_psnr(out, ref) if np.isfinite(out).all() else float("-inf")
        del runner
    finally:
        if not keep:
            path.unlink(missing_ok=True)
    return TrialResult(key, psnr, time.perf_counter() - t0, keep)


def _suffix(runtime: str) -> str:
    from ..runtimes import get_runtime

    return get_runtime(runtime).suffix


class TrialPool:
    """Runs trials on ``executor`` (default: a process pool of ``workers`` processes, one runtime
    thread each). ``map`` keeps the order of the jobs and reports progress as they finish."""

    def __init__(self, trials, runtime: str, sets: dict[str, Path], workers: int | None = None,
                 executor: Executor | None = None) -> None:
        self.workers = workers or max(1, min(os.cpu_count() or 1, 8))
        self._own = executor is None
        self.setup = (trials, runtime, tuple(sorted((k, str(v)) for k, v in sets.items())), 1)
        if executor is None:
            import multiprocessing as mp

            # spawn: a forked copy of a parent that has run torch and onnxruntime inherits their
            # thread pools in whatever state they were in
            executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        self.executor = executor
        self.trials_run = 0
        self.seconds = 0.0

    def map(self, jobs: list[tuple], progress: Callable[[int, int, TrialResult], Any] | None = None,
            deadline: float | None = None) -> list[TrialResult | None]:
        """Results in the order of ``jobs``; past ``deadline`` (time.monotonic()), the jobs not yet
        started are cancelled and come back as None."""
        from concurrent.futures import FIRST_COMPLETED, wait

        futures = {self.executor.submit(run_trial, self.setup, *job): i for i, job in enumerate(jobs)}
        out: list[TrialResult | None] = [None] * len(jobs)
        pending, n = set(futures), 0
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for f in done:
                if f.cancelled():
                    continue
                r = f.result()
                out[futures[f]] = r
                n += 1
                self.trials_run += 1
                self.seconds += r.seconds
                if progress:
                    progress(n, len(jobs), r)
            if deadline is not None and time.monotonic() >= deadline:
                for f in pending:
                    f.cancel()  # running ones finish; their results are dropped
                pending = {f for f in pending if not f.cancelled() and not f.done()}
                deadline = None  # wait for the running ones without a limit
        return out

    def close(self) -> None:
        if self._own:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "TrialPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
