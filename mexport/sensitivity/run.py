"""The library call behind `mexport sensitivity`: photos in, ``recipe.json`` + ``report.md`` +
``candidates.png`` + ``sensitivity.json`` out (all or nothing, like an export)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from .search import SearchResult, Targets, Unit, search

OUTPUT_FILES = ("recipe.json", "report.md", "candidates.png", "sensitivity.json", "convert.log")
MIN_TUNE_PHOTOS = 4


def folder_photos(folder: Path) -> list[tuple[str, np.ndarray]]:
    """A folder's photos (or those in its ``image/``, the shared data layout), named FOLDER/STEM."""
    from ..photos import list_photos, load_photo

    folder = Path(folder)
    photos_dir = folder / "image" if (folder / "image").is_dir() else folder
    return [(f"{folder.name}/{p.stem}", load_photo(p)) for p in list_photos(photos_dir)]


def split_photos(photos: list[tuple[str, np.ndarray]], holdout: float) -> tuple[list, list]:
    """(tuning, held-out), per folder, by a hash of the name: the same photos land on the same side
    on every run and machine, whatever order the folders were given in; every folder gives to both
    sides (people, pets and products are each judged on photos the search never saw)."""
    if not 0 <= holdout < 1:
        raise InputError("--holdout must be in [0, 1)")
    tune, held = [], []
    for items in _by_folder(photos):
        items = _hash_order(items)
        k = int(round(len(items) * holdout))
        held += items[:k]
        tune += items[k:]
    return tune, held


def _by_folder(photos: list) -> list[list]:
    by: dict[str, list] = {}
    for name, arr in photos:
        by.setdefault(name.rsplit("/", 1)[0], []).append((name, arr))
    return list(by.values())


def _hash_order(items: list) -> list:
    return sorted(items, key=lambda p: hashlib.sha256(p[0].encode()).hexdigest())


def split_calibration(photos: list[tuple[str, np.ndarray]], share: float, holdout: float, fold: int = 0) -> tuple[list, list, list]:
    """(calibration, tuning, held-out), per folder, in the hash order of :func:`split_photos`: a user
    with one set of photos calibrates on some of each folder (people, pets, products alike), and
    the search tunes and is judged on others, none of which the ranges saw.

    ``fold`` rotates each folder's order by its calibration count, so with a third for calibration
    and half the rest held out, folds 0, 1 and 2 hold out each third once (cross-validation)."""
    if not 0 < share < 1:
        raise InputError("--calib-share must be in (0, 1)")
    if not 0 <= holdout < 1:
        raise InputError("--holdout must be in [0, 1)")
    if fold < 0:
        raise InputError("--fold must be >= 0")
    calib, tune, held = [], [], []
    for items in _by_folder(photos):
        items = _hash_order(items)
        c = max(1, int(round(len(items) * share)))
        shift = (fold * c) % len(items)
        items = items[shift:] + items[:shift]
        calib += items[:c]
        rest = items[c:]
        k = int(round(len(rest) * holdout))
        held += rest[:k]
        tune += rest[k:]
    return calib, tune, held


def photo_pipeline(model: str | None, command: str):
    """The float pipeline of ``model`` (the default model without one), refused when it takes more
    than photos: `mexport sensitivity` and `mexport fragility` read photo folders only."""
    from ..models import DEFAULT_MODEL, MattingPipeline, load_model

    pipeline = MattingPipeline(load_model(model or DEFAULT_MODEL))
    if pipeline.spec.extra_inputs:
        raise InputError(f"mexport {command} needs photos alone as input; this model takes " +
                         ", ".join(e.name for e in pipeline.spec.extra_inputs))
    return pipeline


def choose_photos(evals: tuple[Path, ...], calib: Path | None, calib_share: float, fold: int,
                  holdout: float) -> tuple[Any, list, list]:
    """(calibration set, tuning photos, held-out photos) as `mexport sensitivity` and `mexport
    fragility` take them: the ``evals`` folders' photos (scikit-image's without any), calibrated on
    ``calib`` (scikit-image's default set without it) or on ``calib_share`` of each folder; an
    evaluation photo that is also a calibration photo is refused."""
    from ..photos import DEFAULT_EVAL, default_photos
    from ..quantize.calibration import CalibrationSet, load_calibration

    photos = [p for d in evals for p in folder_photos(d)] if evals else [(f"scikit-image/{n}", a) for n, a in default_photos(DEFAULT_EVAL)]
    if calib_share:
        if calib is not None:
            raise InputError("give --calib or --calib-share, not both")
        if not evals:
            raise InputError("--calib-share takes its calibration photos from the --eval folders; give at least one")
        cal, tune, held = split_calibration(photos, calib_share, holdout, fold)
        photos = tune + held
        calib_set = CalibrationSet(tuple(cal), f"{len(cal)} of the --eval photos (--calib-share {calib_share:g}, fold {fold}: "
                                               "a hash split per folder)")
    else:
        if fold:
            raise InputError("--fold rotates the --calib-share split; give --calib-share too")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calib_set = load_calibration(calib)
        tune, held = split_photos(photos, holdout if evals else 0.0)
    calib_names = {hashlib.sha256(a.tobytes()).hexdigest() for _, a in calib_set.photos}
    overlap = [n for n, a in photos if hashlib.sha256(a.tobytes()).hexdigest() in calib_names]
    if overlap:
        raise InputError(f"{len(overlap)} evaluation photo(s) are also calibration photos ({', '.join(overlap[:3])}): "
                         "judging on what was calibrated on hides the error")
    return calib_set, tune, held


