"""The export contract shared by every target, and the one ``export()`` that drives them.

A target is one module with a class registered by ``@register_target``: it converts one role's
graph to a file, embeds the provenance, quantizes, and gives a runner that is called like the
graph. ``export()`` does the rest for every target alike: stage in a temporary directory, check
fidelity against the float pipeline, and only then move ``coarse/refine/fused`` into place.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import FidelityError, InputError
from ..registry import Registry
from ..spec import Provenance

# Precisions that keep weights and activations in floating point; every other one quantizes to integers.
FLOAT_PRECISIONS = ("fp32", "fp16")

TARGETS: Registry[type["Target"]] = Registry("target")
register_target = TARGETS.register


@dataclass(frozen=True)
class ExportOptions:
    """Options every target understands; targets subclass it for their own."""

    precision: str = "fp32"
    calib: Path | None = None
    calib_count: int | None = None
    calib_method: str | None = None
    recipe: Path | None = None
    min_psnr: float | None = None
    check: bool = True
    check_data: Path | None = None
    keep_failed: bool = False

    def __post_init__(self) -> None:
        if self.min_psnr is not None and not 0 < self.min_psnr < 200:
            raise ValueError("min_psnr must be between 0 and 200 dB")
        if self.recipe is not None and self.precision not in ("int8", "w8a8"):
            raise ValueError("--recipe applies to --int8 (and Core ML --w8a8) only")


class Target(ABC):
    """Base for export targets. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    Options: type[ExportOptions] = ExportOptions

    @abstractmethod
    def convert(self, pipeline, role: str, options: ExportOptions, provenance: Provenance, path: Path,
                calibration=None, recipe=None) -> dict[str, Any]:
        """Write the role's artifact at ``path``; return facts for the report (sizes, ops, ...)."""

    @abstractmethod
    def runner(self, path: Path, threads: int | None = None, **kw):
        """A Runner for the artifact, called like the graph it holds."""

    @abstractmethod
    def read_provenance(self, path: Path) -> Provenance:
        """The provenance record embedded in the artifact."""

    def converter_versions(self) -> dict[str, str]:
        return {}

    def fingerprint(self, path: Path) -> str:
        """What two identical exports agree on: the sha256 of the file's bytes (of every file, in
        order, for a directory artifact). A format whose writer is not byte-reproducible overrides it."""
        import hashlib

        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes())
        return h.hexdigest()

    def companions(self, path: Path) -> list[Path]:
        """Files written beside an artifact that travel with it into a bundle (none by default)."""
        return []


def get_target(name: str) -> Target:
    return TARGETS.get(name)()


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, Path]
    checks: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    passed: bool = True


def _check_writable(out_dir: Path) -> None:
    """An export directory that can be written (checked before the slow work)."""
    from ..io import check_target

    check_target(out_dir, directory=True)


def parse_provenance(text: str | bytes, path: Path | str) -> Provenance:
    """An artifact's embedded record; a malformed one (any file can carry anything) is an InputError."""
    try:
        return Provenance.from_json(text)
    except ValueError as e:
        raise InputError(f"{path}: its mexport provenance record is malformed ({str(e).splitlines()[0][:200]})") from None


def check_output_shape(pipeline, role: str, shape, layout: str = "nchw") -> None:
    """A converted graph's output must be the contract's one-channel alpha at the role's size; a
    model of the user's that returns anything else (three channels, another size) is refused here,
    after its first conversion, instead of being exported and checked against itself."""
    h, w = pipeline.spec.coarse_size if role == "coarse" else pipeline.spec.refine_size
    want = (1, h, w, 1) if layout == "nhwc" else (1, 1, h, w)
    if tuple(int(d) for d in shape) != want:
        raise InputError(f"model {pipeline.model_info.name!r}: its {role} graph returns shape {tuple(int(d) for d in shape)}; "
                         f"the contract is one alpha channel at the input's size, {want}")


