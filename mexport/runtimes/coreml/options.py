"""Options of the Core ML export (``mexport coreml``): compute precision, weight compression,
W8A8, deployment target. Precision names (the keys of ``mexport.validate.fidelity.DEFAULT_MIN_PSNR``):
``fp32`` / ``fp16`` (compute precision, no compression), ``weights-int8`` (per-channel linear
int8), ``weights-int4`` (per-block int4, iOS18+), ``palette8/6/4`` (k-means palettization),
``w8a8`` (int8 weights and activations, calibrated on photos on the torch side, iOS17+)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InputError
from ...runtime import ExportOptions, option

DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
W8A8_MIN_TARGET = "iOS17"  # MIL quantize/dequantize ops (activation quantization) start at iOS17
COMPUTE = ("fp16", "fp32")
COMPRESSIONS = ("int8", "int4", "palette4", "palette6", "palette8")
PRECISION_OF_COMPRESSION = {"int8": "weights-int8", "int4": "weights-int4", "palette4": "palette4",
                            "palette6": "palette6", "palette8": "palette8"}
COMPRESSION_OF_PRECISION = {v: k for k, v in PRECISION_OF_COMPRESSION.items()}
PRECISIONS = ("fp32", "fp16", "weights-int8", "weights-int4", "palette8", "palette6", "palette4", "w8a8")


@dataclass(frozen=True)
class CoreMLOptions(ExportOptions):
    """``precision`` is the name thresholds are looked up by; the other fields say how to get it.

    Either name a compressed precision (``precision="palette6"``) or give ``compression=`` with a
    compute precision (``precision="fp32", compression="int8"`` -> fp32 compute, int8 weights,
    ``precision`` becomes ``weights-int8``). Conflicting combinations are rejected.
    """

    precision: str = option("fp16", cli=False)
    compute_precision: str | None = option(flags={
        "fp16": "float16 compute (default); the layers the model declares precision-sensitive compute in fp32.",
        "fp32": "float32 compute."})
    compression: str | None = option(flag="--weights", choices=COMPRESSIONS,
                                     help="Compress weights: int8 per-channel, int4 per-block (iOS18), or k-means palettes.")
    w8a8: bool = option(False, help="int8 weights and activations, calibrated on photos (--calib) on the torch side; needs iOS17+.")
    deployment_target: str | None = option(flag="--target", choices=DEPLOYMENT_TARGETS,
                                           help="Minimum deployment target [default: iOS16; iOS17 with --w8a8].")
    image_input: bool = option(True, flag="--tensor-input", invert=True, help="Take a float TensorType instead of an ImageType.")
    fp32_layers: tuple[str, ...] | None = option(cli=False)  # with fp16 compute; None: the model's declared layers

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalize in place
        w8a8 = self.w8a8 or self.precision == "w8a8"
        if self.deployment_target is None:
            set_("deployment_target", W8A8_MIN_TARGET if w8a8 else "iOS16")
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise ValueError(f"deployment_target must be one of {DEPLOYMENT_TARGETS}, got {self.deployment_target!r}")
        if self.compute_precision is not None and self.compute_precision not in COMPUTE:
            raise ValueError(f"compute_precision must be one of {COMPUTE}, got {self.compute_precision!r}")
        if self.compression is not None and self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS} or None, got {self.compression!r}")
        if self.fp32_layers is not None:
            set_("fp32_layers", tuple(self.fp32_layers))
        if w8a8:
            if self.compression is not None or self.precision in COMPRESSION_OF_PRECISION:
                raise ValueError("w8a8 quantizes the weights itself; it takes no weight compression")
            if self.precision not in ("w8a8",) + COMPUTE:
                raise ValueError(f"precision {self.precision!r} conflicts with w8a8")
            compute = self.compute_precision or (self.precision if self.precision in COMPUTE else "fp16")
            if self.precision in COMPUTE and compute != self.precision:
                raise ValueError(f"precision {self.precision!r} conflicts with compute_precision {compute!r}")
            set_("compute_precision", compute)
            set_("precision", "w8a8")
            set_("w8a8", True)
            if DEPLOYMENT_TARGETS.index(self.deployment_target) < DEPLOYMENT_TARGETS.index(W8A8_MIN_TARGET):
                raise InputError(f"w8a8 needs deployment target {W8A8_MIN_TARGET} or later (activation quantize/"
                                 f"dequantize ops); got {self.deployment_target}")
        elif self.precision in COMPRESSION_OF_PRECISION:
            named = COMPRESSION_OF_PRECISION[self.precision]
            if self.compression not in (None, named):
                raise ValueError(f"precision {self.precision!r} conflicts with compression {self.compression!r}")
            set_("compression", named)
            set_("compute_precision", self.compute_precision or "fp16")
        elif self.precision in COMPUTE:
            if self.compute_precision not in (None, self.precision):
                raise ValueError(f"precision {self.precision!r} conflicts with compute_precision {self.compute_precision!r}")
            set_("compute_precision", self.precision)
            if self.compression is not None:
                set_("precision", PRECISION_OF_COMPRESSION[self.compression])
        else:
            raise ValueError(f"Core ML precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compression == "int4" and self.deployment_target not in ("iOS18",):
            raise InputError(f"int4 per-block weights need deployment_target iOS18 or later (constexpr_blockwise_shift_scale); "
                             f"got {self.deployment_target}")
        super().__post_init__()
        if not self.w8a8 and (self.calib is not None or self.calib_count is not None or self.calib_method is not None):
            raise ValueError("calibration photos apply to w8a8 only (the other Core ML precisions need no data)")
