"""What an app team needs to know about a .pte, read from the program itself: its ``forward``
method's tensors, the backends it was lowered to, and the ExecuTorch runtime it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...runtime import contract_input_names, tensor
from ...spec import Provenance

# torch's ScalarType codes, as ExecuTorch's TensorInfo.dtype() reports them.
DTYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}


def backends(path: Path) -> list[str]:
    """The delegates the program calls: a backend is named by its id in the program's delegate
    table, so every backend this runtime knows whose id is in the file."""
    from executorch.runtime import Runtime

    data = Path(path).read_bytes()
    return sorted(b for b in Runtime.get().backend_registry.registered_backend_names if b.encode() in data)


def describe_pte(path: Path, prov: Provenance) -> dict[str, Any]:
    from .runner import load_program

    program = load_program(path)
    meta = program.metadata("forward")
    names = contract_input_names(prov)
    out_name = "coarse_alpha" if prov.role == "coarse" else "alpha"

    def info(t, name: str) -> dict[str, Any]:
        return tensor(name, list(t.sizes()), DTYPES.get(int(t.dtype()), f"scalar type {int(t.dtype())}"))

    writer = prov.converters.get("executorch")
    return {
        "source": "ExecuTorch program (method forward)",
        "inputs": [info(meta.input_tensor_meta(i), names[i] if i < len(names) else f"input{i}") for i in range(meta.num_inputs())],
        "outputs": [info(meta.output_tensor_meta(i), out_name) for i in range(meta.num_outputs())],
        "min_runtime": {"executorch": f">= {writer}" if writer else None, "backends": backends(path),
                        "methods": sorted(program.method_names)},
    }
