"""The .tflite flatbuffer: mexport's I/O names and provenance written into it, and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from ...runtime import parse_provenance
from ...spec import Provenance

PROVENANCE_KEY = "mexport.provenance"

def model_t(data: bytes):
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    # ai-edge-quantizer writes constant data after the flatbuffer (Buffer.offset/size) instead of
    # inside it; bring it inside so the object API can re-serialize the model.
    for b in m.buffers or []:
        if b.offset and b.offset > 1:
            b.data = np.frombuffer(data, np.uint8, count=b.size, offset=b.offset).copy()
            b.offset, b.size = 0, 0
    return m


def pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def finalize(data: bytes, provenance: Provenance) -> bytes:
    """Name the graph's input/output tensors after the signature (image, coarse_alpha, alpha;
    litert-torch prefixes them with the signature key) and store the provenance as metadata."""
    from ai_edge_litert import schema_py_generated as fb

    m = model_t(data)
    g = m.subgraphs[0]
    sig = m.signatureDefs[0] if m.signatureDefs else None
    if sig is not None:
        for tmap in list(sig.inputs or []) + list(sig.outputs or []):
            g.tensors[tmap.tensorIndex].name = tmap.name
    g.name = (sig.signatureKey if sig is not None else g.name)
    m.metadata = [md for md in (m.metadata or []) if md.name not in (PROVENANCE_KEY, PROVENANCE_KEY.encode())]
    buf = fb.BufferT()
    buf.data = np.frombuffer(provenance.to_json().encode(), np.uint8)
    m.buffers.append(buf)
    md = fb.MetadataT()
    md.name = PROVENANCE_KEY
    md.buffer = len(m.buffers) - 1
    m.metadata.append(md)
    m.description = f"{provenance.model} {provenance.role} ({provenance.precision}), exported by mexport {provenance.mexport_version}"
    return pack(m)


def read_metadata(data: bytes) -> dict[str, bytes]:
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        b = m.Buffers(md.Buffer())
        out[md.Name().decode()] = b.DataAsNumpy().tobytes() if b.DataLength() else b""
    return out




def read_provenance(path: Path) -> Provenance:
    try:
        data = Path(path).read_bytes()
        md = read_metadata(data)
    except FileNotFoundError:
        raise InputError(f"artifact not found: {path}") from None
    except Exception as e:
        raise InputError(f"{path}: not a readable TFLite model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if PROVENANCE_KEY not in md:
        raise InputError(f"{path}: no mexport provenance record in its metadata")
    return parse_provenance(md[PROVENANCE_KEY], path)
