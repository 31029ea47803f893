"""The interface every runtime folder implements (``mexport/runtimes/<name>/``), and the registry
they register in.

A runtime is one class registered by ``@register_runtime``: it converts one role's graph to a
file (capture, convert, quantize, inspect), embeds the provenance, gives a runner called like the
graph, describes a file for a bundle and writes the app snippet for it. Its options are a frozen
dataclass whose fields say how the CLI spells them (:func:`option`), so the CLI's per-runtime
commands and flags are generated, not written by hand. Everything runtime-neutral (the export
driver, validation, benchmarks, bundles) knows runtimes only through this interface and the
lookups in :mod:`mexport.runtimes`.

Light on purpose: importing a runtime folder imports this module and its own options, never its
converter or runtime library (those are imported inside the methods that use them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .registry import Registry
from .spec import Provenance

# Precisions that keep weights and activations in floating point; every other one quantizes.
FLOAT_PRECISIONS = ("fp32", "fp16")

RUNTIMES: Registry[type["Runtime"]] = Registry("target")
register_runtime = RUNTIMES.register


def option(default: Any = None, help: str = "", *, flag: str | None = None, choices: tuple[str, ...] | None = None,
           invert: bool = False, flags: dict[str, str] | None = None, cli: bool = True) -> Any:
    """A field of an Options dataclass, with how the command line spells it:

    ``flag`` the option's name (default ``--field-name``); ``choices`` its allowed values;
    ``invert`` a boolean field set to False by the flag (``--no-check`` for ``check``); ``flags``
    one flag per value of the field (Core ML's ``--fp16`` / ``--fp32`` for ``compute_precision``);
    ``cli=False`` a library-only field."""
    meta = {"help": help, "flag": flag, "choices": choices, "invert": invert, "flags": flags} if cli else {}
    return dataclasses.field(default=default, metadata={"mexport.cli": meta} if cli else {})


@dataclass(frozen=True)
class ExportOptions:
    """Options every runtime understands; runtimes subclass it for their own."""

    precision: str = option("fp32", cli=False)  # the CLI spells precisions as flags: Runtime.precision_flags
    calib: Path | None = option(help="Folder of calibration photos for quantization (default: scikit-image's bundled photos).")
    calib_count: int | None = option(help="Use only the first N calibration photos.")
    calib_method: str | None = option(choices=("minmax", "entropy", "percentile"), help="Override the recipe's calibration method.")
    recipe: Path | None = option(help="Per-layer precision recipe (JSON) for quantization (--int8; Core ML --w8a8).")
    min_psnr: float | None = option(help="Fidelity threshold (median alpha PSNR vs float, dB); default per precision.")
    check: bool = option(True, flag="--no-check", invert=True, help="Skip the export-time fidelity check (not recommended).")
    check_data: Path | None = option(help="Extra real photos (a folder, or the alphamatting layout) for the export-time check.")
    keep_failed: bool = option(False, help="Write artifacts that fail the check anyway (exit code stays 1).")

    def __post_init__(self) -> None:
        if self.min_psnr is not None and not 0 < self.min_psnr < 200:
            raise ValueError("min_psnr must be between 0 and 200 dB")


def cli_fields(options: type[ExportOptions]) -> list[dataclasses.Field]:
    """The fields of an Options class that the command line sets, in declaration order."""
    return [f for f in dataclasses.fields(options) if f.metadata.get("mexport.cli")]


@dataclass(frozen=True)
class RunnerOption:
    """A command-line option that runs this runtime's artifacts differently (``validate``, ``bench``,
    ``cutout --artifact``): ``--tflite-python PATH`` becomes the runner keyword ``python``."""

    flag: str
    keyword: str
    help: str
    envvar: str | None = None


class Runtime(ABC):
    """Base for runtimes. Subclasses set the class attributes and implement the abstract methods."""

    name: str = ""  # the registry key, and ``Provenance.target``
    title: str = ""  # the runtime's name in reports: "ONNX", "LiteRT"
    suffix: str = ""
    precisions: tuple[str, ...] = ("fp32",)
    default_precision: str = "fp32"
    Options: type[ExportOptions] = ExportOptions

    # The command line: the command that exports it (default: its name), the switch that picks it
    # among the runtimes sharing a command (ORT: ``onnx --ort``), one flag per precision other than
    # the default (empty when the Options fields choose the precision, as Core ML's do).
    command: str = ""
    command_help: str = ""
    switch: tuple[str, str] | None = None
    precision_flags: dict[str, str] = {}
    runner_options: tuple[RunnerOption, ...] = ()

    # Quantization: the precisions that take a recipe and calibration photos, and whether the
    # converter applies a recipe's ``split_inputs``.
    recipe_precisions: tuple[str, ...] = ("int8",)  # always exported by a recipe (given, or the model's), recorded
    recipe_optional_precisions: tuple[str, ...] = ()  # take a --recipe when one is given, else none is applied
    calibrated_precisions: tuple[str, ...] = ("int8",)
    applies_splits: bool = False
    # Whether the converter applies a recipe's ``repairs``: its 8-bit weights are per output channel
    # (per tensor without per_channel) on the grid ``weight_grid`` names, which the repairs compute on.
    applies_repairs: bool = False

    # Reports: what runs an artifact here, the precisions in `mexport bench --matrix`, whether it
    # can be timed on this machine, and the PyPI distributions whose versions reports and
    # provenance record (the first runs artifacts).
    runner_label: str = ""
    benchmark_precisions: tuple[str, ...] = ()
    timed: bool = True
    distributions: tuple[str, ...] = ()

    # ------------------------------------------------------------------ conversion

    @abstractmethod
    def convert(self, pipeline, role: str, options: ExportOptions, provenance: Provenance, path: Path,
                calibration=None, recipe=None) -> dict[str, Any]:
        """Write the role's artifact at ``path``; return facts for check.json (sizes, ops, ...)."""

    def resolve_precision(self, precision: str | None, fields: dict[str, Any]) -> str:
        """The precision an export asks for, from the precision flag given (None: none) and the
        Options fields set; a runtime whose fields choose the precision overrides this."""
        return precision or self.default_precision

    def check_recipe(self, recipe) -> None:
        """Refuse a recipe this runtime cannot apply (before the slow work)."""
        if not self.applies_splits:
            appliers = [RUNTIMES.get(n).title for n in RUNTIMES.in_order() if RUNTIMES.get(n).applies_splits]
            recipe.require_no_splits(self.title or self.name, appliers)
        if not self.applies_repairs:
            appliers = [RUNTIMES.get(n).title for n in RUNTIMES.in_order() if RUNTIMES.get(n).applies_repairs]
            recipe.require_no_repairs(self.title or self.name, appliers)

    def weight_grid(self, calibration) -> str:
        """The grid this runtime rounds a recipe's 8-bit weights to, for the recipe's calibration
        settings (mexport.quantize.bias_correction.int8_weight): "int8", symmetric on [-127, 127],
        unless the runtime says otherwise."""
        return "int8"

    def prepare_quantization(self, pipeline, options: ExportOptions):
        """(recipe, calibration photos) for a quantized precision, else (None, None); read and
        checked before any conversion, so a bad recipe or photo folder fails in a second."""
        if options.precision not in self.recipe_precisions:
            return None, None
        from .quantize.calibration import load_calibration
        from .quantize.recipes import resolve_recipe

        recipe = resolve_recipe(options, pipeline, self.name, splits=self.applies_splits)
        self.check_recipe(recipe)
        calibration = load_calibration(options.calib, options.calib_count) if options.precision in self.calibrated_precisions else None
        return recipe, calibration

    def sensitivity_trials(self, pipeline, feeds: list[dict], provenance: Provenance, workdir: Path, calibration, model_ref: str):
        """A picklable trial builder for `mexport sensitivity` (``units()``, ``build(recipe, path)``,
        ``build_float(path)``), prepared in ``workdir``; ``model_ref`` loads ``pipeline`` again in a
        worker process. Runtimes without one refuse here."""
        self.require_searchable()
        raise NotImplementedError  # a searchable runtime overrides this method

    def preflight(self, captured, role: str) -> list:
        """What this target will not convert, or not run on its delegate, in a captured role graph
        (``mexport.capture.Captured``), and what its export rewrites: ``mexport.findings.Finding``
        list. Nothing by default."""
        return []

    @property
    def has_preflight(self) -> bool:
        """Whether :meth:`preflight` says anything: exports skip capturing the graph otherwise."""
        return type(self).preflight is not Runtime.preflight

    def require_searchable(self) -> None:
        """An InputError naming the targets `mexport sensitivity` searches, unless this is one."""
        if not self.searchable:
            raise InputError(f"mexport sensitivity does not search {self.name} yet; valid targets: {', '.join(searchable_runtimes()) or 'none'}")

    @property
    def searchable(self) -> bool:
        """Whether `mexport sensitivity` can search recipes on this runtime."""
        return type(self).sensitivity_trials is not Runtime.sensitivity_trials

    def converter_versions(self) -> dict[str, str]:
        return dist_versions(("torch", *self.distributions))

    # ------------------------------------------------------------------ artifacts

    @abstractmethod
    def runner(self, path: Path, threads: int | None = None, **kw):
        """A Runner for the artifact, called like the graph it holds (see mexport.runner)."""

    @abstractmethod
    def read_provenance(self, path: Path) -> Provenance:
        """The provenance record embedded in (or beside) the artifact."""

    def preload(self) -> None:
        """Import the runtime library now, so that a timed load measures the model, not Python's import."""

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

    def summary(self, facts: dict[str, Any]) -> list[str]:
        """Lines for the export's verdict on the terminal from the fused model's facts (what a
        delegate took, a mobile accelerator's verdict); at most two."""
        return []

    # ------------------------------------------------------------------ bundles

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        """What an app team needs to know about one file, read from the file itself: ``inputs`` and
        ``outputs`` (:func:`tensor`), ``min_runtime``, format facts. Without a reader of its own, a
        runtime gets the pipeline contract's shapes, marked as such."""
        return contract_description(provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        """The ``min_runtime`` of :meth:`describe` as one line for the bundle's README."""
        return "not read (no reader for this format)"

    def python_check(self, manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]] | None:
        """A by-hand golden-vector check with the runtime's own Python API, for the bundle's README:
        (imports, lines that set ``got`` from ``x``); None when there is no such API."""
        return None

    def app_snippets(self, manifest: dict[str, Any]) -> dict[str, str]:
        """README sections (title -> Markdown) showing an app how to run this runtime's artifacts."""
        return {}