def sensitivity(target: str, out_dir: str | Path, model: str | None = None, calib: Path | None = None,
                evals: tuple[Path, ...] = (), holdout: float = 0.5, calib_share: float = 0.0, fold: int = 0,
                targets: Targets = Targets(), budget_min: float = 15.0,
                workers: int | None = None, executor=None, latency_rounds: int = 10,
                progress: Callable[..., Any] | None = None, log: Callable[[str], Any] = lambda s: None,
                repairs: tuple[str, ...] | None = None) -> SearchResult:
    """``repairs``: None tries each repair on naive int8 and keeps it when it helps on the tuning
    photos (mexport.sensitivity.search); ``()`` none; names from ``Recipe.repairs``: always."""
    import torch

    from ..console import ConverterOutput
    from ..export import make_provenance
    from ..io import check_target, install, output_lock, staging
    from ..models.recenter import plain_form
    from ..photos import prepare
    from ..quantize.calibration import role_inputs
    from ..quantize.recipe import Calibration
    from ..runtimes import get_runtime
    from ..quantize.layer_stats import layer_stats
    from .report import write_report
    from .trials import TrialPool, save_photo_set

    rt = get_runtime(target)
    rt.require_searchable()
    from ..quantize.recipe import REPAIRS

    if repairs is not None:
        repairs = tuple(repairs)
        if any(r not in REPAIRS for r in repairs):
            raise InputError(f"unknown repair(s) {[r for r in repairs if r not in REPAIRS]}; valid: {', '.join(REPAIRS)}")
    if not rt.applies_repairs:
        if repairs:
            raise InputError(f"{target} does not apply repairs")
        repairs = ()
    if budget_min <= 0:
        raise InputError("--budget-min must be > 0")
    out_dir = Path(out_dir)
    check_target(out_dir, directory=True)
    pipeline = photo_pipeline(model, "sensitivity")
    calib_set, tune, held = choose_photos(evals, calib, calib_share, fold, holdout)
    if len(tune) < MIN_TUNE_PHOTOS:
        raise InputError(f"{len(tune)} tuning photos; give at least {MIN_TUNE_PHOTOS} (--eval DIR, --holdout)")
    source = plain_form(pipeline)  # what an int8 export converts (mexport.export)
    calibration = Calibration("minmax", per_channel=True)
    options = rt.Options(precision="int8")
    prov = make_provenance(pipeline, rt, "fused", options, None, calib_set)
    log(f"{target}: calibrating on {len(calib_set.photos)} photos ({calib_set.source}); tuning on {len(tune)}, "
        f"judging on {len(held)} held-out photos")

    with output_lock(out_dir), staging(out_dir.parent, "sensitivity", out_dir) as work:
        stage = work / "files"
        stage.mkdir()
        sets = {}
        for key, ps in (("tune", tune), ("holdout", held)):
            if not ps:
                continue
            xs = [prepare(a, pipeline.spec)[0] for _, a in ps]
            with torch.inference_mode():
                refs = [pipeline(torch.from_numpy(x)).numpy() for x in xs]
            sets[key] = work / f"{key}.npz"
            save_photo_set(sets[key], [n for n, _ in ps], xs, refs)
        # the converters' and quantizers' own output (progress bars, delegate lines), the workers'
        # included (they inherit the redirected descriptors), goes to convert.log
        with ConverterOutput(stage / "convert.log"):
            feeds = role_inputs(source, "fused", calib_set.photos, calibration.max_photos)
            trials = rt.sensitivity_trials(source, feeds, prov, work / "trials", calibration, model or "")
            stats = {s.path: s for s in layer_stats(source.graph("fused"), [tuple(f.values()) for f in feeds[:2]])}
            units = [Unit(u["path"], u["macs"], u["ops"], u.get("joined", []), stats=stats.get(u["path"]))
                     for u in trials.units()]
            with TrialPool(trials, target, sets, workers=workers, executor=executor) as pool:
                result = search(target, trials, pool, units, calibration, targets, budget_min * 60, progress, log,
                                has_holdout="holdout" in sets, latency_rounds=latency_rounds, repairs=repairs)
        result.photos = {"calibration": [n for n, _ in calib_set.photos], "tune": [n for n, _ in tune],
                         "holdout": [n for n, _ in held]}
        result.notes.insert(0, f"model {pipeline.model_info.name} ({pipeline.model_info.weights_sha256[:12]}); calibration: "
                               f"{calib_set.source}")
        if result.chosen is not None:
            (stage / "recipe.json").write_text(result.chosen.recipe.to_json())
        write_report(result, stage, command_line(target, model, calib, evals, holdout, targets, budget_min, calib_share, fold, repairs))
        moves = {out_dir / f.name: f for f in sorted(stage.iterdir())}
        moves.update({out_dir / n: None for n in OUTPUT_FILES if (out_dir / n).exists() and out_dir / n not in moves})
        install(moves, work / "old")
    return result


def command_line(target, model, calib, evals, holdout, targets: Targets, budget_min, calib_share: float = 0.0, fold: int = 0,
                 repairs: tuple[str, ...] | None = None) -> str:
    parts = ["mexport sensitivity", f"--target {target}"]
    if model:
        parts.append(f"--model {model}")
    if calib:
        parts.append(f"--calib {calib}")
    parts += [f"--eval {e}" for e in evals]
    if calib_share:
        parts.append(f"--calib-share {calib_share:g}" + (f" --fold {fold}" if fold else ""))
    parts += [f"--holdout {holdout:g}", f"--target-psnr {targets.median_db:g}", f"--min-photo-psnr {targets.photo_db:g}",
              f"--margin {targets.margin_db:g}", f"--max-latency {targets.max_latency:g}", f"--budget-min {budget_min:g}"]
    if repairs is not None:
        parts += [f"--repair {r.replace('_', '-')}" for r in repairs] or ["--repair none"]
    return " ".join(parts)
