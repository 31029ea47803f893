"""Core ML: ML Program packages (``.mlpackage``) made by coremltools, checked on Linux by structure
and by mexport's MIL executor running the saved program (results labelled *emulated*).

Files: ``options``, ``convert`` (trace, convert, compress, metadata), ``mixed`` (fp16 compute with
fp32 layers), ``w8a8`` (activation quantization on the torch side), ``package`` (reproducible
packages, structure check), ``mil_executor`` and ``runner``, ``describe`` and ``snippet`` (bundles)."""

from .runtime import CoreMLRuntime

__all__ = ["CoreMLRuntime"]
