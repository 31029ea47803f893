"""int8 for ExecuTorch: pt2e quantization (torchao's ``prepare_pt2e`` / ``convert_pt2e``) with
ExecuTorch's ``XNNPACKQuantizer``, driven by the shared recipe format.

The recipe decides per op, by the PyTorch module the op ran in (``nn_module_stack``), with the
longest-key-wins rule of :meth:`Recipe.precision_of`: an op whose module the recipe keeps float is
left unannotated (it stays float and runs in float on XNNPACK); every other op is annotated with
the recipe's calibration settings. Activations are observed with MinMax (the recipe's only method
here, as for LiteRT), weights per channel (symmetric int8, what XNNPACK's int8 kernels take).
"""

from __future__ import annotations

from typing import Any

from ...errors import InputError

METHODS = ("minmax",)


def check_recipe(recipe) -> None:
    """Layers int8 or float, default either; MinMax calibration."""
    bad = {k: v for k, v in recipe.layers.items() if v not in ("int8", "float")}
    if bad or recipe.default not in ("int8", "float"):
        raise InputError(f"the ExecuTorch quantizer takes int8 or float layers (and default) only; recipe asks "
                         f"{bad or {'default': recipe.default}}")
    if recipe.calibration.method not in METHODS:
        raise InputError(f"the ExecuTorch quantizer supports calibration method {', '.join(METHODS)} only, "
                         f"not {recipe.calibration.method!r}")


def module_path(node) -> str:
    """The module an exported node ran in, as a recipe names it ('coarse.stage1.conv_in.0'; '' for
    the pipeline's own ops): the innermost entry of its nn_module_stack, below the role graph's
    ``pipe`` attribute."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    path = path.removeprefix("L['self'].").removeprefix("pipe")
    return path.removeprefix(".")


def quantizer_for(recipe):
    """An XNNPACKQuantizer that annotates exactly the ops the recipe puts in int8."""
    import dataclasses

    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import MinMaxObserver

    cal = recipe.calibration
    config = get_symmetric_quantization_config(is_per_channel=cal.per_channel)
    # The XNNPACK default observes activations with a histogram; the recipe says MinMax.
    act = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12),
                              qscheme=torch.per_tensor_symmetric if cal.symmetric_activations else torch.per_tensor_affine)
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    quantizer = XNNPACKQuantizer().set_global(config)
    # set_filter_function: the quantizer annotates only the nodes it returns True for.
    quantizer.set_filter_function(lambda node: recipe.precision_of(module_path(node)) == "int8")
    return quantizer


def quantize(graph, example: tuple, feeds: list[tuple[Any, ...]], recipe):
    """The role graph, fake-quantized by the recipe and calibrated on ``feeds``, converted to its
    quantized form (Q/DQ around int8 ops, weights folded to int8): a module to export again."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not feeds:
        raise InputError("no calibration inputs")
    captured = torch.export.export(graph, example).module()
    prepared = prepare_pt2e(captured, quantizer_for(recipe))
    with torch.no_grad():
        for args in feeds:
            prepared(*args)
    return convert_pt2e(prepared)
