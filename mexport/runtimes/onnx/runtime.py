"""The ONNX runtime: ``coarse/refine/fused.onnx``, checked on onnxruntime's CPU provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runtime import RunnerOption, Runtime, check_output_shape, register_runtime
from ...spec import Provenance
from .options import OnnxOptions


@register_runtime("onnx")
class OnnxRuntime(Runtime):
    name = "onnx"
    title = "ONNX"
    suffix = ".onnx"
    precisions = ("fp32", "fp16", "dynamic-int8", "int8")
    Options = OnnxOptions
    command_help = "Export coarse.onnx, refine.onnx and fused.onnx (or .ort) and check them on onnxruntime."
    precision_flags = {
        "fp16": "float16 weights and compute, float32 inputs and outputs.",
        "int8": "Static int8 (QDQ) with mexport's measured recipe.",
        "dynamic-int8": "Dynamic int8 (weights int8, activations quantized at run time).",
    }
    runner_label = "onnxruntime CPU"
    benchmark_precisions = ("fp32", "int8")
    distributions = ("onnxruntime", "onnx", "onnxsim")
    runner_options: tuple[RunnerOption, ...] = ()
    applies_repairs = True

    def weight_grid(self, calibration) -> str:
        from .quantize import weight_grid

        return weight_grid(calibration)  # uint8 unless the activations are symmetric: quantize.py says why

    def prepare_quantization(self, pipeline, options):
        if options.precision == "dynamic-int8":  # no calibration; the recipe's float layers stay float
            from ...quantize.recipes import model_default_recipe

            return model_default_recipe(pipeline, self.name), None
        return super().prepare_quantization(pipeline, options)

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        import onnx

        from . import quantize as q
        from .convert import ensure_opset, set_provenance, simplify, torch_to_onnx

        graph = pipeline.graph(role)
        model = torch_to_onnx(graph, pipeline.example_inputs(role), pipeline.input_names(role), pipeline.output_name(role), options.opset)
        check_output_shape(pipeline, role, [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim])
        model = simplify(model)
        if options.precision == "fp16":
            model = q.to_fp16(model)
        elif options.precision == "dynamic-int8":
            model = q.quantize_dynamic(model, recipe)
        elif options.precision == "int8":
            from ...quantize.calibration import role_inputs

            feeds = role_inputs(pipeline, role, calibration.photos, recipe.calibration.max_photos, calibration.extras(pipeline.spec))
            model = q.quantize_static(ensure_opset(model, 13), feeds, recipe)
        set_provenance(model, provenance)
        onnx.checker.check_model(model)
        data = model.SerializeToString()
        path.write_bytes(data)
        return {"bytes": len(data), "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                "ops": sorted({n.op_type for n in model.graph.node})}

    def sensitivity_trials(self, pipeline, feeds, provenance, workdir, calibration, model_ref):
        from .sensitivity import OnnxTrials

        return OnnxTrials.prepare(pipeline, feeds, provenance, workdir, calibration, model_ref)

    def runner(self, path: Path, threads: int | None = None, **kw):
        from .runner import OnnxRunner

        return OnnxRunner(path, threads=threads)

    def read_provenance(self, path: Path) -> Provenance:
        from .convert import read_provenance

        return read_provenance(path)

    def preload(self) -> None:
        import onnxruntime  # noqa: F401

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        from .describe import describe_onnx

        return describe_onnx(path, provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        r = min_runtime or {}
        return f"ONNX opset {r.get('onnx_opset')} (IR {r.get('ir_version')}), onnxruntime {r.get('onnxruntime') or '?'}"

    def python_check(self, manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
        from .snippet import python_check

        return python_check(manifest, art)

    def app_snippets(self, manifest: dict[str, Any]) -> dict[str, str]:
        from .snippet import kotlin_snippet

        return {"Android: onnxruntime in Kotlin": kotlin_snippet(manifest)}
