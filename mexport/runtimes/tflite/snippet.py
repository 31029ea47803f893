"""How an app runs a .tflite artifact: a by-hand golden check in Python, and Kotlin."""

from __future__ import annotations

from typing import Any

from ...snippets import first_artifact, host_resize


def python_check(manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
    """LiteRT's interpreter, following the file's layout and input/output quantization."""
    model = art["models"]["fused"]
    return (["from ai_edge_litert.interpreter import Interpreter"],
            [f'it = Interpreter(model_path="{model["file"]}")', "it.allocate_tensors()",
             "i, o = it.get_input_details()[0], it.get_output_details()[0]",
             'feed = x.transpose(0, 2, 3, 1) if i["shape"][-1] == 3 else x  # NHWC models take channels last',
             'if i["dtype"] != np.float32:',
             '    s, z = i["quantization"]',
             '    info = np.iinfo(i["dtype"])',
             '    if s == 0:  # an 8-bit image input takes the pixels themselves (image.png)',
             '        feed = np.round(feed * 255).astype(i["dtype"])',
             '    else:  # a quantized input: q = round(x / scale) + zero_point',
             '        feed = np.clip(np.round(feed / s) + z, info.min, info.max).astype(i["dtype"])',
             'it.set_tensor(i["index"], feed)', "it.invoke()", 'got = it.get_tensor(o["index"])',
             'if o["dtype"] != np.float32:  # quantized output: x = scale * (q - zero_point)',
             '    s, z = o["quantization"]',
             '    got = s * (got.astype(np.float32) - z)'])


def kotlin_snippet(manifest: dict) -> str:
    """LiteRT in Kotlin for the bundle's first LiteRT artifact, following its input/output dtype,
    quantization and layout as read from the file."""
    art = first_artifact(manifest, "tflite")
    file = art["models"]["fused"]["file"].rsplit("/", 1)[-1] if art else "fused.tflite"
    rh, rw = manifest["artifacts"][0]["pipeline"]["spec"]["refine_size"]
    inp = art["models"]["fused"]["inputs"][0] if art else {"shape": [1, 3, rh, rw], "layout": "NCHW", "dtype": "float32"}
    out = art["models"]["fused"]["outputs"][0] if art else {"dtype": "float32"}
    nhwc = inp["layout"] == "NHWC"
    h, w = (inp["shape"][1], inp["shape"][2]) if nhwc else (inp["shape"][2], inp["shape"][3])
    note = "" if art else "(This bundle has no LiteRT artifact: names below are placeholders.)\n\n"
    step, pad = host_resize(manifest, art)
    q = inp.get("quantization")
    if inp["dtype"] == "float32":
        size, put, how = 4, "fb.put(v / 255f)", "float32 = pixel / 255"
        buf = "val fb = input.asFloatBuffer()\n"
    elif q:
        size, how = 1, f"quantized {inp['dtype']}: q = round(pixel / 255 / scale) + zero_point"
        lo, hi = (-128, 127) if inp["dtype"] == "int8" else (0, 255)
        put = (f"input.put(((v / 255f / {q['scale']:.8g}f).roundToInt() + ({q['zero_point']})).coerceIn({lo}, {hi}).toByte())")
        buf = ""
    else:
        size, put, how, buf = 1, "input.put(v.toByte())", "raw 8-bit pixels 0..255", ""
    order = ("for (p in pixels) for (shift in intArrayOf(16, 8, 0)) { val v = (p shr shift) and 0xFF; PUT }  // RGB per pixel (NHWC)"
             if nhwc else
             "for (shift in intArrayOf(16, 8, 0)) for (p in pixels) { val v = (p shr shift) and 0xFF; PUT }  // R, G, B planes (NCHW)")
    oq = out.get("quantization")
    if out["dtype"] == "float32":
        read = (f"val output = ByteBuffer.allocateDirect(4 * w * h).order(ByteOrder.nativeOrder())\ninterpreter.run(input, output)\n"
                "output.rewind()\nval alpha = FloatArray(w * h).also { output.asFloatBuffer().get(it) }")
    else:
        signed = "" if out["dtype"] == "int8" else " and 0xFF"
        read = (f"val output = ByteBuffer.allocateDirect(w * h).order(ByteOrder.nativeOrder())\ninterpreter.run(input, output)\n"
                f"output.rewind()\nval alpha = FloatArray(w * h) {{ {oq['scale']:.8g}f * ((output.get().toInt(){signed}) - ({oq['zero_point']})) }}"
                "  // x = scale * (q - zero_point)")
    return note + f"""```kotlin
// implementation("com.google.ai.edge.litert:litert:<version>")  (the org.tensorflow.lite API)
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.roundToInt

val interpreter = Interpreter(loadModelFile(context, "{file}"), Interpreter.Options().setNumThreads(4))
val w = {w}; val h = {h}
// Host steps of the contract: RGB, {step}, {how}, {"NHWC" if nhwc else "NCHW"}.
{pad}val scaled = Bitmap.createScaledBitmap(photo, w, h, /* filter = */ true)
val pixels = IntArray(w * h).also {{ scaled.getPixels(it, 0, w, 0, 0, w, h) }}  // ARGB_8888
val input = ByteBuffer.allocateDirect({size} * 3 * w * h).order(ByteOrder.nativeOrder())
{buf}{order.replace("PUT", put)}
input.rewind()
{read}  // row-major {h}x{w}, in [0, 1]

// Golden vector (androidTest): build the input from image.png (or input.{"nhwc" if nhwc else "nchw"}.f32 for a float input)
// and compare alpha with expected/<artifact>.f32 using this artifact's tolerance.
fun readF32(bytes: ByteArray): FloatArray =
    FloatArray(bytes.size / 4).also {{ ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(it) }}
```
"""
