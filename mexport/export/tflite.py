"""LiteRT (TFLite) target: litert-torch conversion (no TensorFlow), ai-edge-quantizer quantization,
provenance in the flatbuffer's metadata, and an inspection of every artifact written.

Stages, in order: export-time graph (named I/O, layout, uint8 input, XNNPACK-friendly rewrites; the
model itself is never forked) -> litert-torch -> ai-edge-quantizer -> I/O tensor names + metadata
(flatbuffer object API) -> inspection (ops, dtypes, XNNPACK delegation), which can fail the export.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, InputError
from ..spec import Provenance
from .base import ExportOptions, Target, check_output_shape, parse_provenance, register_target

PROVENANCE_KEY = "mexport.provenance"
LAYOUTS = ("nhwc", "nchw")
IO_TYPES = ("float", "int8")
INPUT_TYPES = ("float", "uint8")
# The TFLite XNNPACK delegate takes CONCATENATION with at most this many inputs; wider ones run on
# the builtin kernel (seen with ai-edge-litert 2.3 on U^2-Net-p's 6-input concat before `fuse`,
# which the model now spells as two 3-input concats); exports still report any such concat.
XNNPACK_MAX_CONCAT_INPUTS = 4


@dataclass(frozen=True)
class TfliteOptions(ExportOptions):
    layout: str = "nhwc"
    io: str = "float"
    input: str = "float"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.io not in IO_TYPES:
            raise ValueError(f"io must be one of {IO_TYPES}, got {self.io!r}")
        if self.input not in INPUT_TYPES:
            raise ValueError(f"input must be one of {INPUT_TYPES}, got {self.input!r}")
        if self.io == "int8" and self.precision != "int8":
            raise ValueError("--io int8 applies to --int8 only")
        if self.io == "int8" and self.input == "uint8":
            raise ValueError("--io int8 and --input uint8 both set the input type: choose one")


# ----------------------------------------------------------------------------- export-time graph

def _wrapper_class():
    import torch
    from torch import nn

    class NamedGraph(nn.Module):
        """A role graph as the .tflite exposes it: keyword inputs named like the contract, a dict
        output (litert-torch names signature I/O after them), NHWC or NCHW, optional uint8 image."""

        def __init__(self, graph: nn.Module, input_names: list[str], output_name: str, layout: str, uint8_image: bool) -> None:
            super().__init__()
            self.net = graph  # not "graph": that name is GraphModule.graph after torch.export
            self.input_names = list(input_names)
            self.output_name = output_name
            self.nhwc = layout == "nhwc"
            self.uint8_image = uint8_image

        def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
            xs = []
            for name in self.input_names:
                x = inputs[name]
                if name == "image" and self.uint8_image:
                    x = x.to(torch.float32) / 255.0
                xs.append(x.permute(0, 3, 1, 2) if self.nhwc else x)
            y = self.net(*xs)
            return {self.output_name: y.permute(0, 2, 3, 1) if self.nhwc else y}

    return NamedGraph


def wide_concat_convs(module, inputs: tuple) -> dict[str, list[tuple[int, int]]]:
    """Conv2d modules (by path) fed directly by a channel concat of more than
    XNNPACK_MAX_CONCAT_INPUTS tensors, with the channel bounds of the groups to split it into."""
    import torch
    from torch import nn
    from torch.overrides import TorchFunctionMode

    wide: dict[int, tuple[Any, list[int]]] = {}

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func in (torch.cat, torch.concat, torch.concatenate):
                tensors = list(args[0]) if args else list(kwargs.get("tensors", []))
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
                if len(tensors) > XNNPACK_MAX_CONCAT_INPUTS and dim in (1, -3) and out.dim() == 4:
                    wide[id(out)] = (out, [t.shape[1] for t in tensors])
            return out

    found: dict[str, list[tuple[int, int]]] = {}
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            def hook(mod, args, name=name):
                entry = wide.get(id(args[0]))
                if entry is not None and entry[0] is args[0]:
                    widths = entry[1]
                    n_groups = -(-len(widths) // XNNPACK_MAX_CONCAT_INPUTS)
                    per = -(-len(widths) // n_groups)
                    edges = np.cumsum([0] + widths).tolist()
                    found[name] = [(edges[i], edges[min(i + per, len(widths))]) for i in range(0, len(widths), per)]
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode(), Recorder():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return found


def export_module(pipeline, role: str, options: TfliteOptions):
    """The module handed to litert-torch: a copy of the role graph wrapped by NamedGraph (the
    user's pipeline is not touched), and the convs fed by a concat wider than XNNPACK takes.

    Those are reported, not rewritten: swapping the conv for a sum of convs over channel groups of the concat (same maths) was measured to leave
    the concat in place (litert-torch 0.10 does not fold the slices into it), adding SLICE and ADD
    nodes and an int8 ADD fallback. The concat before U^2-Net-p's `fuse` stays a builtin-kernel
    node (320x320x6, a small share of the run time; see reports/tflite.md)."""
    NamedGraph = _wrapper_class()
    graph = copy.deepcopy(pipeline.graph(role)).eval()
    wide = wide_concat_convs(graph, pipeline.example_inputs(role))
    wrapper = NamedGraph(graph, pipeline.input_names(role), pipeline.output_name(role), options.layout, options.input == "uint8").eval()
    return wrapper, wide


def quantization_pipeline(pipeline, options: TfliteOptions, recipe=None):
    """The pipeline an export converts: for int8 with a recipe that splits convs
    (``Recipe.split_inputs``), a re-parameterized copy (same maths), which calibration and layer
    selection then address too; the export's check still compares against the original."""
    if options.precision != "int8" or recipe is None or not recipe.split_inputs:
        return pipeline
    from ..quantize.split import split_inputs

    return split_inputs(pipeline, recipe.split_inputs)


def to_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if layout == "nhwc" else a)


