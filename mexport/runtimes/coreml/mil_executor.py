"""Run a saved Core ML ``.mlpackage`` on Linux: load its ML Program with its weights and execute
every op with numpy/torch CPU kernels.

Core ML itself (``MLModel.predict``) exists only on macOS, so without this an exported Core ML
model could only be checked for structure here. The executor reads the program and the weights
from the saved package alone (never from the torch model or from the converter's in-memory
program): ``Manifest.json`` -> the model spec -> coremltools' milproto loader, which rebuilds the
MIL program with the values stored in ``weights/weight.bin``. Before that, ``weight.bin`` is
walked blob by blob, so a truncated or damaged file is an ``InputError`` rather than a crash in the
loader's C++ reader.

Every op's result is cast to the dtype the program declares for it (fp16 programs: rounded to
float16 after each op, as an fp16 device computes), with float32 arithmetic inside an op. In a mixed
program (fp16 compute with some layers kept fp32) each op keeps its own declared dtype, so the fp32
ops are never rounded to fp16 and the program's ``cast`` ops round exactly where it puts them. W8A8
programs' ``quantize``/``dequantize`` ops follow coremltools' reference math (``optimize._utils``).
On the tiny test model they reproduce torch's fake-quantized model exactly; on U^2-Net-p, isolated
one-level rounding differences (x / scale against x * (1 / scale), summation order) grow through
~130 requantizations: the two are 40.2 / 36.3 dB apart on chelsea / motorcycle_right, yet each is
as far from float as the other (38.3 / 35.5 dB emulated, 38.1 / 34.0 dB torch, fp32 compute). An
emulated W8A8 PSNR is an estimate of the same kind as a device's, not a bit-exact replay. Compressed
weights (``constexpr_*`` ops) are expanded here, by this module's own code following the MIL spec,
not by coremltools' ``decompress`` helpers, so a converter bug there would show as a fidelity loss.
An op this module does not implement raises ``CannotVerifyError`` naming it: never a silent pass.

What this cannot reproduce: a device's own kernels (the Neural Engine and GPU accumulate in fp16
with their own ordering, and may fuse ops), so an emulated PSNR is an estimate of the program's
numerics, not a measurement on a phone.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CannotVerifyError, InputError
from .mil_kernels import BACKBONE_KERNELS, _binary, _f32, _unary

BLOB_SENTINEL = 0xDEADBEEF
# MIL storage blob dtypes (mlmodel/src/MILBlob/Blob/BlobDataType.hpp): code -> bytes per element,
# or None for sub-byte types whose size is checked only against the file length.
_BLOB_DTYPES = {1: 2, 2: 4, 3: 1, 4: 1, 5: 2, 6: 2, 7: 4, 8: None, 9: None, 10: None, 11: None, 12: None, 13: None, 14: 4}


@dataclass
class Package:
    """A loaded ``.mlpackage``: the protobuf spec, the rebuilt MIL program and where it came from."""

    path: Path
    spec: Any
    program: Any
    weights_dir: Path
    blobs: int
    load_s: float = 0.0

    @property
    def main(self):
        return self.program.functions["main"]

    def op_types(self) -> list[str]:
        return [op.op_type for op in self.main.operations]


def _fail(path: Path, why: str) -> InputError:
    return InputError(f"{path}: corrupt or not a Core ML model package ({why})")


def package_files(path: str | Path) -> tuple[Path, Path]:
    """(model spec file, weights directory) named by the package's ``Manifest.json``. A package is
    data from anywhere: every file it names must lie inside it, and it may hold no symbolic link
    (one could point at any file on this machine, which mexport would then read as the model)."""
    import os
    from pathlib import PurePosixPath

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a Core ML .mlpackage directory")
    for folder, dirs, files in os.walk(path):  # os.walk follows no links: a linked directory is listed, not entered
        for name in dirs + files:
            if (Path(folder) / name).is_symlink():
                raise _fail(path, f"{(Path(folder) / name).relative_to(path)} is a symbolic link; a package's files must be inside it")
    manifest = path / "Manifest.json"
    if not manifest.is_file():
        raise _fail(path, "Manifest.json is missing")
    try:
        m = json.loads(manifest.read_bytes())
        root = m["itemInfoEntries"][m["rootModelIdentifier"]]
        rel = root["path"]
    except (ValueError, KeyError, TypeError) as e:
        raise _fail(path, f"Manifest.json is unreadable: {e!r}") from None
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel or "\0" in rel:
        raise _fail(path, f"Manifest.json names the model spec {rel!r}, outside the package")
    spec_file = path / "Data" / rel
    if not spec_file.resolve().is_relative_to(path.resolve()):
        raise _fail(path, f"Manifest.json names the model spec {rel!r}, outside the package")
    if not spec_file.is_file():
        raise _fail(path, f"the model spec {rel} named by Manifest.json is missing")
    return spec_file, spec_file.parent / "weights"


def check_weight_file(path: Path) -> int:
    """Walk ``weight.bin`` (MIL blob storage: a 64-byte header, then per blob a 64-byte-aligned
    metadata record ``{0xDEADBEEF, dtype, size, offset}`` and its data); raise InputError on any
    record that is damaged or runs past the end of the file. Returns the number of blobs."""
    data = path.read_bytes()
    if len(data) < 64:
        raise _fail(path, f"weight file is {len(data)} bytes, shorter than its 64-byte header")
    count, version = struct.unpack_from("<II", data, 0)
    if version != 2:
        raise _fail(path, f"weight file version {version}, expected 2")
    pos = 64
    for i in range(count):
        if pos + 24 > len(data):
            raise _fail(path, f"weight file truncated: blob {i} of {count} starts past its end ({len(data)} bytes)")
        sentinel, dtype, size, offset = struct.unpack_from("<IIQQ", data, pos)
        if sentinel != BLOB_SENTINEL:
            raise _fail(path, f"weight blob {i} at byte {pos} has a bad sentinel {sentinel:#x}")
        if dtype not in _BLOB_DTYPES:
            raise _fail(path, f"weight blob {i} has unknown dtype code {dtype}")
        if offset < pos + 24 or offset + size > len(data):
            raise _fail(path, f"weight file truncated: blob {i} needs bytes {offset}..{offset + size}, file has {len(data)}")
        width = _BLOB_DTYPES[dtype]
        if width and size % width:
            raise _fail(path, f"weight blob {i}: {size} bytes is not a whole number of elements")
        pos = -(-(offset + size) // 64) * 64
    return count


def _blob_refs(spec) -> list[tuple[str, int]]:
    """Every (file name, offset) the program's protobuf points at."""
    refs: list[tuple[str, int]] = []

    def visit(msg) -> None:
        for fd, val in msg.ListFields():
            if fd.type != fd.TYPE_MESSAGE:
                continue
            repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED
            items = val.values() if fd.message_type.GetOptions().map_entry else (val if repeated else [val])
            for v in items:
                if type(v).__name__ == "BlobFileValue":
                    refs.append((v.fileName, v.offset))
                elif hasattr(v, "ListFields"):
                    visit(v)

    visit(spec.mlProgram)
    return refs


