"""The export contract, over every registered runtime x every precision it offers x a
single-network and a coarse+refine model (the tiny BYO models, 64-128 px). A runtime added to the
registry is held to all of it with no change here.

Per export: exactly the contract's files; provenance embedded in each; every role's runner follows
the Runner protocol; the fused model and the coarse+refine pair reproduce the float model (fp32
within 1e-4, every other precision at its default gate); integer precisions really are integer;
the runtime describes each file for a bundle from the file itself. Per runtime: two fp32 exports
are identical, a bundle of the coarse+refine export verifies its golden vectors, an unwritable
output leaves nothing.
"""

import hashlib
import json

import numpy as np
import pytest

from mexport.errors import InputError
from mexport.export import export
from mexport.runtime import ExportOptions, Runtime
from mexport.runner import Runner, TorchRunner
from mexport.runtimes import get_runtime, names, open_runner
from mexport.validate.artifacts import discover
from mexport.validate.fidelity import DEFAULT_MIN_PSNR

from .conftest import BYO, files_under

MODELS = {"single": f"{BYO}:factory", "coarse+refine": f"{BYO.parent / 'tiny_refine.py'}:factory"}
# Options a precision needs besides itself (a runtime's own rules: int4 per-block weights exist
# from iOS18 on); calibration is cut to 2 photos to keep the suite fast.
NEEDS = {("coreml", "weights-int4"): {"deployment_target": "iOS18"}}
CASES = [(n, p, m) for n in names() for p in get_runtime(n).precisions for m in MODELS]


@pytest.fixture(scope="module")
def pipelines():
    from mexport.api import load_pipeline

    return {k: load_pipeline(v) for k, v in MODELS.items()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, pipelines):
    """Each case exported once, on demand (a module-level cache: parametrized tests share it)."""
    cache = {}

    def get(runtime, precision, model):
        key = (runtime, precision, model)
        if key not in cache:
            rt = get_runtime(runtime)
            extra = NEEDS.get((runtime, precision), {})
            if precision in rt.calibrated_precisions:
                extra = {**extra, "calib_count": 2}
            out = tmp_path_factory.mktemp(f"{runtime}-{precision}") / "out"
            cache[key] = out, export(runtime, pipelines[model], out, rt.Options(precision=precision, **extra))
        return cache[key]

    return get


def _ids(case):
    return "-".join(case)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_export_meets_the_contract(case, exports, pipelines):
    runtime, precision, model = case
    rt, pipe = get_runtime(runtime), pipelines[model]
    out, result = exports(*case)
    roles = pipe.roles()

    # exactly the contract's files: the recipe.json of a quantized export names what it applied
    companions = {c.name for r in roles for c in rt.companions(out / f"{r}{rt.suffix}")}
    recipe = rt.read_provenance(out / f"fused{rt.suffix}").recipe
    extra = {"check.json", "convert.log"} | ({"recipe.json"} if recipe else set())
    assert {p.name for p in out.iterdir()} == {f"{r}{rt.suffix}" for r in roles} | companions | extra
    if precision in rt.recipe_precisions:
        assert recipe

    # provenance in every file
    for role in roles:
        prov = rt.read_provenance(out / f"{role}{rt.suffix}")
        assert (prov.role, prov.target, prov.precision) == (role, runtime, precision)
        assert prov.model == pipe.model_info.name and prov.weights_sha256 == pipe.model_info.weights_sha256
        assert prov.pipeline_spec == pipe.spec and prov.mexport_version and prov.converters.get("torch")

    # the check that gated the export, as check.json records it, with real numbers
    check = json.loads((out / "check.json").read_text())
    gate = DEFAULT_MIN_PSNR[precision]
    assert check["passed"] is True and check["threshold_db"] == gate
    gated = {"fused", "pair"} if model == "coarse+refine" else {"fused"}
    assert {k for k, v in check["checks"].items() if v["gated"]} == gated
    for name in gated:
        assert check["checks"][name]["median_psnr"] >= gate and check["checks"][name]["finite"]
    assert set(check["facts"]) == set(roles)

    # runners: the protocol, the shape, and the numbers again, on a real photo of their own (not
    # calibrated on: the calibration set's photos are others)
    from mexport.photos import default_photos, prepare

    x = prepare(default_photos(("rocket",))[0][1], pipe.spec)[0]
    want = TorchRunner(pipe)(x)
    runners = {"fused": open_runner(runtime, {"fused": out / f"fused{rt.suffix}"})}
    if model == "coarse+refine":
        runners["pair"] = open_runner(runtime, {r: out / f"{r}{rt.suffix}" for r in ("coarse", "refine")}, pipe.spec)
    for name, runner in runners.items():
        got = runner(x)
        assert isinstance(runner, Runner) and got.shape == want.shape and got.dtype == np.float32, name
        if precision == "fp32":
            assert np.abs(got - want).max() <= 1e-4, (name, float(np.abs(got - want).max()))
        else:
            assert 10 * np.log10(1 / max(float(np.mean((got - want) ** 2)), 1e-20)) >= gate, name

    # what a bundle says about each file comes from the file itself
    for role in roles:
        d = rt.describe(out / f"{role}{rt.suffix}", rt.read_provenance(out / f"{role}{rt.suffix}"))
        assert d["inputs"] and d["outputs"] and not d["source"].startswith("pipeline contract")
        size = pipe.spec.coarse_size if role == "coarse" else pipe.spec.refine_size
        assert np.prod(d["outputs"][0]["shape"]) == np.prod(size)  # one alpha channel, NCHW or NHWC
        assert rt.needs(d["min_runtime"])


