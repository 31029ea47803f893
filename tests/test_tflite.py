"""The TFLite (LiteRT) target: conversion, names, layout, metadata, quantization, recipe selection,
XNNPACK inspection, runners and the CLI. Most tests use tiny models at 64-128 px; the full-size
reference model is converted once (fused graph) for the fidelity numbers the issue promises."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mexport.errors import ConversionError, InputError
from mexport.export import export
from mexport.runtimes import get_runtime
from mexport.runtimes.tflite import convert as tfl
from mexport.runtimes.tflite import flatbuffer as fbuf
from mexport.runtimes.tflite import inspection as insp
from mexport.runtimes.tflite import quantize as q
from mexport.runner import TorchRunner


@pytest.fixture(scope="module")
def target():
    return get_runtime("tflite")


@pytest.fixture(scope="module")
def tiny_u2netp():
    """U^2-Net-p's structure (ModuleList enc/dec, six side outputs, fuse over two 3-input concats)
    at width 8 and 64 px: the naming and rewrite questions of the real model, converted in seconds."""
    from mexport.models.pipeline import MattingModel, MattingPipeline
    from mexport.models.u2netp import U2NetP
    from mexport.spec import PipelineSpec

    torch.manual_seed(0)
    net = U2NetP(mid=4, width=8)
    model = MattingModel(coarse=net, spec=PipelineSpec(coarse_size=(64, 64), refine_size=(128, 128)), name="tiny-u2netp",
                         weights_sha256="0" * 64)
    return MattingPipeline(model)


@pytest.fixture(scope="module")
def tiny_exports(tiny_pipeline, tmp_path_factory):
    root = tmp_path_factory.mktemp("tfl")
    t = get_runtime("tflite")
    out = {}
    for name, kw in {"fp32": {}, "nchw": {"layout": "nchw"}, "uint8": {"input": "uint8"}, "int8": {"precision": "int8"},
                     "int8io": {"precision": "int8", "io": "int8"}, "fp16": {"precision": "fp16"},
                     "dyn": {"precision": "dynamic-int8"}}.items():
        opts = t.Options(**{"precision": "fp32", **kw})
        # Only the fp32 export's coarse graph is read (names and signatures); the others' tests read the fused one.
        out[name] = export("tflite", tiny_pipeline, root / name, opts, roles=None if name == "fp32" else ("fused",))
    return out


def _interp(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def test_names_layout_signature_and_provenance(tiny_exports, tiny_pipeline, target):
    r = tiny_exports["fp32"]
    for role, out_name in (("coarse", "coarse_alpha"), ("fused", "alpha")):
        it = _interp(r.files[role])
        assert it.get_signature_list() == {role: {"inputs": ["image"], "outputs": [out_name]}}
        (i,), (o,) = it.get_input_details(), it.get_output_details()
        size = tiny_pipeline.spec.coarse_size if role == "coarse" else tiny_pipeline.spec.refine_size
        assert i["name"] == "image" and list(i["shape"]) == [1, *size, 3] and i["dtype"] == np.float32
        assert o["name"] == out_name and list(o["shape"]) == [1, *size, 1]
        prov = target.read_provenance(r.files[role])
        assert prov.target == "tflite" and prov.role == role and prov.converters["litert-torch"]
    facts = json.loads((r.out_dir / "check.json").read_text())["facts"]["fused"]
    assert facts["ops"]["CONV_2D/v1"] == 5 and facts["bytes"] == r.files["fused"].stat().st_size
    assert facts["xnnpack"]["nodes"] == sum(facts["ops"].values())


def test_nchw_layout_matches_torch(tiny_exports, tiny_pipeline):
    path = tiny_exports["nchw"].files["fused"]
    (i,) = _interp(path).get_input_details()
    assert list(i["shape"]) == [1, 3, 128, 128]
    x = np.random.default_rng(1).random((1, 3, 128, 128), dtype=np.float32)
    got = get_runtime("tflite").runner(path)(x)
    assert got.shape == (1, 1, 128, 128) and np.abs(got - TorchRunner(tiny_pipeline)(x)).max() <= 1e-4


def test_uint8_input_divides_by_255_inside_the_graph(tiny_exports, tiny_pipeline):
    path = tiny_exports["uint8"].files["fused"]
    it = _interp(path)
    (i,) = it.get_input_details()
    assert i["dtype"] == np.uint8 and i["name"] == "image"
    pixels = np.random.default_rng(2).integers(0, 256, (1, 128, 128, 3), dtype=np.uint8)
    y = it.get_signature_runner("fused")(image=pixels)["alpha"]
    want = TorchRunner(tiny_pipeline)(pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    assert np.abs(y.transpose(0, 3, 1, 2) - want).max() <= 1e-4


def test_int8_is_int8_delegated_and_float_io(tiny_exports):
    r = tiny_exports["int8"]
    facts = r.facts["fused"]
    assert facts["int8_weight_share"] > 0.95
    assert facts["inputs"][0]["dtype"] == "FLOAT32" and facts["outputs"][0]["dtype"] == "FLOAT32"
    assert "QUANTIZE/v1" in facts["ops"] or any(k.startswith("QUANTIZE") for k in facts["ops"])
    assert (r.out_dir / "recipe.json").is_file() and json.loads((r.out_dir / "recipe.json").read_text())["name"] == "tflite-int8"
    assert r.checks["fused"]["median_psnr"] >= 35


def test_int8_io_scale_encodes_the_float_input_range(tiny_exports, tiny_pipeline):
    """With --io int8 the input's scale/zero point must map the int8 codes onto the float model's
    input, [0, 1]: -128 -> 0.0 and 127 -> ~1.0, so an app quantizes pixels/255 with them."""
    path = tiny_exports["int8io"].files["fused"]
    it = _interp(path)
    (i,), (o,) = it.get_input_details(), it.get_output_details()
    assert i["dtype"] == np.int8 and o["dtype"] == np.int8
    scale, zero = i["quantization"]
    assert abs((-128 - zero) * scale) <= 1e-6 and abs((127 - zero) * scale - 1.0) <= 2 * scale
    assert abs(scale - 1 / 255) < 2e-4
    # same real input through both: the int8-io model agrees with the float-io int8 model
    x = np.random.default_rng(3).random((1, 3, 128, 128), dtype=np.float32)
    t = get_runtime("tflite")
    a, b = t.runner(path)(x), t.runner(tiny_exports["int8"].files["fused"])(x)
    assert np.abs(a - b).max() <= 2 * o["quantization"][0] + 1e-6


def test_fp16_and_dynamic_int8_weight_types(tiny_exports):
    assert tiny_exports["fp16"].facts["fused"]["fp16_weight_share"] > 0.95
    assert tiny_exports["dyn"].facts["fused"]["int8_weight_share"] > 0.5
    assert tiny_exports["fp16"].checks["fused"]["median_psnr"] >= 40


def test_quantized_export_that_came_out_float_fails(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.setattr(q, "quantize_dynamic_int8", lambda data: data)
    with pytest.raises(ConversionError, match="no int8 weights.*converter output: .*convert.log"):
        export("tflite", tiny_pipeline, tmp_path / "o", get_runtime("tflite").Options(precision="dynamic-int8", check=False))
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["convert.log"]  # no model, the log


def test_option_conflicts_are_rejected(target):
    with pytest.raises(ValueError, match="--io int8 applies to --int8"):
        target.Options(precision="fp16", io="int8")
    with pytest.raises(ValueError, match="layout"):
        target.Options(layout="nwhc")


def test_delegation_count_reports_a_fallback():
    """The delegation count can fail: CUMSUM has no XNNPACK kernel and must show as a fallback."""

    class M(nn.Module):
        def forward(self, image):
            return {"alpha": torch.cumsum(image * 2.0, dim=1)}

    data = tfl.litert_convert(M().eval(), "m", {"image": torch.rand(1, 8, 8, 1)})
    d = insp.delegation(data)
    assert d["fallback_ops"] == {"CUMSUM": 1} and d["delegated"] == d["nodes"] - 1


def test_op_litert_cannot_express_names_op_and_module():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x[0, 0, :4, :4]).sum() + x

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Inner()

        def forward(self, image):
            return {"alpha": self.block(image)}

    with pytest.raises(ConversionError, match=r"litert-torch could not convert the m graph: op linalg_inv_ex in module block has no LiteRT lowering"):
        tfl.litert_convert(M().eval(), "m", {"image": torch.rand(1, 1, 8, 8)})


@pytest.fixture(scope="module")
def tiny_u2netp_coarse(tiny_u2netp, tmp_path_factory):
    """The tiny U^2-Net's coarse graph converted once in fp32 (its 119 convs take litert-torch
    about 25 s at any width): the file and the target's facts about it."""
    from mexport.export import make_provenance

    t = get_runtime("tflite")
    opts = t.Options()
    path = tmp_path_factory.mktemp("u2c") / "coarse.tflite"
    facts = t.convert(tiny_u2netp, "coarse", opts, make_provenance(tiny_u2netp, t, "coarse", opts), path)
    return path, facts


