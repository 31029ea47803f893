"""ai-edge-quantizer for the TFLite target: fp16 weights, dynamic int8, and static int8 driven by a
:class:`Recipe`.

A recipe names layers by PyTorch module path (``coarse.stage2d.dec.4``). litert-torch's tensor
names carry the module scope but drop ModuleList names (``.../RSU_stage2d/ConvReLU_4/...`` is both
``enc.4`` and ``dec.4``), so names alone are ambiguous. :func:`select_ops` therefore identifies a
layer's ops by its weights: an op belongs to ``coarse.stage2d.dec.4`` when its constant operand
holds exactly that module's conv weights. Parameter-free ops (adds, resizes) are matched by scope.
Each selected op is then addressed in the ai-edge-quantizer recipe by an exact, anchored regex over
its output tensor name, so nothing else is caught by accident.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ...errors import ConversionError, InputError
from ...quantize.recipe import Recipe



# ----------------------------------------------------------------------------- recipe entries

def static_entry(regex: str = ".*", op: str = "*", act_bits: int = 8, act_sym: bool = False, per_channel: bool = True) -> dict[str, Any]:
    return {"regex": regex, "operation": op, "algorithm_key": "min_max_uniform_quantize",
            "op_config": {"activation_tensor_config": {"num_bits": act_bits, "symmetric": act_sym or act_bits == 16,
                                                       "granularity": "TENSORWISE", "dtype": "INT"},
                          "weight_tensor_config": {"num_bits": 8, "symmetric": True,
                                                   "granularity": "CHANNELWISE" if per_channel else "TENSORWISE", "dtype": "INT"},
                          "compute_precision": "INTEGER", "explicit_dequantize": False, "skip_checks": False,
                          "min_weight_elements": 0}}


def float_entry(regex: str, op: str = "*") -> dict[str, Any]:
    return {"regex": regex, "operation": op, "algorithm_key": "no_quantize"}


def fp16_weights_entry(regex: str = ".*") -> dict[str, Any]:
    return {"regex": regex, "operation": "*", "algorithm_key": "float_casting",
            "op_config": {"weight_tensor_config": {"num_bits": 16, "symmetric": True, "granularity": "TENSORWISE", "dtype": "FLOAT"},
                          "compute_precision": "FLOAT", "explicit_dequantize": True, "skip_checks": False, "min_weight_elements": 0}}


def _quantize(data: bytes, entries: list[dict[str, Any]], calibration: dict | None = None) -> bytes:
    from ai_edge_quantizer import quantizer

    try:
        q = quantizer.Quantizer(bytearray(data), entries)
        result = q.quantize(calibration if q.need_calibration else None, enable_progress_report=False)
    except Exception as e:
        raise ConversionError(f"ai-edge-quantizer failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return bytes(result.quantized_model)


def quantize_fp16(data: bytes) -> bytes:
    """float16 weights, float32 compute (the runtime dequantizes at load time)."""
    return _quantize(data, [fp16_weights_entry()])


def quantize_dynamic_int8(data: bytes) -> bytes:
    """int8 weights (per channel); activations quantized at run time by the kernels that can."""
    from ai_edge_quantizer import recipe

    return _quantize(data, recipe.dynamic_wi8_afp32())


# ----------------------------------------------------------------------------- op selection

def applies_to(key: str, role: str) -> bool:
    """Layer keys start with the network ('coarse.' or 'refine.'); the fused graph has both."""
    return role == "fused" or key == role or key.startswith(role + ".")

def _ops(data: bytes):
    from .flatbuffer import model_t
    from .inspection import op_name

    m = model_t(data)
    g = m.subgraphs[0]
    rows = []
    for i, op in enumerate(g.operators):
        name = g.tensors[op.outputs[0]].name
        name = name.decode() if isinstance(name, bytes) else name
        consts = []
        for t in op.inputs:
            if t < 0:
                continue
            ten = g.tensors[t]
            buf = m.buffers[ten.buffer]
            if buf.data is not None and len(buf.data) and ten.type == 0:  # float32 constants
                consts.append(np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), np.float32).reshape([int(s) for s in ten.shape]))
        rows.append({"index": i, "op": op_name(m.operatorCodes[op.opcodeIndex]), "name": name, "consts": consts,
                     "inputs": [int(t) for t in op.inputs if t >= 0], "outputs": [int(t) for t in op.outputs]})
    return _inherit_scopes(rows)


def _inherit_scopes(rows: list[dict]) -> list[dict]:
    """``scope``: the name that says which module an op came from. An op whose output is a graph
    output carries the signature's name instead ("alpha"), with no scope: it inherits the scope of
    the op that produced its input, so a float layer's last op (the refiner's final 1/6) stays float
    instead of falling to the int8 default."""
    producer = {t: r for r in rows for t in r["outputs"]}
    for r in rows:
        scope, seen = r["name"], r
        while "/" not in scope.split(";")[0]:
            src = [producer[t] for t in seen["inputs"] if t in producer]
            if not src:
                break
            seen = src[0]
            scope = seen["name"]
        r["scope"] = scope if "/" in scope.split(";")[0] else r["name"]
    return rows


def _layouts(w: np.ndarray) -> list[np.ndarray]:
    """A torch weight as TFLite may store it: conv OIHW -> OHWI, depthwise -> 1HWO, linear as is."""
    out = [w]
    if w.ndim == 4:
        out += [w.transpose(0, 2, 3, 1), w.transpose(1, 2, 3, 0)]
    return [np.ascontiguousarray(a) for a in out]


def scope_regex(pipeline, key: str) -> str:
    """The litert-torch scope of a module path: each module contributes '<Class>_<attr>', a
    ModuleList contributes nothing (its children appear as '<Class>_<index>')."""
    from torch import nn

    segs = []
    m = pipeline
    for part in key.split("."):
        parent, m = m, getattr(m, part) if not part.isdigit() else m[int(part)]
        if isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            continue
        segs.append(r"[\w.]*\b" + re.escape(f"{type(m).__name__}_{part}"))
    return r"(?:^|/)" + "/".join(segs) + r"(?:/|;|$)"


def select_ops(data: bytes, pipeline, key: str) -> list[dict[str, Any]]:
    """The ops of the float .tflite ``data`` that implement module ``key`` of ``pipeline``."""
    return select_many(data, pipeline, [key])[key]


def select_many(data: bytes, pipeline, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    """:func:`select_ops` for many modules at once: the flatbuffer is parsed, and each op's
    constants matched against the model's weights, once for all of them."""
    import torch

    modules = {}
    for key in keys:
        try:
            modules[key] = pipeline.get_submodule(key)
        except AttributeError:
            raise InputError(f"recipe layer {key!r} is not a module of {pipeline.model_info.name}") from None
    every = [lw for n, p in pipeline.named_parameters() if p.dim() >= 2 for lw in _layouts(p.detach().numpy())]
    with torch.no_grad():
        rows = _ops(data)
        # A constant that is some module's weight identifies its op exactly (scopes are ambiguous
        # across ModuleLists); a functional constant (a box filter's fixed kernel) falls back to scope.
        weighted = [any(c.shape == w.shape and np.array_equal(c, w) for c in row["consts"] if c.ndim >= 2 for w in every)
                    for row in rows]
        out = {}
        for key, module in modules.items():
            weights = [lw for n, p in module.named_parameters() if n.endswith("weight") and p.dim() >= 2
                       for lw in _layouts(p.detach().numpy())]
            scope = re.compile(scope_regex(pipeline, key))
            chosen = []
            for row, by_weight in zip(rows, weighted):
                if by_weight:
                    hit = any(c.shape == lw.shape and np.array_equal(c, lw) for c in row["consts"] for lw in weights)
                else:
                    hit = bool(scope.search(row["scope"].split(";")[0] + ";"))
                if hit:
                    chosen.append({"index": row["index"], "op": row["op"], "name": row["name"]})
            out[key] = chosen
    return out


