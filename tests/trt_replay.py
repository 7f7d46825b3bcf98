"""Replay what TensorRT's ONNX parser and builder ask of swinedge's plugin, on NVIDIA's
real ``tensorrt.plugin`` package of one TensorRT version (over :mod:`trt_standin`).

Run in a fresh process (one TensorRT version per process; Triton compiles for real)::

    python tests/trt_replay.py 11.4.0.106 --graph swin_t.fp16.plugin.onnx --cc 87 --cc 90

and it prints one JSON object. The calls and their order follow onnx-tensorrt's
``FallbackPluginImporter``/``loadFields``/``createPlugin`` and the C++ -> Python
trampolines of TensorRT's ``pyPlugin.cpp``:

parser:  registry.get_creator(op_type, plugin_version or "1", plugin_namespace)
         fields in the creator's ``field_names`` order from the node's attributes
         (INT -> one int32 element, kINT32; attributes that are not fields are skipped)
         create_plugin(op_type, namespace, fields, TensorRTPhase.BUILD, PREFER_AOT)
         get_capability_interface, get_num_outputs, get_output_data_types,
         get_output_shapes, get_aliased_input
builder: clone, get_supported_format_combinations (twice), configure_plugin,
         get_valid_tactics, get_timing_cache_id, set_tactic, get_launch_params
         (calls swinedge's aot_impl: compiles the real Triton kernel), get_kernel

It proves NVIDIA's Python side of the plugin contract only. libnvinfer's side (parsing
itself, loading the PTX, launching it, format negotiation, numerics) is not here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trt_bindings  # noqa: E402

BATCHES = (1, 8, 64)
PROFILE = (1, 32, 64)
SYMBOLS = ("batch", "height", "width", "d3")
# Feature-map sizes an any-size node is evaluated at (padded, exact, and rectangular).
MAP_SIZES = ((38, 56), (48, 44), (7, 9))


def _onnx_to_trt(trt, elem_type: int):
    import onnx

    T = onnx.TensorProto
    return {T.FLOAT: trt.float32, T.FLOAT16: trt.float16, T.BFLOAT16: trt.bfloat16, T.INT8: trt.int8, T.INT32: trt.int32}[elem_type]


def _fields(trt, creator, node) -> tuple[list, list[str]]:
    """onnx-tensorrt's loadFields: the creator's field order, types from the ONNX attribute."""
    import onnx

    attrs = {a.name: a for a in node.attribute}
    fields, missing = [], []
    A, F = onnx.AttributeProto, trt.PluginFieldType
    for declared in creator.field_names:
        a = attrs.get(declared.name)
        if a is None:
            missing.append(declared.name)  # the parser warns and skips it
            continue
        if a.type == A.INT:
            fields.append(trt.PluginField(a.name, np.array([a.i], np.int32), F.INT32))
        elif a.type == A.INTS:
            fields.append(trt.PluginField(a.name, np.array(a.ints, np.int32), F.INT32))
        elif a.type == A.FLOAT:
            fields.append(trt.PluginField(a.name, np.array([a.f], np.float32), F.FLOAT32))
        elif a.type == A.FLOATS:
            fields.append(trt.PluginField(a.name, np.array(a.floats, np.float32), F.FLOAT32))
        elif a.type == A.STRING:
            fields.append(trt.PluginField(a.name, a.s + b"\0", F.CHAR))
        else:
            raise ValueError(f"attribute {a.name}: type {a.type} is not one the replay models")
    return fields, missing


def _desc(trt, dtype, dims, lo=None, hi=None, opt=None):
    d = trt.DynamicPluginTensorDesc()
    d.desc.type, d.desc.format, d.desc.dims = dtype, trt.TensorFormat.LINEAR, trt.Dims(dims)
    d.min, d.max, d.opt = trt.Dims(lo or dims), trt.Dims(hi or dims), trt.Dims(opt or dims)
    return d


def replay_node(trt, node, types: dict, shapes: dict, cc: int, *, bias_type=None) -> dict:
    registry = trt.get_plugin_registry()
    attrs = {a.name: a for a in node.attribute}
    version = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "1"
    namespace = attrs["plugin_namespace"].s.decode() if "plugin_namespace" in attrs else ""
    creator = registry.get_creator(node.op_type, version, namespace) or registry.get_creator(node.op_type, version, node.domain)
    if creator is None:
        return {"error": f"no creator for {node.op_type} v{version} in '{namespace}'"}
    fields, missing = _fields(trt, creator, node)
    request = trt.QuickPluginCreationRequest.PREFER_AOT  # build_engine sets PREFER_AOT_PYTHON_PLUGINS
    plugin = creator.create_plugin(node.op_type, namespace, trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD, request)
    build_iface = plugin.get_capability_interface(trt.PluginCapabilityType.BUILD)
    plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
    out = {"node": node.name, "missing_fields": missing, "aot": isinstance(build_iface, trt.IPluginV3QuickAOTBuild)}

    in_types = [_onnx_to_trt(trt, types[t]) for t in node.input]
    if bias_type is not None:
        in_types[1] = bias_type
    ranks = [len(shapes[t]) for t in node.input]
    out["num_outputs"] = plugin.get_num_outputs()
    out_types = plugin.get_output_data_types(in_types, ranks)
    out["output_types"] = [str(t) for t in out_types]
    builder = trt.IExprBuilder()
    in_exprs = []
    for t in node.input:
        e = trt.DimsExprs(len(shapes[t]))
        for k, d in enumerate(shapes[t]):
            # Dynamic dims: batch first; an any-size node's qkv [B, H, W, 3C] also has a
            # symbolic height and width (the profile's), evaluated at MAP_SIZES below.
            e[k] = trt.IDimensionExpr(symbol=SYMBOLS[k]) if not isinstance(d, int) else builder.constant(d)
        in_exprs.append(e)
    any_size = any(not isinstance(d, int) for d in shapes[node.input[0]][1:])
    cases = {(f"{b}@{h}x{w}" if any_size else b): {"batch": b, "height": h, "width": w}
             for b in BATCHES for h, w in (MAP_SIZES if any_size else MAP_SIZES[:1])}  # fmt: skip
    out_exprs = plugin.get_output_shapes(in_exprs, [], builder)
    out["output_shapes"] = {key: [e.evaluate(env) for e in out_exprs[0]] for key, env in cases.items()}
    out["aliased"] = plugin.get_aliased_input(0)

    p = plugin.clone()
    dims = [tuple(-1 if not isinstance(d, int) else d for d in shapes[t]) for t in node.input]

    def bounds(dm, b):
        return tuple(b if d == -1 else d for d in dm)

    out_dims = tuple(-1 if not e.is_constant() else e.get_constant_value() for e in out_exprs[0])
    io_types = in_types + list(out_types)
    in_out = [_desc(trt, ty, dm, bounds(dm, PROFILE[0]), bounds(dm, PROFILE[2]), bounds(dm, PROFILE[1])) for ty, dm in zip(io_types, dims + [out_dims])]
    combos = p.get_supported_format_combinations(in_out, len(node.input))
    combos = p.get_supported_format_combinations(in_out, len(node.input))  # the trampoline asks twice
    out["format_combinations"] = [[str(c.type), str(c.format)] for c in combos]
    for d, c in zip(in_out, combos):
        d.desc.type, d.desc.format = c.type, c.format
    p.configure_plugin(in_out[: len(node.input)], in_out[len(node.input) :])
    tactics = p.get_valid_tactics()
    out["tactics"] = list(tactics)
    out["timing_cache_id"] = p.get_timing_cache_id()
    p.set_tactic(tactics[0] if tactics else 0)
    launch, extra = trt.KernelLaunchParams(), trt.ISymExprs()
    p.get_launch_params(in_exprs, in_out, len(node.input), launch, extra, builder)
    slots = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")
    out["launch"] = {key: [getattr(launch, s).expr.evaluate(env) for s in slots] for key, env in cases.items()}
    out["launch_arg_types"] = sorted({str(getattr(launch, s).dtype) for s in slots})
    out["extra_args"] = extra.nbSymExprs
    out["extra_arg_types"] = [str(a.dtype) for a in extra]
    out["extra_values"] = {key: [a.expr.evaluate(env) for a in extra] for key, env in cases.items()}
    plugin_descs = []
    for d in in_out:
        pd = trt.PluginTensorDesc()
        pd.type, pd.format, pd.dims = d.desc.type, d.desc.format, trt.Dims(bounds(d.desc.dims, PROFILE[1]))
        plugin_descs.append(pd)
    name, ptx = p.get_kernel(plugin_descs[: len(node.input)], plugin_descs[len(node.input) :])
    text = ptx.decode()
    entry = re.search(r"\.entry\s+([\w$]+)\s*\((.*?)\)", text, re.S)
    out["kernel"] = {
        "name": name,
        "ptx_sha256": hashlib.sha256(ptx).hexdigest(),
        "entry": entry.group(1),
        "params": len([x for x in entry.group(2).split(",") if x.strip()]),
        "target": re.search(r"\.target\s+(\w+)", text).group(1),
        "isa": re.search(r"\.version\s+([\d.]+)", text).group(1),
        "reqntid": int(re.search(r"\.reqntid\s+(\d+)", text).group(1)),
        "cc": cc,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("version")
    ap.add_argument("--graph", action="append", default=[])
    ap.add_argument("--cc", type=int, action="append", default=[])
    ap.add_argument("--negative", action="store_true", help="also feed an FP16 bias and report the plugin's refusal")
    ap.add_argument("--plugin-module", help="register this file instead of swinedge.plugin.tensorrt_plugin (tests of the contract itself)")
    a = ap.parse_args(argv)
    result: dict = {"version": a.version}
    trt = trt_bindings.load_tensorrt(a.version)
    result["has_quick_aot"] = hasattr(trt, "QuickPluginCreationRequest")
    try:
        if a.plugin_module:
            import importlib.util

            spec = importlib.util.spec_from_file_location("plugin_variant", a.plugin_module)
            tensorrt_plugin = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(tensorrt_plugin)
        else:
            from swinedge.plugin import tensorrt_plugin
    except Exception as e:  # noqa: BLE001 - the import error is the finding
        result["import_error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(result))
        return 0
    import onnx

    from swinedge.ops.onnx_plugin import plugin_nodes, tensor_types

    result["graphs"] = {}
    for path in a.graph:
        proto = onnx.load(path)
        types = tensor_types(proto)
        inferred = onnx.shape_inference.infer_shapes(proto)
        shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]
                  for vi in [*inferred.graph.value_info, *inferred.graph.input]}  # fmt: skip
        shapes.update({i.name: list(i.dims) for i in proto.graph.initializer})
        per_cc = {}
        for cc in a.cc:
            tensorrt_plugin.set_compute_capability(cc)
            nodes = []
            for node in plugin_nodes(proto):
                try:
                    nodes.append(replay_node(trt, node, types, shapes, cc))
                except Exception as e:  # noqa: BLE001 - reported, asserted by the test
                    nodes.append({"node": node.name, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
            per_cc[cc] = nodes
        if a.negative:
            node = plugin_nodes(proto)[0]
            try:
                replay_node(trt, node, types, shapes, a.cc[0], bias_type=trt.float16)
                per_cc["negative"] = "accepted"
            except Exception as e:  # noqa: BLE001
                per_cc["negative"] = f"{type(e).__name__}: {e}"
        result["graphs"][path] = per_cc
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
