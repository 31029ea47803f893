"""LiteRT (TFLite): ``.tflite`` files made by litert-torch and ai-edge-quantizer, checked on the
LiteRT interpreter with XNNPACK, or on another Python's older runtime (``--tflite-python``).

Files: ``options``, ``convert`` (the export-time graph, litert-torch), ``quantize``
(ai-edge-quantizer and recipes), ``flatbuffer`` (names, provenance), ``inspection`` (ops, dtypes,
XNNPACK delegation), ``runner``, ``external`` and ``worker`` (a runtime in another Python),
``describe`` and ``snippet`` (bundles)."""

from .runtime import TfliteRuntime

__all__ = ["TfliteRuntime"]
