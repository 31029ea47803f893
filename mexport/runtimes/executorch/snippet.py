"""How an app runs a .pte artifact: a by-hand golden check in Python, Kotlin (Android) and Swift
(iOS), with ExecuTorch's own APIs. The program takes the contract's NCHW float32 photo in [0, 1]."""

from __future__ import annotations

from typing import Any

from ...snippets import first_artifact, host_resize, kotlin_nchw_input


def python_check(manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
    model = art["models"]["fused"]
    return (["import torch", "from executorch.runtime import Runtime"],
            [f'method = Runtime.get().load_program("{model["file"]}").load_method("forward")',
             "got = method.execute([torch.from_numpy(x)])[0].numpy()"])


def _shape(manifest: dict[str, Any]) -> tuple[dict[str, Any], str, int, int]:
    art = first_artifact(manifest, "executorch")
    model = art["models"]["fused"]
    h, w = model["inputs"][0]["shape"][2], model["inputs"][0]["shape"][3]
    return art, model["file"].rsplit("/", 1)[-1], h, w


def kotlin_snippet(manifest: dict[str, Any]) -> str:
    art, file, h, w = _shape(manifest)
    step, pad = host_resize(manifest, art)
    return f"""```kotlin
// implementation("org.pytorch:executorch-android:<version>")  (XNNPACK is built in)
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val module = Module.load(File(context.filesDir, "{file}").path)  // a file path: copy the asset there first
val w = {w}; val h = {h}
{kotlin_nchw_input(step, pad)}val input = Tensor.fromBlob(chw, longArrayOf(1, 3, h.toLong(), w.toLong()))
val alpha = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray  // row-major {h}x{w}, in [0, 1]
```
"""


def swift_snippet(manifest: dict[str, Any]) -> str:
    art, file, h, w = _shape(manifest)
    step, _ = host_resize(manifest, art)
    name = file.removesuffix(".pte")
    return f"""```swift
// Swift Package: github.com/pytorch/executorch, branch swiftpm-<version>; link executorch and backend_xnnpack
// (with -all_load, so that the XNNPACK backend registers itself).
import ExecuTorch

let module = Module(filePath: Bundle.main.path(forResource: "{name}", ofType: "pte")!)
// Host steps of the contract: RGB, {step}, float32 = pixel / 255, NCHW planes:
var chw = [Float](repeating: 0, count: 3 * {h} * {w})  // fill from the resized photo's RGB bytes
let input = Tensor<Float>(chw, shape: [1, 3, {h}, {w}])
let output: Tensor<Float> = try module.forward(input)!
let alpha = output.scalars()  // 1x1x{h}x{w} Float32 in [0, 1], row-major
```
"""
