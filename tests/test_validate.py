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
    assert d["schema"] == 2 and d["passed"] is True
    (a,) = d["artifacts"]
    assert a["precision"] == "fp32" and a["summary"]["median_psnr"] > 100
    gates = {g["gate"]: g for g in a["gates"]}
    assert gates["min-median-alpha-psnr"]["threshold"] == 60.0  # the per-precision defaults
    assert gates["min-photo-alpha-psnr"]["threshold"] == 60.0 and set(gates["min-photo-alpha-psnr"]["per_photo"]) == set(d["photos"])
    assert "only 2 photos" in a["summary"]["warning"] and "only 2 photos" in r.output  # too few to mean much, said
    suite = ET.parse(rep / "junit.xml").getroot()
    # finite-output, the median, and the per-photo gate as one test case per photo
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == 2 + len(d["photos"])
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
    # every photo fails the per-photo gate, worst first, and each is named everywhere
    g = [g for g in d["artifacts"][0]["gates"] if g["gate"] == "min-photo-alpha-psnr"][0]
    worst_first = sorted(g["per_photo"], key=g["per_photo"].get)
    assert g["photos"] == worst_first == d["artifacts"][0]["failing_photos"] and len(worst_first) == 2
    assert f"failing photos: {worst_first[0]}" in r.output
    suite = ET.parse(rep / "junit.xml").getroot()
    assert suite.get("failures") == "3"
    assert suite.find("testcase[@name='min-median-alpha-psnr']/failure") is not None
    for photo in worst_first:
        assert suite.find(f"testcase[@classname='bad/fused.onnx.min-photo-alpha-psnr'][@name='{photo}']/failure") is not None


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


def gt_data(alphamatting, tmp_path, names=("GT15", "GT16")):
    data = tmp_path / "data"
    for sub in ("image", "alpha", "trimap1"):
        (data / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(alphamatting / sub / f"{n}.png", data / sub / f"{n}.png")
    return data


def test_baseline_gate(good, tmp_path, alphamatting):
    """SAD/Grad vs a baseline need ground truth: a small alphamatting subset. The baseline is keyed by
    what the artifact is, not where it was written, and compared photo by photo."""
    data = gt_data(alphamatting, tmp_path)
    base = tmp_path / "baseline.json"
    r = invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--data", data, "--baseline", base, "--update-baseline", "-q")
    assert r.exit_code == 0 and base.is_file()
    d = json.loads(base.read_text())
    ((key, entry),) = d["artifacts"].items()
    assert d["schema"] == 2 and key.endswith(" onnx fp32 fused") and entry["identity"]["target"] == "onnx"
    assert set(entry["photos"]) == {"GT15", "GT16"} and all(len(p["sha256"]) == 64 and p["sad"] > 0 for p in entry["photos"].values())
    # the same export copied to a directory of another name still finds its baseline
    moved = tmp_path / "build" / "int8"
    shutil.copytree(good, moved)
    r = invoke("validate", moved, "--model", f"{BYO}:factory", "--data", data, "--baseline", base,
               "--max-sad-increase", "0.01", "--max-grad-increase", "0.01", "--json")
    arts = json.loads(r.output)["artifacts"]
    assert r.exit_code == 0 and arts[0]["baseline"]["key"] == key and arts[0]["baseline"]["matched_photos"] == ["GT15", "GT16"]
    g = {g["gate"]: g for g in arts[0]["gates"]}["max-sad-increase"]
    assert g["value"] == 0.0 and "2 of this run's 2 photos matched the baseline's 2" in g["detail"]
    # a worse model under the same provenance: the gate fails and names the photos that got worse
    bad = tmp_path / "elsewhere" / good.name
    bad.mkdir(parents=True)
    perturb_largest_weights(good / "fused.onnx", bad / "fused.onnx", factor=1.5, share=0.3)
    r = invoke("validate", bad / "fused.onnx", "--model", f"{BYO}:factory", "--data", data, "--baseline", base,
               "--min-psnr", "1", "--min-photo-psnr", "1", "--max-photo-sad-increase", "100", "--max-photo-grad-increase", "100",
               "--max-sad-increase", "0.01", "--json")
    a = json.loads(r.output)["artifacts"][0]
    g = {g["gate"]: g for g in a["gates"]}["max-sad-increase"]
    assert g["value"] > 0.01 and g["passed"] is False and r.exit_code == 1 and g["photos"]
    assert set(g["photos"]) <= {"GT15", "GT16"} and all(g["per_photo"][p] > 0.01 for p in g["photos"])


def test_baseline_is_matched_per_photo(good, tmp_path, alphamatting):
    """A subset run compares only its photos; a baseline photo that is gone from --data or whose
    content changed is bad input (exit 2), not a silent skip."""
    from PIL import Image

    data = gt_data(alphamatting, tmp_path)
    base = tmp_path / "baseline.json"
    assert invoke("validate", good, "--model", f"{BYO}:factory", "--data", data, "--baseline", base, "--update-baseline", "-q").exit_code == 0
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--data", data, "--only", "GT16", "--baseline", base,
               "--max-sad-increase", "0.01", "--json")
    (a,) = json.loads(r.output)["artifacts"]
    assert r.exit_code == 0 and a["baseline"]["matched_photos"] == ["GT16"] and a["baseline"]["baseline_photos"] == 2
    assert "1 of this run's 1 photos matched the baseline's 2" in {g["gate"]: g for g in a["gates"]}["max-sad-increase"]["detail"]
    # a photo the baseline never saw: compared on nothing, the gate fails and says so
    data3 = gt_data(alphamatting, tmp_path / "three", ("GT15", "GT16", "GT17"))
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--data", data3, "--only", "GT17", "--baseline", base,
               "--max-sad-increase", "0.01", "--json")
    g = {g["gate"]: g for g in json.loads(r.output)["artifacts"][0]["gates"]}["max-sad-increase"]
    assert r.exit_code == 1 and not g["passed"] and "no photo of this run is in the baseline" in g["detail"]
    # a baseline photo missing from --data
    (data / "image" / "GT15.png").unlink()
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--data", data, "--baseline", base, "--max-sad-increase", "0.01")
    assert r.exit_code == 2 and "measured on GT15, which" in r.output and "Traceback" not in r.output
    # a changed photo: same name, other pixels
    shutil.copy(alphamatting / "image" / "GT15.png", data / "image" / "GT15.png")
    im = np.asarray(Image.open(data / "image" / "GT16.png").convert("RGB")).copy()
    im[0, 0] ^= 1
    Image.fromarray(im).save(data / "image" / "GT16.png")
    r = invoke("validate", good, "--model", f"{BYO}:factory", "--data", data, "--baseline", base, "--max-sad-increase", "0.01")
    assert r.exit_code == 2 and "photo GT16" in r.output and "is not the one the baseline measured" in r.output
    # --update-baseline keeps other artifacts' entries and writes atomically over the old file
    other = tmp_path / "fp32-again"
    shutil.copytree(good, other)
    before = json.loads(base.read_text())
    assert invoke("validate", other, "--model", f"{BYO}:factory", "--data", data3, "--baseline", base, "--update-baseline",
                  "-q").exit_code == 0
    after = json.loads(base.read_text())
    assert set(after["artifacts"]) == set(before["artifacts"]) and all(
        set(e["photos"]) == {"GT15", "GT16", "GT17"} for e in after["artifacts"].values())


