"""ExecuTorch specifics beyond the contract suite (which holds every runtime to the export
contract): what XNNPACK took, said on the terminal and in check.json, and what it did not, named;
a recipe's float layers left unannotated by the pt2e quantizer; the reference model's int8 on
held-out real photos, at the default gate."""

import json

import numpy as np
import pytest

from mexport.errors import InputError
from mexport.quantize.recipe import Recipe

from .conftest import BYO, TINY, invoke

TINY_REFINE = f"{BYO.parent / 'tiny_refine.py'}:factory"


def test_the_delegation_is_on_the_terminal_and_in_check_json(tmp_path):
    r = invoke("executorch", "--model", TINY_REFINE, "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    facts = json.loads((tmp_path / "o" / "check.json").read_text())["facts"]
    for role in ("coarse", "refine", "fused"):
        x = facts[role]["xnnpack"]
        assert x["partitions"] >= 1 and x["delegated"] == x["nodes"] > 0 and x["fallback"] == 0, (role, x)
    n = facts["fused"]["xnnpack"]["nodes"]
    assert f"XNNPACK delegation (fused): {n}/{n} nodes in 1 partition(s)" in r.output


def test_a_node_xnnpack_does_not_take_is_named(tmp_path):
    """A cumulative sum has no XNNPACK kernel: the program still runs (portable kernels), and the
    verdict and check.json name the op left out."""
    model = tmp_path / "m.py"
    model.write_text(
        "import torch\nfrom mexport import MattingModel, PipelineSpec\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)\n"
        "    def forward(self, x):\n        return torch.sigmoid(torch.cumsum(self.conv(x), dim=3) / 64)\n"
        "def factory():\n    torch.manual_seed(0)\n"
        "    return MattingModel(coarse=M(), spec=PipelineSpec(coarse_size=(32, 32), refine_size=(64, 64)), name='cumsum')\n")
    r = invoke("executorch", "--model", f"{model}:factory", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    x = json.loads((tmp_path / "o" / "check.json").read_text())["facts"]["fused"]["xnnpack"]
    assert x["fallback"] >= 1 and any("cumsum" in op for op in x["fallback_ops"]) and x["delegated"] >= 1, x
    line = next(ln for ln in r.output.splitlines() if "XNNPACK delegation (fused)" in ln)
    assert "left to the portable kernels" in line and "cumsum" in line


def test_recipe_float_layers_are_left_unannotated(tiny_pipeline):
    """The pt2e quantizer annotates by the recipe, op by op: the float layer's conv keeps its float
    weight, the int8 one's is stored in int8 (a per-channel dequantize feeds it)."""
    from mexport.runtimes.executorch.quantize import module_path, quantize

    graph = tiny_pipeline.graph("coarse").eval()
    example = tiny_pipeline.example_inputs("coarse")
    recipe = Recipe(name="r", layers={"coarse.enc1": "float"})
    q = quantize(graph, example, [example], recipe)
    convs = {module_path(n): n for n in q.graph.nodes if n.op == "call_function" and "conv2d" in str(n.target)}
    fed_by = {path: str(n.args[1].target) if n.args[1].op == "call_function" else n.args[1].op for path, n in convs.items()}
    assert fed_by["coarse.enc1.0"] == "get_attr", fed_by  # a float weight, as the model has it
    assert all("dequantize_per_channel" in v for k, v in fed_by.items() if k.startswith(("coarse.enc2", "coarse.detail"))), fed_by


def test_recipes_it_cannot_apply_are_refused_before_converting(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(Recipe(name="r", layers={"coarse.enc1": "int16"}).to_json())
    r = invoke("executorch", "--int8", "--recipe", recipe, "--model", TINY, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "takes int8 or float layers" in r.output and not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="calibration method minmax only"):
        from mexport.runtimes import get_runtime

        get_runtime("executorch").check_recipe(Recipe(name="r", calibration={"method": "entropy"}))


def test_reference_int8_keeps_the_matte_on_held_out_photos(reference_pipeline, alphamatting, tmp_path):
    """The reference model's fused int8 program (the default recipe, MinMax over the default
    calibration photos) against float torch on alphamatting GT15-GT18, never trained or calibrated
    on: the default int8 gate; what XNNPACK did not take is named."""
    from mexport import api
    from mexport.validate.artifacts import discover
    from mexport.validate.validate import Gates, apply_gates, load_samples, validate_artifact

    result = api.export("executorch", tmp_path / "et", precision="int8", roles=("fused",))
    x = result.facts["fused"]["xnnpack"]
    # Every node on XNNPACK but the refiner's channel sum, which ExecuTorch 1.5's XNNPACK
    # partitioner does not take (it runs on the portable kernels, between two partitions): named.
    assert x["delegated"] + x["fallback"] == x["nodes"] and x["fallback"] == sum(x["fallback_ops"].values()), x
    assert x["delegated"] > 1000 and set(x["fallback_ops"]) <= {"sum.dim_IntList"}, x
    assert "sum.dim_IntList x" in result.summary[0]
    samples, _ = load_samples(alphamatting, ["GT15", "GT16", "GT17", "GT18"])
    (artifact,) = discover([tmp_path / "et" / "fused.pte"])
    rep, _ = validate_artifact(artifact, samples, threads=2)
    apply_gates(rep, Gates(), None)
    assert rep.passed, [(g.gate, g.value) for g in rep.gates]
    assert rep.summary["median_psnr"] >= 32 and np.isfinite(rep.summary["min_psnr"])
    assert rep.summary["sad_mean"] < 1.5 * rep.summary["sad_float_mean"]  # vs ground truth: close to float


def test_the_runner_keeps_the_runtime_s_own_logs_off_the_terminal(tmp_path):
    """ExecuTorch's C++ runtime writes its CPU probing and thread-pool resets to fd 2 (seven lines
    per process, on the terminal in `bench --matrix` and `validate` before the runner silenced
    them). A fresh process, as the first runner in it: nothing from the runtime's C++ on stderr."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    r = invoke("executorch", "--model", TINY_REFINE, "--no-check", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    code = ("from mexport.runtimes.executorch.runner import ExecutorchRunner; import numpy as np; "
            f"r = ExecutorchRunner({str(tmp_path / 'o' / 'fused.pte')!r}, threads=2); "
            "print(r(np.zeros((1, 3, 64, 64), np.float32)).shape)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "(1, 1, 64, 64)", run.stderr
    noise = [ln for ln in run.stderr.splitlines() if ".cpp:" in ln]
    assert not noise, noise
