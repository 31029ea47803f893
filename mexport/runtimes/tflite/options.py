"""Options of the LiteRT export (``mexport tflite``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...runtime import ExportOptions, option

LAYOUTS = ("nhwc", "nchw")
IO_TYPES = ("float", "int8")
INPUT_TYPES = ("float", "uint8")


@dataclass(frozen=True)
class TfliteOptions(ExportOptions):
    io: str = option("float", choices=IO_TYPES, help="Input/output tensor type of an --int8 model.")
    input: str = option("float", choices=INPUT_TYPES, help="uint8: the image input takes 0-255 RGB and the graph divides by 255.")
    layout: str = option("nhwc", choices=LAYOUTS, help="Input/output layout.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.io not in IO_TYPES:
            raise ValueError(f"io must be one of {IO_TYPES}, got {self.io!r}")
        if self.input not in INPUT_TYPES:
            raise ValueError(f"input must be one of {INPUT_TYPES}, got {self.input!r}")
        if self.io == "int8" and self.precision != "int8":
            raise ValueError("--io int8 applies to --int8 only")
        if self.io == "int8" and self.input == "uint8":
            raise ValueError("--io int8 and --input uint8 both set the input type: choose one")