def exact_regex(tensor_name: str) -> str:
    return "^" + re.escape(tensor_name) + ";"


def recipe_entries(data: bytes, recipe: Recipe, pipeline, role: str, int8_io: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Recipe -> ai-edge-quantizer entries (later entries win) and the op selection, for check.json."""
    cal = recipe.calibration
    if recipe.default == "fp16":
        raise InputError("the TFLite int8 export takes a recipe with default int8, int16 or float, not 'fp16'")
    if recipe.default == "float":
        # Only the layers the recipe names int8/int16 are quantized; ai-edge-quantizer puts the
        # quantize/dequantize pairs at their borders.
        if int8_io:
            raise InputError("--io int8 needs a recipe whose default is int8 (a float graph takes float input)")
        entries = []
    else:
        entries = [static_entry(act_bits=8 if recipe.default == "int8" else 16, act_sym=cal.symmetric_activations,
                                per_channel=cal.per_channel)]
    if not int8_io:
        entries += [float_entry(".*", "INPUT"), float_entry(".*", "OUTPUT")]  # float32 graph I/O
    selection: dict[str, Any] = {}
    # Broader keys first, so that a narrower key (later entry) wins, as in Recipe.precision_of; a key at
    # the default precision only matters when it overrides a broader one ("refine": float,
    # "refine.lowres": int8).
    for key in sorted(recipe.layers, key=lambda k: k.count(".")):
        prec = recipe.layers[key]
        parent = recipe.precision_of(key.rsplit(".", 1)[0]) if "." in key else recipe.default
        if prec == parent or not applies_to(key, role):
            continue
        ops = select_ops(data, pipeline, key)
        if not ops:
            raise InputError(f"recipe layer {key!r} matches no op of the converted graph")
        selection[key] = {"precision": prec, "ops": [f"{o['index']}:{o['op']}" for o in ops]}
        for o in ops:
            rx = exact_regex(o["name"])
            if prec == "float":
                entries.append(float_entry(rx))
            elif prec == "int16":
                entries.append(static_entry(rx, act_bits=16, per_channel=cal.per_channel))
            elif prec == "int8":
                entries.append(static_entry(rx, act_sym=cal.symmetric_activations, per_channel=cal.per_channel))
            elif prec == "fp16":
                entries.append(float_entry(rx))
                entries.append(fp16_weights_entry(rx))
    return entries, selection


def _minmax_update(old: dict, new: dict) -> dict:
    """Global min/max over the calibration photos, every photo weighted alike. (ai-edge-quantizer's
    default is an exponential moving average with factor 0.95, which with 6 photos gives the first
    one ~77% of the weight; measured worse for U^2-Net-p.)"""
    if not old:
        return new
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def calibrate(data: bytes, signature: str, feeds: list[dict[str, np.ndarray]], entries: list[dict[str, Any]]) -> dict:
    from ai_edge_quantizer import calibrator, quantizer

    if not feeds:
        raise InputError("no calibration inputs")
    q = quantizer.Quantizer(bytearray(data), entries)
    cal = calibrator.Calibrator(bytes(data), num_threads=2, qsv_update_func=_minmax_update)
    # Quantizer.calibrate() fixes the update function to the moving average: drive the Calibrator
    # with the quantizer's own recipe manager instead (private attribute, ai-edge-quantizer 0.10).
    cal.calibrate({signature: feeds}, q._recipe_manager)
    return _nonzero_ranges(cal.get_model_qsvs())


def _nonzero_ranges(qsvs: dict) -> dict:
    """A tensor that was constant on every calibration photo (a never-active ReLU's all-zero output)
    has min == max, so ai-edge-quantizer gives it scale 0 (a NaN cast) and XNNPACK refuses the whole
    graph ("failed to create XNNPACK runtime"). Its range is widened to include 0, and to [0, 1] when it
    was 0 itself: the constant stays exactly representable."""
    out = {}
    for name, q in qsvs.items():
        if "min" in q and "max" in q:
            lo, hi = np.minimum(q["min"], 0), np.maximum(q["max"], 0)
            q = {**q, "min": lo, "max": np.where(hi > lo, hi, lo + 1.0).astype(np.asarray(q["max"]).dtype)}
        out[name] = q
    return out


def quantize_static(data: bytes, signature: str, feeds: list[dict[str, np.ndarray]], recipe: Recipe, pipeline,
                    int8_io: bool = False) -> tuple[bytes, dict[str, Any]]:
    entries, selection = recipe_entries(data, recipe, pipeline, signature, int8_io)
    qsvs = calibrate(data, signature, feeds, entries)
    return _quantize(data, entries, qsvs), selection


BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def bias_ops(data: bytes, pipeline, paths: list[str]) -> dict[str, list[int]]:
    """Per module path, the indices of the ops with a bias it became (conv, depthwise conv, fully
    connected): where :func:`with_bias_shifts` writes. The same for every recipe on one float model,
    so callers that patch many times find them once."""
    from .flatbuffer import model_t

    g = model_t(data).subgraphs[0]
    return {path: [row["index"] for row in rows if row["op"] in BIASED_OPS and len(g.operators[row["index"]].inputs) > 2
                   and g.operators[row["index"]].inputs[2] >= 0]
            for path, rows in select_many(data, pipeline, list(paths)).items()}


def with_bias_shifts(data: bytes, shifts: dict[str, np.ndarray], ops: dict[str, list[int]]) -> bytes:
    """The float .tflite ``data`` with ``shifts`` (module path -> per-output-channel amount)
    subtracted from the bias of the ops each module became (``ops``, from :func:`bias_ops`;
    mexport.quantize.bias_correction). A bias buffer the converter shares between ops (equal
    constants) gets a copy of its own first."""
    from ai_edge_litert import schema_py_generated as fb

    from .flatbuffer import model_t, pack

    m = model_t(data)
    g = m.subgraphs[0]
    users: dict[int, int] = {}
    for t in g.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    for path, shift in shifts.items():
        for index in ops.get(path, ()):
            t = g.tensors[g.operators[index].inputs[2]]
            bias = np.frombuffer(np.asarray(m.buffers[t.buffer].data, np.uint8).tobytes(), np.float32)
            if bias.shape != shift.shape:
                continue
            if users[t.buffer] > 1:
                users[t.buffer] -= 1
                m.buffers.append(fb.BufferT())
                t.buffer = len(m.buffers) - 1
                users[t.buffer] = 1
            m.buffers[t.buffer].data = np.frombuffer((bias - shift).astype(np.float32).tobytes(), np.uint8)
    return pack(m)
