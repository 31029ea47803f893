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
from .archive import MAX_UNPACKED, BundleReader
from .golden import Tolerance, read_f32
from .manifest import MANIFEST, MAX_MANIFEST, BundleError, loads, tree_sha256


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


def check_files(reader: BundleReader, manifest: dict[str, Any]) -> None:
    """Every listed file present with its size and sha256; nothing unlisted; artifact digests agree.
    Sizes are compared before any file is read, and each read stops at the listed size."""
    listed = manifest["files"]
    for name in sorted(listed):
        if name not in reader.names:
            raise BundleError(f"{name}: missing from the bundle")
    extra = [n for n in reader.names if n not in listed and n != MANIFEST]
    if extra:
        raise BundleError(f"{extra[0]}: in the bundle but not in the manifest" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name in sorted(listed):
        if reader.sizes[name] != listed[name]["size"]:
            raise BundleError(f"{name}: {reader.sizes[name]} bytes in the bundle, the manifest lists {listed[name]['size']} "
                              "(the file was modified or damaged)")
    digests = {}
    for name in sorted(listed):
        digest, size = reader.sha256(name, listed[name]["size"])
        if size != listed[name]["size"] or digest != listed[name]["sha256"]:
            raise BundleError(f"{name}: checksum mismatch (the file was modified or damaged)")
        digests[name] = digest
    for art in manifest["artifacts"]:
        for m in art["models"].values():
            want = tree_sha256(digests, m["file"]) if m.get("directory") else digests.get(m["file"])
            if want != m.get("sha256"):
                raise BundleError(f"{m['file']}: its sha256 in the artifact entry {art['id']!r} does not match its files")


def _runner(art: dict[str, Any], root: Path):
    """The artifact's runner, or the reason it cannot run here (an absent runtime)."""
    from ..export import TARGETS, get_target
    from ..runner import PairRunner
    from ..spec import PipelineSpec

    if art["format"] not in TARGETS.names():
        return None, f"this mexport has no {art['format']} target"
    target = get_target(art["format"])
    try:
        if art["kind"] == "pair":
            spec = PipelineSpec.from_dict(art["pipeline"]["spec"])
            return PairRunner(target.runner(root / art["models"]["coarse"]["file"], threads=1),
                              target.runner(root / art["models"]["refine"]["file"], threads=1), spec, name=art["id"]), None
        return target.runner(root / art["models"][art["kind"]]["file"], threads=1), None
    except ImportError as e:
        return None, f"runtime not installed ({e.name or e})"


def check_integrity(path: str | Path, max_unpacked: int = MAX_UNPACKED) -> dict[str, Any]:
    """The manifest, after its schema and every file's size and sha256 were checked."""
    with BundleReader(path, max_unpacked) as reader:
        if MANIFEST not in reader.names:
            raise BundleError(f"{path}: no {MANIFEST}; not a mexport bundle")
        manifest = loads(reader.read(MANIFEST, MAX_MANIFEST))
        check_files(reader, manifest)
    return manifest


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
