"""LiteRT conversion: the export-time graph (named I/O, layout, uint8 input; the model itself is
never forked) handed to litert-torch, and what its failures mean."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConversionError
from .options import TfliteOptions

# The TFLite XNNPACK delegate takes CONCATENATION with at most this many inputs; wider ones run on
# the builtin kernel (seen with ai-edge-litert 2.3 on U^2-Net-p's 6-input concat before `fuse`,
# which the model now spells as two 3-input concats); exports still report any such concat.
XNNPACK_MAX_CONCAT_INPUTS = 4

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
    """The module handed to litert-torch: a copy of the role graph (the user's pipeline is not
    touched), captured at the spec's fixed shapes (``mexport.capture``) and rewritten into ops
    XNNPACK takes (``rewrites``), wrapped by NamedGraph; the convs fed by a concat wider than
    XNNPACK takes; and one line per rewrite applied.

    Those are reported, not rewritten: swapping the conv for a sum of convs over channel groups of the concat (same maths) was measured to leave
    the concat in place (litert-torch 0.10 does not fold the slices into it), adding SLICE and ADD
    nodes and an int8 ADD fallback. The concat before U^2-Net-p's `fuse` stays a builtin-kernel
    node (320x320x6, a small share of the run time; see reports/tflite.md)."""
    from ...capture import capture
    from .rewrites import xnnpack_rewrites

    NamedGraph = _wrapper_class()
    graph = copy.deepcopy(pipeline.graph(role)).eval()
    args = pipeline.example_inputs(role)
    wide = wide_concat_convs(graph, args)
    captured = capture(graph, args)  # shape arithmetic on tensors, folded at the spec's sizes
    graph, rewrites = xnnpack_rewrites(captured, int8=options.precision == "int8")
    wrapper = NamedGraph(graph, pipeline.input_names(role), pipeline.output_name(role), options.layout, options.input == "uint8").eval()
    return wrapper, wide, captured.rewrites + rewrites


def quantization_pipeline(pipeline, options: TfliteOptions, recipe=None):
    """The pipeline an export converts: for int8 with a recipe that splits convs
    (``Recipe.split_inputs``), a re-parameterized copy (same maths), which calibration and layer
    selection then address too; the export's check still compares against the original."""
    if options.precision != "int8" or recipe is None or not recipe.split_inputs:
        return pipeline
    from ...quantize.split import split_inputs

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

    from ...capture import module_path

    try:
        ep = torch.export.export(module, (), kwargs=samples, strict=False).run_decompositions()
    except Exception as e:  # torch.export itself failed: its message names the op
        return [(str(e).splitlines()[0][:200], "")]
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if registry.lookup(node.target) is None and node.target.namespace == "aten":
            out.append((str(node.target.overloadpacket.__name__), module_path(node)))
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




def feed(inputs: dict[str, np.ndarray], options: TfliteOptions) -> dict[str, np.ndarray]:
    """A contract-layout (NCHW float [0,1]) feed in the artifact's layout and input type."""
    out = {}
    for name, a in inputs.items():
        a = to_layout(a, options.layout)
        if name == "image" and options.input == "uint8":
            a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
        out[name] = a
    return out
