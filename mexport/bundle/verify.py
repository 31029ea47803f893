"""``mexport bundle verify``: the schema, every checksum, then every golden vector on every runtime
this machine has (through the targets' runners, as ``mexport validate`` runs artifacts).

Structure and checksums are checked in full before anything runs, and the first problem is the
error: a tampered bundle is not worth running. Golden vectors are all run and all failures
collected. A runtime this machine lacks is reported as skipped, never as a pass.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import CannotVerifyError, FidelityError
from .archive import MAX_UNPACKED, BundleReader, check_files
from .golden import Tolerance, read_f32
from .manifest import MANIFEST, MAX_MANIFEST, BundleError, loads


@dataclass
class VerifyReport:
    path: Path
    files: int
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    signature: str | None = None  # ssh-keygen's verdict when a signature was checked

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.results)


def _runner(art: dict[str, Any], root: Path):
    """The artifact's runner, or the reason it cannot run here (an absent runtime)."""
    from ..runtimes import RUNTIMES, open_runner
    from ..spec import PipelineSpec

    if art["format"] not in RUNTIMES:
        return None, f"this mexport has no {art['format']} target"
    paths = {role: root / m["file"] for role, m in art["models"].items()}
    try:
        return open_runner(art["format"], paths, PipelineSpec.from_dict(art["pipeline"]["spec"]), name=art["id"], threads=1), None
    except ImportError as e:
        return None, f"runtime not installed ({e.name or e})"


def verify_bundle(path: str | Path, log: Callable[[str], Any] = lambda s: None, max_unpacked: int = MAX_UNPACKED,
                  allowed_signers: str | Path | None = None, identity: str | None = None,
                  signature: str | Path | None = None) -> VerifyReport:
    """Raise BundleError for a malformed or tampered bundle (or, with ``allowed_signers``, one that
    ``identity`` did not sign: checked first), FidelityError if a golden vector fails."""
    verdict = None
    if allowed_signers is not None:
        from .sign import verify_signature

        verdict = verify_signature(path, allowed_signers, identity or "", signature)
        log(verdict)
    with BundleReader(path, max_unpacked) as reader:
        if MANIFEST not in reader.names:
            raise BundleError(f"{path}: no {MANIFEST}; not a mexport bundle")
        manifest = loads(reader.read(MANIFEST, MAX_MANIFEST))
        check_files(reader, manifest)
        sizes = {name: f["size"] for name, f in manifest["files"].items()}
        log(f"{len(manifest['files'])} files: checksums OK")
        report = VerifyReport(Path(path), len(manifest["files"]), signature=verdict)
        sets = {s["id"]: s for s in manifest["golden"]["sets"]}
        with tempfile.TemporaryDirectory(prefix="mexport-verify-") as tmp:
            root = reader.extract(Path(tmp), sizes)
            for art in manifest["artifacts"]:
                runner, why = _runner(art, root)
                if runner is None:
                    report.skipped[art["id"]] = why
                    log(f"skip {art['id']}: {why}")
                    continue
                tol = Tolerance(**art["tolerance"])
                for g in art["golden"]:
                    s = sets[g["set"]]
                    inp = s["photos"][g["photo"]]["input_nchw"]
                    x = read_f32(reader.read(inp, sizes[inp]), s["shape_nchw"], g["photo"])
                    want = read_f32(reader.read(g["expected"], sizes[g["expected"]]), g["shape"], g["expected"])
                    r = tol.check(runner(x), want)
                    r.update(artifact=art["id"], photo=g["photo"], runner=getattr(runner, "name", art["format"]))
                    report.results.append(r)
                    log(f"{'PASS' if r['passed'] else 'FAIL'} {art['id']} on {g['photo']}: max abs {r['max_abs']:.3g}, "
                        f"PSNR {r['psnr_db']:.1f} dB ({tol.numerics} tolerance)")
    failed = [r for r in report.results if not r["passed"]]
    if failed:
        raise FidelityError("golden vectors failed: " + "; ".join(f"{r['artifact']} on {r['photo']} ({', '.join(r['failed'])})"
                                                                 for r in failed))
    if not report.results:
        raise CannotVerifyError(f"{path}: checksums OK, but no runtime for any artifact on this machine "
                                f"({'; '.join(report.skipped.values())}); golden vectors not run")
    return report
