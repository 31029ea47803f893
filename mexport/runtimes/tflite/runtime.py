"""The LiteRT (TFLite) runtime: litert-torch conversion (no TensorFlow), ai-edge-quantizer
quantization, provenance in the flatbuffer's metadata, and an inspection of every file written.

Stages, in order: export-time graph (named I/O, layout, uint8 input; ``convert``) -> litert-torch
-> ai-edge-quantizer (``quantize``) -> I/O tensor names + metadata (``flatbuffer``) -> inspection
(ops, dtypes, XNNPACK delegation; ``inspection``), which can fail the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runtime import RunnerOption, Runtime, check_output_shape, delegation_summary, register_runtime
from ...spec import Provenance
from .options import TfliteOptions


@register_runtime("tflite")
class TfliteRuntime(Runtime):
    name = "tflite"
    title = "LiteRT"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "dynamic-int8", "int8")
    Options = TfliteOptions
    command_help = "Export coarse.tflite, refine.tflite and fused.tflite (LiteRT) and check them on the LiteRT interpreter."
    precision_flags = {
        "fp16": "float16 weights, float32 compute and I/O.",
        "int8": "Full int8 (calibrated) with mexport's measured recipe; float I/O unless --io int8.",
        "dynamic-int8": "Dynamic int8 (int8 weights, activations quantized at run time).",
    }
    runner_options = (RunnerOption(
        "--tflite-python", "python", envvar="MEXPORT_TFLITE_PYTHON",
        help="Run .tflite artifacts in this Python's LiteRT runtime (tflite-runtime or ai-edge-litert), "
             "e.g. .venv-tflite-runtime/bin/python for the tflite-runtime 2.14 that apps pin."),)
    applies_splits = True
    applies_repairs = True  # ai-edge-quantizer's int8 weights: per channel, symmetric narrow range [-127, 127]
    runner_label = "LiteRT XNNPACK"
    benchmark_precisions = ("fp32", "fp16", "dynamic-int8", "int8")
    distributions = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer")

    def check_recipe(self, recipe) -> None:
        from ...errors import InputError

        super().check_recipe(recipe)
        if recipe.calibration.method not in ("minmax",):
            raise InputError(f"the TFLite quantizer supports calibration method 'minmax' only, not {recipe.calibration.method!r}")

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        from . import quantize as q
        from .convert import export_module, feed, litert_convert, quantization_pipeline, sample_inputs
        from .flatbuffer import finalize, model_t
        from .inspection import check_precision, inspect

        pipeline = quantization_pipeline(pipeline, options, recipe)
        module, swaps, rewrites = export_module(pipeline, role, options)
        data = litert_convert(module, role, sample_inputs(pipeline, role, options))
        out = model_t(data).subgraphs[0]
        check_output_shape(pipeline, role, out.tensors[out.outputs[0]].shape, options.layout)
        selection: dict[str, Any] = {}
        kept_float = False
        if options.precision == "fp16":
            data = q.quantize_fp16(data)
        elif options.precision == "dynamic-int8":
            data = q.quantize_dynamic_int8(data)
        elif options.precision == "int8" and role == "refine" and options.io == "float" and recipe.precision_of("refine") == "float" \
                and not any(k.startswith("refine.") and p != "float" for k, p in recipe.layers.items()):
            # The recipe keeps the whole refiner float, so the refine-only model is float: its
            # int8 remainder (the pipeline's ops around the refiner) was a graph XNNPACK failed to
            # prepare ("failed to reshape runtime", refiner v1), for no speed to gain. A recipe
            # that puts part of the refiner back to int8 (the default: refine.lowres) is applied.
            kept_float = True
            selection = {"refine": {"precision": "float", "ops": ["the whole role, kept float by the recipe"]}}
        elif options.precision == "int8":
            from ...quantize.calibration import role_inputs

            feeds = [feed(f, options) for f in role_inputs(pipeline, role, calibration.photos, recipe.calibration.max_photos,
                                                                 calibration.extras(pipeline.spec))]
            data, selection = q.quantize_static(data, role, feeds, recipe, pipeline, int8_io=options.io == "int8")
        data = finalize(data, provenance)
        path.write_bytes(data)
        facts = inspect(data)
        facts["wide_concats_before_conv"] = {k: v for k, v in swaps.items()}
        facts["rewrites"] = rewrites
        if selection:
            facts["recipe_selection"] = selection
        if not kept_float:
            check_precision(facts, options.precision, role)
        return facts

    def preflight(self, captured, role):
        from .preflight import preflight

        return preflight(captured, role)

    def sensitivity_trials(self, pipeline, feeds, provenance, workdir, calibration, model_ref):
        from .sensitivity import TfliteTrials

        return TfliteTrials.prepare(pipeline, feeds, provenance, workdir, calibration, model_ref)

    def runner(self, path: Path, threads: int | None = None, xnnpack: bool = True, python: str | Path | None = None):
        """``python=PATH`` runs the model in that Python's LiteRT (an older runtime) instead of here;
        ``xnnpack=False`` runs the builtin kernels."""
        if python is not None:
            from .external import SubprocessLiteRTRunner

            return SubprocessLiteRTRunner(path, python, threads=threads, xnnpack=xnnpack)
        from .runner import LiteRTRunner

        return LiteRTRunner(path, threads=threads, xnnpack=xnnpack)

    def read_provenance(self, path: Path) -> Provenance:
        from .flatbuffer import read_provenance

        return read_provenance(path)

    def preload(self) -> None:
        import ai_edge_litert.interpreter  # noqa: F401

    def summary(self, facts: dict[str, Any]) -> list[str]:
        rewrites = facts.get("rewrites") or []
        return delegation_summary(facts, "on the builtin kernels") + (
            [f"rewritten for XNNPACK / fixed shapes: {len(rewrites)} (check.json: rewrites)"] if rewrites else [])

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        from .describe import describe_tflite

        return describe_tflite(path, provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        r = min_runtime or {}
        top = ", ".join(f"{k} v{v}" for k, v in (r.get("op_versions") or {}).items() if v > 1) or "all ops v1"
        return f"LiteRT/TFLite runtime >= {r.get('min_runtime_version') or '?'} ({top})"

    def python_check(self, manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
        from .snippet import python_check

        return python_check(manifest, art)

    def app_snippets(self, manifest: dict[str, Any]) -> dict[str, str]:
        from .snippet import kotlin_snippet

        return {"Android: LiteRT in Kotlin": kotlin_snippet(manifest)}
