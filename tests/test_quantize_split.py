"""Input-channel splitting (mexport.quantize.split) and the recipe field that asks for it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mexport.errors import InputError
from mexport.quantize.recipe import Int8Declarations, Recipe
from mexport.quantize.split import SplitConv, split_inputs


@pytest.mark.parametrize("channels", [(1,), (0, 5)])
def test_split_conv_computes_the_conv(channels):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=2, dilation=2)
    with torch.no_grad():
        conv.weight[:, channels[0]] *= 40  # the outlier input channel the split exists for
    x = torch.rand(2, 8, 12, 10) * 5
    split = SplitConv(conv, channels)
    with torch.no_grad():
        want, got = conv(x), split(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    # main carries every other channel's weights, none of the split ones', and no bias; side has the bias
    assert split.main.bias is None and torch.equal(split.side.bias, conv.bias)
    assert split.main.weight[:, list(channels)].abs().max() == 0 and split.side.weight.shape[1] == len(channels)
    assert split.main.weight.abs().amax(dim=(0, 2, 3)).max() < conv.weight.abs().max() / 10


def _pipe():
    from mexport.models.pipeline import MattingModel, MattingPipeline
    from mexport.models.u2netp import U2NetP
    from mexport.spec import PipelineSpec

    torch.manual_seed(0)
    return MattingPipeline(MattingModel(coarse=U2NetP(mid=4, width=8), spec=PipelineSpec(coarse_size=(64, 64), refine_size=(128, 128)),
                                        name="tiny-u2netp", weights_sha256="0" * 64))


def test_split_inputs_copies_and_keeps_the_maths():
    pipe = _pipe()
    out = split_inputs(pipe, {"coarse.stage2d.dec.4.0": (3,), "coarse.side.0": (0, 7)})
    assert type(pipe.coarse.stage2d.dec[4][0]) is nn.Conv2d  # the user's pipeline is untouched
    assert isinstance(out.coarse.stage2d.dec[4][0], SplitConv) and isinstance(out.coarse.side[0], SplitConv)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert (out(x) - pipe(x)).abs().max() <= 1e-5
    assert split_inputs(pipe, {}) is pipe


@pytest.mark.parametrize("splits, match", [
    ({"coarse.stage9.0": (0,)}, "not a module"),
    ({"coarse.stage2d.dec.4": (0,)}, "ConvReLU, not a plain"),
    ({"coarse.stage2d.dec.4.0": (8,)}, "has 8 input channels"),
    ({"coarse.side.0": tuple(range(8))}, "cannot split off"),
])
def test_split_inputs_bad_keys(splits, match):
    with pytest.raises(InputError, match=match):
        split_inputs(_pipe(), splits)


def test_recipe_split_inputs_round_trip_and_validation():
    r = Recipe(name="r", layers={"coarse.x": "float", "coarse.x.main": "int8"}, split_inputs={"coarse.x": [3, 1]})
    assert r.split_inputs == {"coarse.x": (3, 1)}
    d = json.loads(r.to_json())
    assert d["split_inputs"] == {"coarse.x": [3, 1]} and Recipe.from_dict(d) == r
    # recipes without splits serialize as before the field existed (their sha256 is unchanged)
    assert "split_inputs" not in json.loads(Recipe(name="r").to_json())
    for bad in ({"coarse.x": []}, {"coarse.x": [-1]}, {"coarse.x": [1, 1]}, {"coarse.x": "3"}, {".x": [0]}, {"coarse.x": [True]}):
        with pytest.raises(ValueError):
            Recipe(name="r", split_inputs=bad)


def test_only_runtimes_that_split_convs_take_splits():
    from mexport.quantize.recipes import model_default_recipe
    from mexport.runtimes import get_runtime, names

    recipe = Recipe(name="r", split_inputs={"coarse.x": [0]})
    appliers = [n for n in names() if get_runtime(n).applies_splits]
    assert appliers == ["tflite"]
    get_runtime("tflite").check_recipe(recipe)
    for name in set(names()) - {"tflite"}:
        with pytest.raises(InputError, match="split_inputs is applied by LiteRT only"):
            get_runtime(name).check_recipe(recipe)
    int8 = Int8Declarations(float_layers={"coarse.a.0": "why"}, split_inputs={"coarse.a.0": ([2], "one channel")})
    pipe = SimpleNamespace(model_info=SimpleNamespace(int8=int8))
    tfl, onnx = model_default_recipe(pipe, "tflite", splits=True), model_default_recipe(pipe, "onnx")
    assert tfl.split_inputs == {"coarse.a.0": (2,)} and tfl.layers == {"coarse.a.0": "float", "coarse.a.0.main": "int8"}
    assert onnx.split_inputs == {} and onnx.layers == {"coarse.a.0": "float"}


def test_int8_declarations_are_typed_and_empty_ones_give_naive_int8():
    with pytest.raises(ValueError, match="float_layers maps module paths to why"):
        Int8Declarations(float_layers={"coarse.a": 3})
    with pytest.raises(ValueError, match=r"split_inputs\['coarse.a.0'\] must be \(input channels, why\)"):
        Int8Declarations(split_inputs={"coarse.a.0": [2]})
    naive = Int8Declarations().recipe("onnx-int8", splits=True)
    assert naive.layers == {} and naive.split_inputs == {} and naive.default == "int8"
