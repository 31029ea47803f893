"""Bad inputs and faults, as an attacker or a careless user meets mexport, through the CLI.

Every case asserts the same four things: its exit code (2 for bad input, 1 for a failed artifact),
exactly one line on stderr naming the problem, no traceback, and nothing left behind: no new
output, no half-written file, no staging directory, and earlier outputs as they were. Inputs are
checked before the slow work: a case that would fail only after running the artifacts fails.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import BYO, ROOT, TINY, files_under, invoke, one_error_line, reseal, staging_left

TINY_REFINE = f"{BYO.parent / 'tiny_refine.py'}:factory"


def snapshot(root: Path) -> dict[Path, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory): to prove nothing changed."""
    return {p: (p.read_bytes() if p.is_file() else None) for p in sorted(files_under(root))}


def fails_cleanly(root: Path, args: list, code: int = 2, *needles: str) -> str:
    """Run the CLI; it must fail with ``code`` in one line and leave ``root`` exactly as it was."""
    before = snapshot(root)
    line = one_error_line(invoke(*args), code, *needles)
    assert snapshot(root) == before, sorted(set(snapshot(root)) ^ set(before))
    return line


@pytest.fixture
def no_slow_work(monkeypatch):
    """Fails the test if an artifact is run: the input must be refused before that."""
    from mexport.validate import validate as v

    def refuse(*a, **k):
        raise AssertionError("the validation ran before the bad input was refused")

    monkeypatch.setattr(v, "validate_artifact", refuse)


# ----------------------------------------------------------------------------- recipes

RECIPES = {
    "layers is a list": ({"schema": 1, "name": "r", "layers": ["coarse.enc1"]}, "layers must map module paths"),
    "calibration is a string": ({"schema": 1, "name": "r", "calibration": "minmax"}, "calibration must be an object"),
    "name is a number": ({"schema": 1, "name": 123}, "name must be a non-empty string"),
    "layer precision is a number": ({"schema": 1, "name": "r", "layers": {"coarse.enc1": 8}}, "precision must be one of"),
    "layer names no module": ({"schema": 1, "name": "r", "layers": {"coarse.nope": "float"}}, "1 layer key(s) name no module of tiny-modnet: 'coarse.nope'"),
    "two keys of another model, one a typo": ({"schema": 1, "name": "r", "layers": {"coarse.enc_1": "float", "coarse.stage2d": "float"}},
                                               "2 layer key(s) name no module of tiny-modnet: 'coarse.enc_1' (nearest: coarse.enc1"),
    "calibration photos as a string": ({"schema": 1, "name": "r", "calibration": {"max_photos": "3"}}, "max_photos must be an integer"),
    "calibration percentile NaN": ('{"schema": 1, "name": "r", "calibration": {"percentile": NaN}}', "percentile must be in [90, 100]"),
    "unknown calibration field": ({"schema": 1, "name": "r", "calibration": {"bogus": 1}}, "unknown calibration fields"),
    "unknown recipe field": ({"schema": 1, "name": "r", "bogus": 1}, "unknown recipe fields"),
    "a JSON list": ([{"schema": 1}], "a recipe is a JSON object"),
    "not UTF-8": (b"\xff\xfe{}", "not valid JSON"),
    "newer schema": ({"schema": 2, "name": "r"}, "recipe schema 2 is not supported"),
    "split_inputs on ONNX": ({"schema": 1, "name": "r", "split_inputs": {"coarse.enc1.0": [0]}}, "split_inputs is applied by LiteRT only"),
    "unknown repair": ({"schema": 1, "name": "r", "repairs": ["adaround"]}, "repairs must be distinct names among ['bias_correction']"),
    "a directory": (None, "is a directory, not a JSON file"),
}


@pytest.mark.parametrize("case", list(RECIPES))
def test_bad_recipes_are_refused_before_converting(tmp_path, case):
    content, msg = RECIPES[case]
    recipe = tmp_path / "recipe.json"
    if content is None:
        recipe.mkdir()
    else:
        recipe.write_bytes(content if isinstance(content, bytes) else (content if isinstance(content, str) else json.dumps(content)).encode())
    t0 = time.perf_counter()
    fails_cleanly(tmp_path, ["onnx", "--int8", "--recipe", recipe, "--model", TINY, "-o", tmp_path / "out", "-q"], 2, msg)
    assert time.perf_counter() - t0 < 30  # refused with the model loaded, before any conversion


