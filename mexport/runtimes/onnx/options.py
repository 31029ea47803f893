"""Options of the ONNX and ORT format exports (``mexport onnx [--ort]``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...runtime import ExportOptions, option


@dataclass(frozen=True)
class OnnxOptions(ExportOptions):
    opset: int = option(17, help="ONNX opset (11-21; int8 exports are upgraded to >= 13 for per-channel QDQ).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.opset, int) or not 11 <= self.opset <= 21:
            raise ValueError("opset must be between 11 and 21 (int8 exports are upgraded to >= 13 for per-channel QDQ)")
