"""`mexport sensitivity`'s report: Markdown, the PSNR-vs-latency plot (matplotlib) and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .search import FOCUS_PHOTOS, OVER_BUDGET, Candidate, SearchResult

TOP_LAYERS = 12


def _db(v: float | None) -> str:
    return "–" if v is None else ("inf" if math.isinf(v) and v > 0 else f"{v:.1f}")


def _ms(c: Candidate, threads: int) -> str:
    v = c.latency.get(threads)
    return "–" if v is None else f"{v:.3g}"


def plot(r: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    timed = [c for c in [r.naive, *r.candidates] if c.latency.get(1)]
    for c in timed:
        color = "tab:green" if c.met else "tab:gray"
        ax.scatter(c.latency[1], c.tune.worst, color=color, s=28, zorder=3)
        ax.scatter(c.latency[1], c.tune.median, color=color, marker="_", s=90, zorder=3)
        ax.annotate(c.label, (c.latency[1], c.tune.worst), fontsize=7, xytext=(4, -9), textcoords="offset points")
    if r.chosen is not None and r.chosen.latency.get(1):
        ax.scatter(r.chosen.latency[1], r.chosen.tune.worst, s=160, facecolors="none", edgecolors="tab:red", linewidths=2,
                   zorder=4, label="chosen")
    if r.fp32_latency.get(1):
        ax.axvline(r.fp32_latency[1], color="tab:blue", ls=":", lw=1, label=f"fp32 {r.fp32_latency[1]:.0f} ms")
    ax.axhline(r.targets.photo_db, color="tab:red", ls="--", lw=1, label=f"worst-photo target {r.targets.photo_db:g} dB")
    ax.axhline(r.targets.median_db, color="tab:orange", ls="--", lw=1, label=f"median target {r.targets.median_db:g} dB")
    ax.set_xlabel(f"{r.target} p50 latency, 1 thread (ms)")
    ax.set_ylabel("alpha PSNR vs float, tuning photos (dB)\n● worst photo   ▬ median")
    ax.set_title("int8 candidates: fidelity vs latency (green: meets both targets)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(r: SearchResult, command: str) -> str:
    lines = [f"# int8 sensitivity search: {r.target}", "",
             f"Made by `{command}` in {r.seconds / 60:.1f} min ({r.trials} trials on the runtime)"
             + ("; **over its budget**: the notes say where the time went" if any(n.startswith(OVER_BUDGET) for n in r.notes) else "")
             + ".", ""]
    c, n = r.chosen, r.naive
    verdict = ("**PASS**" if r.passed else "**FAIL**") if c and c.holdout else ("no held-out photos: not judged" if c else "**no recipe**")
    if c is not None and c.latency and not r.within_latency:
        verdict += f" on fidelity, at {r.latency_ratio:.2f}x naive int8's latency: **over the {r.targets.max_latency:g}x allowed**"
    lines += [f"Targets: median alpha PSNR vs float ≥ {r.targets.median_db:g} dB and every photo ≥ {r.targets.photo_db:g} dB "
              f"on the held-out photos (the search asks {r.targets.margin_db:g} dB more on the tuning photos), within "
              f"{r.targets.max_latency:g}x naive int8's latency, spent on the worst photos' margin. Verdict: {verdict}.", ""]
    if r.repairs:
        lines += [f"Repairs: {', '.join(r.repairs)}, applied to every recipe tried after naive int8 (whose row has none; the "
                  "notes say why they were kept), before any layer is kept in float; the chosen recipe.json records them, so an "
                  "export with it repairs the same way.", ""]
    lines += ["| recipe | float layers | tuning median / worst (dB) | held-out median / worst (dB) | worst held-out photo | "
              "p50 1 thr (ms) | p50 2 thr (ms) | × naive (1 thr) |", "|---|---|---|---|---|---|---|---|"]
    fp = r.fp32_latency
    lines.append(f"| fp32 | all | – | – | – | {fp.get(1, 0):.3g} | {fp.get(2, 0):.3g} | "
                 f"{fp.get(1, math.nan) / n.latency.get(1, math.nan):.2f} |")
    for label, x in (("naive int8", n), ("fastest meeting the targets", r.fastest), ("**chosen**", c)):
        if x is None:
            continue
        h = x.holdout
        ratio = x.latency.get(1, math.nan) / n.latency.get(1, math.nan)
        lines.append(f"| {label} | {len(x.floats)} | {_db(x.tune.median)} / {_db(x.tune.worst)} | "
                     f"{_db(h.median if h else None)} / {_db(h.worst if h else None)} | {h.worst_photo if h else '–'} | "
                     f"{_ms(x, 1)} | {_ms(x, 2)} | {ratio:.2f} |")
    lines.append("")
    if c is not None and c.floats:
        lines += ["Layers the chosen recipe keeps in float (PyTorch module paths), and why:", ""]
        lines += [f"- `{p}`" for p in c.floats] + [""]
    lines += ["## Most sensitive layers", "",
              f"*float alone*: what keeping this layer in float (every other int8) gains on the {FOCUS_PHOTOS} tuning photos naive "
              "int8 hurts most (their mean alpha PSNR, each capped at the median target); *int8 alone*: median / worst PSNR on "
              "those photos with only this layer int8; *quick SQNR*: its output's SQNR in torch with it alone in int8 (weights "
              "per channel, input per tensor), which orders the trials.", "",
              "| layer | float alone (dB) | int8 alone (dB) | quick SQNR (dB) | weights | input range | outlier input channels | cause |",
              "|---|---|---|---|---|---|---|---|"]
    ranked = sorted((u for u in r.units if u.gain_db is not None), key=lambda u: -u.gain_db)[:TOP_LAYERS]
    for u in ranked:
        s = u.stats
        alone = f"{_db(u.alone.median)} / {_db(u.alone.worst)}" if u.alone else "–"
        if s:
            lines.append(f"| `{u.path}` | {u.gain_db:+.1f} | {alone} | {_db(s.sqnr_db)} | {s.weight_min:.3g}..{s.weight_max:.3g} | "
                         f"{s.input_min:.3g}..{s.input_max:.3g} | {list(s.outlier_channels) or '–'} "
                         f"({s.outlier_ratio:.0f}×) | {s.cause()} |")
        else:
            lines.append(f"| `{u.path}` | {u.gain_db:+.1f} | {alone} | – | – | – | – | no weights: {', '.join(u.ops)} |")
    lines += ["", "## Candidates", "", "![fidelity vs latency](candidates.png)", "",
              "| candidate | float layers | tuning median (dB) | tuning worst (dB) | worst photo | meets | p50 1 thr (ms) |",
              "|---|---|---|---|---|---|---|"]
    for x in [n, *r.candidates]:
        lines.append(f"| {x.label} | {len(x.floats)} | {_db(x.tune.median)} | {_db(x.tune.worst)} | {x.tune.worst_photo} | "
                     f"{'yes' if x.met else 'no'} | {_ms(x, 1)} |")
    lines += ["", "## Photos", ""]
    for k, names in r.photos.items():
        lines.append(f"- {k} ({len(names)}): " + ", ".join(names))
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in r.notes]
    return "\n".join(lines) + "\n"


def write_report(r: SearchResult, out: Path, command: str) -> None:
    plot(r, out / "candidates.png")
    (out / "report.md").write_text(markdown(r, command))
    dump(r, out / "sensitivity.json")


def result_json(r: SearchResult) -> dict[str, Any]:
    def cand(c):
        if c is None:
            return None
        return {"label": c.label, "floats": list(c.floats), "met": c.met, "latency_p50_ms": c.latency,
                "tune": {"median": c.tune.median, "worst": c.tune.worst, "worst_photo": c.tune.worst_photo, "psnr": c.tune.psnr},
                "holdout": None if c.holdout is None else {"median": c.holdout.median, "worst": c.holdout.worst,
                                                           "worst_photo": c.holdout.worst_photo, "psnr": c.holdout.psnr}}

    return {"schema": 1, "target": r.target, "targets": vars(r.targets), "passed": r.passed, "within_latency": r.within_latency,
            "latency_ratio": r.latency_ratio, "seconds": r.seconds, "repairs": list(r.repairs),
            "trials": r.trials, "photos": r.photos, "notes": r.notes, "fp32_latency_p50_ms": r.fp32_latency,
            "naive": cand(r.naive), "chosen": cand(r.chosen), "fastest": cand(r.fastest), "candidates": [cand(c) for c in r.candidates],
            "units": [{"path": u.path, "joined": u.joined, "macs": u.macs, "ops": u.ops, "gain_db": u.gain_db,
                       "alone_int8": None if u.alone is None else {"median": u.alone.median, "worst": u.alone.worst},
                       "quick": None if u.stats is None else {k: v for k, v in vars(u.stats).items() if k != "path"}}
                      for u in r.units]}


def dump(r: SearchResult, path: Path) -> None:
    from ..io import jsonable

    path.write_text(json.dumps(jsonable(result_json(r)), indent=2, sort_keys=True) + "\n")
