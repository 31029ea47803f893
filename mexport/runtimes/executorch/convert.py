"""ExecuTorch conversion: ``torch.export`` of a role graph (quantized first for int8), constants
folded, lowered to the XNNPACK delegate with ``to_edge_transform_and_lower``, and serialized to a
``.pte`` program that carries mexport's provenance as a constant method."""

from __future__ import annotations


from ...errors import ConversionError

# A constant method of the program: ``Program.load_method(PROVENANCE_METHOD).execute([])`` returns
# the provenance JSON. The .pte has no metadata table; a method is what it can carry.
PROVENANCE_METHOD = "mexport_provenance"


def capture(module, example: tuple, role: str):
    """``torch.export`` of the module, its constants folded: a weight the graph computes (the box
    pool's fixed kernel is a ``full`` op) becomes a constant, which XNNPACK then takes; left as an
    op, its conv stayed on the portable kernels. Dequantize ops are not folded: a folded int8
    weight's dequantize would leave a float weight, and XNNPACK a float conv. Quantize ops of a
    constant are (the int8 weight a computed kernel becomes; left, no delegate took them)."""
    import torch
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    try:
        return constant_prop_pass(torch.export.export(module, example), custom_skip_targets=dequantize_ops())
    except Exception as e:  # torch.export raises many types; the first line names the op
        raise ConversionError(f"torch.export could not capture the {role} graph: {first_line(e)}") from None


def dequantize_ops() -> set:
    """Every overload of pt2e's dequantize ops, as ``torch.export`` records them (the pass's own
    skip list names their edge-dialect forms, which this graph does not have yet)."""
    import torch

    ops = torch.ops.quantized_decomposed
    return {getattr(packet, overload) for packet in (ops.dequantize_per_tensor, ops.dequantize_per_channel)
            for overload in packet.overloads()}


def output_shape(program) -> tuple[int, ...]:
    node = next(n for n in program.graph.nodes if n.op == "output")
    return tuple(int(d) for d in node.args[0][0].meta["val"].shape)


def lower(program, role: str, provenance_json: str):
    """The edge program, lowered to XNNPACK (every node it takes), with the provenance method."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           constant_methods={PROVENANCE_METHOD: provenance_json})
    except Exception as e:
        raise ConversionError(f"ExecuTorch could not lower the {role} graph: {first_line(e)}") from None


def serialize(edge, role: str) -> bytes:
    try:
        return bytes(edge.to_executorch().buffer)
    except Exception as e:
        raise ConversionError(f"ExecuTorch could not serialize the {role} program: {first_line(e)}") from None


def first_line(e: Exception) -> str:
    return next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:300]
