"""The window-attention plugin node in ONNX, for TensorRT and for ONNX Runtime (CPU).

One node per attention block::

    domain "swinedge", op_type "SwinWindowAttention"
    inputs  qkv [B, H*W, 3C], bias [heads, N, N] (initializer), pad_qkv [3C] (initializer)
    output  [B, H*W, C]
    attrs   plugin_namespace="swinedge", plugin_version="1",
            height, width, window, shift, num_heads, head_dim (INT)

TensorRT's ONNX parser ignores the domain and looks up the plugin ``op_type`` in
``plugin_namespace``; ONNX Runtime runs the same node on CPU through an
onnxruntime-extensions Python op implementing the reference math. The scale is derived
from ``head_dim`` and the bias is an input: no float attributes (they lose precision on
the way into ONNX Runtime's Python ops).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import onnx
import torch

from swinedge.errors import MissingDependencyError

PLUGIN_DOMAIN = "swinedge"
PLUGIN_NAME = "SwinWindowAttention"
PLUGIN_NAMESPACE = "swinedge"
PLUGIN_VERSION = "1"
GEOMETRY_ATTRS = ("height", "width", "window", "shift", "num_heads", "head_dim")


def _symbolic(g, qkv, bias, pad_qkv, height, width, window, shift, num_heads):
    from torch.onnx import symbolic_helper as sh

    h = sh._get_const(height, "i", "height")
    w = sh._get_const(width, "i", "width")
    ws = sh._get_const(window, "i", "window")
    s = sh._get_const(shift, "i", "shift")
    nh = sh._get_const(num_heads, "i", "num_heads")
    dim = sh._get_tensor_sizes(qkv)[-1] // 3
    out = g.op(
        f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}",
        qkv,
        bias,
        pad_qkv,
        plugin_namespace_s=PLUGIN_NAMESPACE,
        plugin_version_s=PLUGIN_VERSION,
        height_i=h,
        width_i=w,
        window_i=ws,
        shift_i=s,
        num_heads_i=nh,
        head_dim_i=dim // nh,
    )
    sizes = sh._get_tensor_sizes(qkv)
    out.setType(qkv.type().with_sizes([sizes[0], h * w, dim]))
    return out


@contextlib.contextmanager
def plugin_export_context(model, opset: int) -> Iterator[None]:
    """Within: the model uses the custom op and the exporter maps it to the plugin node."""
    import swinedge.ops.fused  # noqa: F401 - registers torch.ops.swinedge.window_attention

    previous = {m: m.impl for m in model.attention_modules()}
    model.set_attention_impl("fused")
    torch.onnx.register_custom_op_symbolic("swinedge::window_attention", _symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("swinedge::window_attention", opset)
        for m, impl in previous.items():
            m.impl = impl


def ensure_domain_import(proto: onnx.ModelProto) -> onnx.ModelProto:
    if not any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return proto


def plugin_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_NAME]


def node_geometry(node: onnx.NodeProto):
    from swinedge.ops.window_attention import WindowGeometry

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return WindowGeometry(*(int(attrs[k]) for k in GEOMETRY_ATTRS))


_REGISTERED = False


def _register_python_op() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from onnxruntime_extensions import PyCustomOpDef, onnx_op
    except ImportError:
        raise MissingDependencyError(
            "running plugin graphs on ONNX Runtime needs onnxruntime-extensions: pip install 'swinedge[quantize]'"
        ) from None
    from swinedge.ops.window_attention import WindowGeometry, window_attention_reference

    attrs = {k: PyCustomOpDef.dt_int64 for k in GEOMETRY_ATTRS}
    attrs.update(plugin_namespace=PyCustomOpDef.dt_string, plugin_version=PyCustomOpDef.dt_string)

    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}",
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
        outputs=[PyCustomOpDef.dt_float],
        attrs=attrs,
    )
    def swin_window_attention(qkv, bias, pad_qkv, **kw):  # noqa: ANN001 - signature fixed by ORT
        g = WindowGeometry(*(int(kw[k]) for k in GEOMETRY_ATTRS))
        with torch.no_grad():
            out = window_attention_reference(
                torch.from_numpy(np.asarray(qkv, np.float32)),
                torch.from_numpy(np.asarray(bias, np.float32)),
                torch.from_numpy(np.asarray(pad_qkv, np.float32)),
                g,
            )
        return out.numpy()

    _REGISTERED = True


def register_ort_custom_ops(session_options) -> None:
    """Make an ONNX Runtime session able to run ``swinedge::SwinWindowAttention`` (CPU)."""
    _register_python_op()
    from onnxruntime_extensions import get_library_path

    session_options.register_custom_ops_library(get_library_path())
