"""Trials for `mexport sensitivity` on LiteRT: one litert-torch conversion and one calibration, then
one ai-edge-quantizer pass per recipe.

litert-torch's conversion (20-50 s for the reference model) and the calibration do not depend on
the recipe: the calibration records the range of every tensor under an all-int8 recipe, and a
recipe that keeps some ops float only needs fewer of them. A trial is then the quantizer's pass
over the float flatbuffer with the recipe's entries.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

from ...quantize.recipe import Recipe

_CACHE: dict[str, Any] = {}


@dataclasses.dataclass
class TfliteTrials:
    """Picklable: worker processes load the float model, ranges and pipeline from ``workdir``."""

    workdir: Path
    provenance: Any
    model_ref: str  # a worker loads the pipeline again (a user's module does not pickle)
    shifts_file: Path | None = None  # bias correction's per-layer shifts (npz), for recipes with repairs

    @classmethod
    def prepare(cls, pipeline, feeds: list[dict], provenance, workdir: Path, calibration, model_ref: str) -> "TfliteTrials":
        from ...quantize.bias_correction import load_shifts, write_shifts
        from . import quantize as q
        from .convert import export_module, feed, litert_convert, sample_inputs
        from .options import TfliteOptions

        workdir.mkdir(parents=True, exist_ok=True)
        options = TfliteOptions(precision="int8")
        module, _, _ = export_module(pipeline, "fused", options)
        data = litert_convert(module, "fused", sample_inputs(pipeline, "fused", options))
        (workdir / "float.tflite").write_bytes(data)
        shifts_file = write_shifts(pipeline, feeds, workdir / "bias_shifts.npz", calibration, "int8")  # ai-edge-quantizer's grid
        shifts = load_shifts(shifts_file)
        bias_ops = q.bias_ops(data, pipeline, list(shifts))  # where a repaired recipe writes, found once
        entries = [q.static_entry(per_channel=calibration.per_channel), q.float_entry(".*", "INPUT"), q.float_entry(".*", "OUTPUT")]
        feeds = [feed(f, options) for f in feeds]
        # the ranges of the float graph, and of the graph with every layer bias-corrected (for the
        # recipes with that repair): a corrected layer's output, and what follows, moves
        ranges = {(): q.calibrate(data, "fused", feeds, entries),
                  ("bias_correction",): q.calibrate(q.with_bias_shifts(data, shifts, bias_ops), "fused", feeds, entries)}
        with open(workdir / "ranges.pkl", "wb") as f:
            pickle.dump({"ranges": ranges, "bias_ops": bias_ops, "feeds": feeds}, f)
        out = cls(workdir, provenance, model_ref, shifts_file)
        _CACHE.clear()
        _CACHE[str(workdir)] = (data, ranges, pipeline, (shifts, bias_ops), feeds)
        return out

    def _load(self):
        key = str(self.workdir)
        if key not in _CACHE:
            with open(self.workdir / "ranges.pkl", "rb") as f:
                saved = pickle.load(f)
            from ...models import DEFAULT_MODEL, MattingPipeline, load_model
            from ...models.recenter import plain_form
            from ...quantize.bias_correction import load_shifts

            pipeline = plain_form(MattingPipeline(load_model(self.model_ref or DEFAULT_MODEL)))  # as mexport.sensitivity.run converts it
            _CACHE.clear()
            _CACHE[key] = ((self.workdir / "float.tflite").read_bytes(), saved["ranges"], pipeline,
                           (load_shifts(self.shifts_file), saved["bias_ops"]), saved["feeds"])
        return _CACHE[key]

    def units(self) -> list[dict[str, Any]]:
        """Every conv / linear of the pipeline that the converted graph holds (found by its weights,
        as the int8 export addresses layers); the activation fused into it comes along."""
        from torch import nn

        from .quantize import select_many

        import torch

        data, _, pipeline, _, _ = self._load()
        kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
        macs: dict[str, int] = {}
        hooks = [m.register_forward_hook(lambda m, a, o, n=n: macs.__setitem__(n, int(m.weight.numel() // m.weight.shape[0] * o.numel())))
                 for n, m in pipeline.named_modules() if isinstance(m, kinds)]
        try:
            with torch.inference_mode():
                pipeline.graph("fused")(*pipeline.example_inputs("fused"))
        finally:
            for h in hooks:
                h.remove()
        layers = [(n, m) for n, m in pipeline.named_modules() if isinstance(m, kinds)]
        found = select_many(data, pipeline, [n for n, _ in layers])
        return [{"path": n, "ops": {type(m).__name__: 1}, "macs": macs.get(n, 0)} for n, m in layers if found[n]]

    def build_float(self, path: Path) -> Path:
        from .flatbuffer import finalize

        data, _, _, _, _ = self._load()
        prov = dataclasses.replace(self.provenance, precision="fp32", recipe=None, calib_sha256=None, calib_method=None)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(finalize(data, prov))
        return path

    def build(self, recipe: Recipe, path: Path, exact: bool = False) -> Path:
        """A trial takes its ranges from one calibration of the graph with every layer repaired,
        which a recipe keeping some layers float (unrepaired) does not have; ``exact`` calibrates
        the recipe's own graph with its own entries, as `mexport tflite --int8 --recipe` does, for
        the verdict (mexport.runtimes.onnx.sensitivity.OnnxTrials.build measures the difference)."""
        from ...errors import InputError
        from . import quantize as q
        from .flatbuffer import finalize

        if recipe.split_inputs:
            raise InputError("the LiteRT trials do not split convs (split_inputs)")
        data, ranges, pipeline, (shifts, bias_ops), feeds = self._load()
        entries, _ = q.recipe_entries(data, recipe, pipeline, "fused", False)
        if "bias_correction" in recipe.repairs:
            from ...quantize.bias_correction import corrected_shifts

            # the same ops, constants aside: the entries found on the float data still apply
            data = q.with_bias_shifts(data, corrected_shifts(shifts, recipe), bias_ops)
        if exact and recipe.repairs:
            out, _ = q.quantize_static(data, "fused", feeds, recipe, pipeline)
        else:  # without repairs the cached ranges are the recipe's own graph's
            out = q._quantize(data, entries, ranges[tuple(recipe.repairs)])
        prov = dataclasses.replace(self.provenance, recipe=f"{recipe.name}:{recipe.sha256()[:16]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(finalize(out, prov))
        return path
