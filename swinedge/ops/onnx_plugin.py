"""The window-attention plugin node in ONNX, for TensorRT and for ONNX Runtime (CPU).

One node per attention block::

    domain "swinedge", op_type "SwinWindowAttention"
    inputs  qkv [B, H*W, 3C], table [P, heads, rows, cols] float32 (initializer: bias and
            shift mask per window-edge pattern, see swinedge.ops.attention_table),
            pad_qkv [3C] (initializer)
    output  [B, H*W, C]
    attrs   plugin_namespace="swinedge" (read by the parser; version defaults to "1"),
            height, width, window, shift, num_heads, head_dim (INT)

An **any-size** node (graphs that serve several input sizes, ``export --sizes``) has
``height = width = 0`` and takes ``qkv [B, H, W, 3C]`` -> ``[B, H, W, C]``: the feature
map's size is read from the input's shape at run time (by the TensorRT plugin, which
passes it to the kernel as two scalar arguments, and by the ONNX Runtime op). The table
does not depend on the size: every window of any size is one of its patterns.

Swin V2 blocks (cosine attention) get ``SwinV2WindowAttention``: the same node with a
fourth input, ``logit_scale [heads]`` float32 (initializer, clamped and exponentiated),
and a table of bias and mask in score units (see swinedge.ops.attention_table).

TensorRT's ONNX parser ignores the domain and looks up the plugin ``op_type`` in
``plugin_namespace``; ONNX Runtime runs the same node on CPU through an
onnxruntime-extensions Python op implementing the kernel's math. The scale is derived
from ``head_dim`` and the table is an input: no float attributes (they lose precision on
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
COSINE_PLUGIN_NAME = "SwinV2WindowAttention"
PLUGIN_NAMES = (PLUGIN_NAME, COSINE_PLUGIN_NAME)
PLUGIN_NAMESPACE = "swinedge"
GEOMETRY_ATTRS = ("height", "width", "window", "shift", "num_heads", "head_dim")


def _plugin_node(g, name, inputs, qkv, height, width, window, shift, num_heads):
    from torch.onnx import symbolic_helper as sh

    h = sh._get_const(height, "i", "height")
    w = sh._get_const(width, "i", "width")
    ws = sh._get_const(window, "i", "window")
    s = sh._get_const(shift, "i", "shift")
    nh = sh._get_const(num_heads, "i", "num_heads")
    dim = sh._get_tensor_sizes(qkv)[-1] // 3
    out = g.op(
        f"{PLUGIN_DOMAIN}::{name}",
        *inputs,
        plugin_namespace_s=PLUGIN_NAMESPACE,
        height_i=h,
        width_i=w,
        window_i=ws,
        shift_i=s,
        num_heads_i=nh,
        head_dim_i=dim // nh,
    )
    sizes = sh._get_tensor_sizes(qkv)
    # Any-size nodes (height = width = 0) keep qkv's [B, H, W] and read the size from it.
    out.setType(qkv.type().with_sizes([*sizes[:-1], dim] if h == w == 0 else [sizes[0], h * w, dim]))
    return out


def _symbolic(g, qkv, table, pad_qkv, height, width, window, shift, num_heads):
    return _plugin_node(g, PLUGIN_NAME, (qkv, table, pad_qkv), qkv, height, width, window, shift, num_heads)


def _cosine_symbolic(g, qkv, table, pad_qkv, logit_scale, height, width, window, shift, num_heads):
    return _plugin_node(g, COSINE_PLUGIN_NAME, (qkv, table, pad_qkv, logit_scale), qkv, height, width, window, shift, num_heads)


_SYMBOLICS = {"swinedge::window_attention": _symbolic, "swinedge::cosine_window_attention": _cosine_symbolic}


@contextlib.contextmanager
def plugin_export_context(model, opset: int) -> Iterator[None]:
    """Within: the model uses the custom op and the exporter maps it to the plugin node."""
    import swinedge.ops.fused  # noqa: F401 - registers the torch ops

    previous = {m: m.impl for m in model.attention_modules()}
    model.set_attention_impl("fused")
    with torch.no_grad():
        for m in previous:
            m.score_table()  # built before tracing: each block's table becomes one initializer
    for op, fn in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(op, fn, opset)
    try:
        yield
    finally:
        for op in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(op, opset)
        for m, impl in previous.items():
            m.impl = impl


def plugin_inputs_as_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes feeding plugin nodes (the exporter emits the table so) become
    initializers, as the node's contract says and as substituted graphs have them."""
    from onnx import numpy_helper

    feeding = {x for n in plugin_nodes(proto) for x in n.input}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] in feeding and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            proto.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            kept.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return proto


