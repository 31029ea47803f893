"""The recipe file: which layers get which precision, plus calibration settings.

Target-neutral on purpose: layers are named by their PyTorch module path inside the exported graph
(``coarse.stage1.conv_in.0``, ``refine.head.2``), which both the ONNX node names and the TFLite
tensor names carry; each target's quantizer maps the path onto its own node names. The ONNX,
TFLite and (later) sensitivity-analysis commands read and write this one format (JSON):

    {
      "schema": 1,
      "name": "mexport-int8",
      "default": "int8",                      # precision of every layer not listed
      "calibration": {"method": "minmax", "per_channel": true, "symmetric_activations": false},
      "layers": {"coarse.side.0": "float", "coarse.fuse": "int16"},
      "split_inputs": {"coarse.stage2d.dec.4.0": [14]},   # optional, TFLite only (see below)
      "repairs": ["bias_correction"],                      # optional (see below)
      "notes": "why each layer is listed"
    }

A layer key matches a module path exactly or as a prefix ending at a dot (``coarse.stage1`` covers
``coarse.stage1.conv_in.0``); the longest matching key wins.

``split_inputs`` names convs whose listed input channels move into a conv of their own before
quantization (:mod:`mexport.quantize.split`, same maths): the conv at ``K`` becomes ``K.main`` (the
other channels) plus ``K.side`` (those channels), which ``layers`` can then name, e.g. ``K``: float
with ``K.main``: int8. Only runtimes that declare ``applies_splits`` (LiteRT) apply it; the others
reject such a recipe.

``repairs`` change the float weights before quantization so that int8 rounds them better
(:mod:`mexport.quantize.bias_correction`); they are computed from the calibration photos, so the
same recipe and photos give the same artifact. Only runtimes that declare ``applies_repairs``
(whose int8 weights are on the grid the repair assumes) apply them; the others reject such a
recipe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

SCHEMA = 1
_KIND = {"method": "a string", "per_channel": "true or false", "symmetric_activations": "true or false",
         "percentile": "a number", "max_photos": "an integer"}
LAYER_PRECISIONS = ("int8", "int16", "fp16", "float")
CALIB_METHODS = ("minmax", "entropy", "percentile")
REPAIRS = ("bias_correction",)


@dataclass(frozen=True)
class Calibration:
    method: str = "minmax"
    per_channel: bool = True
    symmetric_activations: bool = False
    percentile: float = 99.999
    max_photos: int = 32

    def __post_init__(self) -> None:
        for name, types in (("method", str), ("per_channel", bool), ("symmetric_activations", bool),
                            ("percentile", (int, float)), ("max_photos", int)):
            v = getattr(self, name)
            if not isinstance(v, types) or (types is not bool and isinstance(v, bool)):
                raise ValueError(f"calibration {name} must be {_KIND[name]}, got {v!r}")
        if self.method not in CALIB_METHODS:
            raise ValueError(f"calibration method must be one of {CALIB_METHODS}, got {self.method!r}")
        if not 90.0 <= self.percentile <= 100.0:  # NaN fails this too
            raise ValueError("percentile must be in [90, 100]")
        if self.max_photos < 1:
            raise ValueError("max_photos must be >= 1")


@dataclass(frozen=True)
class Recipe:
    name: str
    default: str = "int8"
    calibration: Calibration = field(default_factory=Calibration)
    layers: dict[str, str] = field(default_factory=dict)
    split_inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    notes: str = ""
    repairs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A recipe file is the user's JSON: every field's type is checked here, where the file is
        # read, not where an exporter first trips over it.
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.notes, str):
            raise ValueError(f"notes must be a string, got {self.notes!r}")
        if self.default not in LAYER_PRECISIONS:
            raise ValueError(f"default precision must be one of {LAYER_PRECISIONS}, got {self.default!r}")
        if isinstance(self.calibration, dict):
            unknown = sorted(set(self.calibration) - {f for f in Calibration.__dataclass_fields__})
            if unknown:
                raise ValueError(f"unknown calibration fields {unknown}")
            object.__setattr__(self, "calibration", Calibration(**self.calibration))
        if not isinstance(self.calibration, Calibration):
            raise ValueError(f"calibration must be an object like {{\"method\": \"minmax\"}}, got {self.calibration!r}")
        for what, value in (("layers", self.layers), ("split_inputs", self.split_inputs)):
            if not isinstance(value, dict):
                raise ValueError(f"{what} must map module paths to values, like {{\"coarse.stage1\": ...}}, got {value!r}")
        for k, v in self.layers.items():
            if not isinstance(v, str):
                raise ValueError(f"layer {k!r}: precision must be one of {LAYER_PRECISIONS}, got {v!r}")
            if v not in LAYER_PRECISIONS:
                raise ValueError(f"layer {k!r}: precision must be one of {LAYER_PRECISIONS}, got {v!r}")
            if not k or k.startswith(".") or k.endswith("."):
                raise ValueError(f"layer key {k!r} must be a module path like 'coarse.stage1.conv_in.0'")
        object.__setattr__(self, "layers", dict(sorted(self.layers.items())))
        splits = {}
        for k, chans in self.split_inputs.items():
            if not k or k.startswith(".") or k.endswith("."):
                raise ValueError(f"split_inputs key {k!r} must be a conv's module path like 'coarse.stage2d.dec.4.0'")
            if isinstance(chans, (str, bytes)) or not chans or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chans):
                raise ValueError(f"split_inputs {k!r}: give a non-empty list of input channel indices (ints >= 0), got {chans!r}")
            if len(set(chans)) != len(chans):
                raise ValueError(f"split_inputs {k!r}: channel listed twice in {list(chans)}")
            splits[k] = tuple(chans)
        object.__setattr__(self, "split_inputs", dict(sorted(splits.items())))
        if isinstance(self.repairs, (str, bytes)) or not isinstance(self.repairs, (list, tuple)):
            raise ValueError(f"repairs must be a list of {list(REPAIRS)}, got {self.repairs!r}")
        bad = [r for r in self.repairs if r not in REPAIRS]
        if bad or len(set(self.repairs)) != len(self.repairs):
            raise ValueError(f"repairs must be distinct names among {list(REPAIRS)}, got {list(self.repairs)!r}")
        if self.repairs and self.split_inputs:
            # a repair is computed on the conv as it is; a split conv quantizes on other grids
            raise ValueError("repairs and split_inputs cannot be combined: keep the split layers float instead")
        object.__setattr__(self, "repairs", tuple(self.repairs))

    def require_no_splits(self, target: str, appliers: list[str]) -> None:
        """For the runtimes that do not apply ``split_inputs`` (``appliers`` name those that do)."""
        if self.split_inputs:
            raise InputError(f"recipe {self.name!r}: split_inputs is applied by {' and '.join(appliers) or 'no runtime'} only; "
                             f"for {target} keep those layers float in 'layers' instead")

    def require_no_repairs(self, target: str, appliers: list[str]) -> None:
        """For the runtimes that do not apply ``repairs``."""
        if self.repairs:
            said = ", ".join(appliers[:-1]) + " and " + appliers[-1] if len(appliers) > 1 else "".join(appliers) or "no runtime"
            raise InputError(f"recipe {self.name!r}: repairs ({', '.join(self.repairs)}) are applied by {said} only; "
                             f"remove them for {target}")

    def precision_of(self, module_path: str) -> str:
        best, prec = -1, self.default
        for key, p in self.layers.items():
            if (module_path == key or module_path.startswith(key + ".")) and len(key) > best:
                best, prec = len(key), p
        return prec

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": SCHEMA, **asdict(self)}
        # recipes without splits or repairs keep the form (and sha256) they had before those fields
        for k in ("split_inputs", "repairs"):
            if not d[k]:
                del d[k]
        if "repairs" in d:
            d["repairs"] = list(d["repairs"])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def unknown_layers(self, pipeline) -> list[str]:
        """Layer keys that name no module of ``pipeline`` (``K.main`` / ``K.side`` of a split conv
        ``K`` exist only after the split). A key that matches nothing changes nothing, silently."""
        made = {f"{k}.{part}" for k in self.split_inputs for part in ("main", "side")}
        out = []
        for k in self.layers:
            try:
                pipeline.get_submodule(k)
            except AttributeError:
                if k not in made:
                    out.append(k)
        return out

    def require_known_layers(self, pipeline) -> None:
        """Every key that names no module, all at once, each with the nearest module paths: a recipe
        written for another model (or with a typo) fails in one run, the same way on every target."""
        import difflib

        unknown = self.unknown_layers(pipeline)
        if unknown:
            paths = [n for n, _ in pipeline.named_modules() if n]
            said = []
            for k in unknown:
                near = difflib.get_close_matches(k, paths, n=3, cutoff=0.6)
                said.append(f"{k!r}" + (f" (nearest: {', '.join(near)})" if near else ""))
            raise InputError(f"recipe {self.name!r}: {len(unknown)} layer key(s) name no module of {pipeline.model_info.name}: "
                             + "; ".join(said) + " (module paths look like 'coarse.stage1.conv_in.0')")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        if not isinstance(d, dict):
            raise ValueError(f"a recipe is a JSON object, got {type(d).__name__}")
        d = dict(d)
        schema = d.pop("schema", None)
        if schema != SCHEMA:
            raise ValueError(f"recipe schema {schema!r} is not supported (expected {SCHEMA})")
        unknown = set(d) - {"name", "default", "calibration", "layers", "split_inputs", "notes", "repairs"}
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}")
        return cls(**d)

    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.to_json().encode()).hexdigest()


def load_recipe(path: str | Path) -> Recipe:
    from ..io import read_json

    path = Path(path)
    d = read_json(path, "recipe", f"recipe file not found: {path}")
    try:
        return Recipe.from_dict(d)
    except (TypeError, ValueError) as e:
        raise InputError(f"recipe {path}: {e}") from None


@dataclass(frozen=True)
class Int8Declarations:
    """What a model's author measured about int8 on their model, each entry with why: the layers
    int8 breaks (kept float), narrower layers inside those that are safe again (back to int8), and
    convs whose int8 trouble is a few input channels (split off where the runtime splits convs,
    :attr:`Recipe.split_inputs`). :meth:`recipe` turns them into the model's default int8 recipe.
    ``mexport sensitivity`` finds such layers on any model; a model may ship them measured."""

    float_layers: dict[str, str] = field(default_factory=dict)
    int8_layers: dict[str, str] = field(default_factory=dict)
    split_inputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what in ("float_layers", "int8_layers"):
            value = getattr(self, what)
            if not isinstance(value, dict) or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"Int8Declarations.{what} maps module paths to why (strings), got {value!r}")
        splits = {}
        for k, entry in dict(self.split_inputs).items():
            if not isinstance(k, str) or not isinstance(entry, (tuple, list)) or len(entry) != 2 or not isinstance(entry[1], str):
                raise ValueError(f"Int8Declarations.split_inputs[{k!r}] must be (input channels, why), got {entry!r}")
            splits[k] = (tuple(entry[0]), entry[1])
        object.__setattr__(self, "split_inputs", splits)

    def recipe(self, name: str, splits: bool) -> "Recipe":
        """Everything int8 (per-channel weights, MinMax) but the float layers, minus the int8 ones
        inside them; with ``splits``, each declared conv split and its ``main`` part int8."""
        split_convs = self.split_inputs if splits else {}
        notes = "; ".join([f"{k}: {v}" for k, v in {**self.float_layers, **self.int8_layers}.items()]
                          + [f"{k}: input channels {list(ch)} split off ({why}); {k}.main int8" for k, (ch, why) in split_convs.items()])
        return Recipe(name=name, default="int8", calibration=Calibration("minmax", per_channel=True),
                      layers={**{k: "float" for k in self.float_layers}, **{k: "int8" for k in self.int8_layers},
                              **{f"{k}.main": "int8" for k in split_convs}},
                      split_inputs={k: ch for k, (ch, _) in split_convs.items()}, notes=notes or "no layer kept in float")
