"""Writes reports/reference_model.md and reports/reference_model.png: does the refine network make
the coarse network's matte better, on photos it never saw?

    .venv/bin/python benchmarks/reference_model.py --data ../shared/data

Every photo is scored by a refiner that was not trained on it:
- the trainable photos (alphamatting GT01-GT14, the portraits, the animals) by 3-fold
  cross-validation: each fold's refiner is trained by ``mexport train-refiner``'s own code, with the
  shipped settings, on the other two folds (about 5 minutes a fold on this 2-core CPU);
- alphamatting GT15-GT18 by the shipped refiner, which is never trained on them.
Coarse only = U^2-Net-p's alpha upsampled (model ``u2netp``). Metrics at the photo's own size
against its alpha (alphamatting: true alphas; portraits and animals: strong models' alphas, pseudo
ground truth). Also the GT-free check (``metrics.confident_change_share``) on every photo,
scikit-image's included, and the picture grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FOLDS = 3
KEYS = ("sad", "mse", "grad", "conn", "iou")
GRID = ("skimage:astronaut", "animals-am2k/sample4", "portraits-p3m/p_09ba26b4", "alphamatting/GT18", "skimage:chelsea")


def fold_split(root: Path, k: int = FOLDS) -> list[list[str]]:
    """Round-robin over each family's sorted photos, so every fold holds every family."""
    from mexport.models.train import NEVER_TRAIN
    from mexport.models.train_data import FAMILIES, family_photos

    folds: list[list[str]] = [[] for _ in range(k)]
    for fam in FAMILIES:
        names = [n for n in family_photos(root, fam) if n not in NEVER_TRAIN]
        for i, n in enumerate(sorted(names)):
            folds[i % k].append(n)
    return folds


def pipelines(refiner):
    from mexport.api import load_pipeline
    from mexport.models.pipeline import MattingModel, MattingPipeline

    coarse = load_pipeline("u2netp")
    info = coarse.model_info
    return coarse, MattingPipeline(MattingModel(coarse=info.coarse, refine=refiner, spec=info.spec, name="fold"))


def run(pipe, photo: np.ndarray):
    """(alpha at refine size, upsampled coarse alpha at refine size, alpha at the photo's size)."""
    import torch

    from mexport.photos import prepare, restore

    x, place = prepare(photo, pipe.spec)
    with torch.inference_mode():
        t = torch.from_numpy(x)
        c = pipe.coarse_graph(pipe.downsample(t))
        a = pipe.refine_graph(t, c)
    return a.numpy(), place, restore(a.numpy(), place, pipe.spec)


def score(names: list[str], refiner, root: Path, coarse_pipe) -> dict[str, dict]:
    from mexport.models.train_data import load_pair
    from mexport.validate import metrics as M

    _, pipe = pipelines(refiner)
    out = {}
    for n in names:
        photo, gt = load_pair(root, n, max_side=10**6)
        a_ref, _, a = run(pipe, photo)
        c_ref, _, c = run(coarse_pipe, photo)
        row = {"coarse": {k: getattr(M, k)(c, gt) for k in KEYS}, "pipeline": {k: getattr(M, k)(a, gt) for k in KEYS}}
        row["gt_free"] = M.confident_change_share(c_ref, a_ref)
        out[n] = row
    return out


def gt_free_on(photos: dict[str, np.ndarray], refiner, coarse_pipe) -> dict[str, float]:
    from mexport.validate import metrics as M

    _, pipe = pipelines(refiner)
    return {n: M.confident_change_share(run(coarse_pipe, p)[0], run(pipe, p)[0]) for n, p in photos.items()}


def family_summary(rows: dict[str, dict]) -> list[dict]:
    from mexport.models.train_data import FAMILIES

    out = []
    for fam in FAMILIES:
        ks = [n for n in rows if n.startswith(fam + "/")]
        if not ks:
            continue
        mean = lambda m, k: float(np.mean([rows[n][m][k] for n in ks]))  # noqa: E731
        med = lambda m, k: float(np.median([rows[n][m][k] for n in ks]))  # noqa: E731
        rel = {n: rows[n]["pipeline"]["sad"] / rows[n]["coarse"]["sad"] - 1 for n in ks}
        worst = max(rel, key=rel.get)
        s = {"family": fam, "n": len(ks), **{f"{m}_{k}_mean": mean(m, k) for m in ("coarse", "pipeline") for k in KEYS},
             "coarse_iou_median": med("coarse", "iou"), "pipeline_iou_median": med("pipeline", "iou"),
             "worst": worst, "worst_sad_change": rel[worst], "over_10pct": [n for n, r in rel.items() if r > 0.10],
             "gt_free_max": max(rows[n]["gt_free"] for n in ks)}
        s["passes"] = (s["pipeline_sad_mean"] < s["coarse_sad_mean"] and s["pipeline_iou_median"] >= s["coarse_iou_median"] - 0.005
                       and not s["over_10pct"])
        out.append(s)
    return out