def ensure_domain_import(proto: onnx.ModelProto) -> onnx.ModelProto:
    if not any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return proto


def plugin_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in proto.graph.node if n.domain == PLUGIN_DOMAIN and n.op_type in PLUGIN_NAMES]


def node_geometry(node: onnx.NodeProto):
    from swinedge.ops.window_attention import WindowGeometry

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return WindowGeometry(*(int(attrs[k]) for k in GEOMETRY_ATTRS), cosine=node.op_type == COSINE_PLUGIN_NAME)


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
    from dataclasses import replace

    from swinedge.ops.attention_table import window_attention_from_table
    from swinedge.ops.window_attention import WindowGeometry

    attrs = {k: PyCustomOpDef.dt_int64 for k in GEOMETRY_ATTRS}
    attrs.update(plugin_namespace=PyCustomOpDef.dt_string)

    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}",
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
        outputs=[PyCustomOpDef.dt_float],
        attrs=attrs,
    )
    def swin_window_attention(qkv, table, pad_qkv, **kw):  # noqa: ANN001 - signature fixed by ORT
        return _run(kw, qkv, table, pad_qkv)

    @onnx_op(
        op_type=f"{PLUGIN_DOMAIN}::{COSINE_PLUGIN_NAME}",
        inputs=[PyCustomOpDef.dt_float] * 4,
        outputs=[PyCustomOpDef.dt_float],
        attrs=attrs,
    )
    def swin_v2_window_attention(qkv, table, pad_qkv, logit_scale, **kw):  # noqa: ANN001 - signature fixed by ORT
        return _run(kw, qkv, table, pad_qkv, logit_scale)

    def _run(kw, qkv, table, pad_qkv, logit_scale=None):  # noqa: ANN001
        qkv = np.asarray(qkv, np.float32)
        g = WindowGeometry(*(int(kw[k]) for k in GEOMETRY_ATTRS), cosine=logit_scale is not None)
        any_size = g.height == 0 and g.width == 0
        if any_size:  # [B, H, W, 3C]: the size is the input's
            if qkv.ndim != 4:
                raise ValueError(f"an any-size {PLUGIN_NAME} node takes qkv [B, H, W, 3C], got {list(qkv.shape)}")
            g = replace(g, height=qkv.shape[1], width=qkv.shape[2])
            if min(g.height, g.width) <= g.window:
                # Another model there (timm clamps the window): NaN, as the native any-size
                # core answers (an exception here would abort ONNX Runtime's process).
                return np.full((*qkv.shape[:3], g.dim), np.nan, np.float32)
            qkv = qkv.reshape(qkv.shape[0], g.height * g.width, qkv.shape[-1])
        tensors = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in (qkv, table, pad_qkv)]
        scale = None if logit_scale is None else torch.from_numpy(np.asarray(logit_scale, np.float32))
        with torch.no_grad():
            out = window_attention_from_table(*tensors, g, scale).numpy()
        return out.reshape(out.shape[0], g.height, g.width, g.dim) if any_size else out

    _REGISTERED = True


def register_ort_custom_ops(session_options) -> None:
    """Make an ONNX Runtime session able to run ``swinedge::SwinWindowAttention`` (CPU)."""
    _register_python_op()
    from onnxruntime_extensions import get_library_path

    session_options.register_custom_ops_library(get_library_path())


_TRANSPARENT = ("QuantizeLinear", "DequantizeLinear", "Cast")


