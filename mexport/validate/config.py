"""Gate thresholds from ``mexport.toml`` or ``[tool.mexport]`` in pyproject.toml (command line wins)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from ..errors import InputError

KEYS = ("min_psnr", "min_photo_psnr", "max_photo_sad_increase", "max_photo_grad_increase", "max_sad_increase",
        "max_grad_increase", "max_latency_ratio", "baseline", "fragility")
PATHS = ("baseline", "fragility")


def load_config(path: Path | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """The ``validate`` section, every value checked: thresholds are finite numbers, ``baseline``
    and ``fragility`` paths (relative to the working directory, as on the command line)."""
    cwd = cwd or Path.cwd()
    if path is None:
        if (cwd / "mexport.toml").is_file():
            path = cwd / "mexport.toml"
        elif (cwd / "pyproject.toml").is_file():
            path = cwd / "pyproject.toml"
        else:
            return {}
    try:
        data = tomllib.loads(Path(path).read_bytes().decode())
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"config {path} is a directory, not a TOML file") from None
    except OSError as e:
        raise InputError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"config {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config {path} is not valid TOML: {e}") from None
    if Path(path).name == "pyproject.toml":
        tool = data.get("tool", {})
        section = tool.get("mexport", {}) if isinstance(tool, dict) else None
    else:
        section = data.get("validate", data)
    if isinstance(section, dict) and "validate" in section:
        section = section["validate"]
    if not isinstance(section, dict):
        raise InputError(f"config {path}: the validate section must be a table, got {section!r}")
    unknown = set(section) - set(KEYS)
    if unknown:
        raise InputError(f"config {path}: unknown keys {sorted(unknown)}; valid: {', '.join(KEYS)}")
    for k, v in section.items():
        if k in PATHS:
            if not isinstance(v, str) or not v:
                raise InputError(f"config {path}: {k} must be a path (a string), got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"config {path}: {k} must be a finite number, got {v!r}")
    return dict(section)
