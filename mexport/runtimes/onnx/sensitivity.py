"""Trials for `mexport sensitivity` on onnxruntime: one float graph and one calibration, then one
quantized fused model per recipe, in about a second each.

onnxruntime's ``quantize_static`` recalibrates on every call (5 s for the reference model on six
photos); its ``calibration_cache_path`` stores the ranges of every tensor once, so a trial only
inserts Q/DQ nodes by the recipe. The ranges do not depend on the recipe (the calibrator records
every tensor of the float graph), so one cache serves every trial on the same graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from ...quantize.recipe import Recipe

# A weighted op is its own unit; activations right after it (ReLU, Clip, ...) join its unit:
# onnxruntime fuses them into the int8 kernel, and keeping one in float breaks that fusion.
WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "PRelu")
_LOADED: dict[tuple[str, str], Any] = {}  # per process: the float graph and calibration inputs

NOT_QUANTIZED = ("Constant", "Shape", "Gather", "Unsqueeze", "Reshape", "Flatten", "Identity")


@dataclasses.dataclass
class OnnxTrials:
    """Picklable: worker processes get it and build their own graphs from ``workdir``."""

    workdir: Path
    provenance: Any  # mexport.spec.Provenance of the fused graph; each trial stamps its recipe into it
    feeds_file: Path  # calibration inputs (npz), written by the parent
    calibration: Any = None  # mexport.quantize.recipe.Calibration the ranges were computed with
    shifts_file: Path | None = None  # bias correction's per-layer shifts (npz), for recipes with repairs

    # ------------------------------------------------------------------ parent side

    @classmethod
    def prepare(cls, pipeline, feeds: list[dict], provenance, workdir: Path, calibration, model_ref: str = "") -> "OnnxTrials":
        """Export the fused float graph once, write it and the calibration inputs to ``workdir``."""
        import numpy as np

        from ...quantize.bias_correction import write_shifts
        from ...quantize.recipe import REPAIRS
        from .convert import ensure_opset, simplify, torch_to_onnx
        from .quantize import weight_grid

        workdir.mkdir(parents=True, exist_ok=True)
        model = torch_to_onnx(pipeline.graph("fused"), pipeline.example_inputs("fused"), pipeline.input_names("fused"),
                              pipeline.output_name("fused"), 17)
        model = ensure_opset(simplify(model), 13)
        import onnx

        onnx.save(model, workdir / "float.onnx")
        feeds_file = workdir / "calibration.npz"
        np.savez(feeds_file, **{f"{i}:{k}": v for i, feed in enumerate(feeds) for k, v in feed.items()})
        out = cls(workdir, provenance, feeds_file, calibration, write_shifts(pipeline, feeds, workdir / "bias_shifts.npz", calibration, weight_grid(calibration)))
        out._cache()  # calibrate here, once, before workers start (and with the repairs)
        out._calibrated(Recipe(name="calibrate", calibration=calibration, repairs=REPAIRS))
        return out

    def units(self) -> list[dict[str, Any]]:
        """The layers a recipe can address: each weighted op's module path (with the activation
        that follows it), and each module path whose own ops are quantized without weights (pools,
        resizes, adds). ``macs``: multiply-accumulates of the unit's weighted op, for cost."""
        import onnx
        from onnx import shape_inference

        from .quantize import node_module_paths

        model = shape_inference.infer_shapes(onnx.load(self.workdir / "float.onnx"))
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
        inits = {i.name: i for i in model.graph.initializer}
        made_by: dict[str, str] = {}
        units: dict[str, dict[str, Any]] = {}
        paths = node_module_paths(model)
        for node, path in zip(model.graph.node, paths):
            for o in node.output:
                made_by[o] = path
            if not path or node.op_type in NOT_QUANTIZED:
                continue
            u = units.setdefault(path, {"path": path, "ops": {}, "macs": 0, "weighted": False})
            u["ops"][node.op_type] = u["ops"].get(node.op_type, 0) + 1
            if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in inits:
                u["weighted"] = True
                w = inits[node.input[1]].dims
                out = shapes.get(node.output[0], [])
                if node.op_type.startswith("Conv") and len(out) == 4:
                    u["macs"] += int(out[1] * out[2] * out[3] * (w[1] * w[2] * w[3] if len(w) == 4 else 1))
                else:
                    u["macs"] += int(_prod(w))
        # activation-only leaf paths (a Sequential's ReLU) belong to the unit of the op they follow;
        # a module's own functional ReLU (a path with descendants) stays a unit of its own, or the
        # recipe would have to key the whole module
        for path in list(units):
            u = units[path]
            parent_of_others = any(p.startswith(path + ".") for p in units)
            if set(u["ops"]) <= set(ACTIVATIONS) and not parent_of_others:
                node = next(n for n, p in zip(model.graph.node, paths) if p == path)
                owner = made_by.get(node.input[0])
                if owner in units and owner != path:
                    units[owner].setdefault("joined", []).append(path)
                    del units[path]
        return list(units.values())

    # ------------------------------------------------------------------ worker side

    def _cache(self) -> Path:
        return self._calibrated(Recipe(name="calibrate", calibration=self.calibration))

    def _float_model(self):
        """The float graph, loaded once per process (every trial quantizes a copy of it)."""
        import onnx

        key = ("float", str(self.workdir))
        if key not in _LOADED:
            _LOADED[key] = onnx.load(self.workdir / "float.onnx")
        return _LOADED[key]

    def _feeds(self) -> list[dict]:
        key = ("feeds", str(self.feeds_file))
        if key not in _LOADED:
            _LOADED[key] = self._read_feeds()
        return _LOADED[key]

    def _read_feeds(self) -> list[dict]:
        import numpy as np

        data = np.load(self.feeds_file)
        feeds: dict[int, dict] = {}
        for key in data.files:
            i, name = key.split(":", 1)
            feeds.setdefault(int(i), {})[name] = data[key]
        return [feeds[i] for i in sorted(feeds)]

    def _calibrated(self, recipe: Recipe) -> Path:
        """The calibration cache for the recipe's calibration settings (one per method), on the
        float graph as the recipe changes it: with repairs, every layer corrected (a recipe's float
        layers then have ranges measured with their inputs corrected; the exported recipe is
        calibrated on exactly its own graph)."""
        from .quantize import quantize_static

        c = recipe.calibration
        key = hashlib.sha256(repr((c.method, c.percentile, c.symmetric_activations, c.max_photos, recipe.repairs)).encode()).hexdigest()[:12]
        cache = self.workdir / f"ranges-{key}.json"
        if not cache.is_file():
            tmp = cache.with_suffix(f".{os.getpid()}.json")
            quantize_static(self._repaired(recipe, every_layer=True), self._feeds()[:c.max_photos], recipe, calibration_cache=tmp)
            os.replace(tmp, cache)
        return cache

    def _repaired(self, recipe: Recipe, every_layer: bool = False):
        """The float graph with the recipe's bias correction (of every layer that has one, or of
        the layers the recipe keeps int8)."""
        model = self._float_model()
        if "bias_correction" not in recipe.repairs:
            return model
        from ...quantize.bias_correction import corrected_shifts, load_shifts
        from .quantize import with_bias_shifts

        shifts = load_shifts(self.shifts_file)
        return with_bias_shifts(model, shifts if every_layer else corrected_shifts(shifts, recipe))

    def build_float(self, path: Path) -> Path:
        """The fused fp32 model with its provenance: the latency reference."""
        import onnx

        from .convert import set_provenance

        model = onnx.load(self.workdir / "float.onnx")
        set_provenance(model, dataclasses.replace(self.provenance, precision="fp32", recipe=None, calib_sha256=None, calib_method=None))
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
        return path

    def build(self, recipe: Recipe, path: Path, exact: bool = False) -> Path:
        """The fused model quantized by ``recipe``, written to ``path`` with its provenance.

        A trial takes its ranges from one calibration of the graph with every layer repaired: a
        recipe that keeps some layers float (unrepaired) then carries ranges that its own graph
        does not have. Cheap, and good enough to rank recipes; but on a fragile photo it is not the
        model `mexport onnx --int8 --recipe` writes (measured: the reference model's fold-0 recipe
        with 29 float layers gave GT04 35.5 dB as a trial and 24.9 dB as exported). ``exact``
        calibrates on the recipe's own graph, as the export does (8 s for the reference model),
        for the verdict."""
        import onnx

        from .convert import set_provenance
        from .quantize import quantize_static

        if recipe.split_inputs:
            from ...errors import InputError

            raise InputError("the ONNX trials do not split convs (split_inputs)")
        if exact and recipe.repairs:
            model = quantize_static(self._repaired(recipe), self._feeds()[:recipe.calibration.max_photos], recipe)
        else:  # without repairs the cached ranges are those of the recipe's own (float) graph
            model = quantize_static(self._repaired(recipe), self._feeds()[:1], recipe, calibration_cache=self._calibrated(recipe))
        set_provenance(model, dataclasses.replace(self.provenance, recipe=f"{recipe.name}:{recipe.sha256()[:16]}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, path)
        return path


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out