def output_files(out_dir: Path) -> dict[str, list[Path]]:
    """What earlier exports left in ``out_dir``, by target: its role files and their companions."""
    found: dict[str, list[Path]] = {}
    if not out_dir.is_dir():
        return found
    for name in TARGETS.names():
        t = get_target(name)
        for role in ("coarse", "refine", "fused"):
            f = out_dir / f"{role}{t.suffix}"
            if f.exists():
                found.setdefault(name, []).extend([f, *t.companions(f)])
    return found


def make_provenance(pipeline, target: Target, role: str, options: ExportOptions, recipe=None, calibration=None) -> Provenance:
    info = pipeline.model_info
    return Provenance(
        model=info.name, weights_sha256=info.weights_sha256, spec=pipeline.spec.to_dict(), role=role,
        target=target.name, precision=options.precision, recipe=(recipe.name + ":" + recipe.sha256()[:16]) if recipe else None,
        calib_sha256=calibration.sha256 if calibration else None,
        calib_method=(recipe.calibration.method if recipe else options.calib_method) if calibration else None,
        mexport_version=__version__, converters=target.converter_versions(),
    )


def check_photos(options: ExportOptions):
    """Held-out photos for the export-time check: scikit-image's evaluation set, plus --check-data."""
    from ..photos import DEFAULT_EVAL, default_photos, list_photos, load_photo

    photos = default_photos(DEFAULT_EVAL)
    if options.check_data is not None:
        folder = options.check_data / "image" if (options.check_data / "image").is_dir() else options.check_data
        photos += [(p.stem, load_photo(p)) for p in list_photos(folder)]
    return photos


