"""mexport: ship a PyTorch coarse+refine matting model to phones, and prove every artifact."""

__version__ = "0.1.0"

from .errors import MexportError  # noqa: E402
from .spec import PipelineSpec, Provenance  # noqa: E402

__all__ = ["Int8Declarations", "MattingModel", "MattingPipeline", "MexportError", "PipelineSpec", "Provenance", "__version__"]


def __getattr__(name: str):
    # torch is heavy: import the model classes only when asked for, so `mexport --help` is instant.
    if name in ("MattingModel", "MattingPipeline"):
        from .models import pipeline

        return getattr(pipeline, name)
    if name == "Int8Declarations":
        from .quantize.recipe import Int8Declarations

        return Int8Declarations
    raise AttributeError(name)
