"""ORT format (`mexport onnx --ort`): onnxruntime-mobile's .ort files, checked on the .ort itself."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mexport.cli import main
from mexport.runtimes import get_runtime
from mexport.runtimes.onnx.ort import graph_digest, to_ort
from mexport.runtimes.onnx.runner import OnnxRunner

from .conftest import BYO


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ort_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort") / "int8"
    r = invoke("onnx", "--ort", "--int8", "--min-psnr", "30", "--model", f"{BYO}:factory", "-o", out)
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if "onnxruntime mobile usability (fused)" in x)
    assert "NNAPI " in line and "CoreML MLProgram " in line and "worth trying: " in line
    return out


def test_int8_ort_export_is_checked_and_ships_its_operator_config(ort_int8):
    out = ort_int8
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "coarse.ort", "coarse.required_operators.config", "convert.log",
                                                      "fused.ort", "fused.required_operators.config", "recipe.json"]
    report = json.loads((out / "check.json").read_text())
    assert report["target"] == "ort" and report["passed"] and report["checks"]["fused"]["median_psnr"] >= 30
    prov = get_runtime("ort").read_provenance(out / "fused.ort")
    assert prov.target == "ort" and prov.precision == "int8" and prov.calib_sha256
    config = (out / "fused.required_operators.config").read_text()
    # onnxruntime fused the QDQ pairs into its int8 kernels, and the config names the shipped file
    assert "com.microsoft;1;" in config and "QLinearConv" in config and "# - fused.ort\n" in config
    facts = report["facts"]["fused"]
    assert facts["required_operators"] == [line for line in config.splitlines() if not line.startswith("#")]
    for ep in ("NNAPI", "CoreML MLProgram"):
        u = facts["mobile_usability"][ep]
        assert 0 < u["supported_nodes"] <= u["nodes"] and u["partitions"] >= 1 and u["verdict"] in ("YES", "MAYBE", "NO")


def test_ort_runs_what_the_onnx_export_runs(ort_int8, tmp_path):
    """The same int8 graph as .onnx and, after onnxruntime's ARM optimizations, as .ort: their
    outputs agree to int8 rounding (onnxruntime's int8 kernels on fused QDQ pairs)."""
    from mexport.api import load_pipeline
    from mexport.export import export

    pipe = load_pipeline(f"{BYO}:factory")
    onnx_dir = tmp_path / "onnx"
    export("onnx", pipe, onnx_dir, get_runtime("onnx").Options(precision="int8", check=False))
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    a, b = OnnxRunner(ort_int8 / "fused.ort")(x), OnnxRunner(onnx_dir / "fused.onnx")(x)
    assert a.shape == b.shape == (1, 1, 128, 128) and np.abs(a - b).max() <= 2 / 255


def test_ort_bytes_vary_but_its_content_does_not(ort_int8, tmp_path):
    """onnxruntime lays out one table of the file in a hash map's order: two conversions of one
    .onnx differ in bytes (measured: nearly every time), never in graph, weights or metadata, which
    is what the fingerprint covers."""
    from mexport.api import load_pipeline
    from mexport.export import export

    export("onnx", load_pipeline(f"{BYO}:factory"), tmp_path / "onnx", get_runtime("onnx").Options(check=False))
    one, two = (to_ort(tmp_path / "onnx" / "fused.onnx", tmp_path / k)["ort"] for k in "ab")
    assert graph_digest(one) == graph_digest(two) == get_runtime("ort").fingerprint(one)
    assert graph_digest(one) != graph_digest(ort_int8 / "fused.ort")  # the int8 graph is another graph


def test_a_file_that_is_not_an_ort_model_is_one_line(tmp_path):
    bad = tmp_path / "fused.ort"
    bad.write_bytes(b"not a flatbuffer")
    r = invoke("validate", bad)
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot load it as an ORT format model" in errors[0] and "Traceback" not in r.output


def test_bundle_carries_the_operator_config(ort_int8, tmp_path):
    out = tmp_path / "b"
    r = invoke("bundle", "create", ort_int8, "--model", f"{BYO}:factory", "--photos", "chelsea", "-o", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    files = set(manifest["files"])
    art = next(a for a in manifest["artifacts"] if a["format"] == "ort")
    fused = art["models"]["fused"]
    assert fused["file"] in files and fused["file"].replace("fused.ort", "fused.required_operators.config") in files
    assert fused["min_runtime"]["ort_format_version"] and fused["min_runtime"]["onnxruntime"].startswith(">= ")
    assert fused["inputs"][0]["shape"] == [1, 3, 128, 128] and fused["quantized_inside"]
    readme = (out / "README.md").read_text()
    kotlin = readme.split("## Android: onnxruntime in Kotlin")[1].split("## iOS")[0]
    assert 'open("fused.ort")' in kotlin and 'mapOf("image" to input)' in kotlin and 'result.get("alpha")' in kotlin
    assert "fused.required_operators.config" in kotlin and "longArrayOf(1, 3, h.toLong(), w.toLong())" in kotlin
    assert "Letterbox" not in readme  # a stretch spec
    from mexport.runtimes.onnx.snippet import kotlin_snippet as ort_kotlin_snippet
    from mexport.runtimes.tflite.snippet import kotlin_snippet

    art["pipeline"]["spec"]["aspect"] = "letterbox"  # both Android snippets follow the spec's aspect
    assert all("// Letterbox: first draw the photo" in snip(manifest) for snip in (kotlin_snippet, ort_kotlin_snippet))
    r = invoke("bundle", "verify", out)
    assert r.exit_code == 0 and "PASS" in r.output, r.output


def test_fp16_ort_is_refused_with_the_valid_precisions(tmp_path):
    """An fp16 .ort converted on x86 would hold fp32 copies of the weights (no fp16 Conv kernel
    here, so onnxruntime folds the casts): refused before anything is written."""
    out = tmp_path / "o"
    r = invoke("onnx", "--ort", "--fp16", "--model", f"{BYO}:factory", "-o", out)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "'fp16'" in errors[0] and "fp32, dynamic-int8, int8" in errors[0]
    assert not out.exists()
