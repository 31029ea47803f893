"""The ExecuTorch runtime: ``coarse/refine/fused.pte`` lowered to XNNPACK, fp32 and int8 (pt2e),
checked and timed through ``executorch.runtime`` like every other runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConversionError
from ...runtime import Runtime, check_output_shape, delegation_summary, register_runtime
from ...spec import Provenance
from .options import ExecutorchOptions


@register_runtime("executorch")
class ExecutorchRuntime(Runtime):
    name = "executorch"
    title = "ExecuTorch"
    suffix = ".pte"
    precisions = ("fp32", "int8")
    Options = ExecutorchOptions
    command_help = "Export coarse.pte, refine.pte and fused.pte (ExecuTorch, XNNPACK-delegated) and check them on executorch.runtime."
    precision_flags = {"int8": "int8 (pt2e, XNNPACKQuantizer, per-channel weights) with mexport's measured recipe."}
    runner_label = "ExecuTorch XNNPACK"
    benchmark_precisions = ("fp32", "int8")
    distributions = ("executorch", "torchao")

    def check_recipe(self, recipe) -> None:
        from .quantize import check_recipe

        super().check_recipe(recipe)
        check_recipe(recipe)

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        from .convert import capture, lower, output_shape, serialize
        from .inspection import delegation, int8_weights

        graph = pipeline.graph(role).eval()
        example = pipeline.example_inputs(role)
        if options.precision == "int8":
            from ...quantize.calibration import role_inputs
            from .quantize import quantize

            import torch

            feeds = [tuple(torch.from_numpy(f[n]) for n in pipeline.input_names(role))
                     for f in role_inputs(pipeline, role, calibration.photos, recipe.calibration.max_photos,
                                                 calibration.extras(pipeline.spec))]
            graph = quantize(graph, example, feeds, recipe)
        program = capture(graph, example, role)
        check_output_shape(pipeline, role, output_shape(program))
        edge = lower(program, role, provenance.to_json())
        took = delegation(edge.exported_program())  # before serializing, which rewrites the graph in place (out variants)
        data = serialize(edge, role)
        path.write_bytes(data)
        out = {"bytes": len(data), "xnnpack": took, "int8_weights": int8_weights(program)}
        if options.precision == "int8" and out["int8_weights"] == 0:
            raise ConversionError(f"{role}: int8 export has no int8 weights: the quantizer left the model float")
        return out

    def runner(self, path: Path, threads: int | None = None, **kw):
        from .runner import ExecutorchRunner

        return ExecutorchRunner(path, threads=threads)

    def read_provenance(self, path: Path) -> Provenance:
        from .runner import read_provenance

        return read_provenance(path)

    def preload(self) -> None:
        import executorch.runtime  # noqa: F401

    def summary(self, facts: dict[str, Any]) -> list[str]:
        return delegation_summary(facts, "left to the portable kernels")

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        from .describe import describe_pte

        return describe_pte(path, provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        r = min_runtime or {}
        return f"ExecuTorch runtime {r.get('executorch') or '?'} with {', '.join(r.get('backends') or []) or 'portable kernels only'}"

    def python_check(self, manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
        from .snippet import python_check

        return python_check(manifest, art)

    def app_snippets(self, manifest: dict[str, Any]) -> dict[str, str]:
        from .snippet import kotlin_snippet, swift_snippet

        return {"Android: ExecuTorch in Kotlin": kotlin_snippet(manifest), "iOS: ExecuTorch in Swift": swift_snippet(manifest)}