@pytest.mark.parametrize("args, msg", [
    (["onnx", "--recipe", "{recipe}"], "--recipe applies to --int8"),
    (["onnx", "--int8", "--recipe", "{missing}"], "recipe file not found"),
    (["tflite", "--int8", "--recipe", "{unknown_layer}"], "1 layer key(s) name no module of tiny-modnet: 'coarse.nope'"),
    (["coreml", "--recipe", "{unknown_layer}"], "1 layer key(s) name no module of tiny-modnet: 'coarse.nope'"),  # fp16 reads recipes too
    (["coreml", "--fp32", "--recipe", "{recipe}"], "--recipe applies to"),
    (["onnx", "--int8", "--calib", "{empty}"], "no photos"),
    (["onnx", "--int8", "--calib-count", "0"], "must be >= 1"),
    (["onnx", "--opset", "5"], "opset must be between 11 and 21"),
    (["onnx", "--min-psnr", "nan"], "min_psnr must be between 0 and 200"),
    (["onnx", "--fp16", "--int8"], "choose one of --fp16, --int8, --dynamic-int8"),
    (["tflite", "--io", "int8"], "--io int8 applies to --int8 only"),
    (["coreml", "--weights", "int4"], "int4 per-block weights need deployment_target iOS18"),
    (["onnx", "--check-data", "{missing}"], "photo folder not found"),
])
def test_bad_export_options_are_one_line(tmp_path, args, msg):
    (tmp_path / "empty").mkdir()
    (tmp_path / "recipe.json").write_text(json.dumps({"schema": 1, "name": "r"}))
    (tmp_path / "unknown.json").write_text(json.dumps({"schema": 1, "name": "r", "layers": {"coarse.nope": "float"}}))
    fill = {"recipe": tmp_path / "recipe.json", "missing": tmp_path / "nope", "unknown_layer": tmp_path / "unknown.json",
            "empty": tmp_path / "empty"}
    args = [str(a).format(**fill) for a in args]
    fails_cleanly(tmp_path, [*args, "--model", TINY, "-o", tmp_path / "out", "-q"], 2, msg)


# ----------------------------------------------------------------------------- validate: baselines, config, thresholds

IDENT = {"model": "m", "weights_sha256": "0" * 64, "target": "onnx", "precision": "fp32", "kind": "fused"}
KEY = f"m@{'0' * 12} onnx fp32 fused"
BASELINES = {
    "a JSON list": ([], "not a baseline"),
    "artifacts is a list": ({"schema": 2, "artifacts": [1]}, "'artifacts' must map artifact identities"),
    "a string where a number belongs": ({"schema": 2, "artifacts": {KEY: {"identity": IDENT, "photos": {"GT15": {"sha256": "a", "sad": "abc"}}}}},
                                        "photos['GT15'].sad must be a number"),
    "an entry that is not an object": ({"schema": 2, "artifacts": {KEY: 5}}, "must be an object"),
    "an entry without photos": ({"schema": 2, "artifacts": {KEY: {"identity": IDENT}}}, "photos must map photo names"),
    "a photo without its hash": ({"schema": 2, "artifacts": {KEY: {"identity": IDENT, "photos": {"GT15": {"sad": 1.0}}}}},
                                 "with the photo's sha256"),
    "a key edited by hand": ({"schema": 2, "artifacts": {"onnx-int8/fused": {"identity": IDENT, "photos": {}}}},
                             "the key does not match its identity"),
    "an identity without a target": ({"schema": 2, "artifacts": {KEY: {"identity": {**IDENT, "target": None}}}}, "identity must name"),
    "newer schema": ({"schema": 3, "artifacts": {}}, "has schema 3, expected 2"),
    "schema 1 (means by directory)": ({"schema": 1, "artifacts": {}}, "cannot be matched per photo: make it again with --update-baseline"),
    "not JSON": ("{", "is not valid JSON"),
    "a recipe given as the baseline": ({"schema": 2, "name": "r", "layers": {}}, "unknown fields ['layers', 'name']"),
    "a directory": (None, "is a directory, not a JSON file"),
}


@pytest.mark.parametrize("case", list(BASELINES))
def test_bad_baselines_are_refused_before_validating(tiny_onnx, tmp_path, no_slow_work, case):
    content, msg = BASELINES[case]
    base = tmp_path / "baseline.json"
    base.mkdir() if content is None else base.write_text(content if isinstance(content, str) else json.dumps(content))
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--model", TINY, "--baseline", base, "--max-sad-increase", "0.1",
                             "--report", tmp_path / "rep", "-q"], 2, msg)