def test_u2netp_architecture_is_fully_delegated(tiny_u2netp, tiny_u2netp_coarse):
    """U^2-Net-p's fuse reads its six side outputs as two 3-input concats (XNNPACK takes <= 4), the
    pipeline clamps with RELU6 and pools with depthwise convs: no node falls back, no wide concat."""
    t = get_runtime("tflite")
    path, facts = tiny_u2netp_coarse
    assert facts["wide_concats_before_conv"] == {}
    assert facts["xnnpack"]["fallback_ops"] == {} and facts["xnnpack"]["fallback"] == 0
    x = np.random.default_rng(4).random((1, 3, 64, 64), dtype=np.float32)
    got = t.runner(path)(x)
    with torch.inference_mode():
        want = tiny_u2netp.graph("coarse")(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_recipe_layer_selects_exactly_its_ops(tiny_u2netp, tiny_u2netp_coarse):
    """'coarse.stage2d.dec.4' and 'coarse.stage2d.enc.4' share the scope .../RSU_stage2d/ConvReLU_4
    in litert-torch's names; selection by weights tells them apart."""
    data = tiny_u2netp_coarse[0].read_bytes()
    dec = q.select_ops(data, tiny_u2netp, "coarse.stage2d.dec.4")
    enc = q.select_ops(data, tiny_u2netp, "coarse.stage2d.enc.4")
    assert [o["op"] for o in dec] == ["CONV_2D"] and [o["op"] for o in enc] == ["CONV_2D"]
    assert dec[0]["index"] != enc[0]["index"]
    import re

    both = [row for row in q._ops(data) if re.search(q.scope_regex(tiny_u2netp, "coarse.stage2d.dec.4"), row["name"].split(";")[0] + ";")]
    assert {dec[0]["index"], enc[0]["index"]} <= {row["index"] for row in both}
    # the recipe entries keep exactly that op float, and the quantized model has it in float
    from mexport.quantize.recipe import Recipe

    recipe = Recipe(name="t", layers={"coarse.stage2d.dec.4": "float"})
    entries, sel = q.recipe_entries(data, recipe, tiny_u2netp, "coarse", int8_io=False)
    assert sel == {"coarse.stage2d.dec.4": {"precision": "float", "ops": [f"{dec[0]['index']}:CONV_2D"]}}
    feeds = [{"image": np.random.default_rng(i).random((1, 64, 64, 3), dtype=np.float32)} for i in range(2)]
    qdata, _ = q.quantize_static(data, "coarse", feeds, recipe, tiny_u2netp)
    m = fbuf.model_t(qdata)
    g = m.subgraphs[0]
    convs = [op for op in g.operators if insp.op_name(m.operatorCodes[op.opcodeIndex]) == "CONV_2D"]
    float_convs = [op for op in convs if g.tensors[op.inputs[1]].type == 0]
    assert len(float_convs) == 1 and list(g.tensors[float_convs[0].inputs[1]].shape) == [8, 3, 3, 8]
    with pytest.raises(InputError, match="not a module"):
        q.recipe_entries(data, Recipe(name="t", layers={"coarse.stage9": "float"}), tiny_u2netp, "coarse", int8_io=False)


def test_int8_split_recipe_reaches_the_graph(tiny_u2netp, tmp_path):
    """A recipe's split_inputs is applied before conversion: the split conv's main part is int8,
    its one-channel side conv float, nothing else float; the check runs against the unsplit model.
    This random net also has never-active ReLU channels, whose all-zero tensors once got int8 scale
    0 and made XNNPACK refuse the whole graph (calibration now widens such ranges)."""
    from mexport.quantize.recipe import Recipe

    pipe = tiny_u2netp  # seed 0: three of stage2d.dec.4's eight input channels never activate
    path = tmp_path / "r.json"
    path.write_text(Recipe(name="s", layers={"coarse.stage2d.dec.4.0": "float", "coarse.stage2d.dec.4.0.main": "int8"},
                           split_inputs={"coarse.stage2d.dec.4.0": [3]}).to_json())
    t = get_runtime("tflite")
    # The fused graph alone (an export always has it): the coarse network is all it holds here.
    r = export("tflite", pipe, tmp_path / "o", t.Options(precision="int8", recipe=path, min_psnr=20), roles=("fused",))
    assert type(pipe.coarse.stage2d.dec[4][0]) is nn.Conv2d
    facts = json.loads((r.out_dir / "check.json").read_text())["facts"]["fused"]
    sel = facts["recipe_selection"]
    assert [o.split(":")[1] for o in sel["coarse.stage2d.dec.4.0.main"]["ops"]] == ["CONV_2D"]
    assert sel["coarse.stage2d.dec.4.0"]["precision"] == "float"
    m = fbuf.model_t(r.files["fused"].read_bytes())
    g = m.subgraphs[0]
    float_w = [(insp.op_name(m.operatorCodes[op.opcodeIndex]), [int(s) for s in g.tensors[op.inputs[1]].shape]) for op in g.operators
               if insp.op_name(m.operatorCodes[op.opcodeIndex]) in ("CONV_2D", "DEPTHWISE_CONV_2D") and g.tensors[op.inputs[1]].type == 0]
    assert float_w == [("DEPTHWISE_CONV_2D", [1, 3, 3, 8])]


def test_constant_calibration_ranges_are_widened():
    qsvs = {"dead": {"min": np.zeros(1, np.float32), "max": np.zeros(1, np.float32)},
            "const": {"min": np.full(1, 2.0, np.float32), "max": np.full(1, 2.0, np.float32)},
            "live": {"min": np.full(1, -1.0, np.float32), "max": np.full(1, 3.0, np.float32)}, "other": {"x": 1}}
    out = q._nonzero_ranges(qsvs)
    assert (out["dead"]["min"][0], out["dead"]["max"][0]) == (0.0, 1.0)
    assert (out["const"]["min"][0], out["const"]["max"][0]) == (0.0, 2.0)
    assert (out["live"]["min"][0], out["live"]["max"][0]) == (-1.0, 3.0) and out["other"] == {"x": 1}


def test_unpreparable_model_is_a_conversion_error(tiny_exports):
    """A graph LiteRT cannot prepare is reported as a ConversionError (a one-line CLI message), not
    the interpreter's RuntimeError: here an int8 activation whose scale is 0."""
    m = fbuf.model_t(tiny_exports["int8"].files["fused"].read_bytes())
    g = m.subgraphs[0]
    act = next(t for t in g.tensors if t.type == 9 and t.quantization is not None and t.quantization.scale is not None
               and len(t.quantization.scale) == 1 and not len(m.buffers[t.buffer].data if m.buffers[t.buffer].data is not None else []))
    act.quantization.scale = [0.0]
    with pytest.raises(ConversionError, match="cannot prepare the converted model"):
        insp.delegation(fbuf.pack(m))


def test_cli_tflite(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mexport.cli import main
    from tests.conftest import BYO

    res = CliRunner().invoke(main, ["tflite", "--model", f"{BYO}:factory", "--layout", "nchw", "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "PASS fused" in res.output and (tmp_path / "c" / "fused.tflite").is_file()
    res = CliRunner().invoke(main, ["tflite", "--fp16", "--io", "int8", "--model", f"{BYO}:factory", "-o", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--io int8 applies to --int8" in res.output


# ----------------------------------------------------------------------------- full-size reference model

@pytest.fixture(scope="module")
def reference_fused(reference_pipeline):
    """The reference model's fused graph converted once (fp32 bytes), plus real photos."""
    t = get_runtime("tflite")
    opts = t.Options()
    module, swaps, _ = tfl.export_module(reference_pipeline, "fused", opts)
    data = tfl.litert_convert(module, "fused", tfl.sample_inputs(reference_pipeline, "fused", opts))
    return data, _real_photos(), swaps


def _real_photos():
    """GT15-GT18 (alphamatting, never trained on) and two scikit-image photos."""
    from mexport.photos import load_photo, skimage_photo_path

    from .conftest import SHARED

    photos = [(f"GT{i}", load_photo(SHARED / "image" / f"GT{i}.png")) for i in (15, 16, 17, 18)]
    return photos + [(n, load_photo(skimage_photo_path(n))) for n in ("chelsea", "motorcycle_right")]


def _psnrs(data, pipeline, photos, tmp_path, name, precision="fp32", xnnpack=True):
    from mexport.export import make_provenance
    from mexport.photos import prepare
    from mexport.validate.metrics import alpha_psnr

    t = get_runtime("tflite")
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(fbuf.finalize(data, make_provenance(pipeline, t, "fused", t.Options(precision=precision))))
    from mexport.runtimes.tflite.runner import LiteRTRunner

    run, ref = LiteRTRunner(path, xnnpack=xnnpack), TorchRunner(pipeline)
    out = []
    for name, p in photos:
        x = prepare(p, pipeline.spec)[0]
        key = (id(pipeline), name)
        if key not in _FLOAT_ALPHAS:  # the same float alpha for every variant of this worker's tests
            _FLOAT_ALPHAS[key] = ref(x)
        a, b = run(x), _FLOAT_ALPHAS[key]
        out.append((alpha_psnr(a, b), float(np.abs(a - b).max())))
    return out


_FLOAT_ALPHAS: dict = {}


def _op_names(data: bytes) -> set[str]:
    m = fbuf.model_t(data)
    return {insp.op_name(m.operatorCodes[op.opcodeIndex]) for op in m.subgraphs[0].operators}


def test_reference_fp32_matches_torch_on_real_photos(reference_fused, reference_pipeline, tmp_path):
    """The issue's bound, 1e-4 max abs against torch, on real photos: graph by graph on LiteRT's
    builtin kernels, and for the fused graph on both the builtin kernels and XNNPACK.

    The fused graph holds it because the reference model carries U^2-Net-p's bias channel
    re-centred (models/recenter.py). Before, stage2d.dec.3 wrote a channel at 226-228 and dec.4
    cancelled it against a bias of 1361, so any two fp32 implementations differed there by ~1e-3,
    and refiner v2's band (slope up to 32) carried that to 1.2e-4 (builtin) / 2.0e-4 (XNNPACK) in
    the alpha; torch fp32 was itself 1.0e-4 from fp64. Measured now on these 6 photos, with refine
    network v3 (reports/tflite.md): builtin 9.1e-6, XNNPACK 3.8e-5; the plain form 9.7e-5 / 1.3e-4."""
    import copy

    import torch

    from mexport.export import make_provenance
    from mexport.photos import prepare
    from mexport.quantize.calibration import role_inputs
    from mexport.runtimes.tflite.runner import LiteRTRunner

    data, photos, _ = reference_fused
    assert "MAXIMUM" in _op_names(data)  # the re-centred channel's floor: the float graph is the shifted form
    assert insp.delegation(data)["fallback_ops"] == {}  # its border fix included (a value-1 pad was a PADV2 XNNPACK left)
    t, opts = get_runtime("tflite"), get_runtime("tflite").Options()
    for role, bound in (("coarse", 1e-4), ("refine", 1e-5)):
        module, _, _ = tfl.export_module(reference_pipeline, role, opts)
        path = tmp_path / f"{role}.tflite"
        path.write_bytes(fbuf.finalize(tfl.litert_convert(module, role, tfl.sample_inputs(reference_pipeline, role, opts)),
                                      make_provenance(reference_pipeline, t, role, opts)))
        run, graph, names = LiteRTRunner(path, xnnpack=False), reference_pipeline.graph(role), reference_pipeline.input_names(role)
        worst = 0.0
        for f in role_inputs(reference_pipeline, role, photos):
            with torch.no_grad():
                want = graph(*(torch.from_numpy(f[n]) for n in names)).numpy()
            worst = max(worst, float(np.abs(run(*(f[n] for n in names)) - want).max()))
        print(f"{role} graph, LiteRT fp32 builtin vs torch: max abs {worst:.2e}")
        assert 0 < worst <= bound
    res = _psnrs(data, reference_pipeline, photos, tmp_path, "fp32", xnnpack=False)
    fast = _psnrs(data, reference_pipeline, photos, tmp_path, "fp32x")
    print(f"fused, LiteRT fp32 vs torch: builtin max abs {max(m for _, m in res):.2e}, XNNPACK {max(m for _, m in fast):.2e}")
    assert max(m for _, m in res) <= 1e-4 and max(m for _, m in fast) <= 1e-4

    builtin = LiteRTRunner(tmp_path / "fp32.tflite", xnnpack=False)
    exact = copy.deepcopy(reference_pipeline).double()
    worst = 0.0
    for _, p in photos[:2]:  # fp64 at 1024x1024 costs a few seconds a photo
        x = prepare(p, reference_pipeline.spec)[0]
        with torch.no_grad():
            worst = max(worst, float(np.abs(builtin(x) - exact(torch.from_numpy(x).double()).numpy()).max()))
    print(f"fused, LiteRT fp32 builtin vs the same model in fp64: max abs {worst:.2e}")
    assert worst <= 1e-4


def test_reference_fp16_fidelity(reference_fused, reference_pipeline, tmp_path):
    """fp16 of the fused graph."""
    data, photos, _ = reference_fused
    fp16 = _psnrs(q.quantize_fp16(data), reference_pipeline, photos, tmp_path, "fp16", "fp16")
    # The issue asks 40 dB. The plain U^2-Net-p gave 43.6: fp16 weights could not hold its bias
    # channel's cancellation (a bias of 1361, one fp16 step = 1). Re-centred (models/recenter.py), ~71 dB.
    print(f"fp16 fused vs torch: median alpha PSNR {np.median([p for p, _ in fp16]):.1f} dB")
    assert np.median([p for p, _ in fp16]) >= 60


def test_reference_int8_fidelity(reference_pipeline, reference_int8_exports, tmp_path):
    """The int8 fused model `mexport tflite --int8` wrote (default recipe and calibration; the
    session fixture shared with the ONNX and dogfood tests). Not through ``reference_fused``: this
    test runs in the worker that holds the int8 exports (tests/conftest.py), which need not be the
    one that converted the fp32 graph."""
    photos = _real_photos()
    t = get_runtime("tflite")
    opts = t.Options(precision="int8")
    recipe, _ = t.prepare_quantization(reference_pipeline, opts)
    # The default recipe splits the outlier input channel off both int8-hostile convs: their main
    # parts go back to int8 (the small side convs and the adds stay float).
    assert recipe.split_inputs == {"coarse.stage1d.dec.4.0": (12,), "coarse.stage2d.dec.4.0": (14,)}
    split = tfl.quantization_pipeline(reference_pipeline, opts, recipe)
    assert split is not reference_pipeline and type(reference_pipeline.coarse.stage2d.dec[4][0]).__name__ == "Conv2d"
    out = reference_int8_exports["tflite"]
    assert json.loads((out / "recipe.json").read_text())["split_inputs"] == {k: list(v) for k, v in recipe.split_inputs.items()}
    qdata = (out / "fused.tflite").read_bytes()
    assert "MAXIMUM" not in _op_names(qdata)  # integer precisions convert the plain (unshifted) form
    sel = json.loads((out / "check.json").read_text())["facts"]["fused"]["recipe_selection"]
    assert set(sel) == {"coarse.stage2d.dec.4", "coarse.stage1d.dec.4", "coarse.stage2d.dec.4.0.main", "coarse.stage1d.dec.4.0.main"}
    assert [o.split(":")[1] for o in sel["coarse.stage2d.dec.4.0.main"]["ops"]] == ["CONV_2D"]
    # The refine network (v3) is int8 throughout: every op that writes a tensor of 256x256 positions
    # or more (the full resolution, and the refiner's phase space: 16 pixel phases at a quarter of
    # it) writes int8 -- one QUANTIZE of the photo in, one DEQUANTIZE of the alpha out -- so its
    # passes move a quarter of the bytes they would in float.
    m = fbuf.model_t(qdata)
    g = m.subgraphs[0]
    names = [insp.op_name(c) for c in m.operatorCodes]
    large = [(names[op.opcodeIndex], list(g.tensors[t].shape), g.tensors[t].type) for op in g.operators for t in op.outputs
             if len(g.tensors[t].shape) == 4 and g.tensors[t].shape[1] * g.tensors[t].shape[2] >= 256 * 256]
    assert len(large) > 40 and [n for n, _, ty in large if ty != 9] == ["DEQUANTIZE"]  # 9: INT8
    assert [n for n, shape, _ in large if n == "QUANTIZE" and shape[1] == 1024] == ["QUANTIZE"]
    int8 = _psnrs(qdata, reference_pipeline, photos, tmp_path, "int8", "int8")
    assert np.median([p for p, _ in int8]) >= 35
    assert insp.inspect(qdata)["int8_weight_share"] > 0.9


def test_a_recipe_with_default_float_quantizes_only_its_int8_layers(tiny_pipeline, tmp_path):
    """One recipe semantics: ``default: float`` with one layer int8 works on LiteRT as on ONNX: that
    layer's conv has int8 weights, the others stay float, and the check passes."""
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"schema": 1, "name": "one-int8", "default": "float", "layers": {"coarse.enc2": "int8"}}))
    t = get_runtime("tflite")
    r = export("tflite", tiny_pipeline, tmp_path / "o", t.Options(precision="int8", recipe=recipe, calib_count=2))
    share = r.facts["fused"]["int8_weight_share"]
    enc2 = sum(p.numel() for p in tiny_pipeline.get_submodule("coarse.enc2").parameters() if p.dim() >= 2)
    every = sum(p.numel() for p in tiny_pipeline.parameters() if p.dim() >= 2)
    assert r.passed and 0 < share < 1 and abs(share - enc2 / every) < 0.05, (share, enc2 / every)
    assert r.checks["fused"]["median_psnr"] >= 35
    with pytest.raises(InputError, match="--io int8 needs a recipe whose default is int8"):
        export("tflite", tiny_pipeline, tmp_path / "o2", t.Options(precision="int8", recipe=recipe, io="int8", check=False))
