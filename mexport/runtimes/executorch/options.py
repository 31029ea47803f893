"""Options of the ExecuTorch export (``mexport executorch``): those every runtime has (precision,
calibration, recipe, check); XNNPACK is always the delegate."""

from __future__ import annotations

from dataclasses import dataclass

from ...runtime import ExportOptions


@dataclass(frozen=True)
class ExecutorchOptions(ExportOptions):
    pass
