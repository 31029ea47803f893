"""The ORT format runtime (``.ort``): what onnxruntime-mobile's reduced builds load.

The ONNX runtime builds, simplifies and quantizes the graph; onnxruntime's own converter
(``onnxruntime.tools.convert_onnx_models_to_ort``) then applies its graph optimizations for ARM
devices and saves the result, together with the ``required_operators.config`` an app team feeds to
a reduced-size onnxruntime build. onnxruntime's mobile usability checker reports, per file, how
much of the graph NNAPI (Android) and Core ML (iOS) could take. The export-time check runs the
.ort files themselves, not the ONNX they came from.

ORT format files are not byte-reproducible: onnxruntime writes the entries of the flatbuffer's
kernel-type table in the order of a hash map, which changes from one conversion to the next
(measured: four conversions in one process, four different files), so the same entries land at
different offsets. The graph, weights and metadata are identical
(tested); ``fingerprint`` hashes that content instead of the bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ...errors import ConversionError
from ...runtime import Runtime, register_runtime
from ...spec import Provenance
from .convert import session_provenance
from .runner import load_session
from .options import OnnxOptions
from .runtime import OnnxRuntime

# onnxruntime's converter targets ARM (phones) this way: int8 QDQ pairs may fuse into int8
# kernels, and the x86-only NCHWc layout transform is left out, so the file runs on any CPU.
PLATFORM = "arm"
USABILITY_EPS = {"NNAPI": "nnapi", "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}


@register_runtime("ort")
class OrtRuntime(OnnxRuntime):
    name = "ort"
    title = "ORT format"
    suffix = ".ort"
    Options = OnnxOptions  # the ONNX options (opset, ...): the .ort is converted from that ONNX
    command = "onnx"
    switch = ("--ort", "Write onnxruntime-mobile's ORT format (coarse.ort, ...; optimized for ARM, with the "
              "required_operators.config of a reduced build) instead of .onnx, and check the .ort files (default -o: "
              "out/ort-<precision>). fp32, --int8 or --dynamic-int8: an fp16 .ort made on x86 holds fp32 weights.")
    benchmark_precisions = ()
    # No fp16: the converter saves the graph as optimized for the kernels of the machine it runs on,
    # and x86 onnxruntime has no fp16 Conv, so it folds the fp16 weights' casts into fp32 copies
    # (measured on the tiny BYO model: fp16 .ort 44 KB, fp32 .ort 29 KB, fp32 compute). An fp16
    # .ort for ARM's fp16 kernels has to be converted on an ARM machine.
    precisions = ("fp32", "dynamic-int8", "int8")
    # `mexport sensitivity --target onnx` searches the recipe an ORT export applies (the .ort is
    # converted from that ONNX, its int8 nodes included)
    sensitivity_trials = Runtime.sensitivity_trials

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix=".mexport-ort-", dir=path.parent) as tmp:
            src = Path(tmp) / f"{role}.onnx"
            facts = super().convert(pipeline, role, options, provenance, src, calibration=calibration, recipe=recipe)
            facts["mobile_usability"] = mobile_usability(src)
            written = to_ort(src, Path(tmp) / "ort")
            shutil.move(written["ort"], path)
            config = path.with_name(f"{role}.required_operators.config")
            # The converter names the temporary file it wrote; the shipped config names the shipped one.
            text = "".join(f"# - {path.name}\n" if line.startswith("# - ") else line
                           for line in written["config"].read_text().splitlines(keepends=True))
            config.write_text(text)
        facts.update({"bytes": path.stat().st_size, "onnx_bytes": facts.get("bytes"), "ort_platform": PLATFORM,
                      "required_operators": [line for line in text.splitlines() if line and not line.startswith("#")]})
        return facts

    def fingerprint(self, path: Path) -> str:
        return graph_digest(path)

    def companions(self, path: Path) -> list[Path]:
        config = path.with_name(f"{path.stem}.required_operators.config")
        return [config] if config.is_file() else []

    def read_provenance(self, path: Path) -> Provenance:
        return session_provenance(load_session(path), path)

    def summary(self, facts: dict[str, Any]) -> list[str]:
        usability = facts.get("mobile_usability")
        if not usability:
            return []
        # onnxruntime's verdict on handing the graph to a phone's accelerator
        return ["onnxruntime mobile usability (fused): " + "; ".join(
            f"{ep} {u['supported_nodes']}/{u['nodes']} nodes in {u['partitions']} partitions, worth trying: {u['verdict']}"
            for ep, u in usability.items())]

    def describe(self, path: Path, provenance: Provenance) -> dict[str, Any]:
        from .describe import describe_ort

        return describe_ort(path, provenance)

    def needs(self, min_runtime: dict[str, Any] | None) -> str:
        r = min_runtime or {}
        return (f"ORT format v{r.get('ort_format_version')}, onnxruntime {r.get('onnxruntime') or '?'} "
                f"(full or reduced build; ops in {r.get('required_operators_config')})")


def to_ort(onnx_path: Path, out_dir: Path) -> dict[str, Path]:
    """onnxruntime's converter on one file; returns the .ort and its required-operators config."""
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # The converter's sessions log at warning level (unused initializers it drops) to stderr;
    # mexport's own sessions log errors only, and so does this one.
    ort.set_default_logger_severity(3)
    log = logging.getLogger("ort_format_model.utils")  # "Created config in <temporary path>"
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        # The converter prints progress to stdout; mexport's CLI owns stdout (--json, -q).
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(onnx_path, output_dir=out_dir, optimization_styles=[OptimizationStyle.Fixed],
                                       target_platform=PLATFORM)
    except Exception as e:
        raise ConversionError(f"onnxruntime could not save {onnx_path.stem} in ORT format: {str(e).splitlines()[0][:300]}") from None
    finally:
        log.setLevel(level)
    return {"ort": out_dir / f"{onnx_path.stem}.ort", "config": out_dir / f"{onnx_path.stem}.required_operators.config"}


