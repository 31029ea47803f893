"""TFLite artifacts on an older LiteRT runtime in another Python (``--tflite-python``): the
tflite-runtime 2.14 that app teams pin, in .venv-tflite-runtime (created here when missing, by the
same script setup.sh runs). Tiny models only: the BYO architecture at 128 px, and one-op graphs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mexport.errors import InputError, UnsupportedOpError
from mexport.export import export
from mexport.runtimes import get_runtime
from mexport.runtimes.tflite import convert as tfl
from mexport.runtimes.tflite import flatbuffer as fbuf
from mexport.runtimes.tflite import inspection as insp
from mexport.runtimes.tflite.runner import LiteRTRunner
from mexport.runtimes.tflite.external import WORKER, blocking_op

from .conftest import BYO, ROOT

OLD_VERSION = "2.14.0"


@pytest.fixture(scope="session")
def old_python() -> str:
    py = ROOT / ".venv-tflite-runtime" / "bin" / "python"
    probe = [str(py), "-c", "import tflite_runtime, numpy"]
    if not py.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        r = subprocess.run(["bash", str(ROOT / "scripts" / "tflite_runtime_venv.sh")], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"scripts/tflite_runtime_venv.sh failed (it needs PyPI):\n{r.stderr[-2000:]}")
    return str(py)


@pytest.fixture(scope="module")
def tiny_tflite(tiny_pipeline, tmp_path_factory):
    root = tmp_path_factory.mktemp("tflrt")
    t = get_runtime("tflite")
    return {p: export("tflite", tiny_pipeline, root / p, t.Options(precision=p, check=False)) for p in ("fp32", "int8")}


def _inputs(n: int) -> list[np.ndarray]:
    return [np.random.default_rng(i).random((1, 3, 128, 128), dtype=np.float32) for i in range(n)]


def test_fp32_on_tflite_runtime_matches_ai_edge_litert(tiny_tflite, old_python):
    """Same file, two runtimes, identical float kernels: near-identical alphas. One worker process
    serves every call (the photo loop of a validation run)."""
    path = tiny_tflite["fp32"].files["fused"]
    t = get_runtime("tflite")
    new = t.runner(path, threads=1)
    with t.runner(path, threads=1, python=old_python) as old:
        assert old.runtime == {"name": "tflite-runtime", "version": OLD_VERSION, "python": old_python}
        assert old.name.startswith(f"tflite-runtime-{OLD_VERSION}:fused.tflite:fp32")
        assert new.runtime["name"] == "ai-edge-litert"
        pid = old.proc.pid
        for x in _inputs(3):
            a, b = old(x), new(x)
            assert a.shape == b.shape == (1, 1, 128, 128) and a.dtype == np.float32
            assert np.abs(a - b).max() <= 1e-5
        assert old.proc.pid == pid and old.proc.poll() is None
        assert len(old.invoke_ms(x, repeat=3)) == 3
    assert old.proc.poll() is not None  # closed: the worker is gone


def test_int8_on_tflite_runtime_close_to_ai_edge_litert(tiny_tflite, old_python):
    """Full int8 with float I/O: the two runtimes' int8 kernels may round differently, by about
    one step of the 8-bit output (seen: 0.0049 on this model)."""
    path = tiny_tflite["int8"].files["fused"]
    t = get_runtime("tflite")
    new = t.runner(path, threads=1)
    with t.runner(path, threads=1, python=old_python) as old:
        for x in _inputs(2):
            assert np.abs(old(x) - new(x)).max() <= 3 / 256


def test_worker_falls_back_to_ai_edge_litert(tiny_tflite):
    """A Python without tflite-runtime but with ai-edge-litert (this one) runs it too, and says so."""
    from importlib.metadata import version

    path = tiny_tflite["fp32"].files["fused"]
    with get_runtime("tflite").runner(path, python=sys.executable) as r:
        assert r.runtime == {"name": "ai-edge-litert", "version": version("ai-edge-litert"), "python": sys.executable}
        x = _inputs(1)[0]
        assert np.abs(r(x) - LiteRTRunner(path)(x)).max() == 0.0


def test_worker_imports_only_numpy_and_the_runtime():
    """It runs in an environment without mexport (or torch): anything else it imported would fail there."""
    allowed = {"json", "os", "sys", "time", "traceback", "numpy", "tflite_runtime", "ai_edge_litert", "importlib.metadata"}
    names = set()
    for node in ast.walk(ast.parse(WORKER.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the worker"
            names.add(node.module)
    assert names <= allowed, names - allowed


def _artifact(tmp_path, tiny_pipeline, module: nn.Module, name: str):
    """A one-op graph converted by litert-torch and written as a mexport artifact (provenance of
    the tiny pipeline: the runner reads it before the runtime sees the model)."""
    from mexport.export import make_provenance

    t = get_runtime("tflite")
    data = tfl.litert_convert(module.eval(), "fused", {"image": torch.rand(1, 8, 8, 1)})
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(fbuf.finalize(data, make_provenance(tiny_pipeline, t, "fused", t.Options())))
    return path


def test_new_opcode_blocks_tflite_runtime_and_is_named(tmp_path, tiny_pipeline, old_python):
    """Found by trying ops: litert-torch lowers avg_pool2d(ceil_mode=True, count_include_pad=False)
    to STABLEHLO_REDUCE_WINDOW, an opcode (198) newer than tflite-runtime 2.14's schema, which then
    says only "builtin_code out of range: 198"; the error names the op from the model."""

    class Pool(nn.Module):
        def forward(self, image):
            x = image.permute(0, 3, 1, 2)
            y = nn.functional.avg_pool2d(x, 3, 2, ceil_mode=True, count_include_pad=False)
            return {"alpha": y.permute(0, 2, 3, 1)}

    path = _artifact(tmp_path, tiny_pipeline, Pool(), "pool")
    m = fbuf.model_t(path.read_bytes())
    assert "STABLEHLO_REDUCE_WINDOW" in {insp.op_name(c) for c in m.operatorCodes}, \
        "litert-torch lowers this pool differently now: pick another op newer than 2.14"
    # ai-edge-litert runs it: a valid model, blocked only by the old runtime
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    with pytest.raises(UnsupportedOpError) as e:
        get_runtime("tflite").runner(path, python=old_python)
    err = e.value
    assert (err.op, err.op_version, err.runtime, err.runtime_version) == ("STABLEHLO_REDUCE_WINDOW", 1, "tflite-runtime", OLD_VERSION)
    assert "has no op STABLEHLO_REDUCE_WINDOW version 1" in str(err) and "out of range: 198" in str(err)


def test_op_version_too_new_is_named(tiny_tflite, tmp_path, old_python):
    """Crafted: no litert-torch lowering with a known op at a version newer than 2.14's was found
    (tried 20-odd ops: 5-6D slices/pads/transposes, casts, int64, gathers; all load), so the tiny
    model's CONV_2D is stamped version 99 to show the other message, "Didn't find op for builtin
    opcode 'CONV_2D' version '99'", comes back naming the op and its version."""
    m = fbuf.model_t(tiny_tflite["fp32"].files["fused"].read_bytes())
    for c in m.operatorCodes:
        if insp.op_name(c) == "CONV_2D":
            c.version = 99
    path = tmp_path / "fused.tflite"
    path.write_bytes(fbuf.pack(m))
    with pytest.raises(UnsupportedOpError, match="has no op CONV_2D version 99") as e:
        get_runtime("tflite").runner(path, python=old_python)
    assert (e.value.op, e.value.op_version) == ("CONV_2D", 99)


