"""A saved ``.mlpackage``: made byte-reproducible, read back safely, and checked by structure
(names, shapes, dtypes, image scaling, ops allowed at the deployment target, compression) without
running it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...runtime import parse_provenance
from ...spec import Provenance
from .convert import EXPECTED_CONSTEXPR, PROVENANCE_KEY, SPEC_KEY, SPEC_VERSIONS, WEIGHT_THRESHOLD, ct_target
from .options import CoreMLOptions

CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"


def make_deterministic(path: Path) -> None:
    """Make two exports of one model byte-identical, across processes and days:

    - coremltools names the package's items with random UUIDs (uuid4 in ModelPackage): replaced
      by UUIDs derived from each item's path;
    - the model spec's protobuf maps (``user_defined_metadata`` and the program's attributes) are
      serialized in hash-table order, which differs from process to process: it is written again
      with protobuf's deterministic serialization (sorted map keys);
    - ``conversion_date`` (a day) is dropped; the provenance records what made the package."""
    from coremltools.proto import Model_pb2

    from .mil_executor import package_files

    spec_file, _ = package_files(path)
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    user = spec.description.metadata.userDefined
    if CONVERSION_DATE_KEY in user:
        del user[CONVERSION_DATE_KEY]
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))
    manifest = path / "Manifest.json"
    m = json.loads(manifest.read_text())
    renamed = {}
    for old, entry in m["itemInfoEntries"].items():
        renamed[old] = str(uuid.uuid5(uuid.NAMESPACE_URL, "mexport:" + entry["path"])).upper()
    m["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(m["itemInfoEntries"].items(), key=lambda kv: renamed[kv[0]])}
    m["rootModelIdentifier"] = renamed[m["rootModelIdentifier"]]
    manifest.write_text(json.dumps(m, indent=4, sort_keys=True) + "\n")


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_spec(path: Path):
    from coremltools.proto import Model_pb2

    from .mil_executor import package_files

    spec_file, _ = package_files(path)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as e:
        raise InputError(f"{path}: the model spec does not parse ({e})") from None
    return spec


def read_provenance(path: Path) -> Provenance:
    """The provenance in the package's user-defined metadata (read through :func:`read_spec`'s checks)."""
    value = read_spec(Path(path)).description.metadata.userDefined.get(PROVENANCE_KEY)
    if value is None:
        raise InputError(f"{path}: no mexport provenance record in its metadata")
    return parse_provenance(value, path)



def structure_report(path: Path, pipeline=None, role: str | None = None, options: CoreMLOptions | None = None) -> dict[str, Any]:
    """Check a saved package's structure without running it: names, shapes, dtypes, the image
    input's scaling and colour layout, spec version, ops allowed at the deployment target, the
    constexpr ops the compression must leave, size and metadata. Collects every problem.
    Without ``pipeline``/``options`` the expectations come from the package's own provenance."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import FeatureTypes_pb2

    from .mil_executor import load_package

    path = Path(path)
    problems: list[str] = []
    pkg = load_package(path)
    spec = pkg.spec
    meta = spec.description.metadata
    ud = dict(meta.userDefined)
    prov = parse_provenance(ud[PROVENANCE_KEY], path) if PROVENANCE_KEY in ud else None
    if prov is None:
        problems.append("no mexport provenance in user_defined_metadata")
    role = role or (prov.role if prov else None)
    pspec = pipeline.spec if pipeline is not None else (prov.pipeline_spec if prov else None)
    target_name = options.deployment_target if options else ud.get("mexport.deployment_target", "iOS16")
    compression = (options.compression if options else (None if ud.get("mexport.compression", "none") == "none" else ud["mexport.compression"]))
    w8a8 = options.w8a8 if options else compression == "w8a8"
    if w8a8:  # its weights are int8 like --weights int8; its activations are checked below
        compression = "int8"
    image_input = options.image_input if options else None
    compute = options.compute_precision if options else ud.get("mexport.compute_precision")

    # names, shapes, dtypes
    if pspec is not None and role is not None:
        h, w = pspec.coarse_size if role == "coarse" else pspec.refine_size
        want_in = {"image": (1, 3, h, w)}
        if role == "refine":
            want_in["coarse_alpha"] = (1, 1, *pspec.coarse_size)
        for e in pspec.extra_inputs:
            want_in[e.name] = (1, e.channels, h, w)
        got_in = [i.name for i in spec.description.input]
        if got_in != list(want_in):
            problems.append(f"inputs {got_in}, expected {list(want_in)}")
        for i in spec.description.input:
            kind = i.type.WhichOneof("Type")
            if kind == "imageType":
                shape = (1, 3, i.type.imageType.height, i.type.imageType.width)
                if i.type.imageType.colorSpace != FeatureTypes_pb2.ImageFeatureType.RGB:
                    problems.append(f"input {i.name}: colour layout {FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(i.type.imageType.colorSpace)}, expected RGB")
                if image_input is False:
                    problems.append(f"input {i.name} is an image, a tensor was asked for")
            else:
                shape = tuple(i.type.multiArrayType.shape)
                if i.type.multiArrayType.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
                    problems.append(f"input {i.name}: dtype is not float32")
                if i.name == "image" and image_input:
                    problems.append("input image is a tensor, an ImageType was asked for")
            if i.name in want_in and shape != want_in[i.name]:
                problems.append(f"input {i.name}: shape {shape}, expected {want_in[i.name]}")
        out_name = "coarse_alpha" if role == "coarse" else "alpha"
        outs = list(spec.description.output)
        if [o.name for o in outs] != [out_name]:
            problems.append(f"outputs {[o.name for o in outs]}, expected [{out_name!r}]")
        for o in outs:
            if o.type.multiArrayType.dataType != FeatureTypes_pb2.ArrayFeatureType.FLOAT32:
                problems.append(f"output {o.name}: dtype is not float32")
            declared = tuple(pkg.main.outputs[0].shape)
            if declared != (1, 1, h, w):
                problems.append(f"output {o.name}: program shape {declared}, expected {(1, 1, h, w)}")

    # image scaling: the program must multiply the image input by 1/255 and add no bias
    image_ops = [op for op in pkg.main.operations if any(getattr(v, "name", None) == "image" for v in _flat_inputs(op))]
    if any(i.type.WhichOneof("Type") == "imageType" for i in spec.description.input):
        scale_ops = [op for op in image_ops if op.op_type == "mul"]
        if len(scale_ops) != 1:
            problems.append(f"image input: expected one scaling mul, found {[op.op_type for op in image_ops]}")
        else:
            y = scale_ops[0].inputs["y"].val
            if y is None or abs(float(np.asarray(y)) - 1 / 255) > 1e-9:
                problems.append(f"image input scale is {y}, expected 1/255")
            consumers = [op for op in pkg.main.operations if any(getattr(v, "name", None) == scale_ops[0].outputs[0].name for v in _flat_inputs(op))]
            # coremltools names the ImageType's bias op <input>__biased__ (insert_image_preprocessing_op);
            # the model's own normalization may add to the scaled pixels too (convert.normalize_without_sub)
            if any(op.op_type == "add" and "__biased__" in op.name for op in consumers):
                problems.append("image input has a bias add; expected bias 0")

    # spec version and ops allowed at the deployment target
    want_version = SPEC_VERSIONS[target_name]
    if spec.specificationVersion != want_version:
        problems.append(f"specification version {spec.specificationVersion}, expected {want_version} for {target_name}")
    tgt = ct_target(target_name)
    ops: dict[str, int] = {}
    for op in pkg.main.operations:
        ops[op.op_type] = ops.get(op.op_type, 0) + 1
    for t in sorted(ops):
        if t != "const" and tgt not in SSAOpRegistry.core_ops.get(t, {}):
            problems.append(f"op {t} is not available at {target_name}")

    # compression: the expected constexpr op feeds every large conv weight; fp16 programs hold fp16
    constexpr = {t: n for t, n in ops.items() if t.startswith("constexpr_")}
    if w8a8:
        missing = [t for t in ("quantize", "dequantize") if t not in ops]
        if missing and any(op.op_type == "conv" for op in pkg.main.operations):
            problems.append(f"w8a8: no {' or '.join(missing)} op in the program (activations are not quantized)")
    if compression:
        want_op = EXPECTED_CONSTEXPR[compression].get(target_name)
        recorded = ud.get("mexport.float_layers")  # the layers the export left uncompressed
        if recorded is not None:
            float_layers = [] if recorded == "none" else recorded.split(",")
        else:
            float_layers = list(pipeline.model_info.int8.float_layers) if pipeline is not None else []
        keep = tuple("pipe_" + k.replace(".", "_") + "_" for k in float_layers)
        eligible = [op for op in pkg.main.operations if op.op_type == "conv" and op.inputs["weight"].op.op_type in ("const",) + tuple(constexpr)
                    and np.asarray(op.inputs["weight"].shape).prod() >= WEIGHT_THRESHOLD and not op.inputs["weight"].op.name.startswith(keep)]
        if eligible and (want_op is None or want_op not in constexpr):
            problems.append(f"compression {compression}: no {want_op or 'valid constexpr op'} in the program (found {sorted(constexpr) or 'none'})")
        for op in pkg.main.operations:
            if op.op_type == "conv":
                wv = op.inputs["weight"]
                if wv.op.op_type == "const" and np.asarray(wv.val).size >= WEIGHT_THRESHOLD and not wv.op.name.startswith(keep):
                    problems.append(f"conv {op.name}: weight of {np.asarray(wv.val).size} values left uncompressed")
    elif constexpr:
        problems.append(f"uncompressed export holds {sorted(constexpr)}")
    from coremltools.converters.mil.mil import types

    dtypes: dict[str, int] = {}
    for op in pkg.main.operations:
        if op.op_type != "const" and not op.op_type.startswith("constexpr_"):
            d = types.builtin_to_string(op.outputs[0].dtype)
            dtypes[d] = dtypes.get(d, 0) + 1
    conv_dtypes = [types.builtin_to_string(op.outputs[0].dtype) for op in pkg.main.operations if op.op_type == "conv"]
    fp32_convs = int(ud.get("mexport.fp32_convs", "0"))
    if compute == "fp32" and set(conv_dtypes) - {"fp32"}:
        problems.append(f"conv outputs are {sorted(set(conv_dtypes))}, expected fp32 compute")
    elif compute == "fp16":
        # fp16 compute with the model's precision-sensitive layers in fp32 (mixed.py): exactly the
        # convs the converter kept are fp32, every other conv is fp16
        if set(conv_dtypes) - {"fp16", "fp32"} or conv_dtypes.count("fp32") != fp32_convs:
            problems.append(f"conv outputs: {conv_dtypes.count('fp16')} fp16, {conv_dtypes.count('fp32')} fp32 "
                            f"(others: {sorted(set(conv_dtypes) - {'fp16', 'fp32'})}); expected fp16 compute with "
                            f"{fp32_convs} fp32 conv(s) of the layers {ud.get('mexport.fp32_layers', 'none')}")

    # size and metadata
    size = package_bytes(path)
    weight_file = pkg.weights_dir / "weight.bin"
    weight_bytes = weight_file.stat().st_size if weight_file.is_file() else 0
    n_weights = sum(int(np.prod(op.inputs["weight"].shape)) for op in pkg.main.operations if op.op_type == "conv")
    for key in ("author", "versionString", "license", "shortDescription"):
        if not getattr(meta, key):
            problems.append(f"metadata {key} is empty")
    for feat in list(spec.description.input) + list(spec.description.output):
        if not feat.shortDescription:
            problems.append(f"{feat.name} has no description")
    if SPEC_KEY not in ud:
        problems.append("no pipeline spec in user_defined_metadata")
    facts = {"bytes": size, "weight_bytes": weight_bytes, "blobs": pkg.blobs, "spec_version": spec.specificationVersion,
             "deployment_target": target_name, "compute_precision": compute, "compression": "w8a8" if w8a8 else (compression or "none"),
             "fp32_layers": [] if ud.get("mexport.fp32_layers", "none") == "none" else ud["mexport.fp32_layers"].split(","),
             "fp16_inside_fp32_layers": [] if ud.get("mexport.fp16_inside_fp32_layers", "none") == "none"
             else ud["mexport.fp16_inside_fp32_layers"].split(","),
             "op_dtypes": dict(sorted(dtypes.items())),
             "ops": dict(sorted(ops.items())), "constexpr_ops": constexpr, "conv_weight_values": n_weights,
             "bits_per_conv_weight": round(8 * weight_bytes / n_weights, 2) if n_weights else None}
    return {"problems": problems, "facts": facts}


def _flat_inputs(op) -> list:
    out = []
    for v in op.inputs.values():
        out.extend(v if isinstance(v, (list, tuple)) else [v])
    return out
