"""Capture: a role graph as ``torch.export`` records it, at the spec's fixed shapes.

Models converted from ONNX (onnx2torch) and some research code compute resize sizes and crop
bounds with tensor maths on shapes (``torch.tensor(x.shape) * 2``, then ``.tolist()`` or
``.item()``). At the spec's fixed shapes those values are constants, but ``torch.export``'s
default (non-strict) tracing sees data-dependent scalars and stops ("Could not extract specialized
integer from data-dependent expression"), and litert-torch with it. Dynamo's strict tracing gets
through and records ``item`` nodes; :func:`specialize` then evaluates each one that depends on no
input (only on shapes and constants) and puts its value in the graph, so the converters get a
plain graph. torch has no pass for this (``torch.export`` keeps such scalars symbolic by design);
it is written here. A scalar that does depend on the photo is a hard error naming the module and
the source line: no fixed-shape graph can hold it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConversionError

# What torch.export says when tracing meets a scalar computed from a tensor.
_DATA_DEPENDENT = ("data-dependent", "is not supported for tensor subclasses", "GuardOnDataDependentSymNode",
                   "Could not guard on", "Could not extract specialized integer", "Cannot access data pointer of Tensor")


@dataclass
class Captured:
    module: Any  # what converters get: the original module, or the specialized GraphModule
    program: Any  # torch.export's (non-strict) program of ``module``, for passes and checks on its graph
    rewrites: list[str] = field(default_factory=list)  # what was done to it, one line each

    def graph_module(self):
        """A fresh GraphModule of the program: passes may rewrite it in place."""
        return graph_module(self.program)


def is_data_dependent(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return any(s in text for s in _DATA_DEPENDENT)


def where(node) -> str:
    """'module path (file:line)' of an exported node, for messages."""
    path = module_path(node) or "(top level)"
    line = source_line(node)
    return f"{path} ({line})" if line else path


def module_path(node) -> str:
    """The PyTorch module path of an exported node, as recipes name layers ('coarse.stage1.0'):
    without the export wrappers' own attributes (the pipeline's role graph, LiteRT's NamedGraph)."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return _user_path(re.sub(r"^L\['self'\]\.?", "", path.replace("L['self'].", "")))


def _user_path(path: str) -> str:
    """A module path without the export wrappers' attributes (LiteRT's ``net``, the role graph's ``pipe``)."""
    return re.sub(r"^(net\.)?(pipe\.)?", "", path)


