"""`mexport fragility`: which photos int8 holds only by luck. A toy whose answer is known by
construction (tests/byo/toy_int8.py:knife_edge), its CLI, and the reference model on two real photos."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke, one_error_line

TOYS = Path(__file__).resolve().parent / "byo" / "toy_int8.py"
KNIFE = f"{TOYS}:knife_edge"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """(photos, calibration): a mid-grey photo on the toy's decision, a dark one far from it;
    calibration photos of random pixels (none of them measured)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fragility")
    photos, calib = root / "photos", root / "calib"
    photos.mkdir()
    calib.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(photos / "edge.png")
    Image.fromarray(np.full((64, 64, 3), 40, np.uint8)).save(photos / "dark.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(calib / f"noise{i}.png")
    return photos, calib


def measure(tmp_path, folders, *extra):
    photos, calib = folders
    out = tmp_path / "frag"
    r = invoke("fragility", "--model", KNIFE, "--eval", str(photos), "--calib", str(calib), "-o", str(out), "--json", *extra)
    assert r.exit_code == 0, r.output
    return {p["photo"]: p for p in json.loads(r.stdout)["photos"]}, out


def test_a_photo_on_the_decision_is_fragile_and_its_block_is_named(tmp_path, folders):
    """The grey photo sits where alpha = 0.5 with slope 10 per unit: one int8 step of the gate's
    input (50/255) moves it by tenths, every draw. The dark photo's alpha is 0 whatever the noise.
    The per-block split puts the grey photo's noise on `coarse.gate`, whose input range is 200x
    the stem's."""
    got, out = measure(tmp_path, folders, "--draws", "3")
    edge, dark = got["photos/edge"], got["photos/dark"]
    assert edge["verdict"] == "fragile" and edge["high"] < 25, edge
    assert dark["verdict"] == "robust" and dark["low"] > 60, dark
    assert len(edge["draws"]) == 3 and len(set(edge["draws"])) == 3  # three different draws
    (top, share), *_ = edge["blocks"]
    assert top == "coarse.gate" and share > 0.9, edge["blocks"]
    assert abs(sum(s for _, s in edge["blocks"]) - 1) < 1e-6
    assert dark["blocks"] == []  # robust photos are not split
    report = (out / "report.md").read_text()
    assert "| photos/edge | fragile |" in report and "**1 fragile, 0 at risk, 1 robust** of 2 photos" in report
    # the toy declares no int8 recipe: naive int8 is the default, and one block carries the noise
    assert "Recipe: the model's default int8 recipe (onnx-int8; float: none)" in report
    assert "Over 90 % of the worst photos' noise enters in coarse.gate" in report


def test_draws_are_seeded(tmp_path, folders):
    a, _ = measure(tmp_path / "a", folders, "--draws", "2", "--split", "0")
    b, _ = measure(tmp_path / "b", folders, "--draws", "2", "--split", "0")
    c, _ = measure(tmp_path / "c", folders, "--draws", "2", "--split", "0", "--seed", "7")
    assert a["photos/edge"]["draws"] == b["photos/edge"]["draws"]
    assert a["photos/edge"]["draws"] != c["photos/edge"]["draws"]
    assert a["photos/edge"]["blocks"] == []  # --split 0


def test_a_recipe_that_keeps_the_culprit_float_makes_the_photo_robust(tmp_path, folders):
    """What `mexport sensitivity` would do for the grey photo: `coarse.gate` in float. Its noise is
    gone, and the stem's own (a step of 1/255 of the photo's range) moves alpha by far less."""
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"schema": 1, "name": "gate-float", "default": "int8", "layers": {"coarse.gate": "float"}}))
    plain, _ = measure(tmp_path / "plain", folders, "--draws", "2", "--split", "0")
    kept, _ = measure(tmp_path / "kept", folders, "--draws", "2", "--recipe", str(recipe))
    assert kept["photos/edge"]["median"] > plain["photos/edge"]["median"] + 15, (plain["photos/edge"], kept["photos/edge"])
    assert kept["photos/edge"]["verdict"] == "robust"


