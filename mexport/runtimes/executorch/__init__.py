"""ExecuTorch: PyTorch's own on-device runtime. ``.pte`` programs lowered to the XNNPACK delegate,
fp32 and int8 (pt2e: torchao's ``prepare_pt2e``/``convert_pt2e`` with ExecuTorch's
``XNNPACKQuantizer``), checked and timed through ``executorch.runtime``.

Files: ``options``, ``convert`` (torch.export, lowering, provenance), ``quantize`` (pt2e driven by
a recipe), ``inspection`` (what XNNPACK took), ``runner``, ``describe`` and ``snippet`` (bundles)."""

from .runtime import ExecutorchRuntime

__all__ = ["ExecutorchRuntime"]
