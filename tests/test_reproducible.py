"""The same export, twice, in two processes with different hash seeds, gives the same files: an
in-process repeat cannot see what depends on the process (hash-table order in protobuf maps, a
conversion date, random UUIDs). Every registered runtime, and a bundle; the tiny BYO model at
64/128 px, each pair of processes run side by side. ``convert.log`` is the converters' log, not an
export product: it is left out."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mexport.runtime import Runtime
from mexport.runtimes import RUNTIMES, get_runtime

from .conftest import ROOT, TINY



def command(name: str) -> list[str]:
    """The CLI command that exports runtime ``name`` (ORT: ``onnx --ort``)."""
    rt = get_runtime(name)
    return [rt.command or rt.name] + ([rt.switch[0]] if rt.switch else [])


def twice(args: list[str], outs: list[Path]) -> None:
    """``mexport ARGS -o OUT`` for each OUT, concurrently, PYTHONHASHSEED 1 and 2."""
    procs = []
    for seed, out in enumerate(outs, 1):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(seed)}
        procs.append(subprocess.Popen([sys.executable, "-m", "mexport.cli", *args, "-o", str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "convert.log"}


@pytest.mark.parametrize("target", RUNTIMES.names())
def test_exports_are_identical_across_processes(target, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    twice([*command(target), "--model", TINY, "--no-check", "-q"], outs)
    t = get_runtime(target)
    a, b = digests(outs[0]), digests(outs[1])
    assert sorted(a) == sorted(b) and any(n.startswith("fused") for n in a)
    if type(t).fingerprint is Runtime.fingerprint:  # byte-reproducible formats: every file, byte for byte
        assert a == b, {n for n in a if a[n] != b[n]}
    else:  # ORT format: onnxruntime's kernel table comes out in hash-map order; its content does not
        for role in ("coarse", "fused"):
            assert t.fingerprint(outs[0] / f"{role}{t.suffix}") == t.fingerprint(outs[1] / f"{role}{t.suffix}")


def test_bundles_are_identical_across_processes(tiny_onnx, tmp_path):
    outs = [tmp_path / "a.zip", tmp_path / "b.zip"]
    twice(["bundle", "create", str(tiny_onnx), "--model", TINY, "--photos", "astronaut", "-q"], outs)
    assert outs[0].read_bytes() == outs[1].read_bytes()
