"""How an app runs an .onnx or .ort artifact: a by-hand golden check in Python, and Kotlin."""

from __future__ import annotations

from typing import Any

from ...snippets import first_artifact, host_resize, kotlin_nchw_input


def python_check(manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
    """onnxruntime loads .onnx and .ort alike."""
    model = art["models"]["fused"]
    name = model["inputs"][0]["name"]
    return (["import onnxruntime as ort"],
            [f'sess = ort.InferenceSession("{model["file"]}", providers=["CPUExecutionProvider"])',
             f'got = sess.run(None, {{"{name}": x}})[0]'])


def kotlin_snippet(manifest: dict) -> str:
    """onnxruntime's Java API in Kotlin for the bundle's first .ort (else .onnx) artifact; None when
    the bundle has neither (the ONNX and ORT runtimes both ask for it; the README shows it once). ONNX models take the contract's NCHW float32 photo in [0, 1]."""
    art = first_artifact(manifest, "ort") or first_artifact(manifest, "onnx")
    model = art["models"]["fused"]
    file = model["file"].rsplit("/", 1)[-1]
    inp, out = model["inputs"][0], model["outputs"][0]
    h, w = inp["shape"][2], inp["shape"][3]
    config = (model.get("min_runtime") or {}).get("required_operators_config")
    step, pad = host_resize(manifest, art)
    build = (f"// The full package loads .onnx and .ort; a reduced build made with {config} (this bundle) loads this .ort only.\n"
             if config else "// The full package loads .onnx files.\n")
    return f"""```kotlin
// implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>")
{build}import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import java.nio.FloatBuffer

val env = OrtEnvironment.getEnvironment()
val session = env.createSession(context.assets.open("{file}").readBytes())
val w = {w}; val h = {h}
{kotlin_nchw_input(step, pad)}val alpha = OnnxTensor.createTensor(env, FloatBuffer.wrap(chw), longArrayOf(1, 3, h.toLong(), w.toLong())).use {{ input ->
    session.run(mapOf("{inp['name']}" to input)).use {{ result ->
        val t = result.get("{out['name']}").get() as OnnxTensor
        FloatArray(w * h).also {{ t.floatBuffer.get(it) }}  // row-major {h}x{w}, in [0, 1]
    }}
}}
```
"""
