"""Writes reports/fragility.md: `mexport fragility` on the reference model and the shared photos,
in the cross-validation folds of reports/sensitivity.md, beside the worst held-out photos that the
committed sensitivity reports (ONNX and LiteRT) record for each fold.

    .venv/bin/python benchmarks/fragility_report.py --data ../shared/data

Each fold calibrates on the same third of each family as `mexport sensitivity --calib-share 0.33
--fold F` and measures every other photo, with the layers that `reports/sensitivity_recipe.json`
(the ONNX search's fold-0 recipe) keeps float left without noise. Minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("alphamatting", "portraits-p3m", "animals-am2k")


def tflite_folds(md: Path) -> dict[int, tuple[str, float]]:
    """Fold -> (worst held-out photo, its dB) from the fold table of reports/sensitivity_tflite.md."""
    out = {}
    for line in md.read_text().splitlines():
        m = re.match(r"\| (\d) \| \w+ \| [^|]+ \| [^|]+ \| [^|]+ \| [^|]+ \| [\d.]+ / ([\d.]+) \| ([\w/-]+) \|", line)
        if m:
            out[int(m.group(1))] = (m.group(3), float(m.group(2)))
    if len(out) != 3:
        raise SystemExit(f"{md}: expected a fold table with folds 0-2, found {sorted(out)}")
    return out


def main() -> None:
    from mexport import api

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/fragility.md")
    args = ap.parse_args()
    recipe = Path("reports/sensitivity_recipe.json")  # as the command line names it, run from the repository root
    evals = tuple(args.data / f for f in FAMILIES)
    if not (ROOT / recipe).is_file() or Path.cwd().resolve() != ROOT:
        raise SystemExit(f"run from the repository root ({ROOT}), beside {recipe}")
    work = Path(tempfile.mkdtemp(prefix="mexport-fragility-report-"))
    try:
        runs = [api.fragility(work / f"fold{f}", evals=evals, calib_share=0.33, fold=f, draws=args.draws, recipe=recipe,
                              split=3, log=print) for f in range(args.folds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    onnx = {f["fold"]: (f["chosen"]["worst_photo"], f["chosen"]["worst"]) for f in
            json.loads((ROOT / "reports/sensitivity.json").read_text())["folds"] if f["chosen"]}
    tfl = tflite_folds(ROOT / "reports/sensitivity_tflite.md")
    by_fold = [{p.photo: p for p in r.photos} for r in runs]
    jpeg = {p.photo: p.jpeg_db for r in runs for p in r.photos}
    db = runs[0].photo_db

    def cell(fold: int, photo: str) -> str:
        p = by_fold[fold].get(photo)
        return "calibration" if p is None else f"{p.median:.1f} ({p.low:.1f}-{p.high:.1f}) {p.verdict(db)}"

    lines = ["# Which photos int8 holds only by luck: `mexport fragility` on the reference model", "",
             f"Made by `.venv/bin/python benchmarks/fragility_report.py --data {args.data}` (each fold: `{runs[0].command}` "
             f"with `--fold F`), {sum(r.seconds for r in runs) / 60:.1f} min in all.", "",
             f"Each photo's float matte against the model carrying one draw of int8-sized rounding noise on every layer "
             f"`reports/sensitivity_recipe.json` keeps int8 (its weights, one step of max|W|/127 per output channel; its input, "
             f"one step of the fold's calibration range / 255), {args.draws} seeded draws: alpha PSNR median (min-max) in dB. "
             f"*Fragile*: most draws below {db:g} dB; *at risk*: some. A fragile photo passes or fails a {db:g}-dB per-photo "
             "gate by which roundings a recipe happens to make. *JPEG q95*: the float model on the photo re-saved as JPEG "
             "quality 95, no int8 at all. Folds: the calibration thirds of `mexport sensitivity --calib-share 0.33 --fold F`.",
             "", "## The worst held-out photo of every cross-validated search, and its fragility", "",
             "From the committed fold tables of reports/sensitivity.md (onnxruntime) and reports/sensitivity_tflite.md "
             "(LiteRT): the worst held-out photo of each fold's chosen recipe, what int8 gave it, and what the noise gives it "
             "in the same fold.", "",
             "| fold | runtime | worst held-out photo | int8 (dB) | verdict | noise: median (min-max) | JPEG q95 |",
             "|---|---|---|---:|---|---|---:|"]
    for fold in range(args.folds):
        for rt, table in (("onnxruntime", onnx), ("LiteRT", tfl)):
            if fold in table:
                photo, got = table[fold]
                lines.append(f"| {fold} | {rt} | {photo} | {got:.1f} | {'PASS' if got >= db else 'FAIL'} | {cell(fold, photo)} | "
                             f"{jpeg.get(photo, float('nan')):.1f} |")
    lines += ["", "## Every photo, every fold", "",
              "| photo | " + " | ".join(f"fold {f}" for f in range(args.folds)) + " | JPEG q95 |",
              "|---|" + "---|" * args.folds + "---:|"]
    order = sorted(jpeg, key=lambda n: min(by_fold[f][n].median for f in range(args.folds) if n in by_fold[f]))
    for n in order:
        lines.append(f"| {n} | " + " | ".join(cell(f, n) for f in range(args.folds)) + f" | {jpeg[n]:.1f} |")
    split = [(f, p) for f, r in enumerate(runs) for p in r.photos if p.blocks]
    if split:
        lines += ["", "## Where the worst photos' noise enters", "",
                  "Each block's noise alone (two draws), as a share of the sum over blocks. On these photos the effects do not "
                  "add up the way small errors do: removing the largest share does not remove the fragility (README, "
                  "\"Fragile photos\", measures all of `coarse.stage1` kept float).", "",
                  "| fold | photo | noise median | blocks |", "|---|---|---:|---|"]
        for f, p in split:
            lines.append(f"| {f} | {p.photo} | {p.median:.1f} | " + ", ".join(f"{b} {s:.0%}" for b, s in p.blocks[:4]) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