@pytest.mark.parametrize("runtime", names())
def test_two_identical_exports_give_the_same_files(runtime, exports, pipelines, tmp_path):
    """Byte-identical, or for a format whose writer is not byte-reproducible (ORT), identical in
    what the fingerprint covers; either way the fingerprint tells a different export apart."""
    rt = get_runtime(runtime)
    out, _ = exports(runtime, "fp32", "single")
    again = tmp_path / "again"
    export(runtime, pipelines["single"], again, rt.Options(precision="fp32", check=False))
    for role in pipelines["single"].roles():
        a, b = again / f"{role}{rt.suffix}", out / f"{role}{rt.suffix}"
        assert rt.fingerprint(a) == rt.fingerprint(b)
        if type(rt).fingerprint is Runtime.fingerprint:  # the base class's: the bytes
            assert _sha(a) == _sha(b)
    assert rt.fingerprint(out / f"coarse{rt.suffix}") != rt.fingerprint(out / f"fused{rt.suffix}")


@pytest.mark.parametrize("runtime", names())
def test_a_bundle_of_every_runtime_verifies_its_golden_vectors(runtime, exports, tmp_path):
    from mexport.bundle import create_bundle, verify_bundle

    out, _ = exports(runtime, "fp32", "coarse+refine")
    result = create_bundle([out], tmp_path / "b.zip", model=MODELS["coarse+refine"], photos=("astronaut",))
    arts = {a["kind"]: a for a in result.manifest["artifacts"]}
    assert set(arts) == {"fused", "pair"} and all(a["format"] == runtime for a in arts.values())
    assert all(a["golden"] and a["validation"]["passed"] for a in arts.values())
    report = verify_bundle(result.path)
    assert report.passed and len(report.results) == 2 and not report.skipped
    assert all(r["max_abs"] <= 1e-3 for r in report.results)


@pytest.mark.parametrize("runtime", names())
def test_unwritable_output_leaves_nothing(runtime, pipelines, tmp_path):
    """Tests run as root here, so mode bits cannot make a directory unwritable: use a path whose
    parent is a regular file, which nobody can create a directory under."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    before = files_under(tmp_path)
    with pytest.raises(InputError, match="cannot write"):
        export(runtime, pipelines["single"], blocker / "out", get_runtime(runtime).Options())
    assert files_under(tmp_path) == before


def test_every_runtime_is_a_command_a_runner_and_a_matrix_row():
    """What registering a runtime gives it, with nothing else to edit: a CLI command (or a switch
    of one), its flags, a runner for `validate`/`bench`, rows in `bench --matrix`."""
    from mexport import api
    from mexport.bench.matrix import variants

    commands = {c.name: c for c in api.export_commands()}
    keys = {v.key for v in variants()}
    for n in names():
        rt = get_runtime(n)
        cmd = commands[rt.command or rt.name]
        assert n in cmd.runtimes and (rt.switch is None or rt.switch[0] in {f for o in cmd.options for f in o.flags})
        assert {f"{n}-{p}" for p in rt.benchmark_precisions} <= keys
        assert rt.title and rt.runner_label and rt.suffix and rt.distributions
        assert set(rt.benchmark_precisions) <= set(rt.precisions) and rt.default_precision in rt.precisions
    with pytest.raises(InputError, match="unknown target 'onnxx'.*Did you mean 'onnx'"):
        get_runtime("onnxx")


def test_a_single_file_and_a_pair_are_found_as_such(exports):
    out, _ = exports("onnx", "fp32", "coarse+refine")
    kinds = sorted(a.kind for a in discover([out]))
    assert kinds == ["fused", "pair"]


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else hashlib.sha256(
        b"".join(f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file())).hexdigest()


def test_export_options_are_checked_for_the_runtime(pipelines, tmp_path):
    with pytest.raises(InputError, match="does not offer precision 'fp16'"):
        export("ort", pipelines["single"], tmp_path / "o", get_runtime("ort").Options(precision="fp16"))
    with pytest.raises(InputError, match="takes OnnxOptions"):
        export("onnx", pipelines["single"], tmp_path / "o", ExportOptions())
    assert not (tmp_path / "o").exists()