def test_one_broken_photo_among_good_ones_fails_the_int8_defaults():
    """The case a median hides: 18 photos at ~40 dB and one at 17 dB (the demo's int8 GT10 of refine
    v2). The default int8 gates fail it and name that photo; the median gate alone would pass."""
    from mexport.validate.validate import ArtifactReport, Gates, apply_gates

    rows = [{"photo": f"GT{i:02d}", "psnr": 40.0 + i / 10, "max_abs": 0.05, "mad": 0.001, "finite": True,
             "gt": {"sad": 20.0, "grad": 0.5}, "gt_float": {"sad": 19.5, "grad": 0.5}} for i in range(1, 19)]
    rows[9].update(psnr=17.1, max_abs=0.83, gt={"sad": 42.6, "grad": 0.9}, gt_float={"sad": 23.4, "grad": 0.6})
    psnrs = [r["psnr"] for r in rows]
    a = ArtifactReport("onnx-int8/fused", "onnx", "int8", "fused", 1, "r", photos=rows,
                       summary={"all_finite": True, "median_psnr": float(np.median(psnrs)), "min_psnr": 17.1, "worst_photo": "GT10"})
    apply_gates(a, Gates(), None)
    g = {g.gate: g for g in a.gates}
    assert g["min-median-alpha-psnr"].passed  # the median alone says PASS
    assert not a.passed and a.failing_photos == ["GT10"]
    assert not g["min-photo-alpha-psnr"].passed and g["min-photo-alpha-psnr"].photos == ["GT10"]
    assert g["min-photo-alpha-psnr"].threshold == 22.0
    assert not g["max-photo-sad-increase"].passed and g["max-photo-sad-increase"].photos == ["GT10"]
    assert g["max-photo-sad-increase"].value == pytest.approx((42.6 - 23.4) / 23.4)
    # and the same artifact with that photo repaired passes
    rows[9].update(psnr=30.0, max_abs=0.2, gt={"sad": 24.0, "grad": 0.6})
    a2 = ArtifactReport("x", "onnx", "int8", "fused", 1, "r", photos=rows, summary={**a.summary, "min_psnr": 30.0})
    apply_gates(a2, Gates(), None)
    assert a2.passed, [(x.gate, x.value) for x in a2.gates if not x.passed]


