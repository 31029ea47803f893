"""The library call behind `mexport fragility`: photos in, ``fragility.json`` + ``report.md`` out
(all or nothing). Which photos int8 cannot hold reliably, whatever recipe's roundings: see
:mod:`mexport.quantize.fragility`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..quantize.fragility import Fragility

OUTPUT_FILES = ("fragility.json", "report.md")


@dataclass
class FragilityResult:
    photos: list[Fragility]  # worst median first
    photo_db: float
    draws: int
    seed: int
    model: str
    calibration: str
    recipe: str  # the recipe whose int8 layers carry the noise, as the report names it
    command: str
    seconds: float
    split: int  # how many of the most fragile photos got the per-block split

    def counts(self) -> dict[str, int]:
        out = {"robust": 0, "at risk": 0, "fragile": 0}
        for f in self.photos:
            out[f.verdict(self.photo_db)] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"photo_db": self.photo_db, "draws": self.draws, "seed": self.seed, "model": self.model,
                "calibration": self.calibration, "recipe": self.recipe, "command": self.command, "seconds": self.seconds, "split": self.split,
                "counts": self.counts(),
                "photos": [dict(asdict(f), low=f.low, median=f.median, high=f.high, verdict=f.verdict(self.photo_db))
                           for f in self.photos]}


def fragility(out_dir: str | Path, model: str | None = None, calib: Path | None = None, evals: tuple[Path, ...] = (),
              calib_share: float = 0.0, fold: int = 0, draws: int = 8, seed: int = 0, photo_db: float = 30.0,
              recipe: Path | None = None, split: int = 3, progress: Callable[..., Any] | None = None,
              log: Callable[[str], Any] = lambda s: None) -> FragilityResult:
    """Photos are chosen as `mexport sensitivity` chooses them (``--eval`` folders, calibrated on
    ``calib`` or on ``calib_share`` of each folder); every photo not calibrated on is measured."""
    from ..io import check_target, install, output_lock, staging
    from ..models.recenter import plain_form
    from ..quantize.calibration import role_inputs
    from ..quantize.fragility import photo_fragility
    from ..quantize.recipe import load_recipe
    from ..quantize.recipes import model_default_recipe
    from .run import choose_photos, photo_pipeline

    if not 1 <= draws <= 64:
        raise InputError("--draws must be in 1..64")
    if photo_db <= 0:
        raise InputError("--min-photo-psnr must be > 0")
    if split < 0:
        raise InputError("--split must be >= 0")
    out_dir = Path(out_dir)
    check_target(out_dir, directory=True)
    pipeline = photo_pipeline(model, "fragility")
    if recipe is not None:
        the_recipe = load_recipe(recipe)
        the_recipe.require_known_layers(pipeline)
        recipe_said = str(recipe)
    else:
        # what `mexport onnx --int8` applies without --recipe: the model's own declarations (naive
        # int8 for a model that declares none), so an ill-conditioned layer the model already keeps
        # float does not make every photo look fragile
        the_recipe = model_default_recipe(pipeline, "onnx")
        floats = sorted(k for k, v in the_recipe.layers.items() if v == "float")
        recipe_said = f"the model's default int8 recipe ({the_recipe.name}; float: {', '.join(floats) or 'none'})"
    calib_set, photos, _ = choose_photos(evals, calib, calib_share, fold, 0.0)
    if not photos:
        raise InputError("no photos to measure")
    names = [n for n, _ in photos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"photo names given twice ({', '.join(twice[:3])}): --eval folders with the same name; rename one")
    source = plain_form(pipeline)  # what an int8 export converts (mexport.export)
    calibration = the_recipe.calibration
    log(f"fragility: {len(photos)} photos, {draws} noise draws each, ranges from {len(calib_set.photos)} calibration photos "
        f"({calib_set.source})")
    t0 = time.monotonic()
    feeds = role_inputs(source, "fused", calib_set.photos, calibration.max_photos)
    measured = photo_fragility(source, photos, feeds, draws=draws, seed=seed, photo_db=photo_db, recipe=the_recipe, split=split,
                               progress=(lambda done, total: progress("int8-sized noise", done, total)) if progress else
                               (lambda done, total: None))
    command = _command(model, calib, evals, calib_share, fold, draws, seed, photo_db, recipe, split)
    result = FragilityResult(measured, photo_db, draws, seed, f"{pipeline.model_info.name} ({pipeline.model_info.weights_sha256[:12]})",
                             calib_set.source, recipe_said, command, time.monotonic() - t0, split)
    with output_lock(out_dir), staging(out_dir.parent, "fragility", out_dir) as work:
        stage = work / "files"
        stage.mkdir()
        (stage / "fragility.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        (stage / "report.md").write_text(report(result))
        moves = {out_dir / f.name: f for f in sorted(stage.iterdir())}
        install(moves, work / "old")
    return result


def _command(model, calib, evals, calib_share, fold, draws, seed, photo_db, recipe, split) -> str:
    parts = ["mexport fragility"]
    if model:
        parts.append(f"--model {model}")
    if calib:
        parts.append(f"--calib {calib}")
    parts += [f"--eval {e}" for e in evals]
    if calib_share:
        parts += [f"--calib-share {calib_share:g}", f"--fold {fold}"]
    if recipe:
        parts.append(f"--recipe {recipe}")
    parts += [f"--draws {draws}", f"--seed {seed}", f"--min-photo-psnr {photo_db:g}", f"--split {split}"]
    return " ".join(parts) + " -o DIR"


def _blocks(f: Fragility, top: int = 3) -> str:
    return ", ".join(f"{b} {share:.0%}" for b, share in f.blocks[:top]) or "–"


def report(r: FragilityResult) -> str:
    c = r.counts()
    lines = [f"# int8 fragility of {r.model}", "",
             f"Made by `{r.command}` in {r.seconds / 60:.1f} min. Ranges: {r.calibration}. Recipe: {r.recipe}; the "
             "layers it keeps float get no noise.", "",
             f"Each photo's float matte against the same model carrying one draw of int8-sized rounding noise on every "
             f"quantized layer's weights and input ({r.draws} draws, seeds {r.seed}..{r.seed + r.draws - 1}), as alpha PSNR "
             f"(dB). *Fragile*: most draws below {r.photo_db:g} dB, so any int8 recipe that keeps these layers int8 holds "
             f"the photo by luck; *at risk*: some draws below. *JPEG q95*: the float model on the photo re-saved as JPEG "
             "quality 95 against the float model on the photo, no int8 at all. "
             f"*Blocks*: for the {r.split} worst photos with a draw below {r.photo_db:g} dB, the MSE of each block's noise "
             "alone (two draws), as a share of the sum over blocks: where the noise enters. On a fragile photo effects do not "
             "add as small errors do, so keeping the top block float lifts it less than its share suggests.", "",
             f"**{c['fragile']} fragile, {c['at risk']} at risk, {c['robust']} robust** of {len(r.photos)} photos."
             + (f" {_one_block_line(r)}" if one_block(r) else ""), "",
             "| photo | verdict | noise: min | median | max | JPEG q95 | blocks where the noise enters |",
             "|---|---|---:|---:|---:|---:|---|"]
    for f in r.photos:
        lines.append(f"| {f.photo} | {f.verdict(r.photo_db)} | {f.low:.1f} | {f.median:.1f} | {f.high:.1f} | {f.jpeg_db:.1f} | "
                     f"{_blocks(f)} |")
    return "\n".join(lines) + "\n"


def one_block(r: FragilityResult, share: float = 0.9) -> str | None:
    """The block that carries more than ``share`` of the noise on every split photo: an int8-hostile
    layer there, not the photos, is then what the verdicts measure."""
    tops = {f.blocks[0][0] for f in r.photos if f.blocks and f.blocks[0][1] > share}
    split = [f for f in r.photos if f.blocks]
    return tops.pop() if split and len(tops) == 1 and all(f.blocks[0][1] > share for f in split) else None


def _one_block_line(r: FragilityResult) -> str:
    b = one_block(r)
    return "" if b is None else (f"Over 90 % of the worst photos' noise enters in {b}: look there for an int8-hostile layer "
                                 "(`mexport sensitivity` ranks them) and give a recipe that keeps it float (--recipe).")


def summary(r: FragilityResult, out: Path) -> str:
    c = r.counts()
    head = f"{c['fragile']} fragile, {c['at risk']} at risk, {c['robust']} robust of {len(r.photos)} photos ({Path(out) / 'report.md'})"
    worst = [f for f in r.photos if f.verdict(r.photo_db) != "robust"][:5]
    hint = _one_block_line(r)
    return "\n".join([head] + ([hint] if hint else []) + [f"  {f.verdict(r.photo_db)}: {f.photo}: noise {f.low:.1f}-{f.high:.1f} dB (median {f.median:.1f}); "
                               f"JPEG q95 alone {f.jpeg_db:.1f} dB; {_blocks(f)}" for f in worst])
