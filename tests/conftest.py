from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "alphamatting"
BYO = ROOT / "tests" / "byo" / "tiny_modnet.py"


def pytest_configure(config):
    """Under pytest-xdist (scripts/test.sh runs two workers, one per core), each worker gets its
    share of the cores for torch's own threads: two workers with two threads each on two cores
    spin against each other."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


# The groups that take longest (minutes each), started first: xdist otherwise starts the groups
# with the most tests first, and a worker left alone at the end with one of these doubles the tail.
LONG_GROUPS = ("reference-int8", "tests.test_tflite", "tests.test_executorch")


def _group(item) -> str:
    uses_reference = "reference_int8_exports" in getattr(item, "fixturenames", ())
    return "reference-int8" if uses_reference else item.module.__name__


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(LONG_GROUPS)}
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: the rest keep their order


def pytest_itemcollected(item):
    """Which tests run in the same worker under ``--dist loadgroup``: a module's tests together, so
    its module-scoped exports are built once; and every test of any module that uses the session's
    full-size default int8 exports (``reference_int8_exports``, two minutes to build) in one group,
    so they are built once per run. Marked as each test is collected: xdist turns the marker into
    the scheduling scope in its own collection hook."""
    item.add_marker(pytest.mark.xdist_group(_group(item)))


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


# What `mexport onnx --int8` and `mexport tflite --int8` printed in reference_int8_exports.
REFERENCE_OUTPUT: dict[str, str] = {}


@pytest.fixture(scope="session")
def reference_int8_exports(tmp_path_factory):
    """`mexport onnx --int8` and `mexport tflite --int8` with no other option, as a user runs them:
    each must write a validated int8 model of the default reference model (exit 0). What they
    printed (stdout and stderr) is kept in REFERENCE_OUTPUT."""
    from click.testing import CliRunner

    from mexport.cli import main

    root = tmp_path_factory.mktemp("reference")
    out = {}
    for target in ("onnx", "tflite"):
        d = root / f"{target}-int8"
        r = CliRunner().invoke(main, [target, "--int8", "-o", str(d)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out[target] = d
        REFERENCE_OUTPUT[target] = r.output
    return out


TINY = f"{BYO}:factory"


def invoke(*args, env=None, input=None):
    """The CLI in-process, as a user types it; exceptions that escape the CLI fail the test. Python
    warnings go to its stderr as in a real run (pytest would record them instead, hiding a warning
    line printed before an error line)."""
    import sys
    import warnings

    from click.testing import CliRunner

    from mexport.cli import main

    def to_stderr(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = to_stderr  # sys.stderr is the runner's while it runs
        return CliRunner().invoke(main, [str(a) for a in args], env=env, input=input, catch_exceptions=False)


def one_error_line(r, code: int, *needles: str) -> str:
    """A failed command as the issue wants it: exit ``code``, exactly one line on stderr (the error),
    naming what went wrong, and no traceback anywhere."""
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def staging_left(root: Path) -> list[Path]:
    """mexport's staging directories and temporary files under ``root`` (none may outlive a run)."""
    return [p for p in files_under(root) if p.name.startswith(".mexport-") or p.name.endswith(".tmp")]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The tiny BYO model's checked fp32 ONNX export (coarse.onnx, fused.onnx). Shared: copy, never modify."""
    from mexport import api

    out = tmp_path_factory.mktemp("tiny") / "onnx-fp32"
    api.export("onnx", out, model=TINY)
    return out


@pytest.fixture(scope="session")
def tiny_coreml(tmp_path_factory) -> Path:
    """The tiny BYO model's checked fp16 Core ML export (coarse/fused.mlpackage). Shared: copy it."""
    from mexport import api

    out = tmp_path_factory.mktemp("tiny") / "coreml-fp16"
    api.export("coreml", out, model=TINY, precision="fp16")
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_onnx, tmp_path_factory) -> Path:
    """A verified bundle (zip) of the tiny model's ONNX export. Shared: copy or rewrite it elsewhere."""
    from mexport.bundle import create_bundle

    return create_bundle([tiny_onnx], tmp_path_factory.mktemp("bundle") / "tiny.zip", model=TINY, photos=("astronaut",)).path


def reseal(src: Path, dst: Path, change: dict[str, bytes] | None = None, edit=None) -> Path:
    """A copy of a bundle zip with some files' bytes replaced and the manifest edited (``edit``
    takes the manifest dict), then every checksum recomputed and the manifest resealed with a valid
    self-checksum: what anyone can do to a bundle without a key."""
    import hashlib
    import json
    import zipfile

    from mexport.bundle.manifest import MANIFEST, dumps, tree_sha256

    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files.update(change or {})
    m = json.loads(files.pop(MANIFEST))
    for name in change or {}:
        m["files"][name] = {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}
    digests = {n: f["sha256"] for n, f in m["files"].items()}
    for art in m["artifacts"]:
        for model in art["models"].values():
            model["sha256"] = tree_sha256(digests, model["file"]) if model.get("directory") else digests[model["file"]]
    if edit is not None:
        edit(m)
    files[MANIFEST] = dumps(m)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
    return dst

