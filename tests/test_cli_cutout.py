"""`mexport cutout` and the foundation's bad-input rules, through the CLI (CliRunner)."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mexport.cli import main

from .conftest import BYO, files_under


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_help_and_version():
    r = invoke("--help")
    assert r.exit_code == 0 and "cutout" in r.output
    assert invoke("-h").exit_code == 0
    r = invoke("--version")
    assert r.exit_code == 0 and "0.1.0" in r.output


def test_models_list_shows_weights_state(tmp_path):
    r = invoke("models", "list")
    assert r.exit_code == 0 and "u2netp-refine" in r.output and "present" in r.output
    r = invoke("models", "list", env={"MEXPORT_CACHE": str(tmp_path)})
    assert "missing (run `mexport models pull`)" in r.output


def test_cutout_of_a_real_photo_with_the_reference_model(tmp_path, alphamatting):
    """End to end at full size: the alpha must agree with the ground truth of a held-out photo."""
    from mexport.validate.metrics import sad

    out = tmp_path / "gt18.png"
    r = invoke("cutout", alphamatting / "image" / "GT18.png", "-o", out)
    assert r.exit_code == 0, r.output
    im = Image.open(out)
    src = np.asarray(Image.open(alphamatting / "image" / "GT18.png").convert("RGB"))
    assert im.mode == "RGBA" and im.size == (src.shape[1], src.shape[0])
    got = np.asarray(im)
    assert np.array_equal(got[..., :3], src)
    gt = np.asarray(Image.open(alphamatting / "alpha" / "GT18.png").convert("L"), np.float32) / 255
    alpha = got[..., 3].astype(np.float32) / 255
    # a useful matte: far closer to the truth than an all-foreground or all-background guess
    assert sad(alpha, gt) < 0.25 * min(sad(np.zeros_like(gt), gt), sad(np.ones_like(gt), gt))


def test_cutout_many_into_directory_and_skimage_names(tmp_path, photo_file):
    out = tmp_path / "cut"
    r = invoke("cutout", photo_file, "skimage:coffee", "-o", out, "--model", f"{BYO}:factory")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["coffee.png", "photo.png"]
    assert Image.open(out / "coffee.png").size == (600, 400)


def test_byo_model_from_a_py_file(tmp_path, photo_file):
    out = tmp_path / "o.webp"
    r = invoke("cutout", photo_file, "-o", out, "--model", f"{BYO}:factory")
    assert r.exit_code == 0, r.output
    a = np.asarray(Image.open(out))[..., 3]
    assert a.shape == (48, 64) and 0 < a.mean() < 255 and a.std() > 0


def _bomb(d):
    p = d / "bomb.png"
    Image.new("1", (11000, 10000)).save(p)
    return p


def _truncated(d):
    p = d / "trunc.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:3000])
    return p


def _text(d):
    p = d / "notes.jpg"
    p.write_text("not a photo")
    return p


@pytest.mark.parametrize("make, msg", [
    (lambda d: d / "nope.jpg", "photo not found"),
    (_text, "not an image"),
    (_truncated, "truncated"),
    (_bomb, "megapixel"),
])
def test_bad_photos_give_one_line_and_leave_nothing(tmp_path, make, msg):
    src = tmp_path / "in"
    src.mkdir()
    bad = make(src)
    before = files_under(tmp_path)
    out = tmp_path / "out"
    r = invoke("cutout", bad, "-o", out, "--model", f"{BYO}:factory")
    assert r.exit_code == 2
    assert msg in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert files_under(tmp_path) == before  # no output file, no new directory


def test_refuses_to_overwrite_input(tmp_path, photo_file):
    data = photo_file.read_bytes()
    r = invoke("cutout", photo_file, "-o", photo_file, "--model", f"{BYO}:factory")
    assert r.exit_code == 2 and "refusing to overwrite the input photo" in r.output
    assert photo_file.read_bytes() == data


def test_jpeg_output_refused(tmp_path, photo_file):
    r = invoke("cutout", photo_file, "-o", tmp_path / "x.jpg", "--model", f"{BYO}:factory")
    assert r.exit_code == 2 and "alpha channel" in r.output and not (tmp_path / "x.jpg").exists()


@pytest.fixture
def cache_copy(tmp_path):
    from mexport.models.weights import cache_dir

    d = tmp_path / "cache"
    d.mkdir()
    shutil.copy(cache_dir() / "u2netp.safetensors", d / "u2netp.safetensors")
    return d


def _run_with_cache(cache, photo_file, out):
    return invoke("cutout", photo_file, "-o", out, env={"MEXPORT_CACHE": str(cache)})


def test_missing_weights_name_the_pull_command(tmp_path, photo_file):
    out = tmp_path / "o.png"
    r = _run_with_cache(tmp_path / "empty", photo_file, out)
    assert r.exit_code == 2 and "mexport models pull" in r.output and not out.exists()


def test_weights_with_wrong_sha256(tmp_path, photo_file, cache_copy):
    f = cache_copy / "u2netp.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF  # one weight changed, file still parses
    f.write_bytes(bytes(data))
    out = tmp_path / "o.png"
    r = _run_with_cache(cache_copy, photo_file, out)
    assert r.exit_code == 2 and "sha256" in r.output and r.output.count("\n") == 1 and not out.exists()


def test_corrupt_and_wrong_checkpoints(tmp_path, photo_file):
    """A BYO factory loading a corrupt file, or a checkpoint of another model, through mexport's loader."""
    from safetensors.torch import save_file
    import torch

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 50)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(wrong))
    factory = tmp_path / "m.py"
    factory.write_text(
        "import os\n"
        f"import sys; sys.path.insert(0, {str(BYO.parent)!r})\n"
        "from tiny_modnet import factory as base\n"
        "from mexport.models.weights import load_into\n"
        "def factory():\n"
        "    m = base()\n"
        "    load_into(m.coarse, os.environ['CKPT'])\n"
        "    return m\n"
    )
    for ckpt, msg in ((corrupt, "corrupt weights file"), (wrong, "is not a checkpoint for TinyModNet")):
        out = tmp_path / "o.png"
        r = invoke("cutout", photo_file, "-o", out, "--model", f"{factory}:factory", env={"CKPT": str(ckpt)})
        assert r.exit_code == 2 and msg in r.output and r.output.count("\n") == 1, r.output
        assert not out.exists()


def test_bad_model_references(tmp_path, photo_file):
    for ref, msg in (("nomodel", "unknown model"), (f"{tmp_path}/none.py:f", "model file not found"),
                     (f"{BYO}:nothing", "has no callable 'nothing'")):
        r = invoke("cutout", photo_file, "-o", tmp_path / "o.png", "--model", ref)
        assert r.exit_code == 2 and msg in r.output, r.output