def mobile_usability(onnx_path: Path) -> dict[str, dict[str, Any]]:
    """onnxruntime's mobile usability checker, per execution provider: how many nodes it could
    take, in how many partitions, which ops it lacks, and the checker's verdict (YES / MAYBE / NO:
    whether trying that EP on a device is likely to pay, given the copies between partitions)."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    # As the checker's own analyze_model does: basic optimizations first (constant folding), which
    # every onnxruntime session applies before partitioning.
    with tempfile.TemporaryDirectory(prefix=".mexport-usability-", dir=onnx_path.parent) as tmp:
        basic = Path(tmp) / onnx_path.name
        optimize_model(onnx_path, basic)
        model = ModelProtoWithShapeInfo(basic).model_with_shape_info
    out = {}
    for ep, config in USABILITY_EPS.items():
        info = uc.check_nnapi_partitions(model, True) if config == "nnapi" else uc.check_coreml_partitions(model, True, config)
        out[ep] = {"supported_nodes": int(info.num_supported_nodes), "nodes": int(info.num_nodes),
                   "partitions": int(info.num_partitions), "unsupported_ops": sorted(info.unsupported_ops),
                   "verdict": info.suitability().name}
    return out


def graph_digest(path: Path) -> str:  # written by hand: onnxruntime has no canonical form of an ORT file
    """sha256 over what an ORT format file computes with: its nodes (op, domain, inputs, outputs,
    attributes as serialized), its initializers' bytes and its metadata, in file order. Two
    conversions of one .onnx give the same digest although their bytes differ (see the module doc)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    buf = bytearray(Path(path).read_bytes())
    model = InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0).Model()
    g = model.Graph()
    h = hashlib.sha256()
    for i in range(g.NodesLength()):
        n = g.Nodes(i)
        h.update(b"|".join([n.OpType() or b"", n.Domain() or b"", *(n.Inputs(k) for k in range(n.InputsLength())),
                            *(n.Outputs(k) for k in range(n.OutputsLength()))]))
        for k in range(n.AttributesLength()):
            a = n.Attributes(k)
            h.update(repr((a.Name(), a.Type(), a.I(), a.F(), a.S(), [a.Ints(j) for j in range(a.IntsLength())],
                           [a.Floats(j) for j in range(a.FloatsLength())])).encode())
    for i in range(g.InitializersLength()):
        t = g.Initializers(i)
        h.update((t.Name() or b"") + (t.RawDataAsNumpy().tobytes() if t.RawDataLength() else b""))
    for i in range(model.MetadataPropsLength()):
        p = model.MetadataProps(i)
        h.update(p.Key() + b"=" + p.Value())
    return h.hexdigest()