def source_line(node) -> str:
    """The last 'File "x.py", line N' of a node's stack trace that is not torch's own code."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    frames = [(f, n) for f, n in frames if "/torch/" not in f]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else ""


def capture(module, args: tuple, kwargs: dict | None = None) -> Captured:
    """``module`` itself when torch.export traces it as is; else its specialized GraphModule."""
    import torch

    kwargs = kwargs or {}
    try:
        with _quiet():
            return Captured(module, torch.export.export(module, args, kwargs=kwargs, strict=False))
    except Exception as e:
        if not is_data_dependent(e):
            raise
    folded, notes = fold_fx_constants(module, args, kwargs)
    if notes:
        try:
            with _quiet():
                return Captured(folded, torch.export.export(folded, args, kwargs=kwargs, strict=False), notes)
        except Exception as e:
            if not is_data_dependent(e):
                raise
    try:
        with _quiet():
            ep = torch.export.export(module, args, kwargs=kwargs, strict=True)
    except Exception as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConversionError(f"the graph computes sizes from tensors and even torch.export's strict mode cannot trace it: {first[:300]}") from None
    gm, notes = specialize(ep, args, kwargs)
    return Captured(gm, torch.export.export(gm, args, kwargs=kwargs, strict=False), notes)


def graph_module(ep):
    """``ep.module()``, which converters can put in eval mode: the module torch.export returns
    refuses ``train()`` ("not supported yet"), and litert-torch and torch.onnx call ``eval()``."""
    import types

    gm = ep.module()
    gm.train = types.MethodType(lambda self, mode=True: self, gm)
    return gm


def _with_constants(sub, fixed: dict):
    """``sub`` called with the arguments at ``fixed`` (index -> tensor) set to real tensors, held
    outside the module's state (torch.export would make a buffer a fake tensor again): enough for a
    module that reads them with ``.tolist()``, when FX cannot trace it (onnx2torch's OnnxResize
    formats its input's rank into messages)."""
    from torch import nn

    class WithConstants(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mod = sub

        def forward(self, *args):
            given = iter(args)
            return self.mod(*(fixed[i] if i in fixed else next(given) for i in range(len(args) + len(fixed))))

    return WithConstants()


def _specialized(sub, fixed: dict):
    """``sub`` traced by torch.fx with the arguments at ``fixed`` (index -> tensor) given as
    concrete values: its Python reads them (``.tolist()``, ``.numpy()``) and bakes the numbers in.
    The traced module takes the other arguments only; None when ``sub`` cannot be traced so."""
    import inspect
    import warnings

    import torch.fx

    names = list(inspect.signature(sub.forward).parameters)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "could not add assertion ... input ends": the spec's shapes are fixed
            gm = torch.fx.symbolic_trace(sub, concrete_args={names[i]: t for i, t in fixed.items()})
    except Exception:
        return None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i in sorted(fixed):
        if placeholders[i].users:
            return None
        gm.graph.erase_node(placeholders[i])
    gm.recompile()
    return gm


def fold_fx_constants(module, args: tuple, kwargs: dict) -> tuple[Any, list[str]]:
    """For a model made of FX graphs (onnx2torch's output is one: its Resize and Slice modules take
    sizes as tensors and call ``.tolist()`` / ``.numpy()`` on them), a copy where each submodule
    fed integer tensors computed from shapes is re-traced with them as constants (``_specialized``),
    or else called with them as real tensors (``_with_constants``).
    Found by running each graph on two different inputs of the spec's shapes: the integer tensors
    (<= 64 values) equal in both runs. torch.export has no such pass (it keeps them symbolic)."""
    import copy

    import torch
    from torch.fx import GraphModule, Interpreter

    module = copy.deepcopy(module)
    graphs = [(name, m) for name, m in module.named_modules() if isinstance(m, GraphModule)]
    if not graphs:
        return module, []
    seen: dict[str, list] = {name: [] for name, _ in graphs}
    hooks = [m.register_forward_pre_hook(lambda mod, a, name=name: seen[name].append(a)) for name, m in graphs]
    g = torch.Generator().manual_seed(7)
    other = tuple(torch.rand(a.shape, generator=g) * 3 - 1 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    try:
        with torch.no_grad():
            module(*args, **kwargs)
            module(*other, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    notes = []
    for name, gm in graphs:
        if len(seen[name]) != 2:
            continue
        env = []
        for inputs in seen[name]:
            interp = Interpreter(gm, garbage_collect_values=False)
            with torch.no_grad():
                interp.run(*inputs)
            env.append(interp.env)
        const = {n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")
                 and all(isinstance(e.get(n), torch.Tensor) for e in env) and not env[0][n].is_floating_point()
                 and env[0][n].numel() <= 64 and torch.equal(env[0][n], env[1][n])}
        for n in list(gm.graph.nodes):
            if n.op != "call_module" or n in const:
                continue
            fixed = {i: env[0][a].clone() for i, a in enumerate(n.args) if isinstance(a, torch.fx.Node) and a in const}
            if not fixed or n.kwargs:
                continue
            sub = gm.get_submodule(n.target)
            parent, _, attr = n.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, _specialized(sub, fixed) or _with_constants(sub, fixed))
            n.args = tuple(a for i, a in enumerate(n.args) if i not in fixed)
            notes.append(f"{_user_path(name + '.' if name else '')}{n.target}: argument(s) {sorted(fixed)} computed from shapes "
                         f"fixed to their values at the spec's sizes")
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return module, notes


@contextlib.contextmanager
def _quiet():
    """torch.export prints the whole FX graph on a data-dependent failure (logging, to stderr):
    this module handles that failure, so the dump is noise."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def specialize(ep, args: tuple, kwargs: dict) -> tuple[Any, list[str]]:
    """Replace every scalar the exported program reads out of a tensor (``item``) by its value
    at these inputs, when it depends on no input; return the GraphModule and what was folded."""
    import torch
    from torch.fx import Interpreter

    gm = graph_module(ep)
    graph = gm.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    tainted = set(inputs)
    for n in graph.nodes:
        if n.op == "call_function" and any(a in tainted for a in n.all_input_nodes):
            tainted.add(n)
    scalars = [n for n in graph.nodes if n.op == "call_function"
               and n.target in (torch.ops.aten.item.default, torch.ops.aten._local_scalar_dense.default)]
    if not scalars:
        return gm, []
    bad = [n for n in scalars if n in tainted]
    if bad:
        raise ConversionError(f"{where(bad[0])} reads a scalar out of a tensor computed from the input "
                              f"(.item()/.tolist()/int() on data): no fixed-shape graph can hold it; compute it from "
                              f"x.shape (Python ints) or keep it a tensor")
    flat = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
    interp = Interpreter(gm, garbage_collect_values=False)
    with torch.no_grad():
        interp.run(*flat)
    folded = []
    for n in scalars:
        v = interp.env[n]
        v = v.item() if isinstance(v, torch.Tensor) else v
        _substitute(n, v)
        folded.append(f"{where(n)}: scalar computed from shapes specialized to {v} (its value at the spec's fixed sizes)")
    _fold_constant_scalar_ops(graph)
    graph.eliminate_dead_code()
    gm.recompile()
    return gm, folded


def _substitute(node, value) -> None:
    """Every use of ``node`` becomes the constant ``value``."""
    from torch.fx.node import map_arg

    for user in list(node.users):
        user.args = map_arg(user.args, lambda a: value if a is node else a)
        user.kwargs = map_arg(user.kwargs, lambda a: value if a is node else a)


def _asserts():
    import torch

    return {torch.ops.aten._assert_scalar.default, torch.ops.aten.sym_constrain_range_for_size.default,
            torch.ops.aten._assert_async.msg}


_SCALAR_OPS = (operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
               operator.ge, operator.gt, operator.le, operator.lt, operator.eq, operator.ne, operator.neg)


def _fold_constant_scalar_ops(graph) -> None:
    """Python scalar maths (and the range asserts torch.export adds) whose inputs are now all
    constants: evaluate it, pass the value on; asserts that hold are dropped."""
    import math

    asserts = _asserts()
    for n in list(graph.nodes):  # in order: a folded value makes its users constant in turn
        if n.op != "call_function" or n.all_input_nodes:
            continue
        target = n.target
        name = getattr(target, "__name__", "")
        if target in _SCALAR_OPS or name in ("sym_float", "sym_int", "sym_max", "sym_min", "sym_not") or target in (math.floor, math.ceil):
            _substitute(n, target(*n.args, **n.kwargs))  # torch's sym_* of plain numbers are plain numbers
        elif target in asserts and not n.users:
            graph.erase_node(n)
