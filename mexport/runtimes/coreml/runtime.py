"""The Core ML runtime: coremltools ML Program packages (``.mlpackage``), validated on Linux through
mexport's MIL executor (``mil_executor``), since ``MLModel.predict`` exists only on macOS."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path
from typing import Any

from ...errors import ConversionError
from ...runtime import Runtime, register_runtime
from ...spec import Provenance
from .options import PRECISION_OF_COMPRESSION, PRECISIONS, CoreMLOptions


@register_runtime("coreml")
class CoreMLRuntime(Runtime):
    name = "coreml"
    title = "Core ML"
    suffix = ".mlpackage"
    precisions = PRECISIONS
    default_precision = "fp16"
    Options = CoreMLOptions
    command_help = "Export coarse/refine/fused.mlpackage; verified on Linux by structure and an emulated run of the MIL program."
    precision_flags: dict[str, str] = {}  # compute precision, --weights and --w8a8 are the options' own fields
    recipe_precisions = ("w8a8",)
    # fp16 compute and weight compression read a --recipe's float layers when one is given: they
    # compute in fp32 / keep their weights uncompressed (the same recipe file as for ONNX and LiteRT).
    recipe_optional_precisions = ("fp16", "weights-int8", "weights-int4", "palette8", "palette6", "palette4")
    calibrated_precisions = ("w8a8",)
    runner_label = "MIL executor (emulated)"
    benchmark_precisions = ("fp32", "fp16")
    timed = False  # no Core ML runtime off macOS; the executor is an emulation, not worth timing
    distributions = ("coremltools",)

    def __init__(self) -> None:
        self._w8a8: dict[tuple, Any] = {}  # calibrated once per export, shared by its roles

    def resolve_precision(self, precision: str | None, fields: dict[str, Any]) -> str:
        if precision:
            return precision
        if fields.get("w8a8"):
            return "w8a8"
        if fields.get("compression"):
            return PRECISION_OF_COMPRESSION[fields["compression"]]
        return fields.get("compute_precision") or self.default_precision

    def check_recipe(self, recipe) -> None:
        """W8A8 has two layer precisions: int8 and float (whatever the program computes in)."""
        from .w8a8 import check_recipe

        super().check_recipe(recipe)
        check_recipe(recipe)

    def prepare_quantization(self, pipeline, options: CoreMLOptions):
        """W8A8: the recipe (given or the model's) and calibration photos. fp16 and weight
        compression: a --recipe given by the user, whose "float" layers stay float (every other
        precision it names means the program's own: fp16 compute, compressed weights); without one,
        the model's declared layers as before (convert.fp32_layers), and no recipe is recorded."""
        if options.w8a8:
            return super().prepare_quantization(pipeline, options)
        if options.recipe is None or options.precision not in self.recipe_optional_precisions:
            return None, None
        from ...quantize.recipes import resolve_recipe

        recipe = resolve_recipe(options, pipeline, self.name)
        super().check_recipe(recipe)  # no split_inputs: only LiteRT applies them
        return recipe, None

    def _graph_pipeline(self, pipeline, options: CoreMLOptions, recipe, calibration):
        """The pipeline whose graphs are traced: the float one, or its W8A8 fake-quantized copy."""
        if not options.w8a8:
            return pipeline
        if recipe is None or calibration is None:
            raise ConversionError("w8a8 needs a recipe and calibration photos (prepare_quantization)")
        from .w8a8 import quantized_pipeline

        key = (id(pipeline), recipe.sha256(), calibration.sha256)
        if key not in self._w8a8:
            self._w8a8 = {key: quantized_pipeline(pipeline, recipe, calibration)}
        return self._w8a8[key]

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        import coremltools as ct

        from .convert import check_finite_weights, compress, ct_target, fp32_layers, io_types, set_metadata, trace
        from .mixed import Fp32Layers, module_scopes
        from .package import make_deterministic, structure_report

        graph_pipeline = self._graph_pipeline(pipeline, options, recipe, calibration)
        traced = trace(graph_pipeline.graph(role), pipeline.example_inputs(role))
        inputs, outputs = io_types(pipeline, role, options.image_input)
        layers = fp32_layers(pipeline, options, recipe) if options.compute_precision == "fp16" else {}
        selector = Fp32Layers(module_scopes(traced), layers) if layers else None
        if selector is not None:
            precision = ct.transform.FP16ComputePrecision(op_selector=selector)
        else:
            precision = ct.precision.FLOAT16 if options.compute_precision == "fp16" else ct.precision.FLOAT32
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlmodel = ct.convert(traced, source="pytorch", inputs=inputs, outputs=outputs, convert_to="mlprogram",
                                     compute_precision=precision, minimum_deployment_target=ct_target(options.deployment_target),
                                     skip_model_load=True)
        except Exception as e:  # coremltools raises many types; the first line names the op
            raise ConversionError(f"coremltools could not convert the {role} graph: {str(e).splitlines()[0][:300]}") from None
        kept32: tuple[str, ...] = ()
        if selector is not None:
            unmatched = [k for k, n in selector.matched.items() if n == 0]
            if role == "fused" and unmatched:  # the fused graph holds every layer of the model
                raise ConversionError(f"fp32 layers {', '.join(unmatched)} match no op of the traced model; "
                                      "check the layer names (module paths like coarse.stage2d.dec.4)")
            kept32 = tuple(k for k, n in selector.matched.items() if n)
        float_layers: tuple[str, ...] = ()
        if options.compression:
            from .w8a8 import float_layers as recipe_float_layers

            float_layers = (recipe_float_layers(recipe) if recipe is not None
                            else tuple(pipeline.model_info.int8.float_layers))
            mlmodel = compress(mlmodel, options.compression, float_layers)
            check_finite_weights(mlmodel._mil_program, f"{role} ({options.compression})")
        elif options.w8a8:
            from .w8a8 import float_layers as recipe_float_layers

            float_layers = recipe_float_layers(recipe)
            check_finite_weights(mlmodel._mil_program, f"{role} (w8a8)")
        set_metadata(mlmodel, pipeline, role, provenance, options)
        mlmodel.user_defined_metadata["mexport.fp32_layers"] = ",".join(kept32) or "none"
        # narrower layers inside those that the recipe lets compute in fp16 (refine.lowres)
        mlmodel.user_defined_metadata["mexport.fp16_inside_fp32_layers"] = ",".join(sorted(selector.exceptions) if selector else []) or "none"
        mlmodel.user_defined_metadata["mexport.fp32_convs"] = str(selector.convs if selector is not None else 0)
        mlmodel.user_defined_metadata["mexport.float_layers"] = ",".join(float_layers) or "none"
        mlmodel.save(str(path))
        make_deterministic(path)
        report = structure_report(path, pipeline=pipeline, role=role, options=options)
        if report["problems"]:
            raise ConversionError(f"{path.name} fails its structural check: " + "; ".join(report["problems"]))
        return report["facts"]

    def runner(self, path: Path, threads: int | None = None, **kw):
        if platform.system() == "Darwin" and not kw.get("emulate", False):
            from .runner import CoreMLRunner

            return CoreMLRunner(path, compute_units=kw.get("compute_units", "ALL"))
        from .runner import CoreMLEmulatedRunner

        return CoreMLEmulatedRunner(path, threads=threads)

    def read_provenance(self, path: Path) -> Provenance:
        from .package import read_provenance

        return read_provenance(path)

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        from .describe import describe_coreml

        return describe_coreml(path, provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        r = min_runtime or {}
        return f"Core ML deployment target {r.get('deployment_target')} (spec v{r.get('specification_version')}: {r.get('os')})"

    def python_check(self, manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
        from .snippet import python_check

        return python_check(manifest, art)

    def app_snippets(self, manifest: dict[str, Any]) -> dict[str, str]:
        from .snippet import swift_snippet

        return {"iOS: Core ML in Swift": swift_snippet(manifest)}
