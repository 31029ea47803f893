"""Bundle signatures in OpenSSH's format (``ssh-keygen -Y sign``), the one git signs commits with:
a key the team already has, a signature anyone can check with ``ssh-keygen`` alone.

The manifest's checksums catch damage, not tampering: whoever changes a file can recompute the
manifest. A signature ties the bundle to a key. What is signed: a zip bundle's bytes (so
``ssh-keygen -Y verify ... -s NAME.zip.sig < NAME.zip`` checks it without mexport), or a directory
bundle's ``manifest.json``, which lists every other file with its sha256 (so the checksums that
``bundle verify`` compares then tie every file to the signature). The signature goes beside the
bundle (``NAME.zip.sig``, ``DIR.sig``): inside, it would be a file the manifest does not list.

ssh-keygen runs as a subprocess without a shell, the signed bytes on its stdin; its namespace
``mexport-bundle`` keeps a bundle signature from being replayed as, say, a git signature.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import InputError
from .manifest import MANIFEST, BundleError

NAMESPACE = "mexport-bundle"
TIMEOUT_S = 120


def signed_file(bundle: Path) -> Path:
    """The bytes a signature covers: the zip itself, or a directory bundle's manifest."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise InputError(f"bundle not found: {bundle}")
    if bundle.is_dir():
        if not (bundle / MANIFEST).is_file():
            raise BundleError(f"{bundle}: no {MANIFEST}; not a mexport bundle")
        return bundle / MANIFEST
    return bundle


def signature_path(bundle: Path) -> Path:
    bundle = Path(bundle)
    return bundle.with_name(bundle.name + ".sig")


def _ssh_keygen(args: list[str], stdin: Path, what: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise InputError("ssh-keygen not found: bundle signatures need OpenSSH 8.1 or later (the openssh-client package)")
    try:
        with open(stdin, "rb") as f:
            return subprocess.run([exe, *args], stdin=f, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InputError(f"ssh-keygen did not finish {what} in {TIMEOUT_S} s (waiting for a passphrase? load the key "
                         "into ssh-agent and pass its .pub)") from None
    except OSError as e:
        raise InputError(f"cannot read {stdin}: {e.strerror or e}") from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def sign_bundle(bundle: str | Path, key: str | Path, signature: str | Path | None = None) -> Path:
    """Check the bundle's manifest and checksums, then sign it with ``key`` (an SSH private key, or
    its ``.pub`` when the private key is in ssh-agent); returns the signature's path."""
    from ..io import atomic_write_bytes
    from .archive import check_integrity

    bundle, key = Path(bundle), Path(key)
    if not key.is_file():
        raise InputError(f"signing key not found: {key}")
    check_integrity(bundle)  # a damaged bundle is not worth a signature
    sig = Path(signature) if signature else signature_path(bundle)
    proc = _ssh_keygen(["-Y", "sign", "-n", NAMESPACE, "-f", str(key)], signed_file(bundle), "signing")
    if proc.returncode != 0 or not proc.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise InputError(f"ssh-keygen could not sign with {key}: {_last_line(proc)}")
    atomic_write_bytes(sig, proc.stdout)
    return sig


def verify_signature(bundle: str | Path, allowed_signers: str | Path, identity: str, signature: str | Path | None = None) -> str:
    """Raise BundleError unless ``signature`` (default ``BUNDLE.sig``) is a good signature of the
    bundle by ``identity``'s key in ``allowed_signers`` (ssh-keygen's ALLOWED SIGNERS format).
    Returns ssh-keygen's verdict ("Good "mexport-bundle" signature for ID with ... key SHA256:...")."""
    bundle = Path(bundle)
    sig = Path(signature) if signature else signature_path(bundle)
    allowed_signers = Path(allowed_signers)
    if not allowed_signers.is_file():
        raise InputError(f"allowed signers file not found: {allowed_signers}")
    if not identity or any(c in identity for c in "\n\r\0"):
        raise InputError(f"--identity must name the expected signer (a principal in {allowed_signers}), got {identity!r}")
    if not sig.is_file():
        raise BundleError(f"{bundle}: no signature at {sig} (sign it with `mexport bundle sign {bundle} --key KEY`)")
    proc = _ssh_keygen(["-Y", "verify", "-f", str(allowed_signers), "-I", identity, "-n", NAMESPACE, "-s", str(sig)],
                       signed_file(bundle), "verifying")
    if proc.returncode != 0:
        raise BundleError(f"{bundle}: signature check failed for {identity!r} ({_last_line(proc)}): "
                          "the bundle was changed after it was signed, or not signed by that key")
    return proc.stdout.decode(errors="replace").strip()