@pytest.mark.parametrize("args, msg", [
    (["nothing.onnx"], "artifact not found"),
    (["--min-psnr", "10", "README.md"], "not an artifact mexport knows"),
])
def test_bad_usage_exits_2(args, msg, tmp_path):
    r = invoke("validate", *args)
    assert r.exit_code == 2 and msg in r.output


CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]


def chromium(page, tmp_path, script: str):
    """Load ``page`` in headless Chromium with ``script`` run on load writing its finding into the
    title (which --dump-dom shows); also a 1200x900 screenshot of the page as a person first sees it."""
    import subprocess

    from PIL import Image

    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", f"<script>window.onload=()=>{{document.title={script};}}</script></body>"))
    flags = [*CHROMIUM, f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run(["chromium", *flags, "--virtual-time-budget=5000", "--window-size=1200,900", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120)
    return dom, np.asarray(Image.open(shot).convert("RGB"))


def test_html_report_renders_in_headless_chromium(good, tmp_path):
    """Screenshot the report as a person would see it; every thumbnail must have loaded."""
    rep = tmp_path / "rep"
    assert invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep, "-q").exit_code == 0
    dom, img = chromium(rep / "report.html", tmp_path,
                        "'loaded:'+[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length+'/'+document.images.length")
    assert "<title>loaded:10/10</title>" in dom
    assert img.shape[:2] == (900, 1200)
    assert img.std() > 20  # not a blank page: text, tables and thumbnails are drawn
    assert "data:image/jpeg" in (rep / "report.html").read_text()  # compressed thumbnails


def test_report_shows_the_failing_photo_first(good, tmp_path):
    """One photo fails, the other passes; the failing one is not first by name. In the screenshot the
    failing photo's row is the first photo row, flagged (red background), on the first screen."""
    bad = tmp_path / "bad"
    bad.mkdir()
    perturb_largest_weights(good / "fused.onnx", bad / "fused.onnx")
    r = invoke("validate", bad / "fused.onnx", "--model", f"{BYO}:factory", "--json", "--min-psnr", "1")
    per = {p["photo"]: p["psnr"] for p in json.loads(r.output)["artifacts"][0]["photos"]}
    worst, best = sorted(per, key=per.get)
    assert per[best] - per[worst] > 1 and sorted(per)[0] != worst  # name order would show it second
    rep = tmp_path / "rep"
    r = invoke("validate", bad / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep, "--min-psnr", "1",
               "--min-photo-psnr", str((per[worst] + per[best]) / 2))
    assert r.exit_code == 1 and f"failing photos: {worst}" in r.output and best not in r.output.split("failing photos:")[1].split("\n")[0]
    dom, img = chromium(rep / "report.html", tmp_path,
                        "(()=>{const r=document.querySelector('tr[data-photo]');const b=r.getBoundingClientRect();"
                        "return 'first:'+r.dataset.photo+':'+r.className+':'+Math.round(b.top);})()")
    first = dom.split("<title>first:")[1].split("</title>")[0].split(":")
    assert first[:2] == [worst, "failing"] and 0 < int(first[2]) < 900 - 20, first
    flagged = np.all(img == (255, 221, 221), axis=-1)  # #fdd, the failing row's background
    top = int(first[2])
    assert flagged[top:top + 24].sum() > 500  # drawn where the probe found the row, on the first screen


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


def test_report_plots_fidelity_against_latency_with_bench(good, tmp_path):
    """With --bench the report leads with a PSNR-vs-latency chart: one point per artifact, at its
    measured p50 and median PSNR; without --bench there is no such chart."""
    import re

    rep = tmp_path / "rep"
    r = invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--bench", "--report", rep, "-q")
    assert r.exit_code == 0, r.output
    d = json.loads((rep / "validate.json").read_text())
    page = (rep / "report.html").read_text()
    assert "Fidelity vs latency" in page and d["artifacts"][0]["latency"]["p50_ms"] > 0
    scatter = page.split("Fidelity vs latency", 1)[1].split("</svg>", 1)[0]
    assert len(re.findall(r"<circle ", scatter)) == 1 and "onnx-fp32/fused.onnx" in scatter
    rep2 = tmp_path / "rep2"
    assert invoke("validate", good / "fused.onnx", "--model", f"{BYO}:factory", "--report", rep2, "-q").exit_code == 0
    assert "Fidelity vs latency" not in (rep2 / "report.html").read_text()