def substitute_plugin_nodes(proto: onnx.ModelProto, config) -> tuple[onnx.ModelProto, int]:
    """Replace each block's native attention core with one plugin node.

    For graphs exported with native attention and possibly quantized or AutoCast
    afterwards (modelopt cannot calibrate through the plugin). Per block, the core is
    everything between the qkv projection's output and the tensor that feeds the proj
    Linear (through its Q/DQ or Cast, which stay): found by walking the graph, since
    inserted nodes carry the block's name prefix too. Returns (graph, nodes substituted).

    The bias constant of the native core becomes the kernel's table
    (:func:`swinedge.ops.attention_table.attention_table`); a Swin V2 core's logit-scale
    constant (the one multiplying the cosine scores) becomes the node's fourth input.
    Types follow the plugin's rules (:func:`swinedge.ops.aot.plugin_io_error`): table
    and logit scale float32, pad_qkv the dtype of qkv, the output the dtype of qkv;
    where the replaced tensor had another dtype, a Cast restores it, so every consumer
    sees the type it had before.
    """
    from onnx import numpy_helper

    from swinedge.errors import SwinedgeError
    from swinedge.ops.attention_table import attention_table, num_patterns

    types = tensor_types(proto)
    any_size = is_any_size_graph(proto)
    # An any-size graph's shapes are symbolic; ONNX's inference cannot see through a
    # custom node, so each plugin output gets its [B, H, W, C] written down, and the
    # graph after it keeps its ranks for the tools that read them.
    dims = tensor_dims(proto) if any_size else {}
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    consts = ConstantValues(graph)
    by_name = {n.name: n for n in graph.node}
    replaced = 0
    remove: set[int] = set()
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # insert position (index of the core's last node) -> nodes
    for i, stage in enumerate(config.stage_geometries()):
        for j, g in enumerate(stage):
            prefix = f"/layers/layers.{i}/blocks/blocks.{j}/attn/"
            # V1: the qkv Linear; V2: the bias-free qkv Linear, then the q/k/v bias added.
            names = ("Add", "qkv/MatMul") if g.cosine else ("qkv/Add", "qkv/MatMul")
            qkv_node = by_name.get(prefix + names[0]) or by_name.get(prefix + names[1])
            proj = by_name.get(prefix + "proj/MatMul")
            if qkv_node is None or proj is None:
                raise SwinedgeError(f"block {i}.{j}: no qkv/proj projections named {prefix}{names[0]}, {prefix}proj: export the graph with swinedge")
            qkv_out = qkv_node.output[0]
            core_out = proj.input[0]
            while core_out in producer and producer[core_out].op_type in _TRANSPARENT:
                core_out = producer[core_out].input[0]
            region = _core_region(core_out, qkv_out, producer, inits, prefix, f"block {i}.{j}")
            n = g.tokens_per_window
            # One-size graphs add the bias [heads, N, N] (and the shift mask per window);
            # any-size graphs gather bias plus mask per window-edge pattern from one
            # [P, heads, N, N] constant, whose pattern 0 (an interior window) is the bias.
            leading_ok = (1, num_patterns(g)) if any_size else (1,)
            bias = next(
                (
                    consts[x]
                    for node in region
                    for x in node.input
                    if x in consts and consts[x].ndim <= 4 and list(consts[x].shape)[-3:] == [g.num_heads, n, n]
                    and all(d in leading_ok for d in consts[x].shape[:-3])
                ),
                None,
            )  # fmt: skip
            if bias is None:
                raise SwinedgeError(f"block {i}.{j}: relative-position bias constant not found")
            bias = bias.astype(np.float32).reshape(-1, g.num_heads, n, n)[0]
            table_name = f"{prefix}plugin_table"
            table = attention_table(torch.from_numpy(bias), g).numpy()
            graph.initializer.append(numpy_helper.from_array(table, table_name))
            inputs = [qkv_out, table_name]
            qkv_type = types.get(qkv_out)
            if qkv_type not in _PLUGIN_TYPES:
                name = onnx.TensorProto.DataType.Name(qkv_type) if qkv_type else "unknown"
                raise SwinedgeError(f"block {i}.{j}: the qkv projection is {name}; the plugin takes FLOAT, FLOAT16 or BFLOAT16")
            out_type = types.get(core_out, qkv_type)
            np_dtype = _np_dtype(qkv_type)
            pad_name = next((x for x in qkv_node.input if x in consts), None) if qkv_node.op_type == "Add" else None
            if pad_name is None or pad_name not in inits or inits[pad_name].data_type != qkv_type:
                # No qkv bias (zeros), one held by a Constant node, or one of another dtype:
                # an initializer of qkv's dtype.
                pad = consts[pad_name].astype(np.float32).reshape(-1) if pad_name else np.zeros(3 * g.dim, np.float32)
                pad_name = f"{prefix}plugin_pad_qkv"
                graph.initializer.append(_initializer(pad, np_dtype, qkv_type, pad_name))
            inputs.append(pad_name)
            if g.cosine:
                scale = _logit_scale(region, consts, producer, g.num_heads)
                if scale is None:
                    raise SwinedgeError(f"block {i}.{j}: the cosine attention's logit-scale constant was not found")
                scale_name = f"{prefix}plugin_logit_scale"
                graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32).reshape(-1), scale_name))
                inputs.append(scale_name)
            plugin_name = COSINE_PLUGIN_NAME if g.cosine else PLUGIN_NAME
            plugin_out = core_out if out_type == qkv_type else f"{prefix}{plugin_name}_output"
            node = onnx.helper.make_node(
                plugin_name,
                inputs,
                [plugin_out],
                name=f"{prefix}{plugin_name}",
                domain=PLUGIN_DOMAIN,
                plugin_namespace=PLUGIN_NAMESPACE,
                height=0 if any_size else g.height,  # 0: the size is read from qkv [B, H, W, 3C]
                width=0 if any_size else g.width,
                window=g.window,
                shift=g.shift,
                num_heads=g.num_heads,
                head_dim=g.head_dim,
            )
            added = [node]
            if any_size and qkv_out in dims:
                out_dims = [*dims[qkv_out][:-1], g.dim]
                kept_info = [vi for vi in graph.value_info if vi.name != plugin_out]
                del graph.value_info[:]
                graph.value_info.extend(kept_info)
                graph.value_info.append(onnx.helper.make_tensor_value_info(plugin_out, qkv_type, out_dims))
            if plugin_out != core_out:
                added.append(onnx.helper.make_node("Cast", [plugin_out], [core_out], name=f"{prefix}{plugin_name}_cast", to=out_type))
                graph.value_info.append(onnx.helper.make_tensor_value_info(plugin_out, qkv_type, None))
            ids = {id(n) for n in region}
            positions = [k for k, n in enumerate(graph.node) if id(n) in ids]
            remove.update(positions)
            new_nodes[max(positions)] = added
            replaced += 1
    kept = []
    for k, n in enumerate(graph.node):
        if k in new_nodes:
            kept.extend(new_nodes[k])
        elif k not in remove:
            kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)
    ensure_domain_import(proto)
    return remove_dead_nodes(proto), replaced


