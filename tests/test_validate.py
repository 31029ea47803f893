"""`mexport validate`: gates, exit codes, reports, on the tiny BYO model's ONNX export (fast)."""

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from mexport.cli import main

from .conftest import BYO


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / "onnx-fp32"
    r = invoke("onnx", "--model", f"{BYO}:factory", "-o", out)
    assert r.exit_code == 0, r.output
    return out


def perturb_largest_weights(src, dst, factor=4.0, share=0.02):
    """A deliberately degraded model: its largest-magnitude weights scaled, provenance untouched."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(src)
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.size > 8:
            w = w.copy()
            cut = np.quantile(np.abs(w), 1 - share)
            w[np.abs(w) >= cut] *= factor
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, dst)


def test_good_export_passes_with_exit_0_and_writes_reports(good, tmp_path):
    rep = tmp_path / "rep"
    r = invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep)
    assert r.exit_code == 0, r.output
    d = json.loads((rep / "validate.json").read_text())
    assert d["schema"] == 1 and d["passed"] is True
    (a,) = d["artifacts"]
    assert a["precision"] == "fp32" and a["summary"]["median_psnr"] > 100
    gates = {g["gate"]: g for g in a["gates"]}
    assert gates["min-median-alpha-psnr"]["threshold"] == 60.0  # the per-precision default
    suite = ET.parse(rep / "junit.xml").getroot()
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 2
    assert "PASS" in (rep / "validate.md").read_text()
    html = (rep / "report.html").read_text()
    assert html.count("<img ") == 5 * 2  # five images for each of the two photos


def test_degraded_model_fails_the_default_gate_with_exit_1(good, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    perturb_largest_weights(good / "fused.onnx", bad / "fused.onnx")
    rep = tmp_path / "rep"
    r = invoke("validate", bad / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep)
    assert r.exit_code == 1, r.output
    assert "min-median-alpha-psnr" in r.output and "threshold 60.000" in r.output
    d = json.loads((rep / "validate.json").read_text())
    g = [g for g in d["artifacts"][0]["gates"] if g["gate"] == "min-median-alpha-psnr"][0]
    assert g["passed"] is False and g["value"] < 60.0 and g["threshold"] == 60.0
    suite = ET.parse(rep / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    assert suite.find("testcase[@name='min-median-alpha-psnr']/failure") is not None


def test_nan_output_is_a_gate_failure(good, tmp_path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(good / "fused.onnx")
    init = max(m.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    (tmp_path / "n").mkdir()
    onnx.save(m, tmp_path / "n" / "fused.onnx")
    r = invoke("validate", tmp_path / "n" / "fused.onnx", "--model", f"{BYO}:factory", "--json")
    assert r.exit_code == 1
    a = json.loads(r.output)["artifacts"][0]
    assert a["summary"]["all_finite"] is False
    assert [g["passed"] for g in a["gates"] if g["gate"] == "finite-output"] == [False]


def test_threshold_from_command_line_and_config(good, tmp_path):
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--min-psnr", "199", "-q")
    assert r.exit_code == 1 and r.output.strip() == "FAIL"
    cfg = tmp_path / "mexport.toml"
    cfg.write_text("[validate]\nmin_psnr = 199\n")
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--config", cfg, "-q")
    assert r.exit_code == 1
    cfg.write_text("[tool.mexport.validate]\nmin_psnr = 20\n")
    (tmp_path / "pyproject.toml").write_text(cfg.read_text())
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--config", tmp_path / "pyproject.toml", "-q")
    assert r.exit_code == 0


def test_baseline_gate(good, tmp_path, alphamatting):
    """SAD/Grad vs a committed baseline need ground truth: a small alphamatting subset."""
    data = tmp_path / "data"
    for sub in ("image", "alpha", "trimap1"):
        (data / sub).mkdir(parents=True)
        shutil.copy(alphamatting / sub / "GT15.png", data / sub / "GT15.png")
    base = tmp_path / "baseline.json"
    r = invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--data", data, "--baseline", base, "--update-baseline", "-q")
    assert r.exit_code == 0 and base.is_file()
    entry = next(iter(json.loads(base.read_text())["artifacts"].values()))
    assert entry["sad_mean"] > 0 and entry["grad_mean"] > 0
    # the same label (directory name + file name) as in the baseline, with a worse model inside
    bad = tmp_path / "elsewhere" / good.name
    bad.mkdir(parents=True)
    perturb_largest_weights(good / "fused.onnx", bad / "fused.onnx", factor=1.5, share=0.3)
    r = invoke("validate", bad / "fused.onnx", "--model", f"{BYO}:factory", "--data", data, "--baseline", base,
               "--min-psnr", "1", "--max-sad-increase", "0.01", "--json")
    a = json.loads(r.output)["artifacts"][0]
    g = {g["gate"]: g for g in a["gates"]}["max-sad-increase"]
    assert g["value"] > 0.01 and g["passed"] is False and r.exit_code == 1
    r = invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--data", data, "--baseline", base,
               "--max-sad-increase", "0.01", "--max-grad-increase", "0.01", "-q")
    assert r.exit_code == 0  # unchanged model: zero increase


@pytest.mark.parametrize("args, msg", [
    (["nothing.onnx"], "artifact not found"),
    (["--min-psnr", "10", "README.md"], "not an artifact mexport knows"),
])
def test_bad_usage_exits_2(args, msg, tmp_path):
    r = invoke("validate", *args)
    assert r.exit_code == 2 and msg in r.output


def test_html_report_renders_in_headless_chromium(good, tmp_path):
    """Screenshot the report as a person would see it; every thumbnail must have loaded."""
    import subprocess

    from PIL import Image

    rep = tmp_path / "rep"
    assert invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep, "-q").exit_code == 0
    page = rep / "report.html"
    # Count images that decoded, and write it into the page title, which --dump-dom shows.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload=()=>{const ok=[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;"
                   "document.title='loaded:'+ok+'/'+document.images.length;}</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run(["chromium", *flags, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<title>loaded:10/10</title>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1200)
    assert img.std() > 20  # not a blank page: text, tables and thumbnails are drawn


def test_cutout_with_an_artifact_matches_the_float_cutout(good, tmp_path, photo_file):
    from PIL import Image

    a = tmp_path / "a.png"
    f = tmp_path / "f.png"
    assert invoke("cutout", photo_file, "-o", a, "--artifact", good / "fused.onnx").exit_code == 0
    assert invoke("cutout", photo_file, "-o", f, "--model", f"{BYO}:factory").exit_code == 0
    da = np.asarray(Image.open(a))[..., 3].astype(int)
    df = np.asarray(Image.open(f))[..., 3].astype(int)
    assert np.abs(da - df).max() <= 1
    r = invoke("cutout", photo_file, "-o", a, "--artifact", good / "coarse.onnx")
    assert r.exit_code == 2 and "lone coarse" in r.output


def test_bench_reports_latency_in_a_subprocess(good):
    r = invoke("bench", good, "--threads", "1", "--runs", "3", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    labels = {row["artifact"] for row in rows}
    assert labels == {f"{good.name}/fused"}  # the tiny model has no refiner: no pair
    row = rows[0]
    assert row["threads"] == 1 and row["runs"] == 3
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["load_ms"] > 0 and row["peak_rss_mb"] > 10 and row["versions"]["onnxruntime"]
    assert "interleaved" in row["method"] and row["min_ms"] <= row["p50_ms"]  # the one latency worker (interleave.py)
    assert invoke("bench", good, "--threads", "x").exit_code == 2
