"""How an app runs a Core ML package: a by-hand golden check with coremltools (macOS), and Swift."""

from __future__ import annotations

from typing import Any

from ...snippets import first_artifact, golden_image


def python_check(manifest: dict[str, Any], art: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``MLModel.predict`` (macOS only); an image input takes the golden image itself."""
    model = art["models"]["fused"]
    name, out = model["inputs"][0]["name"], model["outputs"][0]["name"]
    feed = f'Image.open("{golden_image(manifest, art)}")' if model["inputs"][0].get("image") else "x"
    return (["import coremltools as ct  # MLModel.predict runs on macOS only", "from PIL import Image"],
            [f'm = ct.models.MLModel("{model["file"]}")', f'got = m.predict({{"{name}": {feed}}})["{out}"]'])


def swift_snippet(manifest: dict) -> str:
    art = first_artifact(manifest, "coreml")
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
