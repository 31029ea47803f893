import json

import pytest

from mexport.errors import InputError
from mexport.registry import Registry
from mexport.spec import ExtraInput, PipelineSpec, Provenance, ResizeStep


def test_spec_roundtrips_through_json():
    spec = PipelineSpec(coarse_size=(64, 96), refine_size=(256, 384), aspect="letterbox",
                        extra_inputs=(ExtraInput("trimap", 1, "0/0.5/1"),))
    again = PipelineSpec.from_json(spec.to_json())
    assert again == spec
    assert json.loads(spec.to_json())["coarse_downsample"] == {"mode": "bilinear", "align_corners": False, "box_prefilter": 1}


@pytest.mark.parametrize("kwargs, msg", [
    ({"aspect": "crop"}, "aspect"),
    ({"std": (0.1, 0.0, 0.2)}, "std"),
    ({"refine_size": (1023, 1024)}, "divisible"),
    ({"coarse_size": (4, 4)}, ">= 8"),
    ({"coarse_upsample": {"mode": "bicubic"}}, "resize mode"),
])
def test_spec_rejects_bad_values(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PipelineSpec(**kwargs)


def test_spec_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown spec fields"):
        PipelineSpec.from_dict({"coarse_size": [320, 320], "colour": "bgr"})


def test_provenance_roundtrip_and_checks():
    p = Provenance(model="u2netp-refine", weights_sha256="a" * 64, spec=PipelineSpec().to_dict(), role="fused",
                   target="onnx", precision="int8", calib_sha256="b" * 64, mexport_version="0.1.0")
    assert Provenance.from_json(p.to_json()) == p
    assert p.pipeline_spec == PipelineSpec()
    with pytest.raises(ValueError, match="role"):
        Provenance(model="m", weights_sha256="a" * 64, spec=PipelineSpec().to_dict(), role="middle", target="onnx", precision="fp32")


def test_registry_unknown_name_lists_valid_names():
    reg: Registry[int] = Registry("target")
    reg.register("onnx")(1)
    reg.register("tflite")(2)
    assert reg.get("tflite") == 2
    with pytest.raises(InputError, match=r"unknown target 'tflit'; valid: onnx, tflite\. Did you mean 'tflite'\?"):
        reg.get("tflit")
    with pytest.raises(ValueError, match="twice"):
        reg.register("onnx")(3)


def test_model_registry_has_reference_models():
    from mexport.models import MODELS

    assert {"u2netp-refine", "u2netp"} <= set(MODELS.names())
    with pytest.raises(InputError, match="valid: u2netp, u2netp-refine"):
        MODELS.get("u2net")
