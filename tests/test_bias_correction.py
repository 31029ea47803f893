"""Bias correction (mexport.quantize.bias_correction): the shift it computes, the recipe field that
asks for it, and the three places that apply it (torch before an export; the ONNX graph and the
.tflite flatbuffer in `mexport sensitivity`'s trials), which must agree."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mexport.errors import InputError
from mexport.quantize.bias_correction import bias_corrected, bias_shifts, corrected_shifts, int8_weight
from mexport.quantize.recipe import Recipe
from tests.conftest import invoke, one_error_line

TOYS = Path(__file__).resolve().parent / "byo" / "toy_int8.py"


class _Graphs(nn.Module):
    """The least a pipeline needs here: ``graph("fused")`` holding the model as ``pipe``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def graph(self, role):
        outer = self

        class G(nn.Module):
            def __init__(self):
                super().__init__()
                self.pipe = outer

            def forward(self, x):
                return outer.net(x)

        return G()


def test_shift_is_the_mean_output_move_of_int8_weights():
    """For a conv, grouped or dilated, and a linear layer: the shift equals the measured mean of
    conv(x, round(W)) - conv(x, W) per output channel. Exactly where every output window sees the
    image's channel means: a 1x1 conv, or inputs constant over the image (the shift uses the image
    mean of each channel; a window at the border sees a slightly different mean, which it ignores)."""
    torch.manual_seed(0)
    flat = lambda shape: (torch.rand(shape[:2] + (1, 1)) + 0.5).expand(shape).contiguous()  # noqa: E731
    for layer, x in ((nn.Conv2d(6, 8, 3), flat((4, 6, 20, 20))), (nn.Conv2d(6, 12, 3, groups=3, dilation=2), flat((4, 6, 20, 20))),
                     (nn.Conv2d(6, 8, 1), torch.rand(4, 6, 20, 20) + 0.5), (nn.Linear(10, 5), torch.rand(64, 10) + 0.5)):
        half = len(x) // 2  # photos of equal size: the mean of their means is the mean
        shifts = bias_shifts(_Graphs(layer), [{"x": x[:half].numpy()}, {"x": x[half:].numpy()}])
        with torch.no_grad():
            w = layer.weight
            moved = (layer._conv_forward(x, int8_weight(w), None) - layer._conv_forward(x, w, None)).mean((0, 2, 3)) \
                if isinstance(layer, nn.Conv2d) else (x @ (int8_weight(w) - w).T).mean(0)
        assert np.abs(moved.numpy()).max() > 1e-4  # there is something to correct
        np.testing.assert_allclose(shifts["net"], moved.numpy(), rtol=1e-4, atol=1e-7)


def test_per_tensor_grid_when_the_recipe_is_not_per_channel():
    w = torch.tensor([[1.0, 0.3], [0.003, 0.001]])
    assert torch.equal(int8_weight(w, per_channel=False)[1], torch.tensor([0.0, 0.0]))  # one scale: 1/127
    assert torch.allclose(int8_weight(w)[1], torch.tensor([0.003, 0.001]), atol=0.003 / 254)  # its own scale


def test_recipe_repairs_round_trip_and_validation():
    r = Recipe(name="r", repairs=["bias_correction"])
    assert r.repairs == ("bias_correction",)
    d = json.loads(r.to_json())
    assert d["repairs"] == ["bias_correction"] and Recipe.from_dict(d) == r
    assert "repairs" not in json.loads(Recipe(name="r").to_json())  # older recipes keep their sha256
    for bad in (["nope"], "bias_correction", ["bias_correction", "bias_correction"], [1]):
        with pytest.raises(ValueError, match="repairs must be"):
            Recipe(name="r", repairs=bad)
    with pytest.raises(ValueError, match="cannot be combined"):
        Recipe(name="r", repairs=["bias_correction"], split_inputs={"coarse.x": [0]})
    assert corrected_shifts({"a.b": 1, "c": 2}, Recipe(name="r", layers={"a": "float"})) == {"c": 2}