def is_any_size_graph(proto: onnx.ModelProto) -> bool:
    """Whether the graph's image input has a dynamic height or width (``export --sizes``)."""
    if not proto.graph.input:
        return False
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 4 and any(not d.HasField("dim_value") for d in dims[2:])


def _core_region(core_out: str, qkv_out: str, producer: dict, inits: dict, prefix: str, where: str) -> list[onnx.NodeProto]:
    """Backward closure from the core's output to the qkv output (Constant nodes left out)."""
    from swinedge.errors import SwinedgeError

    region: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack = [core_out]
    while stack:
        t = stack.pop()
        if t == qkv_out or t in inits or t not in producer or t in seen:
            continue
        seen.add(t)
        node = producer[t]
        if node.op_type == "Constant":
            continue
        if not (node.name.startswith(prefix) or node.op_type in _TRANSPARENT):
            raise SwinedgeError(f"{where}: attention core reaches {node.name}; not a swinedge native export")
        region.append(node)
        stack.extend(node.input)
    return region


def _logit_scale(region: list[onnx.NodeProto], consts: "ConstantValues", producer: dict, heads: int) -> np.ndarray | None:
    """The constant of ``heads`` values multiplying the cosine scores (the output of the
    q.k MatMul, maybe through a Cast or Q/DQ)."""
    for node in region:
        if node.op_type != "Mul":
            continue
        values = [consts[x] for x in node.input if x in consts]
        others = [x for x in node.input if x not in consts]
        if len(values) != 1 or values[0].size != heads or len(others) != 1:
            continue
        src = others[0]
        while src in producer and producer[src].op_type in _TRANSPARENT:
            src = producer[src].input[0]
        if src in producer and producer[src].op_type == "MatMul":
            return values[0]
    return None


class ConstantValues:
    """Initializers and Constant-node outputs (tensor values) of a graph, by name, as
    numpy arrays converted on first use (a model's weights are never all copied)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._protos = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self._protos[node.output[0]] = node.attribute[0].t
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    def __getitem__(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self._protos[name])
        return self._arrays[name]


_PLUGIN_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def tensor_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of a graph (ONNX type inference on a copy)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output] if vi.type.tensor_type.elem_type}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def tensor_dims(proto: onnx.ModelProto) -> dict[str, list]:
    """Inferred dims of every tensor whose shape ONNX can infer (ints, or the symbolic
    names of dynamic dims), on a copy."""
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    out = {}
    for vi in [*inferred.value_info, *inferred.input, *inferred.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


def _np_dtype(elem_type: int):
    if elem_type == onnx.TensorProto.BFLOAT16:
        return None  # numpy has none: written through onnx's helper
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type)


def _initializer(values: np.ndarray, np_dtype, elem_type: int, name: str) -> onnx.TensorProto:
    from onnx import numpy_helper

    if np_dtype is None:
        return onnx.helper.make_tensor(name, elem_type, values.shape, values.astype(np.float32).tolist())
    return numpy_helper.from_array(values.astype(np_dtype), name)


def remove_dead_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes and initializers nothing consumes (iteratively)."""
    graph = proto.graph
    needed = {o.name for o in graph.output}
    changed = True
    nodes = list(graph.node)
    while changed:
        used = set(needed)
        for n in nodes:
            used.update(n.input)
        alive = [n for n in nodes if any(o in used for o in n.output)]
        changed = len(alive) != len(nodes)
        nodes = alive
    used = set(needed)
    for n in nodes:
        used.update(n.input)
    inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return proto
