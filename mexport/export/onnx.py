"""ONNX target: torch.onnx export, onnx.checker, onnxsim, provenance in metadata_props, and
onnxruntime quantization (fp16, dynamic int8, static int8 QDQ driven by a recipe)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError
from ..spec import Provenance
from .base import ExportOptions, Target, check_output_shape, parse_provenance, register_target
from dataclasses import dataclass

PROVENANCE_KEY = "mexport.provenance"


@dataclass(frozen=True)
class OnnxOptions(ExportOptions):
    opset: int = 17

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 11 <= self.opset <= 21:
            raise ValueError("opset must be between 11 and 21 (int8 exports are upgraded to >= 13 for per-channel QDQ)")


def module_path(node_name: str) -> str:
    """'/pipe/coarse/stage1/conv_in/conv_in.0/Conv' -> 'coarse.stage1.conv_in.0' (the exporter
    scopes node names by module; nested names repeat their parent as a prefix)."""
    parts = [p for p in node_name.split("/")[1:-1] if p != "pipe"]
    path: list[str] = []
    for p in parts:
        if path and p.startswith(path[-1] + "."):
            path[-1] = p
        else:
            path.append(p)
    return ".".join(path)


def torch_to_onnx(graph, inputs, input_names, output_name: str, opset: int) -> "Any":
    import onnx
    import torch

    f = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: the dynamo exporter needs onnxscript and gives
            # different node names; this one is deterministic and names nodes by module path.
            torch.onnx.export(graph, inputs, f, dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=[output_name], do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; the message names the op
        raise ConversionError(f"torch.onnx could not export the {getattr(graph, 'role', '')} graph: {str(e).splitlines()[0]}") from None
    return onnx.load_from_string(f.getvalue())


def simplify(model):
    import onnx
    import onnxsim

    onnx.checker.check_model(model, full_check=True)
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ConversionError("onnxsim could not validate the simplified model")
    return simplified


def set_provenance(model, prov: Provenance) -> None:
    for p in list(model.metadata_props):
        if p.key == PROVENANCE_KEY:
            model.metadata_props.remove(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = PROVENANCE_KEY, prov.to_json()
    model.producer_name = "mexport"
    model.doc_string = f"{prov.model} {prov.role} ({prov.precision}), exported by mexport {prov.mexport_version}"


def session_provenance(session, path: Path) -> Provenance:
    """The provenance record from an onnxruntime session's metadata (.onnx and .ort alike)."""
    meta = session.get_modelmeta().custom_metadata_map
    if PROVENANCE_KEY not in meta:
        raise InputError(f"{path}: no mexport provenance record in its metadata")
    return parse_provenance(meta[PROVENANCE_KEY], path)


def ensure_opset(model, minimum: int):
    """Upgrade older opsets where quantization needs it (per-channel QDQ needs >= 13)."""
    from onnx import version_converter

    current = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return model if current >= minimum else version_converter.convert_version(model, minimum)


class _Reader:
    """onnxruntime's CalibrationDataReader over prepared feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - ORT calls it for some methods
        pass


@register_target("onnx")
class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    precisions = ("fp32", "fp16", "dynamic-int8", "int8")
    Options = OnnxOptions

    def converter_versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime
        import onnxsim
        import torch

        return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxsim": onnxsim.__version__, "onnxruntime": onnxruntime.__version__}

    def prepare_quantization(self, pipeline, options: ExportOptions):
        if options.precision == "dynamic-int8":
            from ..quantize.recipes import model_default_recipe

            return model_default_recipe(pipeline, "onnx"), None
        if options.precision != "int8":
            return None, None
        from ..quantize.calibration import load_calibration
        from ..quantize.onnx_int8 import resolve_recipe

        recipe = resolve_recipe(options, pipeline)
        calibration = load_calibration(options.calib, options.calib_count)
        return recipe, calibration

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        import onnx

        opset = getattr(options, "opset", 17)
        graph = pipeline.graph(role)
        model = torch_to_onnx(graph, pipeline.example_inputs(role), pipeline.input_names(role), pipeline.output_name(role), opset)
        check_output_shape(pipeline, role, [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim])
        model = simplify(model)
        if options.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            from onnxruntime.transformers.onnx_model import OnnxModel

            model = convert_float_to_float16(model, keep_io_types=True)
            # The converter appends its input Casts at the end of the node list; the checker
            # (rightly) wants topological order.
            wrapped = OnnxModel(model)
            wrapped.topological_sort()
            model = wrapped.model
        elif options.precision == "dynamic-int8":
            model = self._quantize_dynamic(model, recipe)
        elif options.precision == "int8":
            from ..quantize.calibration import role_inputs
            from ..quantize.onnx_int8 import quantize_static

            feeds = role_inputs(pipeline, role, calibration.photos, recipe.calibration.max_photos)
            model = quantize_static(ensure_opset(model, 13), feeds, recipe)
        set_provenance(model, provenance)
        onnx.checker.check_model(model)
        data = model.SerializeToString()
        path.write_bytes(data)
        facts = {"bytes": len(data), "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 "ops": sorted({n.op_type for n in model.graph.node})}
        return facts

    @staticmethod
    def _quantize_dynamic(model, recipe):
        """Dynamic int8 keeps the same layers in float as the static recipe: the damage comes
        from the weights of those layers, which dynamic quantization quantizes too."""
        import tempfile

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        from ..quantize.onnx_int8 import node_module_paths

        exclude = [n.name for n, p in zip(model.graph.node, node_module_paths(model)) if recipe and recipe.precision_of(p) == "float"]
        # Weights computed in the graph (a fixed kernel built in forward, like the refiner's 1x1
        # channel sum) are not initializers, and onnxruntime's dynamic quantizer raises on them
        # ("Expected ... to be an initializer"): those ops stay float.
        inits = {i.name for i in model.graph.initializer}
        exclude += [n.name for n in model.graph.node
                    if n.op_type in ("Conv", "MatMul", "Gemm") and len(n.input) > 1 and n.input[1] not in inits]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, src)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude)
            return onnx.load(dst)

    def runner(self, path: Path, threads: int | None = None, **kw):
        from ..validate.runners import OnnxRunner

        return OnnxRunner(path, threads=threads)

    def read_provenance(self, path: Path) -> Provenance:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise InputError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
        for p in model.metadata_props:
            if p.key == PROVENANCE_KEY:
                return parse_provenance(p.value, path)
        raise InputError(f"{path}: no mexport provenance record in its metadata")
