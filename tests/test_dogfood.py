"""CI dogfood: the reference model's default int8 exports against the committed baseline.

The baseline (reports/baseline.json) is made by
    mexport validate <onnx-int8> <tflite-int8> --data ../shared/data/alphamatting --only GT15,GT18 \\
        --baseline reports/baseline.json --update-baseline
on exports made by `mexport onnx --int8 -o onnx-int8` and `mexport tflite --int8 -o tflite-int8`.
Fidelity gates only: CI machines are shared, latency is not gated here.
"""

import json
from pathlib import Path

from click.testing import CliRunner

from mexport.cli import main

BASELINE = Path(__file__).resolve().parents[1] / "reports" / "baseline.json"


def test_int8_exports_pass_the_committed_baseline(reference_int8_exports, alphamatting, tmp_path):
    dirs = [str(reference_int8_exports[t]) for t in ("onnx", "tflite")]
    r = CliRunner().invoke(main, ["validate", *dirs, "--data", str(alphamatting), "--only", "GT15,GT18",
                                  "--baseline", str(BASELINE), "--max-sad-increase", "0.05", "--max-grad-increase", "0.05",
                                  "--report", str(tmp_path / "rep"), "-q"], catch_exceptions=False)
    report = json.loads((tmp_path / "rep" / "validate.json").read_text())
    labels = {a["label"] for a in report["artifacts"]}
    assert labels == set(json.loads(BASELINE.read_text())["artifacts"])  # every baselined artifact was measured
    failed = [(a["label"], g["gate"], g["value"]) for a in report["artifacts"] for g in a["gates"] if not g["passed"]]
    assert r.exit_code == 0 and not failed, failed
