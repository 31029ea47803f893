"""ONNX conversion: torch.onnx export, onnx.checker, onnxsim, provenance in metadata_props."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from ...errors import ConversionError, InputError
from ...runtime import parse_provenance
from ...spec import Provenance

PROVENANCE_KEY = "mexport.provenance"


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


def read_provenance(path: Path) -> Provenance:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise InputError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0]})") from None
    for p in model.metadata_props:
        if p.key == PROVENANCE_KEY:
            return parse_provenance(p.value, path)
    raise InputError(f"{path}: no mexport provenance record in its metadata")