def sample_inputs(pipeline, role: str, options: TfliteOptions) -> dict[str, Any]:
    import torch

    out = {}
    for name, t in zip(pipeline.input_names(role), pipeline.example_inputs(role)):
        a = to_layout(t.numpy(), options.layout)
        if name == "image" and options.input == "uint8":
            a = np.round(a * 255).astype(np.uint8)
        out[name] = torch.from_numpy(a)
    return out


def litert_convert(module, role: str, samples: dict[str, Any]) -> bytes:
    """litert-torch conversion to flatbuffer bytes; any failure becomes a ConversionError naming
    the op and the module it came from, when the converter says."""
    import logging
    import os
    import tempfile

    import litert_torch

    logging.getLogger("litert_torch").setLevel(logging.ERROR)
    try:
        converted = litert_torch.signature(role, module, sample_kwargs=samples).convert()
        with tempfile.TemporaryDirectory() as tmp:
            f = os.path.join(tmp, "m.tflite")
            converted.export(f)
            return Path(f).read_bytes()
    except Exception as e:  # the converter raises many types, often without naming the op
        culprits = unlowerable_ops(module, samples)
        where = "; ".join(f"op {op} in module {mod or '(top level)'}" for op, mod in culprits[:3])
        raise ConversionError(f"litert-torch could not convert the {role} graph: "
                              + (where + " has no LiteRT lowering -- " if where else "") + describe_failure(e)) from None


def unlowerable_ops(module, samples: dict[str, Any]) -> list[tuple[str, str]]:
    """(aten op, module path) of every op in the exported graph that litert-torch has no lowering
    for: the usual cause of a failed conversion, which its own errors rarely name."""
    import torch
    from litert_torch.backend.lowerings import registry

    try:
        ep = torch.export.export(module, (), kwargs=samples, strict=False).run_decompositions()
    except Exception as e:  # torch.export itself failed: its message names the op
        return [(str(e).splitlines()[0][:200], "")]
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if registry.lookup(node.target) is None and node.target.namespace == "aten":
            stack = node.meta.get("nn_module_stack") or {}
            path = list(stack.values())[-1][0] if stack else ""
            path = re.sub(r"^(net\.)?(pipe\.)?", "", path.replace("L['self'].", ""))
            out.append((str(node.target.overloadpacket.__name__), path))
    return list(dict.fromkeys(out))


def describe_failure(e: Exception) -> str:
    text = f"{type(e).__name__}: {e}"
    ops = re.findall(r"(?:operation|op)[ :]+'?([a-z_]+\.[A-Za-z0-9_.]+|aten\.[A-Za-z0-9_.]+)", text)
    ops += re.findall(r"\b(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", text)
    mods = re.findall(r"([A-Za-z0-9_.]+\.[A-Z][A-Za-z0-9_]*_[A-Za-z0-9_]+(?:/[A-Za-z0-9_.]+)*)", text)
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)[:300]
    parts = []
    if ops:
        parts.append("op " + ", ".join(dict.fromkeys(ops)))
    if mods:
        parts.append("in module " + module_path_of(mods[0]))
    return ("; ".join(parts) + " -- " if parts else "") + first


def module_path_of(scope: str) -> str:
    """'__main__.W/mexport.models.pipeline._RoleGraph_graph/mexport.models.u2netp.U2NetP_coarse/
    ...RSU_stage2d/...ConvReLU_4/torch.nn.modules.activation.ReLU_1' -> 'coarse.stage2d.4.1'
    (a ModuleList's own name is not in litert-torch's scopes; its children keep their index)."""
    parts = []
    for seg in scope.split(";")[0].split("/")[1:]:
        cls_name = seg.rsplit(".", 1)[-1]
        if "_" not in cls_name:
            continue
        attr = cls_name.split("_", 1)[1] if not cls_name.startswith("_") else cls_name[1:].split("_", 1)[1]
        if attr in ("net", "pipe"):
            continue
        parts.append(attr)
    return ".".join(parts)