def fidelity_checks(target: Target, pipeline, staged: dict[str, Path], photos, threshold: float, progress=None) -> dict[str, Any]:
    """Every role against its float graph on the same tensors; the fused model and the coarse+refine
    pair are gated (that is what an app runs), coarse and refine alone are reported.
    ``progress(stage, done, total, detail)`` is called after each gated photo."""
    from ..runner import PairRunner, TorchRunner
    from ..validate.fidelity import fidelity, photo_tensors
    from ..quantize.calibration import role_inputs

    ref = TorchRunner(pipeline)
    tensors = photo_tensors(photos, pipeline.spec)
    runners = {role: target.runner(path) for role, path in staged.items()}
    results: dict[str, Any] = {}
    gated = {"fused": runners["fused"]}
    if "refine" in runners:
        gated["pair"] = PairRunner(runners["coarse"], runners["refine"], pipeline.spec)
    done, total = 0, len(gated) * len(tensors)

    def tick(name: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress("check", done, total, name)

    for name, runner in gated.items():
        f = fidelity(runner, ref, tensors, lambda name=name: tick(name))
        results[name] = {"gated": True, "median_psnr": f.median_psnr, "min_psnr": f.min_psnr, "max_abs": f.max_abs,
                         "finite": f.finite, "passed": f.finite and f.median_psnr >= threshold,
                         "photos": {p.photo: {"psnr": p.psnr, "max_abs": p.max_abs} for p in f.photos}}
    for role in ("coarse", "refine"):
        if role not in runners:
            continue
        graph = pipeline.graph(role)
        inputs = role_inputs(pipeline, role, photos)
        import torch

        vals = []
        for feed in inputs:
            arrays = [feed[n] for n in pipeline.input_names(role)]
            with torch.inference_mode():
                want = graph(*(torch.from_numpy(a) for a in arrays)).numpy()
            from ..validate.fidelity import compare

            vals.append(compare("", runners[role](*arrays), want))
        results[role] = {"gated": False, "median_psnr": float(np.median([v.psnr for v in vals])),
                         "max_abs": float(max(v.max_abs for v in vals)), "finite": all(v.finite for v in vals)}
    return results


def export(target_name: str, pipeline, out_dir: str | Path, options: ExportOptions,
           progress: Callable[[str, int, int, str], Any] | None = None, log: Callable[[str], Any] = lambda s: None,
           roles: tuple[str, ...] | None = None) -> ExportResult:
    """Convert every role (or only ``roles``: the benchmark matrix needs the fused model alone),
    check fidelity, and move the files into ``out_dir`` only if they pass. ``progress(stage, done,
    total, detail)`` is called after each conversion and each checked photo."""
    from ..validate.fidelity import default_threshold

    target = get_target(target_name)
    if options.precision not in target.precisions:
        raise InputError(f"{target.name} does not offer precision {options.precision!r}; valid: {', '.join(target.precisions)}")
    roles = tuple(roles) if roles else tuple(pipeline.roles())
    unknown = sorted(set(roles) - set(pipeline.roles()))
    if unknown or "fused" not in roles:
        raise InputError(f"roles must include 'fused' and be among {', '.join(pipeline.roles())}; got {', '.join(roles)}")
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    others = {k: v for k, v in output_files(out_dir).items() if k != target.name}
    if others:
        names = ", ".join(f.name for fs in others.values() for f in fs)
        raise InputError(f"{out_dir} holds another export ({names}); an export directory holds one export: "
                         "choose another -o, or remove those files")
    # What is converted: the model as it is for float precisions; for integer ones, its re-centred
    # layers back in their plain form (models/recenter.py). The check compares against the model.
    from ..models.recenter import plain_form

    source = pipeline if options.precision in FLOAT_PRECISIONS else plain_form(pipeline)
    recipe, calibration = target.prepare_quantization(source, options) if hasattr(target, "prepare_quantization") else (None, None)
    threshold = options.min_psnr if options.min_psnr is not None else default_threshold(options.precision)
    photos = check_photos(options) if options.check else []

    from ..io import install, output_lock, staging

    with output_lock(out_dir), staging(out_dir.parent, "export", out_dir) as work:
        stage = work / "files"
        stage.mkdir()
        staged: dict[str, Path] = {}
        facts: dict[str, Any] = {}
        for i, role in enumerate(roles):
            prov = make_provenance(pipeline, target, role, options, recipe, calibration)
            path = stage / f"{role}{target.suffix}"
            log(f"converting {role} -> {path.name}")
            if progress:
                progress("convert", i, len(roles), role)
            facts[role] = target.convert(source, role, options, prov, path, calibration=calibration, recipe=recipe)
            staged[role] = path
            if progress:
                progress("convert", i + 1, len(roles), role)
        if recipe is not None:
            (stage / "recipe.json").write_text(recipe.to_json())
        checks: dict[str, Any] = {}
        passed = True
        if options.check:
            log(f"checking against the float pipeline on {len(photos)} photos (threshold {threshold:.1f} dB median alpha PSNR)")
            checks = fidelity_checks(target, pipeline, staged, photos, threshold, progress)
            passed = all(c["passed"] for c in checks.values() if c.get("gated"))
        report = {"target": target.name, "precision": options.precision, "threshold_db": threshold, "passed": passed,
                  "checks": checks, "facts": facts, "model": pipeline.model_info.name}
        (stage / "check.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
        if not passed and not options.keep_failed:
            raise FidelityError(_failure_message(checks, threshold, target.name, options.precision) + "; nothing written")
        moves: dict[Path, Path | None] = {out_dir / f.name: f for f in sorted(stage.iterdir())}
        # A re-export replaces the whole earlier export: its files that this one does not write
        # (the recipe.json of an int8 export redone in fp32, a refine file of another model) go too.
        for f in output_files(out_dir).get(target.name, []) + [out_dir / "recipe.json", out_dir / "check.json"]:
            if f.exists() and f not in moves:
                moves[f] = None
        install(moves, work / "old")
        files = {f.stem if f.suffix == target.suffix else f.name: f for f, src in moves.items() if src is not None}
        result = ExportResult(out_dir, files, checks, facts, passed)
        if not passed:
            raise FidelityError(_failure_message(checks, threshold, target.name, options.precision)
                                + f"; written to {out_dir} anyway (--keep-failed), check.json says passed: false")
        return result


def _failure_message(checks, threshold, target, precision) -> str:
    bad = [f"{k}: median alpha PSNR {v['median_psnr']:.1f} dB" + ("" if v["finite"] else " (NaN/Inf output)")
           for k, v in checks.items() if v.get("gated") and not v["passed"]]
    return f"{target} {precision} failed the fidelity check (needs >= {threshold:.1f} dB): " + "; ".join(bad)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not np.isfinite(o):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)