def grid_png(path: Path, refiners: dict[str, object], root: Path, coarse_pipe) -> None:
    """Photo, coarse alpha, pipeline alpha, reference alpha, cutout on a checkerboard; each row
    refined by a refiner that never saw that photo."""
    from PIL import Image, ImageDraw

    from mexport.models.train_data import load_pair
    from mexport.photos import load_photo, skimage_photo_path

    H = 240
    rows = []
    for n in GRID:
        if n.startswith("skimage:"):
            photo, gt = load_photo(skimage_photo_path(n.split(":", 1)[1])), None
        else:
            photo, gt = load_pair(root, n, max_side=10**6)
        _, pipe = pipelines(refiners[n])
        a, c = run(pipe, photo)[2], run(coarse_pipe, photo)[2]
        w = round(photo.shape[1] * H / photo.shape[0])
        fit = lambda im: im.resize((w, H), Image.BILINEAR)  # noqa: E731
        gray = lambda v: fit(Image.fromarray(np.uint8(np.clip(v, 0, 1) * 255 + 0.5)).convert("RGB"))  # noqa: E731
        yy, xx = np.mgrid[: photo.shape[0], : photo.shape[1]]
        board = np.where(((yy // 24 + xx // 24) % 2)[..., None] == 0, 200, 140).astype(np.float32)
        cut = photo * a[..., None] + board * (1 - a[..., None])
        blank = Image.new("RGB", (w, H), (60, 60, 60))
        ImageDraw.Draw(blank).text((8, H // 2), "no reference alpha", fill=(220, 220, 220))
        cells = [fit(Image.fromarray(photo)), gray(c), gray(a), gray(gt) if gt is not None else blank,
                 fit(Image.fromarray(np.uint8(np.clip(cut, 0, 255))))]
        row = Image.new("RGB", (sum(x.width for x in cells) + 4 * len(cells), H + 18), (255, 255, 255))
        ImageDraw.Draw(row).text((4, 2), f"{n}  (refined by {refiners[n].tag})", fill=(0, 0, 0))
        x = 0
        for cell in cells:
            row.paste(cell, (x, 18))
            x += cell.width + 4
        rows.append(row)
    head = Image.new("RGB", (max(r.width for r in rows), 20), (255, 255, 255))
    ImageDraw.Draw(head).text((4, 4), "photo | coarse alpha (U^2-Net-p) | pipeline alpha (coarse + refine) | reference alpha | cutout", fill=(0, 0, 0))
    out = Image.new("RGB", (head.width, head.height + sum(r.height for r in rows)), (255, 255, 255))
    out.paste(head, (0, 0))
    y = head.height
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    from mexport.io import atomic_path

    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG", optimize=True)


def main() -> None:
    import torch

    from mexport.api import load_pipeline
    from mexport.io import atomic_write_text
    from mexport.models.train import NEVER_TRAIN, TrainConfig, fit, make_composites
    from mexport.models.u2netp_refine import refiner_record
    from mexport.photos import SKIMAGE_PHOTOS, default_photos

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "reference_model.md")
    args = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(2)
    rec = refiner_record()
    shipped_cfg = TrainConfig(**{**rec["config"], "train": tuple(rec["config"]["train"])})
    shipped = load_pipeline("u2netp-refine").refine
    shipped.tag = "the shipped refiner"
    coarse_pipe = load_pipeline("u2netp")
    folds = fold_split(args.data)
    if sorted(n for f in folds for n in f) != sorted(shipped_cfg.train):
        print("note: the shipped refiner was not trained on exactly the cross-validated photos", file=sys.stderr)
    rows, scored_by, refiners = {}, {}, {}
    for i, held in enumerate(folds):
        cfg = TrainConfig(**{**rec["config"], "train": tuple(n for f in folds if f is not held for n in f)})
        data, _ = make_composites(args.data, cfg, log=lambda s: None)
        ref = fit(data, cfg, log=lambda s: None)
        ref.tag = f"fold {i + 1} of {FOLDS}"
        del data
        rows.update(score(held, ref, args.data, coarse_pipe))
        for n in held:
            scored_by[n], refiners[n] = ref.tag, ref
        print(f"fold {i + 1}/{FOLDS} done ({time.time() - t0:.0f} s)", flush=True)
    rows.update(score(list(NEVER_TRAIN), shipped, args.data, coarse_pipe))
    for n in NEVER_TRAIN:
        scored_by[n], refiners[n] = "shipped", shipped
    for n in GRID:
        refiners.setdefault(n, shipped)
    photos = dict(default_photos(SKIMAGE_PHOTOS))
    gt_free_skimage = gt_free_on(photos, shipped, coarse_pipe)
    summary = family_summary(rows)
    png = args.out.with_suffix(".png")
    grid_png(png, refiners, args.data, coarse_pipe)

    L = ["# Reference model: does the refine network help, on photos it never saw?", "",
         "Generated by `.venv/bin/python benchmarks/reference_model.py --data ../shared/data` "
         f"({time.time() - t0:.0f} s on this 2-core CPU).", "",
         "Every photo below is refined by a refine network that was **not trained on it**: alphamatting GT15-GT18 by the",
         "shipped refiner (never trained on them); every other photo by 3-fold cross-validation, each fold's refiner",
         "trained with the shipped settings (`mexport train-refiner`'s own code) on the other two folds. *coarse* is",
         "U²-Net-p alone, its alpha upsampled (`--model u2netp`); *pipeline* is the default model (`u2netp-refine`).",
         "Metrics at the photo's own size: SAD, Grad and Conn are sums / 1000, MSE a mean, IoU at alpha 0.5; lower is",
         "better except IoU. Portraits and animals are scored against strong models' alphas (P3M-Net, GFM), not hand labels.",
         "*GT-free*: share of confident coarse pixels (alpha < 0.05 or > 0.95, farther than 24 px from any uncertain one, at",
         "1024x1024; the refiner's reach is 21 px) that the refiner changes by more than 0.1.", "",
         "## Per family", "",
         "| family | photos | SAD coarse | SAD pipeline | change | MSE coarse | MSE pipeline | Grad coarse | Grad pipeline | Conn coarse | Conn pipeline | IoU median coarse | IoU median pipeline | worst photo (SAD change) | photos > 10 % worse | GT-free max | target met |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for s in summary:
        ch = 100 * (s["pipeline_sad_mean"] / s["coarse_sad_mean"] - 1)
        L.append(f"| {s['family']} | {s['n']} | {s['coarse_sad_mean']:.2f} | {s['pipeline_sad_mean']:.2f} | {ch:+.1f} % | "
                 f"{s['coarse_mse_mean']:.4f} | {s['pipeline_mse_mean']:.4f} | {s['coarse_grad_mean']:.3f} | {s['pipeline_grad_mean']:.3f} | "
                 f"{s['coarse_conn_mean']:.2f} | {s['pipeline_conn_mean']:.2f} | {s['coarse_iou_median']:.4f} | {s['pipeline_iou_median']:.4f} | "
                 f"{s['worst'].split('/')[1]} ({100 * s['worst_sad_change']:+.1f} %) | {len(s['over_10pct'])} | {s['gt_free_max']:.4f} | "
                 f"{'yes' if s['passes'] else '**no**'} |")
    L += ["", "Target (issue #16): per family, SAD mean below coarse alone, IoU median no lower than coarse alone's minus",
          "0.005, and no photo's SAD more than 10 % above its coarse-alone SAD.", "",
          "## Per photo", "", "| photo | refined by | " + " | ".join(f"{k} coarse | {k} pipeline" for k in KEYS) + " | GT-free |",
          "|---|---|" + "---:|" * (2 * len(KEYS) + 1)]
    for n in sorted(rows):
        r = rows[n]
        L.append(f"| {n} | {scored_by[n]} | " + " | ".join(f"{r['coarse'][k]:.4g} | {r['pipeline'][k]:.4g}" for k in KEYS)
                 + f" | {r['gt_free']:.4f} |")
    L += ["", "## GT-free check on scikit-image's photos (shipped refiner)", "", "| photo | GT-free |", "|---|---:|"]
    L += [f"| {n} | {v:.4f} |" for n, v in gt_free_skimage.items()]
    L += ["", f"![photo, coarse alpha, pipeline alpha, reference alpha, cutout]({png.name})", "",
          f"`{png.name}`: each row refined by a refiner that never saw the photo (named in the row).", "",
          "## Shipped refiner", "",
          f"`mexport/models/weights/refiner.safetensors`, sha256 `{rec['sha256'][:16]}...`, made by `{rec['command']}` in "
          f"{rec['seconds']:.0f} s ({rec['config']['steps']} steps, {rec['config']['composites']} composites over "
          f"{len(rec['backgrounds'])} background photos); trained on {len(rec['train'])} foregrounds, never on "
          f"{', '.join(n.split('/')[1] for n in rec['never_trained_on'])}. Full record: `refiner.json`.", ""]
    L += Path(ROOT / "benchmarks" / "reference_model_notes.md").read_text().splitlines()
    atomic_write_text(args.out, "\n".join(L) + "\n")
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({"summary": summary, "photos": rows, "scored_by": scored_by,
                                                         "gt_free_skimage": gt_free_skimage}, indent=1, sort_keys=True) + "\n")
    print("\n".join(L[: 20 + len(summary)]))


if __name__ == "__main__":
    main()
