"""The runtimes mexport exports to, one folder each; adding one is a folder plus one line here.

Everything runtime-neutral looks runtimes up here: by name (:func:`get_runtime`), by artifact
file (:func:`runtime_for`), as a runner for one artifact or a coarse+refine pair
(:func:`open_runner`), and their versions (:func:`versions`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..runtime import RUNTIMES, Runtime
from ..runtime import dist_versions

# Registering runtimes: one import per folder, in the order reports list them.
from . import onnx  # noqa: F401,E402
from . import tflite  # noqa: F401,E402
from . import coreml  # noqa: F401,E402
from . import executorch  # noqa: F401,E402

__all__ = ["RUNTIMES", "Runtime", "get_runtime", "names", "open_runner", "runtime_for", "versions"]


def names() -> list[str]:
    """Registered runtimes in registration order."""
    return RUNTIMES.in_order()


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)()


def runtime_for(path: Path) -> str:
    """The runtime whose suffix the artifact file (or package) has; an InputError listing the known ones otherwise."""
    for name in names():
        if Path(path).name.endswith(get_runtime(name).suffix):
            return name
    suffixes = ", ".join(get_runtime(n).suffix for n in names())
    raise InputError(f"{path}: not an artifact mexport knows (expected one of {suffixes}, or an export directory)")


def open_runner(runtime: str, paths: dict[str, Path], spec=None, name: str = "", threads: int | None = None, **kw):
    """A runner for one artifact (``{"fused": path}``) or a coarse+refine pair (``{"coarse": ...,
    "refine": ...}``, run as one pipeline with the host-side downsample between them, for which
    ``spec`` is needed). ``kw`` go to the runtime's runner (``python=`` for LiteRT on another Python)."""
    from ..runner import PairRunner

    rt = get_runtime(runtime)
    if "coarse" in paths and "refine" in paths:
        return PairRunner(rt.runner(paths["coarse"], threads=threads, **kw), rt.runner(paths["refine"], threads=threads, **kw),
                          spec, name=name)
    (path,) = paths.values()
    return rt.runner(path, threads=threads, **kw)


def versions() -> dict[str, str]:
    """mexport, Python, the machine, torch and numpy, and every runtime's distributions: the one
    list that reports, benchmarks and `mexport bench` print."""
    import platform

    from .. import __version__

    dists = ["torch", "numpy"] + [d for n in names() for d in get_runtime(n).distributions]
    return {"mexport": __version__, "python": platform.python_version(), "machine": platform.machine(),
            "system": platform.system(), **dist_versions(tuple(dict.fromkeys(dists)))}
