"""Contract tests over every registered target, on the tiny BYO architecture (fast)."""

import hashlib

import numpy as np
import pytest

from mexport.export import TARGETS, ExportOptions, Target, export, get_target
from mexport.runner import Runner, TorchRunner

from .conftest import files_under


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else hashlib.sha256(
        b"".join(f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file())).hexdigest()


@pytest.fixture(scope="module", params=TARGETS.names())
def exported(request, tiny_pipeline, tmp_path_factory):
    target = get_target(request.param)
    out = tmp_path_factory.mktemp(request.param) / "art"
    result = export(request.param, tiny_pipeline, out, target.Options(precision="fp32"))
    return target, out, result


def test_writes_exactly_the_contract_files(exported, tiny_pipeline):
    target, out, result = exported
    companions = {c.name for r in tiny_pipeline.roles() for c in target.companions(out / f"{r}{target.suffix}")}
    models = sorted(p.name for p in out.iterdir() if p.name not in ("check.json", "recipe.json", *companions))
    assert models == sorted(f"{r}{target.suffix}" for r in tiny_pipeline.roles())  # no refine: single network
    assert result.passed and result.checks["fused"]["median_psnr"] > 60


def test_provenance_is_embedded(exported, tiny_pipeline):
    target, out, _ = exported
    for role in tiny_pipeline.roles():
        prov = target.read_provenance(out / f"{role}{target.suffix}")
        assert prov.role == role and prov.model == "tiny-modnet" and prov.precision == "fp32"
        assert prov.weights_sha256 == tiny_pipeline.model_info.weights_sha256
        assert prov.pipeline_spec == tiny_pipeline.spec and prov.mexport_version


def test_fused_runner_follows_the_runner_protocol_and_matches_torch(exported, tiny_pipeline):
    target, out, _ = exported
    runner = target.runner(out / f"fused{target.suffix}")
    assert isinstance(runner, Runner) and isinstance(TorchRunner(tiny_pipeline), Runner)
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    got, want = runner(x), TorchRunner(tiny_pipeline)(x)
    assert got.shape == want.shape == (1, 1, 128, 128) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


def test_two_identical_exports_give_the_same_files(exported, tiny_pipeline, tmp_path):
    """Byte-identical, or for a format whose writer is not byte-reproducible (ORT), identical in
    what the fingerprint covers; either way the fingerprint tells a different export apart."""
    target, out, _ = exported
    again = tmp_path / "again"
    export(target.name, tiny_pipeline, again, target.Options(precision="fp32", check=False))
    for role in tiny_pipeline.roles():
        a, b = again / f"{role}{target.suffix}", out / f"{role}{target.suffix}"
        assert target.fingerprint(a) == target.fingerprint(b)
        if type(target).fingerprint is Target.fingerprint:  # the base class's: the bytes
            assert sha(a) == sha(b)
    assert target.fingerprint(out / f"coarse{target.suffix}") != target.fingerprint(out / f"fused{target.suffix}")


def test_unwritable_output_leaves_nothing(tiny_pipeline, tmp_path):
    """Tests run as root here, so mode bits cannot make a directory unwritable: use a path whose
    parent is a regular file, which nobody can create a directory under."""
    from mexport.errors import InputError

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for name in TARGETS.names():
        before = files_under(tmp_path)
        with pytest.raises(InputError, match="cannot write"):
            export(name, tiny_pipeline, blocker / "out", ExportOptions())
        assert files_under(tmp_path) == before