# ----------------------------------------------------------------------------- flatbuffer I/O

def _model_t(data: bytes):
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    # ai-edge-quantizer writes constant data after the flatbuffer (Buffer.offset/size) instead of
    # inside it; bring it inside so the object API can re-serialize the model.
    for b in m.buffers or []:
        if b.offset and b.offset > 1:
            b.data = np.frombuffer(data, np.uint8, count=b.size, offset=b.offset).copy()
            b.offset, b.size = 0, 0
    return m


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def finalize(data: bytes, provenance: Provenance) -> bytes:
    """Name the graph's input/output tensors after the signature (image, coarse_alpha, alpha;
    litert-torch prefixes them with the signature key) and store the provenance as metadata."""
    from ai_edge_litert import schema_py_generated as fb

    m = _model_t(data)
    g = m.subgraphs[0]
    sig = m.signatureDefs[0] if m.signatureDefs else None
    if sig is not None:
        for tmap in list(sig.inputs or []) + list(sig.outputs or []):
            g.tensors[tmap.tensorIndex].name = tmap.name
    g.name = (sig.signatureKey if sig is not None else g.name)
    m.metadata = [md for md in (m.metadata or []) if md.name not in (PROVENANCE_KEY, PROVENANCE_KEY.encode())]
    buf = fb.BufferT()
    buf.data = np.frombuffer(provenance.to_json().encode(), np.uint8)
    m.buffers.append(buf)
    md = fb.MetadataT()
    md.name = PROVENANCE_KEY
    md.buffer = len(m.buffers) - 1
    m.metadata.append(md)
    m.description = f"{provenance.model} {provenance.role} ({provenance.precision}), exported by mexport {provenance.mexport_version}"
    return _pack(m)


def read_metadata(data: bytes) -> dict[str, bytes]:
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        b = m.Buffers(md.Buffer())
        out[md.Name().decode()] = b.DataAsNumpy().tobytes() if b.DataLength() else b""
    return out


# ----------------------------------------------------------------------------- inspection

def op_name(code) -> str:
    from ai_edge_litert import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    b = max(code.builtinCode, code.deprecatedBuiltinCode)
    if b == fb.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode))
    return names.get(b, str(b))


def tensor_type_name(t: int) -> str:
    from ai_edge_litert import schema_py_generated as fb

    return {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}.get(t, str(t))


def inspect(data: bytes, num_threads: int = 1) -> dict[str, Any]:
    """Facts about one .tflite: ops with versions, tensor dtypes, the share of weight bytes and
    elements stored as int8 / fp16, XNNPACK delegation, size."""
    import collections

    m = _model_t(data)
    g = m.subgraphs[0]
    ops = collections.Counter()
    for op in g.operators:
        c = m.operatorCodes[op.opcodeIndex]
        ops[f"{op_name(c)}/v{c.version}"] += 1
    dtypes = collections.Counter(tensor_type_name(t.type) for t in g.tensors)
    weights = collections.Counter()
    for t in g.tensors:
        buf = m.buffers[t.buffer] if t.buffer < len(m.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data) and t.shape is not None and len(t.shape) >= 2:
            weights[tensor_type_name(t.type)] += int(np.prod(t.shape))
    total = sum(weights.values()) or 1
    io = {}
    for kind, idxs in (("inputs", g.inputs), ("outputs", g.outputs)):
        io[kind] = [{"name": g.tensors[i].name.decode() if isinstance(g.tensors[i].name, bytes) else g.tensors[i].name,
                     "shape": [int(s) for s in g.tensors[i].shape], "dtype": tensor_type_name(g.tensors[i].type),
                     **_quant(g.tensors[i])} for i in idxs]
    return {"bytes": len(data), "ops": dict(sorted(ops.items())), "tensor_dtypes": dict(sorted(dtypes.items())),
            "weight_elements": dict(weights), "int8_weight_share": weights["INT8"] / total,
            "fp16_weight_share": weights["FLOAT16"] / total, **io, "xnnpack": delegation(data, num_threads)}


def _quant(t) -> dict[str, Any]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return {}
    return {"scale": float(q.scale[0]), "zero_point": int(q.zeroPoint[0])}


