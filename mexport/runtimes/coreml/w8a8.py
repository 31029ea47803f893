"""W8A8 for Core ML: int8 weights and int8 activations, calibrated on photos on the torch side with
``coremltools.optimize.torch``'s ``LinearQuantizer`` (torch.fx fake quantization; no training step:
observers watch the calibration photos, then ``finalize`` writes quantize/dequantize pairs that
``ct.convert`` turns into MIL ``quantize``/``dequantize`` ops, iOS17+). coremltools' own
``linear_quantize_activations`` calibrates with ``MLModel.predict``, which exists only on macOS.
``LinearQuantizer`` stands on torch.ao's FX quantization, which torch marks deprecated (its warning
names removal in 2.10; 2.13 still has it); coremltools' PT2E ``CoreMLQuantizer`` is the successor.

Each network (coarse, refine) is quantized on its own, on the inputs it sees in the float pipeline;
the pipeline's glue (normalization, resizes, the final clamp) stays float. Layers the recipe keeps
float get no quantization config (``module_name_configs[name] = None``); inside a layer the recipe
keeps float, the narrower layers it names int8 are quantized on their own (refine network v2 was
float except its 1/4-resolution CNN, ``refine.lowres``; v3 is int8 whole).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from ...errors import ConversionError, InputError
from ...quantize.recipe import Recipe

NETWORKS = ("coarse", "refine")
OBSERVERS = {"minmax": "min_max"}  # recipe calibration method -> coremltools observer


def check_recipe(recipe: Recipe) -> None:
    """Core ML W8A8 has two layer precisions: int8 and float (whatever the program computes in)."""
    if recipe.default != "int8":
        raise InputError(f"Core ML w8a8: the recipe's default precision must be int8, got {recipe.default!r}")
    bad = {k: v for k, v in recipe.layers.items() if v not in ("int8", "float")}
    if bad:
        raise InputError(f"Core ML w8a8 takes int8 or float layers only; recipe asks {bad}")
    if recipe.calibration.method not in OBSERVERS:
        raise InputError(f"Core ML w8a8 calibrates with {', '.join(OBSERVERS)} observers; "
                         f"recipe asks {recipe.calibration.method!r}")


def float_layers(recipe: Recipe) -> tuple[str, ...]:
    return tuple(k for k, v in recipe.layers.items() if v == "float")


def network_inputs(pipeline, photos) -> dict[str, list[tuple[Any, ...]]]:
    """What each network's forward receives in the float pipeline, per photo (normalized inputs)."""
    import torch

    from ...photos import prepare
    from ...models.pipeline import resize

    if pipeline.spec.extra_inputs:
        raise InputError("w8a8 calibration on photos needs a model without extra inputs")
    out: dict[str, list[tuple[Any, ...]]] = {"coarse": [], "refine": []}
    with torch.no_grad():  # not inference_mode: torch.fx's observers take these tensors later
        for _, photo in photos:
            x = torch.from_numpy(prepare(photo, pipeline.spec)[0])
            xc = pipeline.normalize(pipeline.downsample(x))
            out["coarse"].append((xc,))
            if pipeline.has_refine:
                up = resize(pipeline.coarse(xc), pipeline.spec.refine_size, pipeline.spec.coarse_upsample)
                # as MattingPipeline.refine_graph calls it: a refiner may take the raw photo
                raw = getattr(pipeline.refine, "takes_raw_image", False)
                out["refine"].append((x if raw else pipeline.normalize(x), up))
    return out


def _config(recipe: Recipe):
    from coremltools.optimize.torch.quantization import ModuleLinearQuantizerConfig

    observer = OBSERVERS[recipe.calibration.method]
    # affine: asymmetric activations, like the ONNX/TFLite recipes (symmetric_activations false);
    # measured on u2netp-refine (torch, finalized model, the recipe's float layers): symmetric 13.8 /
    # 12.5 dB, affine 39.6 / 34.3 dB on chelsea / motorcycle_right.
    scheme = "symmetric" if recipe.calibration.symmetric_activations else "affine"
    return ModuleLinearQuantizerConfig(weight_observer=observer, activation_observer=observer,
                                       weight_per_channel=recipe.calibration.per_channel,
                                       quantization_scheme=scheme, milestones=None)


def _under(recipe: Recipe, path: str) -> dict[str, str]:
    """The recipe's keys inside ``path``, relative to it."""
    return {k[len(path) + 1:]: v for k, v in recipe.layers.items() if k.startswith(path + ".")}


