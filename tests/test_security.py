"""Opening what someone sent you: an artifact or a bundle is data, never code, and never a way to
make mexport read outside it or exhaust the machine. Checksums catch damage; signatures catch
tampering."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import TINY, invoke, one_error_line, staging_left

PAYLOAD = """import pathlib
pathlib.Path({marker!r}).write_text("the payload ran")


def factory():
    raise SystemExit(0)
"""


def set_provenance_model(src: Path, dst: Path, model: str) -> None:
    """A copy of an ONNX artifact whose embedded provenance names another model (as anyone can write)."""
    import onnx

    m = onnx.load(src)
    for p in m.metadata_props:
        if p.key == "mexport.provenance":
            prov = json.loads(p.value)
            prov["model"] = model
            p.value = json.dumps(prov)
    onnx.save(m, dst)


@pytest.fixture
def received(tiny_onnx, tmp_path, monkeypatch):
    """A directory as a user receives it: fused.onnx, and payload.py beside it, which leaves a marker
    file if anything imports it. The working directory and sys.path point at it, so each form of
    reference would import it if mexport tried."""
    d = tmp_path / "received"
    d.mkdir()
    marker = tmp_path / "marker"
    (d / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))
    yield d, marker
    sys.modules.pop("payload", None)


REFERENCES = {"file": "payload.py:factory", "absolute file": "{dir}/payload.py:factory", "module": "payload:factory"}


@pytest.mark.parametrize("form", list(REFERENCES))
@pytest.mark.parametrize("command", ["validate", "bundle create"])
def test_an_artifact_never_imports_the_code_its_provenance_names(received, tiny_onnx, command, form):
    d, marker = received
    set_provenance_model(tiny_onnx / "fused.onnx", d / "fused.onnx", REFERENCES[form].format(dir=d))
    args = ["validate", "fused.onnx"] if command == "validate" else ["bundle", "create", "fused.onnx", "-o", "x.zip"]
    line = one_error_line(invoke(*args, "-q"), 2, "not a registered model", "never imports code", "pass --model")
    assert REFERENCES[form].format(dir=d) in line
    assert not marker.exists() and "payload" not in sys.modules
    assert sorted(p.name for p in d.iterdir()) == ["fused.onnx", "payload.py"]  # no bundle, no staging


def test_the_same_reference_given_as_model_is_imported(received, tiny_onnx):
    """The control: the payload does run when the user names it, so the test above can fail. Its
    factory's sys.exit(0) is an error, not a silent success."""
    d, marker = received
    set_provenance_model(tiny_onnx / "fused.onnx", d / "fused.onnx", "payload.py:factory")
    one_error_line(invoke("validate", "fused.onnx", "--model", "payload.py:factory", "-q"), 2, "sys.exit(0)")
    assert marker.read_text() == "the payload ran"


def test_a_registered_name_in_provenance_still_resolves(tiny_onnx, tmp_path):
    """The tiny model's name is not registered: its artifacts need --model; with it they pass."""
    one_error_line(invoke("validate", tiny_onnx / "fused.onnx", "-q"), 2, "'tiny-modnet'", "not a registered model")
    r = invoke("validate", tiny_onnx / "fused.onnx", "--model", TINY, "-q")
    assert r.exit_code == 0 and r.stdout.strip() == "PASS"
