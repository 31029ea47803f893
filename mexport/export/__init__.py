"""Export targets, registered by decorator; adding one is one module plus one import here."""

from .base import TARGETS, ExportOptions, ExportResult, Target, export, get_target, register_target

from . import onnx  # noqa: F401,E402
from . import ort  # noqa: F401,E402
from . import tflite  # noqa: F401,E402
from . import coreml  # noqa: F401,E402

__all__ = ["TARGETS", "ExportOptions", "ExportResult", "Target", "export", "get_target", "register_target"]
