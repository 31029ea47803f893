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