def delegation(data: bytes, num_threads: int = 1) -> dict[str, Any]:
    """Which nodes XNNPACK takes. After allocate_tensors() the interpreter lists the original nodes
    followed by one DELEGATE node per partition; walking back from a partition's outputs to its
    inputs recovers the nodes it replaced. Nodes in no partition run on the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_content=data, num_threads=num_threads)
        it.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConversionError(f"LiteRT cannot prepare the converted model: {first[:300]}") from None
    return delegation_of(it._get_ops_details())  # the only Python view of the execution plan


def delegation_of(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`delegation` from an interpreter's ``_get_ops_details()``, whichever runtime it came
    from (an older one reports its plan through the --tflite-python worker)."""
    import collections

    orig = [o for o in nodes if o["op_name"] != "DELEGATE"]
    partitions = [o for o in nodes if o["op_name"] == "DELEGATE"]
    producer = {int(t): o["index"] for o in orig for t in o["outputs"]}
    covered: set[int] = set()
    for d in partitions:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in stop or t not in producer or producer[t] in covered:
                continue
            n = producer[t]
            covered.add(n)
            stack.extend(int(x) for x in nodes[n]["inputs"] if x >= 0)
    fallback = [o for o in orig if o["index"] not in covered]
    return {"nodes": len(orig), "partitions": len(partitions), "delegated": len(covered), "fallback": len(fallback),
            "fallback_ops": dict(collections.Counter(o["op_name"] for o in fallback)),
            "fallback_nodes": [o["index"] for o in fallback]}


# ----------------------------------------------------------------------------- the target

@register_target("tflite")
class TfliteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    precisions = ("fp32", "fp16", "dynamic-int8", "int8")
    Options = TfliteOptions

    def converter_versions(self) -> dict[str, str]:
        from importlib.metadata import version

        import torch

        out = {"torch": torch.__version__}
        for dist in ("litert-torch", "ai-edge-quantizer", "ai-edge-litert"):
            try:
                out[dist] = version(dist)
            except Exception:  # pragma: no cover - a missing distribution is simply not reported
                pass
        return out

    def prepare_quantization(self, pipeline, options: ExportOptions):
        if options.precision != "int8":
            return None, None
        from ..quantize.calibration import load_calibration
        from ..quantize.tflite_int8 import resolve_recipe

        recipe = resolve_recipe(options, pipeline)
        return recipe, load_calibration(options.calib, options.calib_count)

    def convert(self, pipeline, role, options, provenance, path: Path, calibration=None, recipe=None) -> dict[str, Any]:
        from ..quantize import tflite_int8 as q

        options = options if isinstance(options, TfliteOptions) else TfliteOptions(**vars(options))
        pipeline = quantization_pipeline(pipeline, options, recipe)
        module, swaps = export_module(pipeline, role, options)
        data = litert_convert(module, role, sample_inputs(pipeline, role, options))
        out = _model_t(data).subgraphs[0]
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
            from ..quantize.calibration import role_inputs

            feeds = [self.feed(f, options) for f in role_inputs(pipeline, role, calibration.photos, recipe.calibration.max_photos)]
            data, selection = q.quantize_static(data, role, feeds, recipe, pipeline, int8_io=options.io == "int8")
        data = finalize(data, provenance)
        path.write_bytes(data)
        facts = inspect(data)
        facts["wide_concats_before_conv"] = {k: v for k, v in swaps.items()}
        if selection:
            facts["recipe_selection"] = selection
        if not kept_float:
            check_precision(facts, options.precision, role)
        return facts

    @staticmethod
    def feed(inputs: dict[str, np.ndarray], options: TfliteOptions) -> dict[str, np.ndarray]:
        """A contract-layout (NCHW float [0,1]) feed in the artifact's layout and input type."""
        out = {}
        for name, a in inputs.items():
            a = to_layout(a, options.layout)
            if name == "image" and options.input == "uint8":
                a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
            out[name] = a
        return out

    def runner(self, path: Path, threads: int | None = None, **kw):
        """``python=PATH`` runs the model in that Python's LiteRT (an older runtime) instead of here."""
        from ..validate.litert_runner import litert_runner

        return litert_runner(path, threads=threads, **kw)

    def read_provenance(self, path: Path) -> Provenance:
        try:
            data = Path(path).read_bytes()
            md = read_metadata(data)
        except FileNotFoundError:
            raise InputError(f"artifact not found: {path}") from None
        except Exception as e:
            raise InputError(f"{path}: not a readable TFLite model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if PROVENANCE_KEY not in md:
            raise InputError(f"{path}: no mexport provenance record in its metadata")
        return parse_provenance(md[PROVENANCE_KEY], path)


def check_precision(facts: dict[str, Any], precision: str, role: str) -> None:
    """A quantized export that came out float is a failed export, not a smaller success."""
    if precision in ("int8", "dynamic-int8") and facts["int8_weight_share"] <= 0.0:
        raise ConversionError(f"{role}: {precision} export has no int8 weights: the quantizer left the model float")
    if precision == "fp16" and facts["fp16_weight_share"] <= 0.0:
        raise ConversionError(f"{role}: fp16 export has no float16 weights: the quantizer left the model float32")