def load_package(path: str | Path) -> Package:
    """Read the spec and weights of a saved package and rebuild its MIL program (no torch involved)."""
    t0 = time.perf_counter()
    path = Path(path)
    spec_file, weights_dir = package_files(path)
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(spec_file.read_bytes())
    except Exception as e:  # protobuf raises DecodeError and friends
        raise _fail(path, f"model spec does not parse: {e}") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise CannotVerifyError(f"{path}: cannot verify a {spec.WhichOneof('Type')!r} model; the executor runs ML Programs only")
    refs = _blob_refs(spec)
    blobs = 0
    files = {name.split("/")[-1] for name, _ in refs}
    for name in sorted(files):
        wf = weights_dir / name
        if not wf.is_file():
            raise _fail(path, f"weight file {name} is missing")
        blobs += check_weight_file(wf)
    for name, offset in refs:
        data_len = (weights_dir / name.split("/")[-1]).stat().st_size
        if offset < 64 or offset + 24 > data_len:
            raise _fail(path, f"a weight points at byte {offset} of {name}, outside the file")
        with open(weights_dir / name.split("/")[-1], "rb") as f:
            f.seek(offset)
            if struct.unpack("<I", f.read(4))[0] != BLOB_SENTINEL:
                raise _fail(path, f"a weight points at byte {offset} of {name}, which is not a blob record")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    try:
        program = milproto_load(spec, spec.specificationVersion, file_weights_dir=str(weights_dir))
    except Exception as e:  # the loader raises ValueError/TypeError/RuntimeError on malformed programs
        raise _fail(path, f"coremltools cannot rebuild the program: {str(e).splitlines()[0][:300]}") from None
    if "main" not in program.functions:
        raise _fail(path, "the program has no 'main' function")
    return Package(path, spec, program, weights_dir, blobs, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Kernels. Each takes the op and a getter for its inputs (numpy arrays), returns numpy arrays.

def _t(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _pads(op, get, x_shape, kernel, strides, dilations) -> list[int]:
    """[top, bottom, left, right] for conv/pool pad_type valid/custom/same/same_lower."""
    pad_type = str(get("pad_type")) if op.inputs.get("pad_type") is not None else "valid"
    if pad_type == "valid":
        return [0, 0, 0, 0]
    if pad_type == "custom":
        return [int(v) for v in get("pad")]
    if pad_type in ("same", "same_lower"):
        out = []
        for n, k, s, d in zip(x_shape[-2:], kernel, strides, dilations):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            out += [big, small] if pad_type == "same_lower" else [small, big]
        return out
    raise CannotVerifyError(f"cannot verify: pad_type {pad_type!r} of op {op.name!r} ({op.op_type})")


def _k_conv(op, get):
    import torch.nn.functional as F

    x, w = get("x"), get("weight")
    if x.ndim != 4:
        raise CannotVerifyError(f"cannot verify: {x.ndim - 2}-D conv {op.name!r}")
    strides = [int(v) for v in get("strides", [1, 1])]
    dil = [int(v) for v in get("dilations", [1, 1])]
    groups = int(get("groups", 1))
    t, b, l, r = _pads(op, get, x.shape, w.shape[2:], strides, dil)
    xt = F.pad(_t(x), (l, r, t, b))
    bias = get("bias", None)
    y = F.conv2d(xt, _t(w), None if bias is None else _t(bias), stride=strides, dilation=dil, groups=groups)
    return y.numpy()


def _pool_out(n: int, k: int, s: int, p0: int, p1: int, ceil: bool) -> int:
    v = (n + p0 + p1 - k) / s
    return int(np.ceil(v) if ceil else np.floor(v)) + 1


def _k_pool(kind: str):
    def kernel(op, get):
        import torch.nn.functional as F

        x = get("x")
        if x.ndim != 4:
            raise CannotVerifyError(f"cannot verify: {x.ndim - 2}-D {op.op_type} {op.name!r}")
        k = [int(v) for v in get("kernel_sizes")]
        s = [int(v) for v in get("strides", [1, 1])]
        ceil = bool(get("ceil_mode", False))
        t, b, l, r = _pads(op, get, x.shape, k, s, [1, 1])
        oh = _pool_out(x.shape[2], k[0], s[0], t, b, ceil)
        ow = _pool_out(x.shape[3], k[1], s[1], l, r, ceil)
        # MIL: out = ceil/floor((n + pads - k) / s) + 1; windows that reach past the padded input
        # (ceil mode) see only the values inside it. Pad the far side so exactly oh x ow windows fit.
        extra_b = max((oh - 1) * s[0] + k[0] - (x.shape[2] + t + b), 0)
        extra_r = max((ow - 1) * s[1] + k[1] - (x.shape[3] + l + r), 0)
        xt = _t(x)
        if kind == "max":
            xt = F.pad(xt, (l, r + extra_r, t, b + extra_b), value=-np.inf)
            y = F.max_pool2d(xt, k, s)
        else:
            ones = _t(np.ones((1, 1) + x.shape[2:], np.float32))
            real = F.pad(ones, (l, r + extra_r, t, b + extra_b))  # 1 where the input is
            padded = F.pad(F.pad(ones, (l, r, t, b), value=1.0), (0, extra_r, 0, extra_b))  # input + explicit pad
            xt = F.pad(xt, (l, r + extra_r, t, b + extra_b))
            total = F.avg_pool2d(xt, k, s) * (k[0] * k[1])
            exclude = bool(get("exclude_padding_from_average", False))
            count = F.avg_pool2d(real if exclude else padded, k, s) * (k[0] * k[1])
            y = total / count
        return y.numpy()

    return kernel


def _grid(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for 1-D linear resampling, per the MIL spec's grid."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("align", "strict_align"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2 if mode == "align" else 0.0)
        else:
            g = i * ((n_in - 1) / (n_out - 1))
    elif mode == "half_pixel":
        sp = n_in / n_out
        g = i * sp + 0.5 * sp - 0.5
    elif mode == "asymmetric":
        g = i * (n_in / n_out)
    elif mode == "default":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "offset":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:  # pragma: no cover - callers pass the modes above
        raise ValueError(mode)
    g = np.clip(g, 0, n_in - 1)
    lo = np.floor(g).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (g - lo).astype(np.float32)


def _bilinear(x: np.ndarray, out_hw: tuple[int, int], mode_h: str, mode_w: str) -> np.ndarray:
    """Separable bilinear resampling on the last two axes, written from the MIL grid definitions
    (not torch's interpolate), so the emulator is an independent check of the converter."""
    x = _f32(x)
    lo, hi, w = _grid(x.shape[-2], out_hw[0], mode_h)
    w = w[:, None]
    x = x[..., lo, :] * (1 - w) + x[..., hi, :] * w
    lo, hi, w = _grid(x.shape[-1], out_hw[1], mode_w)
    return x[..., lo] * (1 - w) + x[..., hi] * w


def _k_upsample_bilinear(op, get):
    x = get("x")
    align = bool(get("align_corners", True))
    half = get("half_pixel_centers", None)
    half = (not align) if half is None else bool(half)
    if align and half:
        raise CannotVerifyError(f"cannot verify: {op.name!r} sets both align_corners and half_pixel_centers")
    mode = "align" if align else ("half_pixel" if half else "asymmetric")
    # The output size is the one the program declares (MIL: recomputed from the scale factor).
    return _bilinear(x, tuple(op.outputs[0].shape[-2:]), mode, mode)


_RESIZE_MODES = {"STRICT_ALIGN_CORNERS": "strict_align", "ALIGN_CORNERS": "align", "DEFAULT": "default",
                 "OFFSET_CORNERS": "offset", "UNALIGN_CORNERS": "half_pixel"}


def _k_resize_bilinear(op, get):
    mode = str(get("sampling_mode", "DEFAULT"))
    if mode not in _RESIZE_MODES:
        raise CannotVerifyError(f"cannot verify: resize_bilinear sampling_mode {mode!r} of {op.name!r}")
    m = _RESIZE_MODES[mode]
    return _bilinear(get("x"), tuple(op.outputs[0].shape[-2:]), m, m)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _k_nearest(op, get):
    x = get("x")
    oh, ow = op.outputs[0].shape[-2:]
    return x[..., _nearest_index(x.shape[-2], oh), :][..., _nearest_index(x.shape[-1], ow)]


def _k_concat(op, get):
    vals = get("values")
    axis = int(get("axis"))
    if bool(get("interleave", False)):
        stacked = np.stack(vals, axis=axis + 1 if axis >= 0 else axis)
        shape = list(vals[0].shape)
        shape[axis] = sum(v.shape[axis] for v in vals)
        return stacked.reshape(shape)
    return np.concatenate(vals, axis=axis)


def _k_slice_by_index(op, get):
    x = get("x")
    n = x.ndim
    begin = [int(v) for v in get("begin")]
    end = [int(v) for v in get("end")]
    stride = [int(v) for v in get("stride", [1] * n)]
    bm = [bool(v) for v in get("begin_mask", [False] * n)]
    em = [bool(v) for v in get("end_mask", [False] * n)]
    sm = [bool(v) for v in get("squeeze_mask", [False] * n)]
    idx = []
    for i in range(n):
        if sm[i]:
            idx.append(begin[i])
            continue
        idx.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return x[tuple(idx)]


def _k_pad(op, get):
    """MIL ``pad``: ``pad`` holds (before, after) pairs for the last len(pad) / 2 axes."""
    x = get("x")
    p = [int(v) for v in np.asarray(get("pad")).reshape(-1)]
    widths = [(0, 0)] * (x.ndim - len(p) // 2) + [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
    mode = str(get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(get("constant_val", 0.0)).astype(x.dtype))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _k_pixel_shuffle(op, get):
    """MIL ``pixel_shuffle`` (as PyTorch's): (N, C r^2, H, W) -> (N, C, H r, W r), channel
    c r^2 + i r + j going to pixel (i, j) of each r x r block (refine network v3's phase space)."""
    x = get("x")
    r = int(get("upscale_factor"))
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def _k_reduce(fn: Callable) -> Callable:
    def kernel(op, get):
        x = _f32(get("x"))
        axes = get("axes", None)
        keep = bool(get("keep_dims", False))
        return fn(x, axis=None if axes is None else tuple(int(a) for a in np.atleast_1d(axes)), keepdims=keep)

    return kernel


def _k_cast(op, get):
    from coremltools.converters.mil.mil import types

    return np.asarray(get("x")).astype(types.nptype_from_builtin(op.outputs[0].dtype))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.sigmoid(_t(x)).numpy()



# --- activation quantization (iOS17+: what coremltools.optimize.torch's W8A8 leaves in a program) ---

def _quant_params(op, get, rank: int) -> tuple[np.ndarray, np.ndarray | None]:
    """scale and zero_point shaped to broadcast over the data (a vector lies along ``axis``)."""
    scale = np.asarray(get("scale"))
    zp = get("zero_point", None)
    axis = get("axis", None)
    if scale.ndim and axis is None:
        raise InputError(f"{op.name}: a per-channel scale needs an axis")
    ax = int(axis) % rank if axis is not None else 0
    return _axis_shape(scale, rank, ax), (None if zp is None else _axis_shape(np.asarray(zp), rank, ax))


def _k_quantize(op, get):
    """MIL iOS17 ``quantize``: clip(round(x / scale) + zero_point) to int8/uint8. The division runs
    in the input's own precision (an fp16 program divides in fp16) and rounds half to even, as
    coremltools' reference (``optimize._utils.quantize_by_scale_and_zp``) does."""
    from coremltools.converters.mil.mil import types

    x = np.asarray(get("input"))
    scale, zp = _quant_params(op, get, x.ndim)
    dtype = types.nptype_from_builtin(op.outputs[0].dtype)
    if np.dtype(dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise CannotVerifyError(f"cannot verify: quantize {op.name!r} to {np.dtype(dtype)}")
    q = np.around(x / scale.astype(x.dtype))
    if zp is not None:
        q = q + zp.astype(np.float32).astype(q.dtype)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def _k_dequantize(op, get):
    """MIL iOS17 ``dequantize``: (q - zero_point) * scale in float32, in the scale's dtype."""
    q = np.asarray(get("input"))
    scale, zp = _quant_params(op, get, q.ndim)
    out = q.astype(np.float32)
    if zp is not None:
        out = out - zp.astype(np.float32)
    return (out * scale.astype(np.float32)).astype(scale.dtype)


# --- compressed weights --------------------------------------------------------------------

def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Elements packed least significant bit first (the MIL storage convention)."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")[: count * nbits]
    if bits.size < count * nbits:
        raise InputError(f"packed weight data holds {bits.size} bits, needs {count * nbits}")
    return (bits.reshape(count, nbits).astype(np.int64) << np.arange(nbits)).sum(1)


def _axis_shape(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 0:
        return v
    shape = [1] * rank
    shape[axis] = v.size
    return v.reshape(shape)


def _k_affine_dequantize(op, get):
    q = np.asarray(get("quantized_data"))
    axis = int(get("axis")) % q.ndim
    scale = np.asarray(get("scale"))
    zp = np.asarray(get("zero_point"))
    return (_axis_shape(scale, q.ndim, axis).astype(np.float32)
            * (q.astype(np.float32) - _axis_shape(zp, q.ndim, axis).astype(np.float32))).astype(scale.dtype)


def _k_blockwise_shift_scale(op, get):
    data = np.asarray(get("data"))
    scale = np.asarray(get("scale"))
    offset = get("offset", None)
    out = data.astype(np.float32)
    if scale.ndim != data.ndim or any(d % s for d, s in zip(data.shape, scale.shape)):
        raise InputError(f"{op.name}: scale shape {scale.shape} does not tile data shape {data.shape}")

    def expand(v: np.ndarray) -> np.ndarray:
        for ax, (d, s) in enumerate(zip(data.shape, v.shape)):
            if d != s:
                v = np.repeat(v, d // s, axis=ax)
        return v

    if offset is not None:
        out = out - expand(np.asarray(offset).astype(np.float32))
    return (expand(scale.astype(np.float32)) * out).astype(scale.dtype)


def _k_lut_to_dense(op, get):
    lut = np.asarray(get("lut"))
    if "shape" in op.inputs:  # iOS16: packed uint8 indices, one 1-D LUT
        shape = tuple(int(v) for v in get("shape"))
        nbits = int(np.log2(lut.size))
        if 2**nbits != lut.size:
            raise InputError(f"{op.name}: LUT of {lut.size} entries is not a power of two")
        idx = _unpack_bits(get("indices"), nbits, int(np.prod(shape)))
        return lut.reshape(-1)[idx].reshape(shape)
    # iOS18: indices already unpacked (sub-byte dtype), LUT [*groups, NUM_PALETTES, VECTOR_SIZE]
    indices = np.asarray(get("indices")).astype(np.int64)
    if lut.shape[-1] != 1:
        raise CannotVerifyError(f"cannot verify: vector palettization (vector size {lut.shape[-1]}) in {op.name!r}")
    table = lut[..., 0]
    k = indices.ndim
    if table.ndim != k + 1 or any(d % g for d, g in zip(indices.shape, table.shape[:k])):
        raise InputError(f"{op.name}: LUT shape {lut.shape} does not tile indices shape {indices.shape}")
    grids = []
    for ax, (d, g) in enumerate(zip(indices.shape, table.shape[:k])):
        shape = [1] * k
        shape[ax] = d
        grids.append((np.arange(d) // (d // g)).reshape(shape))
    return table[tuple(grids) + (indices,)]


KERNELS: dict[str, Callable] = {
    "conv": _k_conv,
    "max_pool": _k_pool("max"),
    "avg_pool": _k_pool("avg"),
    "upsample_bilinear": _k_upsample_bilinear,
    "resize_bilinear": _k_resize_bilinear,
    "upsample_nearest_neighbor": _k_nearest,
    "resize_nearest_neighbor": _k_nearest,
    "concat": _k_concat,
    "pad": _k_pad,
    "pixel_shuffle": _k_pixel_shuffle,
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "pow": _binary(np.power),
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.minimum(np.maximum(x, 0), 6)),
    "sigmoid": _unary(_sigmoid),
    "tanh": _unary(np.tanh),
    "sqrt": _unary(np.sqrt),
    "clip": lambda op, get: np.clip(_f32(get("x")), float(get("alpha")), float(get("beta"))),
    "reduce_sum": _k_reduce(np.sum),
    "reduce_mean": _k_reduce(np.mean),
    "reduce_max": _k_reduce(np.max),
    "reduce_min": _k_reduce(np.min),
    "reduce_prod": _k_reduce(np.prod),
    "reduce_l2_norm": _k_reduce(lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))),
    "slice_by_index": _k_slice_by_index,
    "cast": _k_cast,
    "identity": lambda op, get: get("x"),
    "transpose": lambda op, get: np.transpose(get("x"), [int(v) for v in get("perm")]),
    "reshape": lambda op, get: np.reshape(get("x"), tuple(op.outputs[0].shape)),
    "expand_dims": lambda op, get: np.expand_dims(get("x"), tuple(int(a) for a in np.atleast_1d(get("axes")))),
    "squeeze": lambda op, get: np.squeeze(get("x"), None if get("axes", None) is None else tuple(int(a) for a in np.atleast_1d(get("axes")))),
    "quantize": _k_quantize,
    "dequantize": _k_dequantize,
    "constexpr_affine_dequantize": _k_affine_dequantize,
    "constexpr_blockwise_shift_scale": _k_blockwise_shift_scale,
    "constexpr_lut_to_dense": _k_lut_to_dense,
}
assert not set(KERNELS) & set(BACKBONE_KERNELS)
KERNELS.update(BACKBONE_KERNELS)
SUPPORTED_OPS = frozenset(KERNELS) | {"const"}


@dataclass
class RunStats:
    seconds: float = 0.0
    per_op_s: dict[str, float] = field(default_factory=dict)


class MilExecutor:
    """Executes the ``main`` function of a saved ML Program; ``__call__(**feeds)`` -> outputs by name."""

    def __init__(self, path: str | Path) -> None:
        self.package = load_package(path)
        self.path = self.package.path
        fn = self.package.main
        unknown = sorted({op.op_type for op in fn.operations} - SUPPORTED_OPS)
        if unknown:
            raise CannotVerifyError(f"{self.path}: cannot verify: the executor has no kernel for op(s) {', '.join(unknown)}")
        self.input_names = list(fn.inputs)
        self.output_names = [v.name for v in fn.outputs]
        self.stats = RunStats()
        self._consts = self._materialize_consts()

    def _materialize_consts(self) -> dict[str, np.ndarray]:
        """Const values as stored in the package; constexpr ops are expanded once here too."""
        from coremltools.converters.mil.mil import types

        env: dict[str, np.ndarray] = {}
        for op in self.package.main.operations:
            if op.op_type == "const":
                v = op.outputs[0].val
                if v is None:
                    raise InputError(f"{self.path}: const {op.name!r} has no value in the package")
                env[op.outputs[0].name] = np.asarray(v)
            elif op.op_type.startswith("constexpr_"):
                out = self._run_op(op, env)
                for var, val in zip(op.outputs, out):
                    val = np.asarray(val).astype(types.nptype_from_builtin(var.dtype))
                    if np.issubdtype(val.dtype, np.floating) and not np.isfinite(val).all():
                        raise InputError(f"{self.path}: weights of {op.name!r} decompress to NaN/Inf")
                    env[var.name] = val
        return env

    def _run_op(self, op, env: dict[str, np.ndarray]) -> list[np.ndarray]:
        def value(var):
            if var.name in env:
                return env[var.name]
            if var.val is not None:
                return np.asarray(var.val)
            raise InputError(f"{self.path}: op {op.name!r} reads {var.name!r}, which nothing computed")

        def get(name: str, default: Any = ...):
            var = op.inputs.get(name)
            if var is None:
                if default is ...:
                    raise InputError(f"{self.path}: op {op.name!r} ({op.op_type}) lacks its input {name!r}")
                return default
            if isinstance(var, (list, tuple)):
                return [value(v) for v in var]
            v = value(var)
            return v.item() if v.ndim == 0 and v.dtype.kind in "USO" else v

        try:
            kernel = KERNELS[op.op_type]
        except KeyError:
            raise CannotVerifyError(f"{self.path}: cannot verify op {op.op_type!r} ({op.name})") from None
        out = kernel(op, get)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        from coremltools.converters.mil.mil import types

        fn = self.package.main
        missing = set(self.input_names) - set(feeds)
        if missing or set(feeds) - set(self.input_names):
            raise InputError(f"{self.path.name} takes inputs {self.input_names}, got {sorted(feeds)}")
        env = dict(self._consts)
        for name, var in fn.inputs.items():
            a = np.asarray(feeds[name])
            want = tuple(var.shape)
            if a.shape != want:
                raise InputError(f"{self.path.name}: input {name!r} must have shape {want}, got {a.shape}")
            env[var.name] = a.astype(types.nptype_from_builtin(var.dtype))
        t0 = time.perf_counter()
        per_op: dict[str, float] = {}
        for op in fn.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                continue
            t = time.perf_counter()
            out = self._run_op(op, env)
            for var, val in zip(op.outputs, out):
                val = np.asarray(val)
                if tuple(val.shape) != tuple(var.shape):
                    raise CannotVerifyError(f"{self.path}: cannot verify op {op.name!r} ({op.op_type}): "
                                            f"emulated shape {val.shape}, program declares {tuple(var.shape)}")
                # The program's declared dtype: fp16 programs round here, after every op.
                env[var.name] = val.astype(types.nptype_from_builtin(var.dtype))
            per_op[op.op_type] = per_op.get(op.op_type, 0.0) + time.perf_counter() - t
        self.stats = RunStats(time.perf_counter() - t0, per_op)
        return {v.name: env[v.name] for v in fn.outputs}