def _check_modules(module, path: str, names) -> None:
    modules = dict(module.named_modules())
    missing = sorted(f"{path}.{n}" for n in names if n not in modules)
    if missing:
        raise InputError(f"the recipe names {', '.join(missing)}, which is not a module of the model")


def _quantize_module(module, path: str, recipe: Recipe, samples: list[tuple[Any, ...]]):
    """``module`` int8 (weights and activations) except the recipe's float layers inside it."""
    import torch
    from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

    config = _config(recipe)
    inner = _under(recipe, path)
    _check_modules(module, path, inner)
    # torch.ao applies the most specific module name: an int8 key inside a float one wins there.
    names = {k: (None if v == "float" else config) for k, v in inner.items()}
    quantizer = LinearQuantizer(module, LinearQuantizerConfig(global_config=config, module_name_configs=names))
    try:  # inplace=False: the quantizer works on a copy, the float model is left as it was
        prepared = quantizer.prepare(example_inputs=samples[0], inplace=False)
    except Exception as e:  # torch.fx raises TraceError, TypeError, ... on untraceable Python
        raise ConversionError(f"w8a8: torch.fx cannot trace {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "keep it float in the recipe, or name traceable parts of it int8") from None
    prepared.eval()
    with torch.no_grad():
        for args in samples:
            prepared(*args)
    out = quantizer.finalize(inplace=False)
    flags = {a: getattr(module, a) for a in CALL_FLAGS if hasattr(module, a)}
    return _flagged_class()(out, flags) if flags else out


# What MattingPipeline reads off a refine network to know how to call it.
CALL_FLAGS = ("takes_raw_image", "output_in_unit_range")


@functools.cache
def _flagged_class():
    from torch import nn  # torch only when quantizing: this module is imported by the CLI

    class Flagged(nn.Module):
        """A finalized (torch.fx) module with the call flags of the module it came from. A
        GraphModule keeps the maths but not its source's class attributes, and loses any set on it
        when copied (the Core ML export deep-copies before tracing): a quantized refiner that lost
        takes_raw_image was fed the normalized photo (measured: 22.6 dB)."""

        def __init__(self, inner, flags: dict) -> None:
            super().__init__()
            self.inner = inner
            for k, v in flags.items():
                setattr(self, k, v)

        def forward(self, *args):
            return self.inner(*args)

    return Flagged



def _quantize_tree(module, path: str, recipe: Recipe, samples: list[tuple[Any, ...]]):
    """int8 at ``path``: quantize it whole. Float at ``path``: quantize, each on its own, the
    outermost int8 layers the recipe names inside it (torch.fx needs only them to be traceable), on
    the inputs the float module feeds them."""
    import copy

    import torch

    if recipe.precision_of(path) == "int8":
        return _quantize_module(module, path, recipe, samples)
    int8 = [k for k, v in _under(recipe, path).items() if v == "int8"]
    outer = [k for k in int8 if not any(k.startswith(o + ".") for o in int8 if o != k)]
    if not outer:
        return module
    _check_modules(module, path, outer)
    seen: dict[str, list[tuple[Any, ...]]] = {k: [] for k in outer}
    hooks = [module.get_submodule(k).register_forward_pre_hook(lambda m, args, k=k: seen[k].append(tuple(args)))
             for k in outer]
    try:
        with torch.no_grad():
            for args in samples:
                module(*args)
    finally:
        for h in hooks:
            h.remove()
    out = copy.deepcopy(module)
    for k in outer:
        parent, _, leaf = k.rpartition(".")
        q = _quantize_module(module.get_submodule(k), f"{path}.{k}", recipe, seen[k])
        setattr(out.get_submodule(parent) if parent else out, leaf, q)
    return out


def quantized_pipeline(pipeline, recipe: Recipe, calibration):
    """A MattingPipeline whose networks are the finalized (fake-quantized) W8A8 networks."""
    from ...models.pipeline import MattingPipeline

    check_recipe(recipe)
    photos = list(calibration.photos)[: recipe.calibration.max_photos]
    inputs = network_inputs(pipeline, photos)
    nets = {name: None if getattr(pipeline, name) is None else _quantize_tree(getattr(pipeline, name), name, recipe, inputs[name])
            for name in NETWORKS}
    return MattingPipeline(dataclasses.replace(pipeline.model_info, coarse=nets["coarse"], refine=nets["refine"]))
