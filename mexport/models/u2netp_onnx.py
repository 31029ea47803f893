"""Convert rembg's u2netp.onnx into a state dict for :class:`mexport.models.u2netp.U2NetP`.

Written by hand because no library maps an ONNX graph back onto an existing nn.Module. In that
ONNX, BatchNorm is folded into each Conv and initializers have numeric names, so we map by
execution order: the i-th Conv node of the graph gets the i-th nn.Conv2d our forward calls, and
every shape and conv attribute (kernel, dilation, padding) must agree. Reading the ONNX file is
the ONNX runtime folder's (``mexport.runtimes.onnx.weights``): onnx is imported only there.
"""

from __future__ import annotations

from ..errors import WeightsError


def conv_execution_order(model, size: int = 64) -> list[str]:
    """Names of the model's Conv2d modules in the order forward() calls them."""
    import torch

    order: list[str] = []
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: order.append(name)) for name, m in convs]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    # Convs whose weights forward() uses without calling the module (fuse, split over two
    # concats) come last, as in the ONNX graph.
    return order + [name for name, _ in convs if name not in order]


def onnx_to_state_dict(onnx_bytes: bytes) -> dict:
    import torch

    from ..runtimes.onnx.weights import conv_layers
    from .u2netp import U2NetP

    conv_nodes = conv_layers(onnx_bytes)
    model = U2NetP()
    modules = dict(model.named_modules())
    order = conv_execution_order(model)
    if len(order) != len(conv_nodes):
        raise WeightsError(f"ONNX has {len(conv_nodes)} convs, U2NetP calls {len(order)}")
    state: dict = {}
    for name, node in zip(order, conv_nodes):
        conv = modules[name]
        attrs, w, b = node["attrs"], node["weight"], node["bias"]
        ok = (
            tuple(w.shape) == tuple(conv.weight.shape)
            and tuple(b.shape) == tuple(conv.bias.shape)
            and tuple(attrs.get("dilations", [1, 1])) == conv.dilation
            and tuple(attrs.get("pads", [0, 0, 0, 0])[:2]) == conv.padding
            and attrs.get("group", 1) == conv.groups
        )
        if not ok:
            raise WeightsError(f"ONNX conv {node['output']} does not fit {name}: weight {w.shape} vs {tuple(conv.weight.shape)}")
        state[f"{name}.weight"] = torch.from_numpy(w.copy()).contiguous()
        state[f"{name}.bias"] = torch.from_numpy(b.copy()).contiguous()
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise WeightsError(f"no ONNX weights for {sorted(missing)[:3]}")
    return state