def searchable_runtimes() -> list[str]:
    return [n for n in RUNTIMES.in_order() if RUNTIMES.get(n)().searchable]


def dist_versions(dists: tuple[str, ...]) -> dict[str, str]:
    """Installed distributions' versions, read from their metadata: importing coremltools or torch
    just to ask would cost seconds and print warnings. A missing one is left out."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


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


# ----------------------------------------------------------------------------- describing files

def layout_of(shape: list[int]) -> str:
    """NCHW or NHWC from a 4-D shape (channels are the small axis); 'unknown' when ambiguous."""
    if len(shape) != 4:
        return "unknown"
    c_first, c_last = shape[1], shape[3]
    if 0 < c_first <= 4 < c_last:
        return "NCHW"
    if 0 < c_last <= 4 < c_first:
        return "NHWC"
    return "unknown"


def tensor(name: str, shape: list[int], dtype: str, quantization: dict | None = None, **extra: Any) -> dict[str, Any]:
    """One input or output as a bundle's manifest records it."""
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype, "layout": layout_of(list(shape)),
            "quantization": quantization, **extra}


def contract_description(prov: Provenance) -> dict[str, Any]:
    """Shapes the pipeline contract promises for a role, for formats mexport has no reader for."""
    spec = prov.pipeline_spec
    h, w = spec.coarse_size if prov.role == "coarse" else spec.refine_size
    inputs = [tensor("image", [1, 3, h, w], "float32")]
    if prov.role == "refine":
        inputs.append(tensor("coarse_alpha", [1, 1, *spec.coarse_size], "float32"))
    inputs += [tensor(e.name, [1, e.channels, h, w], "float32") for e in spec.extra_inputs]
    out = "coarse_alpha" if prov.role == "coarse" else "alpha"
    return {"source": "pipeline contract (mexport has no reader for this format)", "inputs": inputs,
            "outputs": [tensor(out, [1, 1, h, w], "float32")], "min_runtime": None}


