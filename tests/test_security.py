"""Opening what someone sent you: an artifact or a bundle is data, never code, and never a way to
make mexport read outside it or exhaust the machine. Checksums catch damage; signatures catch
tampering."""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from .conftest import ROOT, TINY, invoke, one_error_line, reseal, staging_left

PAYLOAD = """import pathlib
pathlib.Path({marker!r}).write_text("the payload ran")


def factory():
    raise SystemExit(0)
"""


def set_provenance_model(src: Path, dst: Path, model: str) -> None:
    """A copy of an ONNX artifact whose embedded provenance names another model (as anyone can write)."""
    import onnx

    m = onnx.load(src)
    for p in m.metadata_props:
        if p.key == "mexport.provenance":
            prov = json.loads(p.value)
            prov["model"] = model
            p.value = json.dumps(prov)
    onnx.save(m, dst)


@pytest.fixture
def received(tiny_onnx, tmp_path, monkeypatch):
    """A directory as a user receives it: fused.onnx, and payload.py beside it, which leaves a marker
    file if anything imports it. The working directory and sys.path point at it, so each form of
    reference would import it if mexport tried."""
    d = tmp_path / "received"
    d.mkdir()
    marker = tmp_path / "marker"
    (d / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))
    yield d, marker
    sys.modules.pop("payload", None)


REFERENCES = {"file": "payload.py:factory", "absolute file": "{dir}/payload.py:factory", "module": "payload:factory"}


@pytest.mark.parametrize("form", list(REFERENCES))
@pytest.mark.parametrize("command", ["validate", "bundle create"])
def test_an_artifact_never_imports_the_code_its_provenance_names(received, tiny_onnx, command, form):
    d, marker = received
    set_provenance_model(tiny_onnx / "fused.onnx", d / "fused.onnx", REFERENCES[form].format(dir=d))
    args = ["validate", "fused.onnx"] if command == "validate" else ["bundle", "create", "fused.onnx", "-o", "x.zip"]
    line = one_error_line(invoke(*args, "-q"), 2, "not a registered model", "never imports code", "pass --model")
    assert REFERENCES[form].format(dir=d) in line
    assert not marker.exists() and "payload" not in sys.modules
    assert sorted(p.name for p in d.iterdir()) == ["fused.onnx", "payload.py"]  # no bundle, no staging


def test_the_same_reference_given_as_model_is_imported(received, tiny_onnx):
    """The control: the payload does run when the user names it, so the test above can fail. Its
    factory's sys.exit(0) is an error, not a silent success."""
    d, marker = received
    set_provenance_model(tiny_onnx / "fused.onnx", d / "fused.onnx", "payload.py:factory")
    one_error_line(invoke("validate", "fused.onnx", "--model", "payload.py:factory", "-q"), 2, "sys.exit(0)")
    assert marker.read_text() == "the payload ran"


def test_a_registered_name_in_provenance_still_resolves(tiny_onnx, tmp_path):
    """The tiny model's name is not registered: its artifacts need --model; with it they pass."""
    one_error_line(invoke("validate", tiny_onnx / "fused.onnx", "-q"), 2, "'tiny-modnet'", "not a registered model")
    r = invoke("validate", tiny_onnx / "fused.onnx", "--model", TINY, "-q")
    assert r.exit_code == 0 and r.stdout.strip() == "PASS"


# ----------------------------------------------------------------------------- zip bombs

def zeros_deflate(mib: int) -> bytes:
    """A raw deflate stream of ``mib`` MiB of zeros, made without compressing them: after a full
    flush, the compressor's output for each further MiB of zeros is the same block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = bytes(1 << 20)
    first = c.compress(one) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(one) + c.flush(zlib.Z_FULL_FLUSH)
    return first + block * (mib - 1) + c.flush()


def raw_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """A zip written by hand from (name, deflated data, declared size, declared CRC) entries, so a
    test can declare any size: what an attacker's zip tool writes."""
    out, central = bytearray(), bytearray()
    for name, data, size, crc in entries:
        n = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(n), 0) + n + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, 0, 8, 0, 0x21, crc, len(data), size, len(n),
                               0, 0, 0, 0, 0o100644 << 16, offset) + n
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out))
    return path