def test_blocking_op_reads_the_runtimes_messages():
    assert blocking_op("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version ...") == ("FULLY_CONNECTED", 12)
    assert blocking_op("Encountered unresolved custom op: MyOp.\nNode number 3 (MyOp) failed to prepare.") == ("CUSTOM:MyOp", None)
    assert blocking_op("Op builtin_code out of range: 206. Are you using old TFLite binary with newer model?") == ("STABLEHLO_COMPOSITE", None)
    assert blocking_op("Could not open 'x.tflite'.") is None


def test_bad_python_is_an_input_error(tiny_tflite, tmp_path):
    with pytest.raises(InputError, match="cannot start it"):
        get_runtime("tflite").runner(tiny_tflite["fp32"].files["fused"], python=tmp_path / "no-python")


def test_cli_validate_bench_cutout_report_the_runtime(tiny_tflite, tmp_path, old_python, photo_file):
    from click.testing import CliRunner

    from mexport.cli import main

    d = str(tiny_tflite["fp32"].out_dir)
    model = ["--model", f"{BYO}:factory"]
    r = CliRunner().invoke(main, ["validate", d, *model, "--tflite-python", old_python, "--report", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert [a["runtime"]["name"] for a in rep["artifacts"]] == ["tflite-runtime"] * len(rep["artifacts"])
    assert all(a["runtime"]["version"] == OLD_VERSION for a in rep["artifacts"])
    assert f"ran on tflite-runtime {OLD_VERSION}" in (tmp_path / "rep" / "validate.md").read_text()
    # without the option, the report says ai-edge-litert ran it
    r = CliRunner().invoke(main, ["validate", d, *model, "--json"])
    assert {a["runtime"]["name"] for a in json.loads(r.output)["artifacts"]} == {"ai-edge-litert"}

    fused = str(tiny_tflite["fp32"].files["fused"])
    r = CliRunner().invoke(main, ["bench", fused, "--threads", "1", "--runs", "2", "--warmup", "1", "--tflite-python", old_python, "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    assert row["runtime"]["name"] == "tflite-runtime" and row["runner"].startswith("tflite-runtime-2.14.0")

    r = CliRunner().invoke(main, ["cutout", str(photo_file), "-o", str(tmp_path / "cut.png"), "--artifact", fused,
                                  "--tflite-python", old_python])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cut.png").is_file()


def test_cli_validate_names_the_blocking_op(tmp_path, tiny_pipeline, old_python):
    from click.testing import CliRunner

    from mexport.cli import main

    class Pool(nn.Module):
        def forward(self, image):
            y = nn.functional.avg_pool2d(image.permute(0, 3, 1, 2), 3, 2, ceil_mode=True, count_include_pad=False)
            return {"alpha": y.permute(0, 2, 3, 1)}

    path = _artifact(tmp_path, tiny_pipeline, Pool(), "fused")
    r = CliRunner().invoke(main, ["validate", str(path), "--model", f"{BYO}:factory", "--tflite-python", old_python])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "STABLEHLO_REDUCE_WINDOW version 1" in r.output and OLD_VERSION in r.output


def test_the_runner_keeps_litert_s_delegate_log_off_the_terminal(tiny_tflite):
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2 for every
    interpreter, through `validate -q`. A fresh process, as the first runner in it: the runner runs
    delegated (its name says so) and nothing of the runtime's reaches stderr."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    from pathlib import Path

    fused = Path(tiny_tflite["fp32"].out_dir) / "fused.tflite"
    code = ("from mexport.runtimes.tflite.runner import LiteRTRunner; import numpy as np; "
            f"r = LiteRTRunner({str(fused)!r}); "
            "print(r.name, r(np.zeros((1, 3, 128, 128), np.float32)).shape)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("litert:fused.tflite:fp32 "), run.stderr
    assert "XNNPACK" not in run.stderr and not run.stderr.strip(), run.stderr