def contract_input_names(provenance: Provenance) -> list[str]:
    """A role's inputs in the contract's order: image, coarse_alpha (refine), extra inputs."""
    return (["image"] + (["coarse_alpha"] if provenance.role == "refine" else [])
            + [e.name for e in provenance.pipeline_spec.extra_inputs])


def delegation_summary(facts: dict[str, Any], fallback: str) -> list[str]:
    """The verdict's delegation line from an export's ``xnnpack`` facts (runtimes that delegate to
    XNNPACK); ``fallback`` says where the nodes it did not take run."""
    x = facts.get("xnnpack")
    if not x:
        return []
    rest = "" if not x["fallback"] else f"; {fallback}: {', '.join(f'{k} x{v}' for k, v in x['fallback_ops'].items())}"
    return [f"XNNPACK delegation (fused): {x['delegated']}/{x['nodes']} nodes in {x['partitions']} partition(s){rest}"]


@contextlib.contextmanager
def native_logs_silenced():
    """Runtimes' C++ code logs to fd 2 as it starts (ExecuTorch: its CPU probing and thread-pool
    resets, seven lines per process; LiteRT: "Created TensorFlow Lite XNNPACK delegate" per
    interpreter, through `-q`); no Python logger or flag reaches them, so fd 2 is pointed at
    /dev/null while the runtime starts. Their errors still arrive as Python exceptions."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