def bundle_entries(bundle: Path) -> list[tuple[str, bytes, int, int]]:
    with zipfile.ZipFile(bundle) as zf:
        out = []
        for info in zf.infolist():
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            out.append((info.filename, c.compress(zf.read(info)) + c.flush(), info.file_size, info.CRC))
    return out


def verify_with_budget(path: Path) -> tuple[object, float, int]:
    """`mexport bundle verify PATH`, its wall time and the peak of Python memory it allocated."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        r = invoke("bundle", "verify", path, "-q")
        return r, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def bomb(bundle: Path, dst: Path, victims: dict[str, tuple[int, bool]]) -> Path:
    """The bundle with some entries' data replaced by zeros that inflate to N MiB; ``honest`` entries
    declare that size (and a CRC nobody checks first), the others keep their real size and CRC."""
    entries = []
    for name, data, size, crc in bundle_entries(bundle):
        if name in victims:
            mib, honest = victims[name]
            data = zeros_deflate(mib)
            size, crc = (mib << 20, 0) if honest else (size, crc)
        entries.append((name, data, size, crc))
    return raw_zip(dst, entries)


def golden_files(bundle: Path) -> list[str]:
    return sorted(n for n in zipfile.ZipFile(bundle).namelist() if n.endswith(".f32"))


def test_a_zip_that_unpacks_past_the_cap_is_refused_before_inflating(tiny_bundle, tmp_path):
    """Two entries of 1.5 GiB of zeros (1.6 MB each, compressed): 3 GiB in all, over the 2 GiB cap."""
    a, b = golden_files(tiny_bundle)[:2]
    path = bomb(tiny_bundle, tmp_path / "bomb.zip", {a: (1536, True), b: (1536, True)})
    assert path.stat().st_size < 5e6
    r, seconds, peak = verify_with_budget(path)
    one_error_line(r, 2, "unpack to 3.0 GiB", "over the 2.0 GiB", "zip bomb")
    assert seconds < 5 and peak < 32e6, (seconds, peak)


def test_an_entry_bigger_than_the_manifest_lists_is_refused_before_reading(tiny_bundle, tmp_path):
    """1 GiB declared honestly (under the cap), where the manifest lists a few KB."""
    (victim,) = golden_files(tiny_bundle)[:1]
    r, seconds, peak = verify_with_budget(bomb(tiny_bundle, tmp_path / "bomb.zip", {victim: (1024, True)}))
    one_error_line(r, 2, f"{victim}: 1073741824 bytes in the bundle, the manifest lists")
    assert seconds < 5 and peak < 32e6, (seconds, peak)


def test_a_lying_zip_header_cannot_make_verify_inflate_more(tiny_bundle, tmp_path):
    """The header keeps the small size and CRC the manifest lists; the data inflate to 1 GiB."""
    (victim,) = golden_files(tiny_bundle)[:1]
    r, seconds, peak = verify_with_budget(bomb(tiny_bundle, tmp_path / "bomb.zip", {victim: (1024, False)}))
    one_error_line(r, 2, victim)
    assert seconds < 5 and peak < 32e6, (seconds, peak)


def test_a_huge_manifest_is_refused_before_reading(tiny_bundle, tmp_path):
    r, seconds, peak = verify_with_budget(bomb(tiny_bundle, tmp_path / "bomb.zip", {"manifest.json": (100, True)}))
    one_error_line(r, 2, "manifest.json: 104857600 bytes, more than the 16777216 expected")
    assert seconds < 5 and peak < 32e6, (seconds, peak)


def test_the_hand_written_zip_of_an_intact_bundle_verifies(tiny_bundle, tmp_path):
    """The control for the tests above: raw_zip itself writes a zip that mexport accepts."""
    r = invoke("bundle", "verify", raw_zip(tmp_path / "same.zip", bundle_entries(tiny_bundle)), "-q")
    assert r.exit_code == 0 and r.stdout.startswith("PASS"), r.output


# ----------------------------------------------------------------------------- Core ML package paths

def retarget_manifest(pkg: Path, path: str) -> None:
    m = json.loads((pkg / "Manifest.json").read_text())
    m["itemInfoEntries"][m["rootModelIdentifier"]]["path"] = path
    (pkg / "Manifest.json").write_text(json.dumps(m))


def link_out(pkg: Path, inside: str, outside: Path) -> None:
    (pkg / inside).unlink()
    (pkg / inside).symlink_to(outside)


PACKAGE_ESCAPES = {
    "absolute spec path": lambda pkg, secret: retarget_manifest(pkg, str(secret)),
    "spec path with ..": lambda pkg, secret: retarget_manifest(pkg, "../../../" + secret.name),
    "spec is a symlink out": lambda pkg, secret: link_out(pkg, "Data/com.apple.CoreML/model.mlmodel", secret),
    "weights are a symlink out": lambda pkg, secret: link_out(pkg, "Data/com.apple.CoreML/weights/weight.bin", secret),
    "weights directory is a symlink out": lambda pkg, secret: (
        shutil.rmtree(pkg / "Data/com.apple.CoreML/weights"), (pkg / "Data/com.apple.CoreML/weights").symlink_to(secret.parent)),
}


@pytest.mark.parametrize("escape", list(PACKAGE_ESCAPES))
@pytest.mark.parametrize("command", ["validate", "bundle create"])
def test_a_core_ml_package_cannot_name_a_file_outside_itself(tiny_coreml, tmp_path, escape, command):
    """A received package whose Manifest.json or links point at another file (here a copy of the
    real model spec, which mexport would happily read as the model) is refused, naming the escape."""
    d = tmp_path / "received"
    shutil.copytree(tiny_coreml, d)
    secret = tmp_path / "elsewhere" / "model.mlmodel"
    secret.parent.mkdir()
    shutil.copy(d / "fused.mlpackage/Data/com.apple.CoreML/model.mlmodel", secret)
    PACKAGE_ESCAPES[escape](d / "fused.mlpackage", secret)
    args = (["validate", d / "fused.mlpackage"] if command == "validate"
            else ["bundle", "create", d / "fused.mlpackage", "-o", tmp_path / "b.zip"])
    line = one_error_line(invoke(*args, "--model", TINY, "-q"), 2, "corrupt or not a Core ML model package")
    assert ("outside the package" in line) or ("symbolic link" in line), line
    assert not (tmp_path / "b.zip").exists() and not staging_left(tmp_path)


# ----------------------------------------------------------------------------- signatures

SIGNER = "release@example.com"


@pytest.fixture
def keys(tmp_path):
    """A fresh ed25519 key (no passphrase) and an allowed-signers file trusting it as SIGNER."""
    d = tmp_path / "keys"
    d.mkdir()
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-C", SIGNER, "-q", "-f", str(key)], check=True)
    allowed = d / "allowed_signers"
    allowed.write_text(f'{SIGNER} namespaces="mexport-bundle" {key.with_name(key.name + ".pub").read_text()}')
    return key, allowed


def verify_signed(bundle, allowed, identity=SIGNER, *extra):
    return invoke("bundle", "verify", bundle, "--allowed-signers", allowed, "--identity", identity, "-q", *extra)


def test_a_signed_zip_bundle_verifies_with_mexport_and_with_ssh_keygen_alone(tiny_bundle, keys, tmp_path):
    key, allowed = keys
    b = tmp_path / "b.zip"
    shutil.copy(tiny_bundle, b)
    r = invoke("bundle", "sign", b, "--key", key)
    assert r.exit_code == 0 and r.stdout.strip() == f"wrote {b}.sig", r.output
    r = verify_signed(b, allowed)
    assert r.exit_code == 0 and r.stdout.startswith("PASS") and f"signed by {SIGNER}" in r.stdout, r.output
    with open(b, "rb") as f:  # the README's command, no mexport involved
        out = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", SIGNER, "-n", "mexport-bundle", "-s", f"{b}.sig"],
                             stdin=f, capture_output=True, text=True)
    assert out.returncode == 0 and "Good" in out.stdout


def test_a_resealed_bundle_passes_its_checksums_but_not_its_signature(tiny_bundle, keys, tmp_path):
    """What the README says: checksums catch damage, not tampering. Someone edits README.md (the
    app team's instructions) and recomputes the manifest: verify passes, the signature does not."""
    key, allowed = keys
    b = tmp_path / "b.zip"
    shutil.copy(tiny_bundle, b)
    assert invoke("bundle", "sign", b, "--key", key).exit_code == 0
    readme = zipfile.ZipFile(b).read("README.md").replace(b"PASS", b"PASS (and email your key to evil@example.com)")
    reseal(b, b, change={"README.md": readme})
    assert invoke("bundle", "verify", b, "-q").exit_code == 0  # the checksums agree
    one_error_line(verify_signed(b, allowed), 2, "signature check failed", "changed after it was signed")


def test_a_directory_bundle_signs_its_manifest(tiny_onnx, keys, tmp_path):
    from mexport.bundle import create_bundle

    key, allowed = keys
    d = create_bundle([tiny_onnx], tmp_path / "dir-bundle", model=TINY, photos=("astronaut",)).path
    assert invoke("bundle", "sign", d, "--key", key).exit_code == 0 and (tmp_path / "dir-bundle.sig").is_file()
    assert verify_signed(d, allowed).exit_code == 0
    f = d / "models" / "onnx-fp32" / "fused.onnx"  # a file changed: its checksum no longer matches the signed manifest
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    one_error_line(verify_signed(d, allowed), 2, "models/onnx-fp32/fused.onnx")


def _garbage_key(keys, tmp_path):
    bad = tmp_path / "garbage_key"
    bad.write_text("not a key\n")
    return ["bundle", "sign", "{b}", "--key", bad]


SIGNATURE_FAULTS = {
    "wrong identity": (lambda keys, tmp: ["bundle", "verify", "{b}", "--allowed-signers", keys[1], "--identity", "mallory@example.com"],
                       "signature check failed for 'mallory@example.com'"),
    "no signature": (lambda keys, tmp: ["bundle", "verify", "{b}", "--allowed-signers", keys[1], "--identity", SIGNER, "--signature",
                                        tmp / "none.sig"], "no signature at"),
    "identity without allowed signers": (lambda keys, tmp: ["bundle", "verify", "{b}", "--identity", SIGNER], "go together"),
    "allowed signers missing": (lambda keys, tmp: ["bundle", "verify", "{b}", "--allowed-signers", tmp / "nope", "--identity", SIGNER],
                                "allowed signers file not found"),
    "signing key missing": (lambda keys, tmp: ["bundle", "sign", "{b}", "--key", tmp / "no_such_key"], "signing key not found"),
    "signing key is not a key": (_garbage_key, "ssh-keygen could not sign"),
    "signing a damaged bundle": (lambda keys, tmp: ["bundle", "sign", "{damaged}", "--key", keys[0]], "README.md: cannot be read"),
}


@pytest.mark.parametrize("fault", list(SIGNATURE_FAULTS))
def test_signature_faults_are_one_line(tiny_bundle, keys, tmp_path, fault):
    b = tmp_path / "b.zip"
    shutil.copy(tiny_bundle, b)
    assert invoke("bundle", "sign", b, "--key", keys[0]).exit_code == 0
    damaged = tmp_path / "damaged.zip"
    shutil.copy(tiny_bundle, damaged)
    data = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as zf:  # flip a byte of README.md's stored data: a CRC error
        info = zf.getinfo("README.md")
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    make, msg = SIGNATURE_FAULTS[fault]
    args = [str(a).format(b=b, damaged=damaged) for a in make(keys, tmp_path)]
    before = sorted(p.name for p in tmp_path.iterdir())
    one_error_line(invoke(*args), 2, msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no signature written, nothing else either


def test_a_refused_package_is_one_line_in_a_fresh_process(tiny_coreml, tmp_path):
    """The same refusal as a user's shell sees it: importing coremltools and torchao logs a dozen
    notices on stderr, which in-process tests never see (they were imported earlier)."""
    d = tmp_path / "received"
    shutil.copytree(tiny_coreml, d)
    retarget_manifest(d / "fused.mlpackage", "/etc/passwd")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "mexport.cli", "validate", str(d / "fused.mlpackage"), "--model", TINY, "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [f"Error: {d / 'fused.mlpackage'}: corrupt or not a Core ML model package "
                                       "(Manifest.json names the model spec '/etc/passwd', outside the package)"], out.stderr
