"""Latency against a baseline artifact, both timed in this run, in alternating turns.

A latency gate that divides today's p50 by a number written down in another run measures the
machine's load on two days as much as the artifact. Timing the baseline artifact (say the last
release's ``fused.onnx``) beside the new one, interleaved round by round in separate processes
(:mod:`mexport.bench.interleave`), makes the ratio about the artifacts.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import InputError
from ..validate.artifacts import Artifact


def match(artifact: Artifact, baselines: list[Artifact]) -> Artifact | str:
    """The baseline of the same target and kind (fused, or pair), narrowed by precision if several;
    a reason string when there is none."""
    same = [b for b in baselines if b.target == artifact.target and b.kind == artifact.kind]
    if len(same) > 1:
        same = [b for b in same if b.precision == artifact.precision]
    if len(same) == 1:
        return same[0]
    if not same:
        return f"no --latency-baseline artifact of the same target and kind ({artifact.target} {artifact.kind})"
    raise InputError(f"{artifact.label}: several --latency-baseline artifacts match ({', '.join(b.label for b in same)}); give one")


def latency_vs_baseline(artifacts: list[Artifact], baselines: list[Artifact], threads: int = 1, runs: int = 10,
                        progress: Callable[[str, int, int, str], Any] | None = None, warmup: int = 2) -> list[dict[str, Any]]:
    """One latency record per artifact, with its baseline's numbers under ``reference``."""
    from .interleave import Subject, interleaved_latency

    def subject(a: Artifact, label: str) -> Subject:
        return Subject(label, paths=tuple(str(p) for p in a.paths.values()))

    labels: list[str] = []
    subjects: dict[str, Subject] = {}
    refs: list[Artifact | str] = []
    for a in artifacts:
        label = a.label if a.label not in subjects else f"{a.label} #{len(labels) + 1}"
        labels.append(label)
        subjects[label] = subject(a, label)
        ref = match(a, baselines)
        refs.append(ref)
        if isinstance(ref, Artifact):
            subjects.setdefault(f"baseline {ref.label}", subject(ref, f"baseline {ref.label}"))
    lat = interleaved_latency(list(subjects.values()), (threads,), runs, warmup, progress=progress)
    out = []
    for label, ref in zip(labels, refs):
        rec: dict[str, Any] = {"threads": threads, "runs": runs,
                               "method": "interleaved with the baseline artifact, each in its own process"}
        m = lat[label]["threads"].get(threads)
        if m:
            rec.update({"runner": lat[label]["runner"],
                        **{k: m[k] for k in ("p50_ms", "p90_ms", "min_ms", "load_ms", "first_ms", "peak_rss_mb")}})
        else:
            rec["error"] = lat[label].get("error", "not measured")
        if isinstance(ref, Artifact):
            name = f"baseline {ref.label}"
            r = lat[name]["threads"].get(threads)
            rec["reference"] = ({"label": name, "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "min_ms": r["min_ms"]} if r
                                else {"label": name, "error": lat[name].get("error", "not measured")})
        else:
            rec["reference"] = {"error": ref}
        out.append(rec)
    return out
