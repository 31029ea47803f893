"""The export contract shared by every runtime, and the one ``export()`` that drives them.

A runtime converts one role's graph to a file, embeds the provenance, quantizes, and gives a
runner called like the graph (:class:`mexport.runtime.Runtime`). ``export()`` does the rest for
every runtime alike: check the options and the output before the slow work, stage in a temporary
directory, send the converters' own output to ``convert.log`` (:mod:`mexport.console`), check
fidelity against the float pipeline, and only then move ``coarse/refine/fused`` into place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .errors import ConversionError, FidelityError, InputError
from .runtime import FLOAT_PRECISIONS, ExportOptions, Runtime
from .spec import Provenance

CONVERT_LOG = "convert.log"
# A converter failure beside an earlier export of the same directory: that export keeps its own log.
FAILED_LOG = "convert.failed.log"
# Files an export writes besides the role files and their companions; a re-export replaces them all.
EXPORT_FILES = ("recipe.json", "check.json", CONVERT_LOG, FAILED_LOG)


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]
    checks: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    passed: bool = True
    summary: list[str] = field(default_factory=list)  # the runtime's lines about the fused model (delegation, ...)


def output_files(out_dir: Path) -> dict[str, list[Path]]:
    """What earlier exports left in ``out_dir``, by target: its role files and their companions."""
    found: dict[str, list[Path]] = {}
    if not out_dir.is_dir():
        return found
    from .runtimes import get_runtime, names

    for name in names():
        t = get_runtime(name)
        for role in ("coarse", "refine", "fused"):
            f = out_dir / f"{role}{t.suffix}"
            if f.exists():
                found.setdefault(name, []).extend([f, *t.companions(f)])
    return found


def make_provenance(pipeline, target: Runtime, role: str, options: ExportOptions, recipe=None, calibration=None) -> Provenance:
    info = pipeline.model_info
    return Provenance(
        model=info.name, weights_sha256=info.weights_sha256, spec=pipeline.spec.to_dict(), role=role,
        target=target.name, precision=options.precision, recipe=(recipe.name + ":" + recipe.sha256()[:16]) if recipe else None,
        calib_sha256=calibration.sha256 if calibration else None,
        calib_method=(recipe.calibration.method if recipe else options.calib_method) if calibration else None,
        mexport_version=__version__, converters=target.converter_versions(),
    )


def check_photos(options: ExportOptions, spec) -> tuple[list, dict | None]:
    """Held-out photos for the export-time check: scikit-image's evaluation set, plus --check-data;
    and a model's extra inputs per photo, read from --check-data (scikit-image's photos have no
    trimaps: such a model is checked on --check-data alone)."""
    from .photos import DEFAULT_EVAL, default_photos, list_photos, load_extras, load_photo, photo_folder

    given = [(p.stem, load_photo(p)) for p in list_photos(photo_folder(options.check_data))] if options.check_data else []
    if not spec.extra_inputs:
        return default_photos(DEFAULT_EVAL) + given, None
    if not given:
        raise InputError("the export-time check needs this model's extra inputs (" + ", ".join(e.name for e in spec.extra_inputs)
                         + "): give --check-data DIR with DIR/image/ and one folder per extra input beside it, or --no-check")
    return given, load_extras(options.check_data, given, spec)


def fidelity_checks(target: Runtime, pipeline, staged: dict[str, Path], photos, threshold: float, progress=None,
                    photo_threshold: float | None = None, extras: dict | None = None) -> dict[str, Any]:
    """Every role against its float graph on the same tensors; the fused model and the coarse+refine
    pair are gated (that is what an app runs), coarse and refine alone are reported. The gates are
    ``mexport validate``'s alpha PSNR gates: the median over the photos >= ``threshold`` and every
    photo >= ``photo_threshold``. ``progress(stage, done, total, detail)`` is called after each
    gated photo."""
    import torch

    from .runner import TorchRunner
    from .runtimes import open_runner
    from .validate.fidelity import compare, fidelity, photo_tensors

    tensors = photo_tensors(photos, pipeline.spec, extras)
    torch_ref, float_alpha = TorchRunner(pipeline), {}

    def ref(*arrays: np.ndarray) -> np.ndarray:
        # The float alpha of a photo, computed once for every runner and role that compares with
        # it (the tensors are the same objects throughout this function).
        key = id(arrays[0])
        if key not in float_alpha:
            float_alpha[key] = torch_ref(*arrays)
        return float_alpha[key]

    runners = {"fused": open_runner(target.name, {"fused": staged["fused"]})}
    gated = {"fused": runners["fused"]}
    if "refine" in staged:  # the pair's halves are also checked alone below
        pair = gated["pair"] = open_runner(target.name, {r: staged[r] for r in ("coarse", "refine")}, pipeline.spec)
        runners.update(coarse=pair.coarse, refine=pair.refine)
    elif "coarse" in staged:
        runners["coarse"] = open_runner(target.name, {"coarse": staged["coarse"]})
    results: dict[str, Any] = {}
    done, total = 0, len(gated) * len(tensors)

    def tick(name: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("check", done, total, name)

    for name, runner in gated.items():
        f = fidelity(runner, ref, tensors, lambda name=name: tick(name))
        worst = min(f.photos, key=lambda p: p.psnr if np.isfinite(p.psnr) else -np.inf)
        photo_ok = photo_threshold is None or all(p.psnr >= photo_threshold for p in f.photos)
        results[name] = {"gated": True, "median_psnr": f.median_psnr, "min_psnr": f.min_psnr, "max_abs": f.max_abs,
                         "finite": f.finite, "passed": bool(f.finite and f.median_psnr >= threshold and photo_ok),
                         "worst_photo": worst.photo,
                         "photos": {p.photo: {"psnr": p.psnr, "max_abs": p.max_abs} for p in f.photos}}
    # Each half alone against its float graph, on the inputs it gets in the float pipeline: the
    # coarse graph's alpha is the refine graph's input, and the refine graph's float output on it
    # is the fused float alpha (the same ops), already computed above.
    vals: dict[str, list] = {r: [] for r in ("coarse", "refine") if r in runners}
    if vals:
        for _, arrays in tensors:
            x, *extra = (torch.from_numpy(a) for a in arrays)
            with torch.inference_mode():
                coarse_in = [pipeline.downsample(t).numpy() for t in (x, *extra)]
                coarse_alpha = pipeline.coarse_graph(*(torch.from_numpy(a) for a in coarse_in)).numpy()
            if "coarse" in vals:
                vals["coarse"].append(compare("", runners["coarse"](*coarse_in), coarse_alpha))
            if "refine" in vals:
                vals["refine"].append(compare("", runners["refine"](arrays[0], coarse_alpha, *arrays[1:]), ref(*arrays)))
    for role, v in vals.items():
        results[role] = {"gated": False, "median_psnr": float(np.median([c.psnr for c in v])),
                         "max_abs": float(max(c.max_abs for c in v)), "finite": all(c.finite for c in v)}
    return results


def export(target_name: str, pipeline, out_dir: str | Path, options: ExportOptions,
           progress: Callable[[str, int, int, str], Any] | None = None, log: Callable[[str], Any] = lambda s: None,
           roles: tuple[str, ...] | None = None, echo_converters: bool = False) -> ExportResult:
    """Convert every role (or only ``roles``: the benchmark matrix needs the fused model alone),
    check fidelity, and move the files into ``out_dir`` only if they pass. ``progress(stage, done,
    total, detail)`` is called after each conversion and each checked photo. The converters' own
    output goes to ``out_dir/convert.log`` (and to the terminal as well with ``echo_converters``)."""
    from .console import ConverterOutput, quote
    from .io import atomic_write_bytes, check_target, install, output_lock, staging
    from .models.recenter import plain_form
    from .runtimes import get_runtime
    from .validate.fidelity import default_threshold
    from .validate.gates import default_photo_psnr

    target = get_runtime(target_name)
    if not isinstance(options, target.Options):
        raise InputError(f"{target.name} takes {target.Options.__name__}, got {type(options).__name__}")
    if options.precision not in target.precisions:
        raise InputError(f"{target.name} does not offer precision {options.precision!r}; valid: {', '.join(target.precisions)}")
    takes = target.recipe_precisions + target.recipe_optional_precisions
    if options.recipe is not None and options.precision not in takes:
        raise InputError(f"--recipe applies to {' and '.join('--' + p for p in takes)} only")
    roles = tuple(roles) if roles else tuple(pipeline.roles())
    unknown = sorted(set(roles) - set(pipeline.roles()))
    if unknown or "fused" not in roles:
        raise InputError(f"roles must include 'fused' and be among {', '.join(pipeline.roles())}; got {', '.join(roles)}")
    out_dir = Path(out_dir)
    check_target(out_dir, directory=True)
    earlier = output_files(out_dir)
    others = {k: v for k, v in earlier.items() if k != target.name}
    if others:
        names = ", ".join(f.name for fs in others.values() for f in fs)
        raise InputError(f"{out_dir} holds another export ({names}); an export directory holds one export: "
                         "choose another -o, or remove those files")
    # What is converted: the model as it is for float precisions; for integer ones, its re-centred
    # layers back in their plain form (models/recenter.py). The check compares against the model.
    source = pipeline if options.precision in FLOAT_PRECISIONS else plain_form(pipeline)
    recipe, calibration = target.prepare_quantization(source, options)
    if recipe is not None and recipe.repairs:
        source = repaired(source, recipe, calibration, target.weight_grid(recipe.calibration))
    threshold = options.min_psnr if options.min_psnr is not None else default_threshold(options.precision)
    # validate's per-photo default too, so the check and `mexport validate` on the same photos
    # cannot disagree; a lower --min-psnr lowers it with the median's.
    photo_threshold = min(default_photo_psnr(options.precision), threshold)
    photos, extras = check_photos(options, pipeline.spec) if options.check else ([], None)
    findings = _preflight(source, target, options.precision, log)

    with output_lock(out_dir), staging(out_dir.parent, "export", out_dir) as work:
        stage = work / "files"
        stage.mkdir()
        converter_log = stage / CONVERT_LOG
        staged: dict[str, Path] = {}
        facts: dict[str, Any] = {}
        checks: dict[str, Any] = {}
        passed = True
        try:
            with ConverterOutput(converter_log, echo=echo_converters):
                for i, role in enumerate(roles):
                    prov = make_provenance(pipeline, target, role, options, recipe, calibration)
                    path = stage / f"{role}{target.suffix}"
                    if progress:
                        progress("convert", i, len(roles), role)
                    facts[role] = target.convert(source, role, options, prov, path, calibration=calibration, recipe=recipe)
                    staged[role] = path
                    if progress:
                        progress("convert", i + 1, len(roles), role)
                if options.check:
                    log(f"checking against the float pipeline on {len(photos)} photos (threshold {threshold:.1f} dB median "
                        f"alpha PSNR, {photo_threshold:.1f} dB every photo)")
                    checks = fidelity_checks(target, pipeline, staged, photos, threshold, progress, photo_threshold, extras)
                    passed = all(c["passed"] for c in checks.values() if c.get("gated"))
        except ConversionError as e:
            # The converter's own words are in its log: kept where the user looks (the output
            # directory; beside an earlier export's log, not over it) and quoted in the error.
            kept = out_dir / (FAILED_LOG if target.name in earlier else CONVERT_LOG)
            atomic_write_bytes(kept, converter_log.read_bytes() if converter_log.exists() else b"")
            said = quote(kept)
            raise ConversionError(f"{e} (converter output: {kept}" + (f"; it says: {said}" if said else "") + ")") from None
        if recipe is not None:
            (stage / "recipe.json").write_text(recipe.to_json())
        report = {"target": target.name, "precision": options.precision, "threshold_db": threshold,
                  "photo_threshold_db": photo_threshold, "passed": passed,
                  "checks": checks, "facts": facts, "model": pipeline.model_info.name,
                  "preflight": [vars(f) for f in findings]}
        (stage / "check.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
        hint = _sensitivity_hint(source, target, options, calibration) if not passed else ""
        if not passed and not options.keep_failed:
            raise FidelityError(_failure_message(checks, threshold, photo_threshold, target.name, options.precision)
                                + hint + "; nothing written")
        moves: dict[Path, Path | None] = {out_dir / f.name: f for f in sorted(stage.iterdir())}
        # A re-export replaces the whole earlier export: its files that this one does not write
        # (the recipe.json of an int8 export redone in fp32, a refine file of another model) go too.
        for f in earlier.get(target.name, []) + [out_dir / name for name in EXPORT_FILES]:
            if f.exists() and f not in moves:
                moves[f] = None
        install(moves, work / "old")
        files = {f.stem if f.suffix == target.suffix else f.name: f for f, src in moves.items() if src is not None}
        result = ExportResult(out_dir, files, checks, facts, passed, target.summary(facts.get("fused") or {}))
        if not passed:
            raise FidelityError(_failure_message(checks, threshold, photo_threshold, target.name, options.precision)
                                + hint + f"; written to {out_dir} anyway (--keep-failed), check.json says passed: false")
        return result


def _preflight(source, target: Runtime, precision: str, log: Callable[[str], Any]) -> list:
    """The target's preflight on the fused graph, before any slow step: what will not capture stops
    the export here; what will run off the delegate is said once and kept in check.json."""
    if not target.has_preflight:
        return []
    from .preflight import preflight

    findings = [f for f in preflight(source, [target.name], ("fused",)) if f.concerns(precision)]
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = f" (+{len(errors) - 1} more: mexport doctor lists them)" if len(errors) > 1 else ""
        raise ConversionError(f"preflight: {errors[0].where}: {errors[0].message}{more}")
    warnings = [f for f in findings if f.severity == "warning"]
    if warnings:
        log(f"preflight: {len(warnings)} construct(s) will run off the delegate, e.g. {warnings[0].where}: "
            f"{warnings[0].message} (check.json: preflight; `mexport doctor` says how to fix each)")
    return findings


def _failure_message(checks, threshold, photo_threshold, target, precision) -> str:
    """Which gate each failing graph missed, and on which photo, in one line."""
    bad = []
    for k, v in checks.items():
        if not v.get("gated") or v["passed"]:
            continue
        worst = v.get("worst_photo")
        psnr = v["photos"][worst]["psnr"] if worst in v.get("photos", {}) else v["min_psnr"]
        bad.append(f"{k}: median alpha PSNR {v['median_psnr']:.1f} dB, worst photo {worst} {psnr:.1f} dB"
                   + ("" if v["finite"] else " (NaN/Inf output)"))
    n = len(next(iter(checks.values()), {}).get("photos", {}))
    return (f"{target} {precision} failed the fidelity check on {n} photos (needs a median >= {threshold:.1f} dB and every "
            f"photo >= {photo_threshold:.1f} dB, as `mexport validate`): " + "; ".join(bad))


# A layer whose output keeps less than this SQNR with it alone in int8 is named as a suspect.
SUSPECT_SQNR_DB = 35.0


def repaired(source, recipe, calibration, grid: str):
    """``source`` with the recipe's repairs applied (mexport.quantize.bias_correction), computed on
    the export's calibration photos and on ``grid``, the target's weight grid (no default: a
    correction for another grid than the export rounds to moves the bias the wrong way)."""
    from .quantize.bias_correction import bias_corrected
    from .quantize.calibration import role_inputs

    if calibration is None:
        raise InputError(f"recipe {recipe.name!r}: repairs ({', '.join(recipe.repairs)}) need calibration photos")
    feeds = role_inputs(source, "fused", calibration.photos, recipe.calibration.max_photos, calibration.extras(source.spec))
    return bias_corrected(source, recipe, feeds, grid)


def _sensitivity_hint(source, target: Runtime, options: ExportOptions, calibration) -> str:
    """For a failed calibrated export: the layers a quick torch ranking finds most int8-hostile
    (seconds), and the command that searches a recipe on the runtime."""
    if calibration is None or options.precision not in target.calibrated_precisions:
        return ""
    from .quantize.layer_stats import quick_ranking

    from .models import MODELS

    ranked = quick_ranking(source, calibration.photos, top=3)
    worst = [s for s in ranked if s.sqnr_db < SUSPECT_SQNR_DB] or ranked[:1]
    said = ", ".join(f"{s.path} (alone in int8: SQNR {s.sqnr_db:.0f} dB; {s.cause()})" for s in worst)
    name = source.model_info.name
    model = name if name in MODELS.names() else "FILE.py:factory"
    cmd = (f"`mexport sensitivity --target {target.name} --model {model} --eval PHOTOS_DIR -o DIR`" if target.searchable
           else f"`mexport sensitivity --target onnx ...` (its recipe applies to {target.name} too: module paths are the same)")
    return (f"; most int8-hostile layers: {said}; find a recipe that keeps them in check: {cmd}; whether int8-sized noise "
            f"alone moves a photo that far, whatever the recipe: `mexport fragility --model {model} --eval PHOTOS_DIR -o DIR`")


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not np.isfinite(o):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)
