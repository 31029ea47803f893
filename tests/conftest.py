import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "alphamatting"
BYO = ROOT / "tests" / "byo" / "tiny_modnet.py"


@pytest.fixture(scope="session")
def alphamatting() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: CI and every developer machine have ../shared beside the repo")
    return SHARED


@pytest.fixture(scope="session")
def reference_pipeline():
    from mexport.api import load_pipeline

    return load_pipeline("u2netp-refine")


@pytest.fixture(scope="session")
def tiny_pipeline():
    from mexport.api import load_pipeline

    return load_pipeline(f"{BYO}:factory")


@pytest.fixture
def photo_file(tmp_path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    p = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
    return p


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")} if path.exists() else set()


@pytest.fixture(scope="session")
def reference_int8_exports(tmp_path_factory):
    """`mexport onnx --int8` and `mexport tflite --int8` with no other option, as a user runs them:
    each must write a validated int8 model of the default reference model (exit 0)."""
    from click.testing import CliRunner

    from mexport.cli import main

    root = tmp_path_factory.mktemp("reference")
    out = {}
    for target in ("onnx", "tflite"):
        d = root / f"{target}-int8"
        r = CliRunner().invoke(main, [target, "--int8", "-o", str(d)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out[target] = d
    return out