CONFIGS = {
    "a directory": (None, "is a directory, not a TOML file"),
    "not UTF-8": (b"[validate]\nmin_psnr = 30 # \xff\xfe\n", "is not UTF-8 text"),
    "a threshold as a string": (b'[validate]\nmin_psnr = "abc"\n', "min_psnr must be a finite number, got 'abc'"),
    "a threshold that is NaN": (b"[validate]\nmin_psnr = nan\n", "min_psnr must be a finite number, got nan"),
    "baseline as a number": (b"[validate]\nbaseline = 5\n", "baseline must be a path"),
    "unknown key": (b"[validate]\nmin_snr = 30\n", "unknown keys ['min_snr']"),
    "not TOML": (b"[validate\n", "is not valid TOML"),
    "validate is not a table": (b"validate = 5\n", "the validate section must be a table"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_configs_are_refused_before_validating(tiny_onnx, tmp_path, no_slow_work, case):
    content, msg = CONFIGS[case]
    cfg = tmp_path / "mexport.toml"
    cfg.mkdir() if content is None else cfg.write_bytes(content)
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--model", TINY, "--config", cfg, "-q"], 2, msg)


def test_a_pyproject_whose_tool_is_not_a_table(tiny_onnx, tmp_path, no_slow_work):
    (tmp_path / "pyproject.toml").write_text("tool = 5\n")
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--model", TINY, "--config", tmp_path / "pyproject.toml", "-q"],
                  2, "the validate section must be a table")


@pytest.mark.parametrize("args, msg", [
    (["--min-psnr", "nan"], "min_psnr must be a finite number, got nan"),
    (["--min-psnr", "inf"], "min_psnr must be a finite number, got inf"),
    (["--min-psnr", "0"], "min_psnr must be between 0 and 200 dB"),
    (["--min-psnr", "abc"], "'abc' is not a valid float"),
    (["--max-sad-increase", "nan"], "max_sad_increase must be a finite number"),
    (["--max-grad-increase", "-1"], "max_grad_increase must be >= 0"),
    (["--max-latency-ratio", "0"], "max_latency_ratio must be > 0"),
    (["--min-photo-psnr", "nan"], "min_photo_psnr must be a finite number, got nan"),
    (["--min-photo-psnr", "250"], "min_photo_psnr must be between 0 and 200 dB"),
    (["--max-photo-sad-increase", "-0.1"], "max_photo_sad_increase must be >= 0"),
    (["--max-photo-grad-increase", "inf"], "max_photo_grad_increase must be a finite number"),
    (["--latency-runs", "0"], "--latency-runs"),
    (["--update-baseline"], "--update-baseline needs --baseline FILE"),
    (["--update-baseline", "--baseline", "{dir}"], "it is a directory"),
    (["--update-baseline", "--baseline", "{file}"], "is not valid JSON"),  # never overwritten: not a baseline
    (["--report", "{file}"], "it exists and is not a directory"),
    (["--baseline", "{missing}", "--max-sad-increase", "0.1"], "baseline not found"),
    (["--config", "{missing}"], "config file not found"),
    (["--data", "{file}"], "not a directory"),
    (["--only", "GT99", "--data", "{data}"], "--only: no photo named GT99"),
])
def test_bad_validate_options_fail_before_validating(tiny_onnx, tmp_path, no_slow_work, args, msg):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data / "p.png")
    fill = {"dir": tmp_path / "adir", "file": tmp_path / "afile", "missing": tmp_path / "nope", "data": data}
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--model", TINY, *[str(a).format(**fill) for a in args], "-q"], 2, msg)


# ----------------------------------------------------------------------------- ground truth

def gt_folder(root: Path) -> Path:
    d = root / "data"
    for sub in ("image", "alpha", "trimap1"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / "image" / "p.png")
    Image.fromarray(rng.integers(0, 255, (48, 64), dtype=np.uint8)).save(d / "alpha" / "p.png")
    Image.fromarray(np.full((48, 64), 128, np.uint8)).save(d / "trimap1" / "p.png")
    return d


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


GROUND_TRUTH = {
    "empty alpha": (lambda d: (d / "alpha" / "p.png").write_bytes(b""), "alpha", "not an image"),
    "truncated alpha": (lambda d: _truncate(d / "alpha" / "p.png"), "alpha", "broken or truncated"),
    "alpha that is text": (lambda d: (d / "alpha" / "p.png").write_text("alpha"), "alpha", "not an image"),
    "wrong-size alpha": (lambda d: Image.fromarray(np.zeros((10, 12), np.uint8)).save(d / "alpha" / "p.png"), "alpha",
                         "is 12x10, its photo 64x48"),
    "truncated trimap": (lambda d: _truncate(d / "trimap1" / "p.png"), "trimap", "broken or truncated"),
    "wrong-size trimap": (lambda d: Image.fromarray(np.zeros((48, 63), np.uint8)).save(d / "trimap1" / "p.png"), "trimap",
                          "is 63x48, its photo 64x48"),
}


