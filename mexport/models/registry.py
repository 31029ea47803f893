"""Model architectures by name, plus bring-your-own models from ``module:factory`` or ``file.py:factory``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from ..errors import InputError, MexportError
from ..registry import Registry
from .pipeline import MattingModel

MODELS: Registry[Callable[[], MattingModel]] = Registry("model")
register_model = MODELS.register
DEFAULT_MODEL = "u2netp-refine"


@runtime_checkable
class ModelFactory(Protocol):
    """A BYO factory: takes no arguments and returns a :class:`MattingModel`
    (coarse network, optional refine network, :class:`PipelineSpec`). Weights are the factory's
    business: it must load them itself, without pickle."""

    def __call__(self) -> MattingModel: ...


def state_dict_sha256(*modules) -> str:
    """A stable hash of modules' parameters and buffers, for models without a weights file."""
    h = hashlib.sha256()
    for m in modules:
        if m is None:
            continue
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _import_from_here(name: str):
    """``importlib.import_module``, retried with the working directory on ``sys.path`` when the
    package is not found: the ``mexport`` console script does not put it there, unlike
    ``python -m`` (uvicorn and gunicorn do the same for ``module:app``)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        here = str(Path.cwd())
        if here in sys.path or not (e.name and name.startswith(e.name.split(".")[0])):
            raise
        sys.path.insert(0, here)
        top = name.split(".")[0]
        if getattr(sys.modules.get(top), "__file__", "") is None:  # a namespace package of that name, found first elsewhere
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]
        return importlib.import_module(name)


def _load_factory(ref: str) -> Callable[[], MattingModel]:
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(f"unknown model {ref!r}; use a registered name ({', '.join(MODELS.names())}) or module:factory / file.py:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"model file not found: {target}")
        name = "mexport_byo_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except SystemExit as e:
            raise InputError(f"could not import {target}: it called sys.exit({e.code!r})") from None
        except Exception as e:
            raise InputError(f"could not import {target}: {type(e).__name__}: {e}") from None
    else:
        try:
            module = _import_from_here(target)
        except SystemExit as e:
            raise InputError(f"could not import {target}: it called sys.exit({e.code!r})") from None
        except Exception as e:
            raise InputError(f"could not import {target}: {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{target} has no callable {attr!r}")
    return factory


def load_model(ref: str = DEFAULT_MODEL) -> MattingModel:
    """Build a model by registered name or BYO reference, check what the factory returned."""
    factory = MODELS.get(ref) if ref in MODELS or ":" not in ref else _load_factory(ref)
    try:
        model = factory()
    except MexportError:
        raise
    except SystemExit as e:  # a factory (or a script it runs) exiting must not end mexport with exit 0
        raise InputError(f"model factory {ref!r} called sys.exit({e.code!r}) instead of returning a MattingModel") from None
    except Exception as e:
        raise InputError(f"model factory {ref!r} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, MattingModel):
        raise InputError(f"model factory {ref!r} must return mexport.MattingModel, got {type(model).__name__}")
    model.name = model.name or ref
    if not model.weights_sha256:
        model.weights_sha256 = state_dict_sha256(model.coarse, model.refine)
    model.coarse.eval()
    if model.refine is not None:
        model.refine.eval()
    return model