def test_bad_inputs_are_one_line_errors(tmp_path, folders):
    photos, calib = folders
    base = ("fragility", "--model", KNIFE, "--eval", str(photos))
    out = tmp_path / "o"
    one_error_line(invoke(*base, "--calib", str(calib), "--draws", "0", "-o", str(out)), 2, "--draws")
    one_error_line(invoke(*base, "--calib", str(calib), "--calib-share", "0.3", "-o", str(out)), 2, "--calib or --calib-share")
    one_error_line(invoke(*base, "--calib", str(photos), "-o", str(out)), 2, "also calibration photos")
    twin = tmp_path / "twin" / photos.name
    twin.mkdir(parents=True)
    (twin / "other.png").write_bytes((photos / "dark.png").read_bytes())
    (twin / "edge.png").write_bytes((photos / "dark.png").read_bytes())
    one_error_line(invoke(*base, "--eval", str(twin), "--calib", str(calib), "-o", str(out)), 2, "given twice", "photos/edge")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 1, "name": "x", "default": "int8", "layers": {"coarse.gaet": "float"}}))
    one_error_line(invoke(*base, "--calib", str(calib), "--recipe", str(bad), "-o", str(out)), 2, "coarse.gaet", "coarse.gate")
    assert not out.exists()


def test_reference_model_gt10_is_fragile_where_gt01_is_not(reference_pipeline, alphamatting):
    """The reference model with `mexport sensitivity`'s fold-0 recipe (reports/sensitivity_recipe.json):
    GT10, the photo its cross-validated int8 misses the worst-photo target on (reports/fragility.md),
    against GT01, which every recipe holds. Ranges from mexport's default calibration photos."""
    from mexport.models.recenter import plain_form
    from mexport.photos import load_photo
    from mexport.quantize.calibration import load_calibration, role_inputs
    from mexport.quantize.fragility import photo_fragility
    from mexport.quantize.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "reports" / "sensitivity_recipe.json")
    source = plain_form(reference_pipeline)
    feeds = role_inputs(source, "fused", load_calibration().photos, 6)
    photos = [(n, load_photo(alphamatting / "image" / f"{n}.png")) for n in ("GT10", "GT01")]
    got = {f.photo: f for f in photo_fragility(source, photos, feeds, draws=2, recipe=recipe, split=0)}
    assert got["GT10"].median < 30 < got["GT01"].low, got
    assert got["GT01"].low - got["GT10"].median > 10, got


def test_validate_says_which_failed_photos_are_fragile(tmp_path, folders):
    """`mexport validate --fragility`: a failed per-photo gate names the photos the fragility file
    calls fragile, and still fails. The gate is forced to fail (199 dB against an fp32 export);
    a bad file fails before running."""
    photos, calib = folders
    _, frag = measure(tmp_path, folders, "--draws", "2", "--split", "0")
    r = invoke("onnx", "--model", KNIFE, "-o", str(tmp_path / "fp32"), "-q")
    assert r.exit_code == 0, r.output
    art = str(tmp_path / "fp32" / "fused.onnx")
    r = invoke("validate", art, "--model", KNIFE, "--data", str(photos), "--min-photo-psnr", "199",
               "--fragility", str(frag / "fragility.json"), "--json")
    assert r.exit_code == 1, r.output
    gate, = [g for g in json.loads(r.stdout)["artifacts"][0]["gates"] if g["gate"] == "min-photo-alpha-psnr"]
    assert not gate["passed"] and gate["photos"] == ["edge"]  # the dark photo's fp32 alpha is exact
    assert "edge is fragile (int8-sized noise:" in gate["detail"] and "a recipe holds such a photo by luck" in gate["detail"]
    cfg = tmp_path / "mexport.toml"
    cfg.write_text(f'[validate]\nfragility = "{frag / "fragility.json"}"\nmin_photo_psnr = 199\n')
    r = invoke("validate", art, "--model", KNIFE, "--data", str(photos), "--config", str(cfg), "--json")
    gate, = [g for g in json.loads(r.stdout)["artifacts"][0]["gates"] if g["gate"] == "min-photo-alpha-psnr"]
    assert "edge is fragile" in gate["detail"]
    (tmp_path / "junk.json").write_text('{"photos": [{"photo": "x"}]}')
    one_error_line(invoke("validate", art, "--model", KNIFE, "--data", str(photos), "--fragility", str(tmp_path / "junk.json")),
                   2, "not a fragility.json")
    one_error_line(invoke("validate", art, "--model", KNIFE, "--data", str(photos), "--fragility", str(tmp_path / "none.json")),
                   2, "fragility file not found")


def test_annotation_tells_luck_from_a_real_loss():
    from mexport.quantize.fragility import annotate

    verdicts = {"GT10": {"verdict": "fragile", "low": 26.6, "median": 28.5, "high": 30.5},
                "GT16": {"verdict": "robust", "low": 45.0, "median": 46.6, "high": 49.5}}
    note = annotate(["GT10", "GT16", "unknown"], verdicts)
    assert note == ("GT10 is fragile (int8-sized noise: 26.6-30.5 dB, median 28.5): a recipe holds such a photo by luck; "
                    "GT16 robust to int8-sized noise: a real loss")
    assert annotate(["unknown"], verdicts) == ""