@pytest.mark.parametrize("case", list(GROUND_TRUTH))
def test_bad_ground_truth_is_one_line_before_validating(tiny_onnx, tmp_path, no_slow_work, case):
    d = gt_folder(tmp_path)
    break_it, what, msg = GROUND_TRUTH[case]
    break_it(d)
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--model", TINY, "--data", d, "--report", tmp_path / "rep", "-q"],
                  2, f"{what} {d / ('alpha' if what == 'alpha' else 'trimap1') / 'p.png'}", msg)


def test_a_16_bit_alpha_is_read_as_16_bits(tmp_path):
    """The issue's wrong answer: convert("L") clipped 16-bit values to 255, binarising the matte
    (42.9 % of pixels at 255 instead of 36.7 %), and the wrong SAD passed."""
    from mexport.validate.accuracy import load_gt_samples
    from mexport.validate.metrics import sad

    d = gt_folder(tmp_path)
    truth = np.clip(np.random.default_rng(1).normal(0.5, 0.3, (48, 64)), 0, 1)
    Image.fromarray(np.round(truth * 65535).astype(np.uint16)).save(d / "alpha" / "p.png")
    (s,) = load_gt_samples(d)
    assert np.abs(s.alpha - truth).max() < 1e-4
    assert sad(s.alpha, truth) < 1e-3 < sad(np.asarray(Image.open(d / "alpha" / "p.png").convert("L"), np.float32) / 255, truth)


# ----------------------------------------------------------------------------- output locations that fail

def fault(monkeypatch, root: Path, kind: str) -> None:
    """A read-only location (the rename into it fails, as under `chattr +i`) or a full disk (the
    flush before the rename fails). Tests run as root here, where mode bits block nothing."""
    real_replace, real_fsync = os.replace, os.fsync
    if kind == "read-only":
        def replace(src, dst, *a, **k):  # nothing renames into, or out of, a read-only directory
            for p in (src, dst):
                if Path(p).resolve().is_relative_to(root.resolve()):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)
    else:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)


FAULT_COMMANDS = {
    "cutout": lambda t, fx: ["cutout", fx["photo"], fx["photo2"], "-o", t / "out", "--model", TINY, "-q"],
    "cutout one file": lambda t, fx: ["cutout", fx["photo"], "-o", t / "out" / "cut.png", "--model", TINY, "-q"],
    "onnx": lambda t, fx: ["onnx", "--model", TINY, "--no-check", "-o", t / "out", "-q"],
    "validate --report": lambda t, fx: ["validate", fx["onnx"] / "fused.onnx", "--model", TINY, "--report", t / "out", "-q"],
    "validate --update-baseline": lambda t, fx: ["validate", fx["onnx"] / "fused.onnx", "--model", TINY, "--baseline",
                                                 t / "out" / "baseline.json", "--update-baseline", "-q"],
    "bundle create": lambda t, fx: ["bundle", "create", fx["onnx"], "--model", TINY, "--photos", "astronaut", "-o", t / "out" / "b.zip", "-q"],
    "bundle create (directory)": lambda t, fx: ["bundle", "create", fx["onnx"], "--model", TINY, "--photos", "astronaut", "-o",
                                                t / "out" / "b", "-q"],
    "bundle sign": lambda t, fx: ["bundle", "sign", t / "out" / "b.zip", "--key", fx["key"]],
}


