"""What the app snippets in a bundle's README read from its manifest, for every runtime alike:
the first artifact of a format, and the contract's host-side resize in words."""

from __future__ import annotations

from typing import Any


def first_artifact(manifest: dict[str, Any], fmt: str) -> dict[str, Any] | None:
    """The bundle's first single-file (not coarse+refine) artifact of format ``fmt``."""
    return next((a for a in manifest["artifacts"] if a["format"] == fmt and a["kind"] != "pair"), None)


def host_resize(manifest: dict[str, Any], art: dict[str, Any] | None) -> tuple[str, str]:
    """The contract's photo resize as the manifest states it, and a Kotlin comment for a letterbox
    spec (createScaledBitmap stretches: a letterboxing app pads the photo first)."""
    pipe = (art or manifest["artifacts"][0])["pipeline"]
    step = pipe["host_preprocessing"][1]
    pad = ("// Letterbox: first draw the photo scaled to fit, centred, on a black w x h bitmap; then scale that bitmap (a no-op).\n"
           if pipe["spec"]["aspect"] == "letterbox" else "")
    return step, pad


def golden_image(manifest: dict[str, Any], art: dict[str, Any]) -> str:
    """The bundle path of the 8-bit image of the artifact's first golden vector."""
    g = art["golden"][0]
    s = next(s for s in manifest["golden"]["sets"] if s["id"] == g["set"])
    return s["photos"][g["photo"]]["image"]


def kotlin_nchw_input(step: str, pad: str) -> str:
    """Kotlin lines that turn an Android ``photo`` Bitmap into the contract's NCHW float32 ``chw``
    in [0, 1] at ``w`` x ``h`` (runtimes whose models take NCHW float input share them)."""
    return (f"// Host steps of the contract: RGB, {step}, float32 = pixel / 255, NCHW.\n"
            f"{pad}val scaled = Bitmap.createScaledBitmap(photo, w, h, /* filter = */ true)\n"
            "val pixels = IntArray(w * h).also { scaled.getPixels(it, 0, w, 0, 0, w, h) }  // ARGB_8888\n"
            "val chw = FloatArray(3 * w * h)\n"
            "for ((c, shift) in intArrayOf(16, 8, 0).withIndex()) for (i in 0 until w * h) "
            "chw[c * w * h + i] = ((pixels[i] shr shift) and 0xFF) / 255f\n")
