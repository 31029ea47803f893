"""What an app team needs to know about a Core ML package, read from its spec and program: inputs
(an image's scale and bias as the program applies them), outputs, deployment target, compression."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...runtime import tensor
from ...spec import Provenance

# Core ML specification version -> the first OS releases that load it.
COREML_OS = {7: "iOS 16 / macOS 13", 8: "iOS 17 / macOS 14", 9: "iOS 18 / macOS 15"}


def describe_coreml(path: Path, prov: Provenance) -> dict[str, Any]:
    from coremltools.proto import FeatureTypes_pb2

    from .package import read_spec

    spec = read_spec(path)  # through the package's own checks: every file it names is inside it
    ud = dict(spec.description.metadata.userDefined)
    arr = FeatureTypes_pb2.ArrayFeatureType
    dtypes = {arr.FLOAT32: "float32", arr.FLOAT16: "float16", arr.DOUBLE: "float64", arr.INT32: "int32"}
    scales = _image_scales(path)

    def feature(f) -> dict[str, Any]:
        kind = f.type.WhichOneof("Type")
        if kind == "imageType":
            it = f.type.imageType
            color = FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(it.colorSpace)
            scale, bias = scales.get(f.name, (None, None))
            return {"name": f.name, "shape": [1, 3 if color != "GRAYSCALE" else 1, int(it.height), int(it.width)],
                    "dtype": "uint8 pixels", "layout": f"image {color}", "quantization": None,
                    "image": {"color_layout": color, "scale": scale, "bias": bias,
                              "means": "pixel value * scale + bias inside the model, pixel in 0..255"},
                    "description": f.shortDescription}
        a = f.type.multiArrayType
        return tensor(f.name, list(a.shape), dtypes.get(a.dataType, "unknown"), description=f.shortDescription)

    version = int(spec.specificationVersion)
    return {
        "source": "Core ML model spec",
        "inputs": [feature(f) for f in spec.description.input],
        "outputs": [feature(f) for f in spec.description.output],
        "min_runtime": {"deployment_target": ud.get("mexport.deployment_target"), "specification_version": version,
                        "os": COREML_OS.get(version)},
        "compute_precision": ud.get("mexport.compute_precision"),
        "compression": ud.get("mexport.compression"),
    }


def _image_scales(path: Path) -> dict[str, tuple[float | None, list[float]]]:
    """ML Programs apply an ImageType's scale and bias as ops on the input (coremltools inserts a
    ``mul`` by the scale, then an ``add`` of the bias unless it is zero): read them there."""
    from .mil_executor import load_package

    main = load_package(path).main
    inputs = set(main.inputs)
    out: dict[str, tuple[float | None, list[float]]] = {}
    scaled: dict[str, str] = {}
    for op in main.operations:
        x = getattr(op.inputs.get("x"), "name", None)
        y = op.inputs.get("y")
        if op.op_type == "mul" and x in inputs and y is not None and y.val is not None:
            out[x] = (float(np.asarray(y.val).reshape(-1)[0]), [0.0, 0.0, 0.0])
            scaled[op.outputs[0].name] = x
        elif op.op_type == "add" and x in scaled and y is not None and y.val is not None:
            bias = np.asarray(y.val, dtype=np.float64).reshape(-1)
            out[scaled[x]] = (out[scaled[x]][0], [float(b) for b in np.broadcast_to(bias, (3,))])
    return out