@pytest.fixture(scope="module")
def fault_inputs(tiny_onnx, tiny_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("fault-inputs")
    rng = np.random.default_rng(0)
    for name in ("photo", "photo2"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / f"{name}.png")
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", str(d / "key")], check=True)
    return {"photo": d / "photo.png", "photo2": d / "photo2.png", "onnx": tiny_onnx, "bundle": tiny_bundle, "key": d / "key"}


@pytest.mark.parametrize("kind", ["read-only", "full"])
@pytest.mark.parametrize("command", list(FAULT_COMMANDS))
@pytest.mark.parametrize("earlier", [False, True], ids=["fresh", "over an earlier output"])
def test_an_output_location_that_fails_leaves_it_as_it_was(fault_inputs, tmp_path, monkeypatch, command, kind, earlier):
    """One line, exit 2, and the location as it was: nothing new, or the earlier output intact,
    never a truncated report.html or half an export."""
    args = FAULT_COMMANDS[command](tmp_path, fault_inputs)
    if command == "bundle sign":
        (tmp_path / "out").mkdir()
        shutil.copy(fault_inputs["bundle"], tmp_path / "out" / "b.zip")
    if earlier:  # the same command once, unharmed, so that there is an output to keep
        r = invoke(*args)
        assert r.exit_code == 0, r.output
    before = snapshot(tmp_path)
    fault(monkeypatch, tmp_path / "out", kind)
    line = one_error_line(invoke(*args), 2, "cannot write")
    assert ("Read-only file system" if kind == "read-only" else "No space left on device") in line
    monkeypatch.undo()
    assert snapshot(tmp_path) == before, sorted(set(snapshot(tmp_path)) ^ set(before))


# ----------------------------------------------------------------------------- bundles

def _set(path: list, value):
    def edit(m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value
    return edit


MANIFESTS = {
    "models is a list": (_set(["artifacts", 0, "models"], ["fused"]), "'models' must map fused to their files"),
    "an unknown tolerance field": (_set(["artifacts", 0, "tolerance", "bogus"], 1), "unknown tolerance fields bogus"),
    "a tolerance bound that is text": (_set(["artifacts", 0, "tolerance", "max_abs"], "x"), "each a finite number >= 0"),
    "an unknown artifact kind": (_set(["artifacts", 0, "kind"], "weird"), "kind must be one of fused, pair"),
    "a golden shape of text": (_set(["artifacts", 0, "golden", 0, "shape"], [1, "a", 2, 2]), "golden shape must be 4 positive integers"),
    "a golden photo not in its set": (_set(["artifacts", 0, "golden", 0, "photo"], "nosuch"), "golden photo 'nosuch' is not in set"),
    "a negative file size": (lambda m: m["files"][next(iter(m["files"]))].update(size=-1), "size (an integer >= 0)"),
    "a set shape of two numbers": (_set(["golden", "sets", 0, "shape_nchw"], [1, 3]), "shape_nchw must be 4 positive integers"),
    "an invalid pipeline spec": (_set(["artifacts", 0, "pipeline", "spec", "coarse_size"], "x"), "pipeline.spec is not a valid spec"),
    "no artifacts": (_set(["artifacts"], []), "'artifacts' must be a non-empty list"),
    "two artifacts with one id": (lambda m: m["artifacts"].append(dict(m["artifacts"][0])), "artifact ids must be unique"),
    "files is a list": (_set(["files"], []), "'files' must map each path"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_crafted_manifests_with_a_valid_self_checksum_are_one_line(tiny_bundle, tmp_path, case):
    edit, msg = MANIFESTS[case]
    bad = reseal(tiny_bundle, tmp_path / "crafted.zip", edit=edit)
    fails_cleanly(tmp_path, ["bundle", "verify", bad, "-q"], 2, f"manifest.json: ", msg)


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, msg", [
    (lambda t: t / "nope.zip", "bundle not found"),
    (lambda t: _file(t / "empty.zip", b""), "not a readable zip file"),
    (lambda t: _file(t / "text.zip", b"hello"), "not a readable zip file"),
    (lambda t: (t / "adir").mkdir() or t / "adir", "no manifest.json; not a mexport bundle"),
], ids=["missing", "empty file", "text file", "empty directory"])
def test_things_that_are_not_bundles(tmp_path, make, msg):
    fails_cleanly(tmp_path, ["bundle", "verify", make(tmp_path), "-q"], 2, msg)


def test_bundle_create_checks_its_inputs_before_the_slow_work(tiny_onnx, tmp_path, monkeypatch):
    from mexport.bundle import create as c

    monkeypatch.setattr(c, "fidelity_only", lambda *a, **k: pytest.fail("the fidelity check ran before the bad input was refused"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notabundle").mkdir()
    (tmp_path / "notabundle" / "mine.txt").write_text("keep")
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "validate.json").write_text("[]")
    (rep / "report.html").write_text("<html>")
    for args, msg in ((["--photos", "nosuch"], "scikit-image photo 'nosuch'"),
                      (["--photos", ","], "at least one golden photo"),
                      (["-o", tmp_path / "afile"], "it exists and is not a directory"),
                      (["-o", tmp_path / "notabundle"], "is not a bundle directory; refusing to replace it"),
                      (["--report", rep], "not a validate.json report")):
        out = [] if "-o" in args else ["-o", tmp_path / "b.zip"]
        fails_cleanly(tmp_path, ["bundle", "create", tiny_onnx, "--model", TINY, *out, *args, "-q"], 2, msg)


# ----------------------------------------------------------------------------- models of the user's

BAD_MODELS = {
    "three channels": ("""
import torch
from mexport import MattingModel, PipelineSpec
class M(torch.nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)
def factory():
    return MattingModel(coarse=M(), refine=None, spec=PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64)), name="rgb")
""", "returns alpha of shape (1, 3, 64, 64)"),
    "NaN alpha": ("""
import torch
from mexport import MattingModel, PipelineSpec
class M(torch.nn.Module):
    def forward(self, x):
        return x[:, :1] * float("nan")
def factory():
    return MattingModel(coarse=M(), refine=None, spec=PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64)), name="nan")
""", "gives NaN or Inf in the alpha"),
    "factory calls sys.exit(0)": ("import sys\ndef factory():\n    sys.exit(0)\n", "called sys.exit(0)"),
    "module calls sys.exit on import": ("import sys\nsys.exit(3)\n", "it called sys.exit(3)"),
    "factory returns None": ("def factory():\n    return None\n", "must return mexport.MattingModel, got NoneType"),
    "module does not import": ("import no_such_module_here\n", "could not import"),
}


def byo_file(tmp_path: Path, source: str) -> tuple[Path, Path]:
    """(model file, an empty work directory): importing the file may leave __pycache__ beside it."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(source)
    (tmp_path / "work").mkdir()
    return tmp_path / "model" / "model.py", tmp_path / "work"


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_broken_byo_model_is_one_line_and_writes_nothing(photo_file, tmp_path, case):
    source, msg = BAD_MODELS[case]
    model, work = byo_file(tmp_path, source)
    fails_cleanly(work, ["cutout", photo_file, "-o", work / "cut.png", "--model", f"{model}:factory", "-q"], 2, msg)


def test_a_model_of_the_wrong_shape_is_refused_at_export(tmp_path):
    model, work = byo_file(tmp_path, BAD_MODELS["three channels"][0])
    fails_cleanly(work, ["onnx", "--model", f"{model}:factory", "-o", work / "out", "-q"], 2,
                  "its coarse graph returns shape (1, 3, 32, 32)", "one alpha channel")


def test_an_artifact_that_outputs_nan_fails_cutout(tiny_onnx, photo_file, tmp_path):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(tiny_onnx / "fused.onnx")
    init = max(m.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    w = numpy_helper.to_array(init).copy()
    w[:] = np.nan
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    (tmp_path / "nan").mkdir()
    onnx.save(m, tmp_path / "nan" / "fused.onnx")
    fails_cleanly(tmp_path, ["cutout", photo_file, "-o", tmp_path / "cut.png", "--artifact", tmp_path / "nan" / "fused.onnx", "-q"],
                  1, "NaN or Inf", "nothing written")


# ----------------------------------------------------------------------------- pairs and provenance

@pytest.fixture(scope="module")
def refine_exports(tmp_path_factory):
    """The tiny coarse+refine model exported twice, fp32 and fp16 (ONNX)."""
    from mexport import api

    root = tmp_path_factory.mktemp("pairs")
    for precision in ("fp32", "fp16"):
        api.export("onnx", root / precision, model=TINY_REFINE, precision=precision)
    return root


def test_a_pair_from_one_export_validates(refine_exports):
    r = invoke("validate", refine_exports / "fp16", "--model", TINY_REFINE, "-q")
    assert r.exit_code == 0 and r.stdout.strip() == "PASS", r.output


def test_a_pair_mixed_from_two_exports_is_refused(refine_exports, tmp_path, photo_file):
    """The issue's wrong answer: an int8 coarse with an fp32 refine was labelled fp32 and gated at
    60 dB. Here fp16 + fp32: whatever the mix, one pipeline's files must come from one export."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(refine_exports / "fp16" / "coarse.onnx", mixed)
    shutil.copy(refine_exports / "fp32" / "refine.onnx", mixed)
    for args in (["validate", mixed, "--model", TINY_REFINE, "-q"],
                 ["validate", mixed / "coarse.onnx", mixed / "refine.onnx", "--model", TINY_REFINE, "-q"],
                 ["cutout", photo_file, "-o", tmp_path / "c.png", "--artifact", mixed / "coarse.onnx", "--artifact", mixed / "refine.onnx", "-q"],
                 ["bundle", "create", mixed, "--model", TINY_REFINE, "-o", tmp_path / "b.zip", "-q"]):
        fails_cleanly(tmp_path, args, 2, "come from different exports (precision: 'fp16' vs 'fp32')")


def _provenance_edit(src: Path, dst: Path, edit) -> Path:
    import onnx

    m = onnx.load(src)
    for p in m.metadata_props:
        if p.key == "mexport.provenance":
            p.value = edit(p.value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, dst)
    return dst


def _external_data(src: Path, dst: Path, location: str) -> Path:
    """An ONNX artifact whose largest weight lives in an "external data" file at ``location``."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(src)
    init = max(m.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    n = numpy_helper.to_array(init).nbytes
    (dst.parent.parent / "secret.bin").write_bytes(bytes(n))
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        e = init.external_data.add()
        e.key, e.value = k, v
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, dst)
    return dst


ARTIFACTS = {
    "external data outside the artifact's directory": (lambda t, src: _external_data(src, t / "a" / "fused.onnx", "../secret.bin"),
                                                       "escapes model directory"),
    "external data at an absolute path": (lambda t, src: _external_data(src, t / "a" / "fused.onnx", str(t / "secret.bin")),
                                          "Absolute path not allowed"),
    "provenance is not JSON": (lambda t, src: _provenance_edit(src, t / "a" / "fused.onnx", lambda v: v[:-5]), "provenance record is malformed"),
    "provenance weights hash is a number": (
        lambda t, src: _provenance_edit(src, t / "a" / "fused.onnx", lambda v: json.dumps({**json.loads(v), "weights_sha256": 5})),
        "weights_sha256 must be a string"),
    "provenance model is a list": (
        lambda t, src: _provenance_edit(src, t / "a" / "fused.onnx", lambda v: json.dumps({**json.loads(v), "model": ["x"]})),
        "model must be a string"),
    "provenance spec is invalid": (
        lambda t, src: _provenance_edit(src, t / "a" / "fused.onnx",
                                        lambda v: json.dumps({**json.loads(v), "spec": {**json.loads(v)["spec"], "aspect": "wide"}})),
        "aspect must be one of"),
    "not an ONNX file": (lambda t, src: (t / "a").mkdir() or _file(t / "a" / "fused.onnx", b"onnx?"), "not a readable ONNX model"),
    "two exports in one directory": (lambda t, src: (shutil.copytree(src.parent, t / "a"), (t / "a" / "fused.tflite").write_bytes(b"x"))
                                     and t / "a", "holds fused.onnx and fused.tflite"),
    "a renamed coarse file": (lambda t, src: (t / "a").mkdir() or shutil.copy(src.parent / "coarse.onnx", t / "a" / "fused.onnx")
                              and t / "a", "its provenance says it is the coarse model"),
    "an unknown file type": (lambda t, src: _file(t / "model.pt", b"x"), "not an artifact mexport knows"),
    "a staging directory of a killed export": (lambda t, src: shutil.copytree(src.parent, t / ".mexport-export-abc123" / "files"),
                                               "never finished"),
}


@pytest.mark.parametrize("case", list(ARTIFACTS))
def test_bad_artifacts_are_one_line(tiny_onnx, tmp_path, case):
    make, msg = ARTIFACTS[case]
    path = make(tmp_path, tiny_onnx / "fused.onnx")
    fails_cleanly(tmp_path, ["validate", path, "--model", TINY, "-q"], 2, msg)


# ----------------------------------------------------------------------------- re-exports, staging, signals, locks, modes

def test_a_re_export_replaces_the_earlier_export_whole(tiny_onnx, tmp_path):
    """An fp32 export into a directory that held an int8 export (recipe.json) and a refine file of
    another model: those go; a file of the user's stays."""
    out = tmp_path / "out"
    shutil.copytree(tiny_onnx, out)
    (out / "recipe.json").write_text("{}")
    (out / "refine.onnx").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    r = invoke("onnx", "--model", TINY, "--no-check", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["check.json", "coarse.onnx", "convert.log", "fused.onnx", "notes.txt"]
    assert not staging_left(tmp_path)


def test_an_export_into_another_targets_export_is_refused(tiny_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "fused.tflite").write_bytes(b"someone's model")
    fails_cleanly(tmp_path, ["onnx", "--model", TINY, "-o", out, "-q"], 2, "holds another export (fused.tflite)")


def test_two_runs_into_one_output_the_second_fails_at_once(tmp_path):
    from mexport.io import output_lock

    out = tmp_path / "out"
    with output_lock(out):  # a run in progress (flock: the same in another process)
        t0 = time.perf_counter()
        fails_cleanly(tmp_path, ["onnx", "--model", TINY, "-o", out, "-q"], 2, f"another mexport run is writing {out}")
        assert time.perf_counter() - t0 < 30
    r = invoke("onnx", "--model", TINY, "--no-check", "-o", out, "-q")
    assert r.exit_code == 0 and not staging_left(tmp_path)


def _export_process(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "mexport.cli", "onnx", "--model", TINY, "-o", str(out), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout=120.0) -> None:
    t0 = time.perf_counter()
    while not cond():
        assert time.perf_counter() - t0 < timeout, "timed out"
        time.sleep(0.01)


def _staged(root: Path) -> list[Path]:
    return [p for p in root.glob(".mexport-export-*/files/*.onnx")]


def test_sigterm_mid_export_cleans_up_like_ctrl_c(tmp_path):
    proc = _export_process(tmp_path / "out")
    _wait_for(lambda: _staged(tmp_path) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err)
    assert [ln for ln in err.splitlines() if ln.strip()] == ["Terminated."] and out == ""
    assert list(tmp_path.iterdir()) == []  # no output, no staging, no lock file


def test_staging_left_by_a_killed_export_is_never_an_artifact_and_is_cleaned_next_time(tmp_path):
    proc = _export_process(tmp_path / "out")
    _wait_for(lambda: _staged(tmp_path) or proc.poll() is not None)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    (stage,) = tmp_path.glob(".mexport-export-*")
    one_error_line(invoke("validate", stage / "files", "--model", TINY, "-q"), 2, "never finished")
    one_error_line(invoke("validate", _staged(tmp_path)[0], "--model", TINY, "-q"), 2, "never finished")
    old = time.time() - 3600  # the next run comes later
    for p in tmp_path.iterdir():
        os.utime(p, (old, old))
    r = invoke("onnx", "--model", TINY, "--no-check", "-o", tmp_path / "out", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_follow_the_umask(tiny_coreml, photo_file, tmp_path, mask):
    """mkstemp and coremltools made 0600 files; outputs get what the user's umask says."""
    old = os.umask(mask)
    try:
        assert invoke("cutout", photo_file, "-o", tmp_path / "c.png", "--model", TINY, "-q").exit_code == 0
        assert invoke("onnx", "--model", TINY, "--no-check", "-o", tmp_path / "onnx", "-q").exit_code == 0
        from mexport.io import install

        stage = tmp_path / "stage"  # a Core ML package as coremltools leaves it (0600 files), installed
        shutil.copytree(tiny_coreml / "fused.mlpackage", stage / "fused.mlpackage")
        for p in (stage / "fused.mlpackage").rglob("*"):
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
        install({tmp_path / "coreml" / "fused.mlpackage": stage / "fused.mlpackage"}, stage / "old")
    finally:
        os.umask(old)
    for p in [tmp_path / "c.png", *(tmp_path / "onnx").rglob("*"), *(tmp_path / "coreml").rglob("*")]:
        want = (0o777 if p.is_dir() else 0o666) & ~mask
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))
    assert (tmp_path / "onnx").stat().st_mode & 0o777 == 0o777 & ~mask


def test_an_artifact_that_fails_to_run_is_exit_1(tiny_onnx, photo_file, tmp_path):
    """An artifact whose provenance spec disagrees with its graph (256 px fed to a 128 px model):
    onnxruntime's INVALID_ARGUMENT is a failed artifact, one line, not a traceback."""
    src = tiny_onnx / "fused.onnx"
    bad = _provenance_edit(src, tmp_path / "a" / "fused.onnx",
                           lambda v: json.dumps({**json.loads(v), "spec": {**json.loads(v)["spec"], "refine_size": [256, 256]}}))
    fails_cleanly(tmp_path, ["cutout", photo_file, "-o", tmp_path / "c.png", "--artifact", bad, "-q"], 1,
                  "onnxruntime failed to run fused.onnx")



def test_decompression_bombs_are_one_line_without_pils_warning(tiny_onnx, tmp_path, no_slow_work):
    """PIL warns (DecompressionBombWarning: two more lines on stderr) before mexport's own error,
    for a photo and for a ground-truth alpha alike: three lines for one problem."""
    Image.new("1", (11000, 10000)).save(tmp_path / "bomb.png")
    fails_cleanly(tmp_path, ["cutout", tmp_path / "bomb.png", "-o", tmp_path / "c.png", "--model", TINY, "-q"], 2, "megapixel limit")
    d = gt_folder(tmp_path / "gt")
    shutil.copy(tmp_path / "bomb.png", d / "alpha" / "p.png")
    fails_cleanly(tmp_path, ["validate", tiny_onnx / "fused.onnx", "--data", d, "--model", TINY, "-q"], 2, "alpha", "megapixel limit")
