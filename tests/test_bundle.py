"""`mexport bundle create/verify`: reproducible, tamper-evident hand-off bundles with golden vectors.

Most tests use the tiny BYO model's exports at 128 px (ONNX, and Core ML for a directory
artifact); one bundles the reference U^2-Net-p ONNX export at full size.
"""

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mexport.bundle import BundleError, create_bundle, verify_bundle
from mexport.bundle.manifest import SCHEMA, dumps
from mexport.cli import main
from mexport.errors import FidelityError, InputError

from .conftest import BYO

TINY = f"{BYO}:factory"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from mexport import api

    root = tmp_path_factory.mktemp("exports")
    r = invoke("onnx", "--model", TINY, "-o", root / "onnx")
    assert r.exit_code == 0, r.output
    api.export("coreml", root / "coreml", model=TINY, precision="fp16")
    api.export("tflite", root / "tflite", model=TINY, precision="int8", target_options={"io": "int8"})
    return root


@pytest.fixture(scope="module")
def bundle_zip(exports, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "tiny.zip"
    create_bundle([exports / "onnx", exports / "coreml", exports / "tflite"], out, model=TINY)
    return out


def rewrite(src: Path, dst: Path, change: dict[str, bytes | None] = {}, add: dict[str, bytes] = {}) -> Path:
    """A copy of a zip with some entries replaced (None: removed) or added, CRCs recomputed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change.get(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)
        for name, data in add.items():
            zout.writestr(name, data)
    return dst


def test_fresh_bundle_verifies_and_holds_what_the_issue_lists(bundle_zip):
    r = invoke("bundle", "verify", bundle_zip)
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "6 golden vectors" in r.output
    with zipfile.ZipFile(bundle_zip) as zf:
        names = zf.namelist()
        m = json.loads(zf.read("manifest.json"))
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and (i.external_attr >> 16) & 0o777 == 0o644 for i in zf.infolist())
    assert names == sorted(names) and not any(n.startswith("/") or ".." in n for n in names)
    assert m["schema"] == SCHEMA and set(m["files"]) == set(names) - {"manifest.json"}
    # the .mlpackage is hashed file by file, and as a tree in its artifact entry
    assert "models/coreml-fp16/fused.mlpackage/Data/com.apple.CoreML/weights/weight.bin" in m["files"]
    arts = {a["id"]: a for a in m["artifacts"]}
    onnx, coreml, tflite = arts["onnx-fp32/fused"], arts["coreml-fp16/fused"], arts["tflite-int8/fused"]
    assert onnx["models"]["fused"]["min_runtime"]["onnx_opset"] == 17
    assert onnx["models"]["fused"]["inputs"][0] == {"name": "image", "shape": [1, 3, 128, 128], "dtype": "float32",
                                                      "layout": "NCHW", "quantization": None}
    assert coreml["models"]["fused"]["min_runtime"]["deployment_target"] == "iOS16"
    assert coreml["models"]["fused"]["inputs"][0]["image"]["scale"] == pytest.approx(1 / 255)
    assert onnx["pipeline"]["resizes"]["coarse_upsample"]["coordinates"] == "half_pixel"
    t_in, t_out = tflite["models"]["fused"]["inputs"][0], tflite["models"]["fused"]["outputs"][0]
    assert t_in["layout"] == "NHWC" and t_in["dtype"] == "int8" and t_in["quantization"]["zero_point"] == -128
    assert t_out["quantization"]["scale"] > 0 and tflite["models"]["fused"]["min_runtime"]["min_runtime_version"]
    assert tflite["models"]["fused"]["min_runtime"]["op_versions"]["CONV_2D"] >= 1
    assert "input_nhwc" in m["golden"]["sets"][0]["photos"]["astronaut"]
    assert onnx["tolerance"]["max_abs"] == 1e-3 and coreml["tolerance"]["min_psnr_db"] == 40.0
    assert tflite["tolerance"]["numerics"] == "int8" and tflite["tolerance"]["min_psnr_db"] == 30.0
    assert onnx["validation"]["passed"] and onnx["validation"]["summary"]["median_psnr"] > 100
    assert "latency" not in json.dumps(m) and "timestamp" not in json.dumps(m)
    readme = zipfile.ZipFile(bundle_zip).read("README.md").decode()
    for must in ("mexport** (the exporter", "MIT", "not recorded", "imageCropAndScaleOption = .scaleFill",
                 "org.tensorflow.lite.Interpreter", "Intended use", "Not for", "Metrics on real photos"):
        assert must in readme, must
    from mexport.bundle.card import MODEL_CARDS

    ref = MODEL_CARDS["u2netp-refine"]
    assert "Apache-2.0" in ref["weights_licence"] and "alphamatting.com" in ref["training"] and "state no licence" in ref["training"]


def test_golden_vectors_are_the_device_input_and_the_artifact_output(bundle_zip, exports):
    import onnxruntime as ort
    from PIL import Image
    import io

    with zipfile.ZipFile(bundle_zip) as zf:
        m = json.loads(zf.read("manifest.json"))
        (s,) = m["golden"]["sets"]
        p = s["photos"]["astronaut"]
        png = np.asarray(Image.open(io.BytesIO(zf.read(p["image"]))))
        x = np.frombuffer(zf.read(p["input_nchw"]), dtype="<f4").reshape(s["shape_nchw"])
        onnx = next(a for a in m["artifacts"] if a["format"] == "onnx")
        want = np.frombuffer(zf.read(onnx["golden"][0]["expected"]), dtype="<f4").reshape(1, 1, 128, 128)
    assert png.shape == (128, 128, 3) and png.dtype == np.uint8
    np.testing.assert_array_equal(x, (png.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    got = ort.InferenceSession(str(exports / "onnx" / "fused.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_two_creates_give_the_same_bytes(bundle_zip, exports, tmp_path):
    again = create_bundle([exports / "onnx", exports / "coreml", exports / "tflite"], tmp_path / "again.zip", model=TINY).path
    assert sha(again) == sha(bundle_zip)


def test_one_changed_byte_in_any_file_fails_and_names_the_file(bundle_zip, tmp_path):
    with zipfile.ZipFile(bundle_zip) as zf:
        names = zf.namelist()
        contents = {n: zf.read(n) for n in names}
    for name in names:
        data = bytearray(contents[name])
        data[len(data) // 2] ^= 0x01
        bad = rewrite(bundle_zip, tmp_path / "bad.zip", change={name: bytes(data)})
        with pytest.raises(BundleError) as e:
            verify_bundle(bad)
        assert name in str(e.value), (name, str(e.value))
    r = invoke("bundle", "verify", bad)
    assert r.exit_code == 2 and r.output.startswith("Error: ") and len(r.output.strip().splitlines()) == 1


def test_damage_inside_the_zip_container_is_named(bundle_zip, tmp_path):
    """Bytes changed in the stored (compressed) data, CRC left stale: still one line naming the file."""
    with zipfile.ZipFile(bundle_zip) as zf:
        info = zf.getinfo("models/onnx-fp32/fused.onnx")
    data = bytearray(bundle_zip.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for off in (start + 50, start + info.compress_size // 2):
        data[off] ^= 0xFF
    bad = tmp_path / "damaged.zip"
    bad.write_bytes(bytes(data))
    r = invoke("bundle", "verify", bad)
    assert r.exit_code == 2 and "models/onnx-fp32/fused.onnx" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_changed_byte_in_a_directory_bundle_is_named_too(exports, tmp_path):
    out = create_bundle([exports / "onnx"], tmp_path / "dir-bundle", model=TINY).path
    assert verify_bundle(out).passed
    f = out / "models" / "onnx-fp32" / "fused.onnx"
    data = bytearray(f.read_bytes())
    data[100] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="models/onnx-fp32/fused.onnx: checksum mismatch"):
        verify_bundle(out)


def test_missing_and_unlisted_files_are_rejected(bundle_zip, tmp_path):
    gone = rewrite(bundle_zip, tmp_path / "gone.zip", change={"models/onnx-fp32/fused.onnx": None})
    with pytest.raises(BundleError, match="models/onnx-fp32/fused.onnx: missing"):
        verify_bundle(gone)
    extra = rewrite(bundle_zip, tmp_path / "extra.zip", add={"models/evil.onnx": b"x"})
    with pytest.raises(BundleError, match="models/evil.onnx: in the bundle but not in the manifest"):
        verify_bundle(extra)


@pytest.mark.parametrize("entry", ["../evil.txt", "/tmp/evil.txt", "golden/../../evil.txt", "C:/evil.txt"])
def test_zip_slip_entries_are_rejected_before_anything_is_written(bundle_zip, tmp_path, entry):
    bad = rewrite(bundle_zip, tmp_path / "slip.zip", add={entry: b"pwned"})
    r = invoke("bundle", "verify", bad)
    assert r.exit_code == 2, r.output
    assert "unsafe path" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path.parent / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_a_manifest_from_a_newer_schema_is_rejected(bundle_zip, tmp_path):
    with zipfile.ZipFile(bundle_zip) as zf:
        m = json.loads(zf.read("manifest.json"))
    m["schema"] = SCHEMA + 1
    newer = rewrite(bundle_zip, tmp_path / "newer.zip", change={"manifest.json": dumps(m)})
    r = invoke("bundle", "verify", newer)
    assert r.exit_code == 2 and "schema 2 is newer than this mexport reads (1)" in r.output


def test_readme_shows_a_by_hand_golden_check_that_runs(bundle_zip, tmp_path):
    root = tmp_path / "unzipped"
    with zipfile.ZipFile(bundle_zip) as zf:
        zf.extractall(root)
    readme = (root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    runnable = [b for b in blocks if "onnxruntime" in b or "ai_edge_litert" in b]
    assert len(runnable) == 2 and any("coremltools" in b for b in blocks)
    for block in runnable:
        out = subprocess.run([sys.executable, "-c", block], cwd=root, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "PASS (" in out.stdout, out.stdout
    assert "golden/128x128-stretch-bilinear/astronaut/input.nchw.f32" in runnable[0]


def test_report_from_validate_goes_into_the_bundle(exports, tmp_path):
    rep = tmp_path / "rep"
    r = invoke("validate", exports / "onnx", "--model", TINY, "--report", rep)
    assert r.exit_code == 0, r.output
    out = tmp_path / "with-report.zip"
    r = invoke("bundle", "create", exports / "onnx", "--report", rep, "-o", out)
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as zf:
        assert zf.read("validation/validate.json") == (rep / "validate.json").read_bytes()
        assert "validation/report.html" in zf.namelist()
        (a,) = json.loads(zf.read("manifest.json"))["artifacts"]
    assert a["validation"]["source"].startswith("mexport validate") and a["validation"]["passed"]
    assert verify_bundle(out).passed
    # a report that does not cover an artifact is refused, and nothing is written
    r = invoke("bundle", "create", exports / "onnx", exports / "coreml", "--report", rep, "-o", tmp_path / "no.zip")
    assert r.exit_code == 2 and "has no result for coreml/fused" in r.output
    assert not (tmp_path / "no.zip").exists()


def test_a_failing_artifact_is_refused_and_nothing_is_half_written(exports, tmp_path):
    from .test_validate import perturb_largest_weights

    bad = tmp_path / "bad"
    bad.mkdir()
    perturb_largest_weights(exports / "onnx" / "fused.onnx", bad / "fused.onnx")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FidelityError, match="fails the fidelity check"):
        create_bundle([bad / "fused.onnx"], out / "b.zip", model=TINY)
    assert list(out.iterdir()) == []
    with pytest.raises(InputError, match="artifact not found"):
        create_bundle([tmp_path / "nope.onnx"], out / "b.zip", model=TINY)


def test_reference_model_onnx_fp32_bundle_verifies(tmp_path):
    """The real U^2-Net-p at full size (the refiner when its weights are trained, else U^2-Net-p alone)."""
    from mexport.models.u2netp_refine import REFINER_RECORD, packaged_weights_dir

    model = "u2netp-refine" if (packaged_weights_dir() / REFINER_RECORD).is_file() else "u2netp"
    r = invoke("onnx", "--model", model, "--no-check", "-o", tmp_path / "onnx")
    assert r.exit_code == 0, r.output
    out = create_bundle([tmp_path / "onnx" / "fused.onnx"], tmp_path / "ref.zip", photos=("astronaut",)).path
    rep = verify_bundle(out)
    assert rep.passed and len(rep.results) == 1
    m = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    (a,) = m["artifacts"]
    assert a["models"]["fused"]["inputs"][0]["shape"] == [1, 3, 1024, 1024]
    assert a["pipeline"]["resizes"]["coarse_downsample"]["to"] == [320, 320]
    assert "Apache-2.0" in zipfile.ZipFile(out).read("README.md").decode()

    # The tolerances, loose enough for another device's rounding, still catch a wrong device input.
    from mexport.bundle.golden import TOLERANCES
    from mexport.runtimes import get_runtime

    with zipfile.ZipFile(out) as zf:
        x = np.frombuffer(zf.read(m["golden"]["sets"][0]["photos"]["astronaut"]["input_nchw"]), dtype="<f4").reshape(1, 3, 1024, 1024)
        want = np.frombuffer(zf.read(a["golden"][0]["expected"]), dtype="<f4").reshape(1, 1, 1024, 1024)
    run = get_runtime("onnx").runner(tmp_path / "onnx" / "fused.onnx", threads=1)
    bgr, scaled = run(x[:, ::-1].copy()), run(np.clip(x * 255, 0, 255) / 128)
    for numerics, tol in TOLERANCES.items():
        assert not tol.check(bgr, want)["passed"], f"{numerics} tolerance accepts a BGR input"
        assert not tol.check(scaled, want)["passed"], f"{numerics} tolerance accepts a wrongly scaled input"
