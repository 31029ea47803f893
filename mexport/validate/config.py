"""Gate thresholds from ``mexport.toml`` or ``[tool.mexport]`` in pyproject.toml (command line wins)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ..errors import InputError

KEYS = ("min_psnr", "max_sad_increase", "max_grad_increase", "max_latency_ratio", "baseline")


def load_config(path: Path | None = None, cwd: Path | None = None) -> dict[str, Any]:
    cwd = cwd or Path.cwd()
    if path is None:
        if (cwd / "mexport.toml").is_file():
            path = cwd / "mexport.toml"
        elif (cwd / "pyproject.toml").is_file():
            path = cwd / "pyproject.toml"
        else:
            return {}
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config {path} is not valid TOML: {e}") from None
    section = data.get("tool", {}).get("mexport", {}) if Path(path).name == "pyproject.toml" else data.get("validate", data)
    section = section.get("validate", section) if isinstance(section, dict) else {}
    unknown = set(section) - set(KEYS)
    if unknown:
        raise InputError(f"config {path}: unknown keys {sorted(unknown)}; valid: {', '.join(KEYS)}")
    return dict(section)