def test_only_runtimes_on_the_symmetric_int8_grid_take_repairs(tmp_path):
    from mexport.runtimes import get_runtime, names

    recipe = Recipe(name="r", repairs=["bias_correction"])
    appliers = [n for n in names() if get_runtime(n).applies_repairs]
    assert appliers == ["onnx", "ort", "tflite"]  # ort: onnxruntime's quantizer too, then its own format
    for name in set(names()) - set(appliers):
        with pytest.raises(InputError, match=r"repairs \(bias_correction\) are applied by ONNX, ORT format and LiteRT only"):
            get_runtime(name).check_recipe(recipe)
    path = tmp_path / "r.json"
    path.write_text(recipe.to_json())
    r = invoke("executorch", "--int8", "--recipe", path, "--model", f"{TOYS}:biased_rounding", "-o", tmp_path / "o")
    one_error_line(r, 2, "repairs (bias_correction) are applied by ONNX, ORT format and LiteRT only")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def toy():
    from mexport.models import MattingPipeline, load_model
    from mexport.quantize.calibration import role_inputs

    pipeline = MattingPipeline(load_model(f"{TOYS}:biased_rounding"))
    rng = np.random.default_rng(0)
    photos = [(f"p{i}", (rng.random((64, 64, 3)) * 255).astype(np.uint8)) for i in range(3)]
    return pipeline, role_inputs(pipeline, "fused", photos)


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_trials_patch_the_float_graph_as_torch_corrects_the_model(toy, target, tmp_path):
    """The trials correct biases in the converted float graph (no conversion per trial); the export
    corrects them in torch before converting. Both, in float, give the same alpha."""
    import dataclasses

    from mexport.export import make_provenance
    from mexport.quantize.bias_correction import load_shifts
    from mexport.quantize.calibration import CalibrationSet
    from mexport.runtimes import get_runtime, open_runner

    pipeline, feeds = toy
    rt = get_runtime(target)
    # coarse.head float: the exporters fold the 4x that follows it into its weights and bias, which
    # the trials do not patch (see mexport.quantize.bias_correction)
    recipe = Recipe(name="r", repairs=["bias_correction"], layers={"coarse.head": "float"})
    prov = make_provenance(pipeline, rt, "fused", rt.Options(precision="int8"), None, CalibrationSet((), "none"))
    trials = rt.sensitivity_trials(pipeline, feeds, prov, tmp_path / "t", recipe.calibration, f"{TOYS}:biased_rounding")
    shifts = corrected_shifts(load_shifts(trials.shifts_file), recipe)
    assert set(shifts) == {"coarse.stem.0", "coarse.biased"} and np.abs(shifts["coarse.biased"]).max() > 0.3
    path = tmp_path / f"patched{rt.suffix}"
    if target == "onnx":
        import onnx

        from mexport.runtimes.onnx.convert import set_provenance
        from mexport.runtimes.onnx.quantize import with_bias_shifts

        model = with_bias_shifts(trials._float_model(), shifts)
        set_provenance(model, dataclasses.replace(prov, precision="fp32", recipe=None, calib_sha256=None, calib_method=None))
        onnx.save(model, path)
    else:
        from mexport.runtimes.tflite.flatbuffer import finalize
        from mexport.runtimes.tflite.quantize import with_bias_shifts

        data, _, _, (_, ops), _ = trials._load()
        path.write_bytes(finalize(with_bias_shifts(data, shifts, ops),
                                  dataclasses.replace(prov, precision="fp32", recipe=None, calib_sha256=None, calib_method=None)))
    fixed = bias_corrected(pipeline, recipe, feeds, rt.weight_grid(recipe.calibration))  # the grid the export rounds to
    x = feeds[0]["image"]
    with torch.inference_mode():
        want = fixed(torch.from_numpy(x)).numpy()
        plain = pipeline(torch.from_numpy(x)).numpy()
    got = open_runner(target, {"fused": path})(x)
    assert np.abs(want - plain).max() > 0.05  # the correction moves the alpha
    np.testing.assert_allclose(got, want, atol=2e-5)
