"""Writes reports/refiner_variants.md: the refine-network designs tried for reference model v3, on
the same photos, by the same metrics and the same cross-validation as reports/reference_model.md.

    .venv/bin/python benchmarks/refiner_variants.py --data ../shared/data

About an hour on this 2-core CPU. Rows:
- v2, the refiner shipped before v3 (code and weights read from this repository's history at
  V2_COMMIT), trained on alphamatting GT01-GT14 only: scored on the photos it never saw;
- v2's learned correction held inside v3's coarse-range clamp (same weights), to separate what
  the clamp does from what the training does;
- two refiners with nothing learned: the coarse alpha sharpened (contrast x1.5 around 0.5), and
  He et al.'s guided filter of the coarse alpha on the grey photo (r 4, eps 1e-3); both clamped
  to the same range as v3;
- v3 with the shipped settings but one changed (cross-validated, 3 folds, like the report):
  no colour-blind augmentation; range radius 1 and 3; 5000 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

V2_COMMIT = "478fcd1"  # the last commit with refiner v2


def v2_refiner():
    """Refiner v2 from git history: its module source and its weights, as they shipped."""
    import torch
    from safetensors.torch import load

    git = lambda path: subprocess.run(["git", "show", f"{V2_COMMIT}:{path}"], cwd=ROOT, check=True, capture_output=True).stdout  # noqa: E731
    mod = types.ModuleType("mexport.models.refiner_v2")
    mod.__package__ = "mexport.models"
    exec(compile(git("mexport/models/refiner.py").decode(), "refiner_v2.py", "exec"), mod.__dict__)
    r = mod.Refiner()
    r.load_state_dict(load(git("mexport/models/weights/refiner.safetensors")))
    return r.eval(), mod, torch


class Fixed:
    """A refine network with nothing learned, held inside v3's range (module LocalRange)."""

    def __init__(self, fn, radius: int = 2) -> None:
        from mexport.models.refiner import LocalRange

        self.fn, self.range = fn, LocalRange(radius)
        self.takes_raw_image = self.output_in_unit_range = True

    def __call__(self, image, coarse_up):
        import torch
        import torch.nn.functional as F

        lo, hi = (F.interpolate(t, size=coarse_up.shape[2:], mode="bilinear", align_corners=False) for t in self.range(coarse_up))
        return torch.minimum(torch.maximum(self.fn(image, coarse_up).clamp(0, 1), lo), hi)

    def eval(self):
        return self


def guided_filter(image, p, r: int = 4, eps: float = 1e-3):
    """He et al.'s guided filter (grey guide) of p, box filters with replicate padding."""
    import torch.nn.functional as F

    box = lambda t: F.avg_pool2d(F.pad(t, (r, r, r, r), mode="replicate"), 2 * r + 1, 1)  # noqa: E731
    g = image.mean(1, keepdim=True)
    mg, mp = box(g), box(p)
    a = (box(g * p) - mg * mp) / (box(g * g) - mg * mg + eps)
    return box(a) * g + box(mp - a * mg)


def main() -> None:
    import torch

    from mexport.io import atomic_write_text
    from mexport.models.train import NEVER_TRAIN, TrainConfig, fit, make_composites
    from mexport.models.u2netp_refine import refiner_record
    from reference_model import family_summary, fold_split, pipelines, score

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "refiner_variants.md")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(2)
    coarse_pipe = pipelines(None)[0]
    base = TrainConfig(**{**refiner_record()["config"], "train": ()})
    folds = fold_split(args.data)
    everything = [n for f in folds for n in f] + list(NEVER_TRAIN)
    results: dict[str, dict] = {}

    v2, v2mod, _ = v2_refiner()
    unseen = [n for n in everything if not n.startswith("alphamatting/") or n in NEVER_TRAIN]
    results["v2 as shipped before (trained on GT01-GT14; scored on the photos it never saw)"] = score(unseen, v2, args.data, coarse_pipe)

    def v2_in_range(image, coarse_up):
        from mexport.models.pipeline import MattingPipeline  # noqa: F401 - same normalization as the pipeline

        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        return v2.unbanded((image - mean) / std, coarse_up)

    results["v2's learned correction inside v3's range (radius 2), no band"] = score(unseen, Fixed(v2_in_range), args.data, coarse_pipe)
    results["nothing learned: coarse sharpened x1.5, inside the range"] = score(everything, Fixed(lambda i, c: (c - 0.5) * 1.5 + 0.5), args.data, coarse_pipe)
    results["nothing learned: guided filter (r 4, eps 1e-3), inside the range"] = score(everything, Fixed(guided_filter), args.data, coarse_pipe)
    print(f"fixed rows done ({time.time() - t0:.0f} s)", flush=True)

    variants = {
        "v3, no colour-blind augmentation": {"colour_blind": False},
        "v3, range radius 1": {"radius": 1},
        "**v3 as shipped** (radius 2)": {},
        "v3, range radius 3": {"radius": 3},
        "v3, 5000 steps": {"steps": 5000},
    }
    rows: dict[str, dict] = {k: {} for k in variants}
    for i, held in enumerate(folds):
        train = tuple(n for f in folds if f is not held for n in f)
        cache: dict[bool, object] = {}
        for name, change in variants.items():
            cfg = dataclasses.replace(base, train=train, **change)
            if cfg.colour_blind not in cache:
                cache[cfg.colour_blind] = make_composites(args.data, cfg, log=lambda s: None)[0]
            ref = fit(cache[cfg.colour_blind], cfg, log=lambda s: None)
            rows[name].update(score(held, ref, args.data, coarse_pipe))
        print(f"fold {i + 1}/{len(folds)} done ({time.time() - t0:.0f} s)", flush=True)
        del cache
    results.update(rows)

    L = ["# Refine-network variants (reference model v3)", "",
         f"Generated by `.venv/bin/python benchmarks/refiner_variants.py --data ../shared/data` ({time.time() - t0:.0f} s).", "",
         "Same photos, metrics and 3 folds as `reference_model.md`; every row scores each photo with a refiner that was not",
         "trained on it (the v2 rows: only the photos v2 never saw; GT15-GT18 are not in the cross-validated rows).",
         "SAD change of the family mean vs U²-Net-p alone; worst = the photo with the largest SAD increase.", "",
         "| variant | family | photos | SAD coarse | SAD refined | change | IoU median coarse | IoU median refined | worst photo | photos > 10 % worse | GT-free max |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name, res in results.items():
        for s in family_summary(res):
            L.append(f"| {name} | {s['family']} | {s['n']} | {s['coarse_sad_mean']:.2f} | {s['pipeline_sad_mean']:.2f} | "
                     f"{100 * (s['pipeline_sad_mean'] / s['coarse_sad_mean'] - 1):+.1f} % | {s['coarse_iou_median']:.4f} | "
                     f"{s['pipeline_iou_median']:.4f} | {s['worst'].split('/')[1]} ({100 * s['worst_sad_change']:+.1f} %) | "
                     f"{len(s['over_10pct'])} | {s['gt_free_max']:.4f} |")
    atomic_write_text(args.out, "\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
