"""Mixed precision for fp16 Core ML programs: the layers a model declares precision-sensitive
(``MattingModel.int8.float_layers``, or a recipe's float layers) compute in fp32, with the
ops that build their inputs; everything else computes in fp16.

Why, measured with the executor on u2netp-refine (refiner v2; fused model, alpha PSNR vs float on
chelsea / motorcycle_right, the export-time check photos): plain fp16 gives 39.7 / 32.9 dB, under
the 40 dB fp16 gate; keeping the whole refiner in fp32 changes nothing (39.7 / 32.9): the coarse
net's alpha is already off (~39.5 dB) and the refiner's band amplifies that. The loss is in
``coarse.stage2d.dec.4``: one of its input channels is a near-constant ~228 (fp16 step: 0.125) that
a 5.6 weight multiplies while its other weights stay <= 0.16, so fp16 rounding of that channel and
of that weight does not cancel the way the float sums do. The declared layers alone in fp32, their
convs reading fp16 inputs: 42.6 / 37.6 dB (refiner v1); ``coarse.stage2d.dec.4`` with the ops that
compute its input also fp32, back to the convs producing it (enc.0, dec.3): 62.0 / 59.3 dB (v1); the
model's declared layers this way: 65.2 / 66.0 dB (v2). So a selected layer takes its input chain.

Selection is by module scope, not by op name: ``torch.jit.trace`` records the module each node ran
in, and coremltools names every MIL op after its node's output value, so the op selector can look up
the module path of each op (``coarse.stage2d.dec.4.0``) before the fp16 pass casts anything. That
follows any refiner or coarse net without knowing its internals. An op whose name is not a traced
value (a converter pass made it) takes the module of the op producing its first input. Seen with
coremltools 9.0; should a later version name ops otherwise, a declared layer matches nothing and the
fused export fails with a ConversionError rather than silently staying fp16.
"""

from __future__ import annotations

from typing import Any, Iterator

SCOPE_ROOT = "pipe"  # the attribute of MattingPipeline's role graph that holds the pipeline
# Ops whose weights end an input chain: their own input may be rounded to fp16, their sums are not.
WEIGHTED = frozenset({"conv", "conv_transpose", "linear", "matmul"})


def module_scopes(traced) -> dict[str, str]:
    """Traced value name -> module path inside the pipeline (``coarse.stage2d.dec.4.0``; ``""`` for
    the pipeline's own ops: normalization, resizes, the final clamp)."""
    out: dict[str, str] = {}
    for node in traced.inlined_graph.nodes():
        scope = node.scopeName().rsplit("/", 1)[-1].removeprefix("__module.")
        path = scope[len(SCOPE_ROOT) + 1:] if scope.startswith(SCOPE_ROOT + ".") else ""
        for value in node.outputs():
            out[value.debugName()] = path
    return out


def _data_inputs(op) -> Iterator[Any]:
    """The op's inputs computed by other ops (not consts, not compressed weights, not graph inputs)."""
    for v in op.inputs.values():
        for var in v if isinstance(v, (list, tuple)) else (v,):
            src = var.op
            if src is not None and src.op_type != "const" and not src.op_type.startswith("constexpr_"):
                yield var


class Fp32Layers:
    """``op_selector`` for ``ct.transform.FP16ComputePrecision``: True (cast to fp16) for every op
    except those of the fp32 layers and the ops computing their inputs, back to the nearest op with
    weights (included). ``layers`` maps module paths to fp32 (True) or not; the longest matching
    path decides, as in recipes (``refine`` fp32 but ``refine.lowres`` fp16). Classifies the whole
    block at its first call, before the pass has changed anything; afterwards ``matched`` (ops per
    fp32 layer), ``exceptions`` (fp16 layers inside fp32 ones that matched ops), ``ops`` and
    ``convs`` say what was kept."""

    def __init__(self, scopes: dict[str, str], layers: dict[str, bool]) -> None:
        self.scopes = scopes
        self.layers = dict(sorted(layers.items()))
        self.fp32: set[str] | None = None
        self.matched: dict[str, int] = {k: 0 for k, v in self.layers.items() if v}
        self.exceptions: set[str] = set()
        self.ops = 0
        self.convs = 0

    def _layer_of(self, path: str | None) -> str | None:
        """The most specific layer key an op of module ``path`` falls under, or None."""
        if path is None:
            return None
        hits = [k for k in self.layers if path == k or path.startswith(k + ".")]
        return max(hits, key=len) if hits else None

    def _classify(self, block) -> set[str]:
        ops = list(block.operations)
        path_of: dict[str, str | None] = {}
        for op in ops:
            path = self.scopes.get(op.name)
            if path is None:  # made by a converter pass: the module of its first computed input
                path = next((path_of.get(v.op.name) for v in _data_inputs(op)), None)
            path_of[op.name] = path
        keep = set()
        for op in ops:
            layer = self._layer_of(path_of[op.name])
            if layer is not None and self.layers[layer]:
                keep.add(op.name)
                self.matched[layer] += 1
            elif layer is not None and any(layer.startswith(k + ".") for k, v in self.layers.items() if v):
                self.exceptions.add(layer)
        frontier = [op for op in ops if op.name in keep]
        while frontier:
            for var in _data_inputs(frontier.pop()):
                src = var.op
                if src.name in keep:
                    continue
                keep.add(src.name)
                if src.op_type not in WEIGHTED:
                    frontier.append(src)
        by_name = {op.name: op for op in ops}
        self.ops = sum(1 for n in keep if by_name[n].op_type != "const")
        self.convs = sum(1 for n in keep if by_name[n].op_type == "conv")
        return keep

    def __call__(self, op) -> bool:
        if self.fp32 is None:
            self.fp32 = self._classify(op.enclosing_block)
        return op.name not in self.fp32
