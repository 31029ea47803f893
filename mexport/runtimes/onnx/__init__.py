"""ONNX: ``.onnx`` files (torch.onnx, onnxsim, onnxruntime's quantizer), checked on onnxruntime's
CPU provider; and onnxruntime-mobile's ORT format (``.ort``), converted from that ONNX.

Files: ``options`` (the command's options), ``convert`` (export, simplify, provenance),
``quantize`` (fp16, dynamic and static int8), ``runner``, ``ort`` (the ORT format runtime),
``describe`` and ``snippet`` (bundles), ``weights`` (reading weights out of an ONNX file)."""

from .ort import OrtRuntime
from .runtime import OnnxRuntime

__all__ = ["OnnxRuntime", "OrtRuntime"]
