"""Replay what TensorRT's ONNX parser and builder ask of swinedge's plugin, through the C++
interface, on NVIDIA's real compiled bindings of one TensorRT version.

Run in a fresh process (one TensorRT version per process; Triton compiles for real)::

    python tests/trt_replay.py 11.4.0.106 --graph swin_t.fp16.plugin.onnx --cc 87 --cc 90

and it prints one JSON object. NVIDIA's ``tensorrt.so`` is imported over our libnvinfer
(:mod:`trt_bindings`), swinedge's plugin module registers its creators through NVIDIA's
``tensorrt.plugin`` into our registry, and our C++ then calls the plugin's virtual
functions in the order onnx-tensorrt's ``FallbackPluginImporter`` / ``loadFields`` /
``createPlugin`` and the builder use them:

parser:  registry getCreator(op_type, plugin_version or "1", plugin_namespace);
         fields in the creator's getFieldNames order from the node's attributes
         (INT -> one int32 element, kINT32; attributes that are not fields are skipped);
         createPlugin(name, namespace, fields, kBUILD, kPREFER_AOT);
         getCapabilityInterface(kCORE / kBUILD), getNbOutputs, getOutputDataTypes,
         getOutputShapes (our expression builder; batch, height, width symbolic),
         getAliasedInput
builder: clone, getNbSupportedFormatCombinations + getSupportedFormatCombinations,
         configurePlugin, getNbTactics + getValidTactics, getTimingCacheID, setTactic,
         getLaunchParams (calls swinedge's aot_impl: compiles the real Triton kernel),
         getKernel (the name read at the return and again after 28 small allocations)

The answers are NVIDIA's compiled trampolines' and ``tensorrt.plugin``'s; the numbers
reported for shapes, grids and extra arguments are their expressions evaluated by our
expression builder (batch, height and width bound to the profile's values). The parser's
half of the order is onnx-tensorrt's; the builder's half (libnvinfer's, not public) is
ours: the order a plugin's build capability lists its calls in. Not here: parsing itself,
building, loading the PTX, launching it, numerics (libnvinfer's).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's swinedge, not an installed one

import trt_bindings  # noqa: E402

BATCHES = (1, 8, 64)
PROFILE = (1, 32, 64)
SYMBOLS = ("batch", "height", "width", "d3")
# Feature-map sizes an any-size node is evaluated at (padded, exact, and rectangular).
MAP_SIZES = ((38, 56), (48, 44), (7, 9))
SLOTS = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")


class CallFailed(RuntimeError):
    pass


@contextlib.contextmanager
def captured_stderr(log: list[str]):
    """What NVIDIA's trampolines print (to file descriptor 2) while a call runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            log.append(tmp.read().decode(errors="replace"))


def _onnx_to_trt(trt, elem_type: int):
    import onnx

    T = onnx.TensorProto
    return {T.FLOAT: trt.float32, T.FLOAT16: trt.float16, T.BFLOAT16: trt.bfloat16, T.INT8: trt.int8, T.INT32: trt.int32}[elem_type]


def node_fields(trt, declared: list[tuple[str, int]], node) -> tuple[list[tuple[str, bytes, int, int]], list[str]]:
    """onnx-tensorrt's loadFields: the creator's field order, types from the ONNX attribute."""
    import onnx

    attrs = {a.name: a for a in node.attribute}
    fields, missing = [], []
    A, F = onnx.AttributeProto, trt.PluginFieldType
    for name, _ in declared:
        a = attrs.get(name)
        if a is None:
            missing.append(name)  # the parser warns and skips it
            continue
        if a.type == A.INT:
            fields.append((name, np.array([a.i], np.int32).tobytes(), int(F.INT32), 1))
        elif a.type == A.INTS:
            fields.append((name, np.array(a.ints, np.int32).tobytes(), int(F.INT32), len(a.ints)))
        elif a.type == A.FLOAT:
            fields.append((name, np.array([a.f], np.float32).tobytes(), int(F.FLOAT32), 1))
        elif a.type == A.FLOATS:
            fields.append((name, np.array(a.floats, np.float32).tobytes(), int(F.FLOAT32), len(a.floats)))
        elif a.type == A.STRING:
            fields.append((name, a.s + b"\0", int(F.CHAR), len(a.s) + 1))
        else:
            raise ValueError(f"attribute {a.name}: type {a.type} is not one the replay models")
    return fields, missing


def replay_node(trt, harness, node, types: dict, shapes: dict, cc: int, *, bias_type=None) -> dict:
    log: list[str] = []

    def call(what: str, fn, *args):
        """One C++ call; a null pointer or a non-zero status fails with what NVIDIA printed."""
        with captured_stderr(log):
            result = fn(*args)
        rc = result[0] if isinstance(result, tuple) else result["rc"] if isinstance(result, dict) else 0
        if result is None or rc != 0:
            raise CallFailed(f"{what} failed ({'null' if result is None else rc}): {log[-1].strip()[-1500:]}")
        return result

    attrs = {a.name: a for a in node.attribute}
    version = attrs["plugin_version"].s.decode() if "plugin_version" in attrs else "1"
    namespace = attrs["plugin_namespace"].s.decode() if "plugin_namespace" in attrs else ""
    creator = harness.find_creator(node.op_type, version, namespace)
    if not creator:
        return {"error": f"no creator for {node.op_type} v{version} in '{namespace}'"}
    fields, missing = node_fields(trt, harness.field_names(creator), node)
    plugin = call("createPlugin", harness.create_plugin, creator, node.op_type, namespace, fields)
    call("getCapabilityInterface(kCORE)", harness.capability, plugin, trt_bindings.CORE)
    build = call("getCapabilityInterface(kBUILD)", harness.capability, plugin, trt_bindings.BUILD)
    out = {"node": node.name, "missing_fields": missing, "aot": harness.interface_kind(build) == "PLUGIN_V3QUICKAOT_BUILD"}

    in_types = [_onnx_to_trt(trt, types[t]) for t in node.input]
    if bias_type is not None:
        in_types[1] = bias_type
    ranks = [len(shapes[t]) for t in node.input]
    n_out = out["num_outputs"] = harness.num_outputs(build)
    _, out_types = call("getOutputDataTypes", harness.output_types, build, [int(t) for t in in_types], ranks, n_out)
    dtype_of = {int(v): v for v in trt.DataType.__members__.values()}
    out["output_types"] = [str(dtype_of[t]) for t in out_types]
    # Dynamic dims: batch first; an any-size node's qkv [B, H, W, 3C] also has a symbolic
    # height and width (the profile's), evaluated at MAP_SIZES below.
    in_exprs = [[harness.symbol(k) if not isinstance(d, int) else harness.constant(d) for k, d in enumerate(shapes[t])] for t in node.input]
    any_size = any(not isinstance(d, int) for d in shapes[node.input[0]][1:])
    cases = {(f"{b}@{h}x{w}" if any_size else b): [b, h, w] for b in BATCHES for h, w in (MAP_SIZES if any_size else MAP_SIZES[:1])}
    _, out_exprs = call("getOutputShapes", harness.output_shapes, build, in_exprs, n_out)
    out["output_shapes"] = {key: [harness.evaluate(e, env) for e in out_exprs[0]] for key, env in cases.items()}
    out["aliased"] = harness.aliased_input(build, 0)

    clone = call("clone", harness.clone, plugin)
    build = call("getCapabilityInterface(kBUILD) of the clone", harness.capability, clone, trt_bindings.BUILD)
    h0, w0 = MAP_SIZES[0]

    def at(dims, batch):
        """A tensor's dimensions at one profile point: batch, and the first map size."""
        return [d if isinstance(d, int) else (batch, h0, w0)[k] for k, d in enumerate(dims)]

    def spec(dtype, dims, *, concrete=False):
        desc = at(dims, PROFILE[1]) if concrete else [-1 if not isinstance(d, int) else d for d in dims]
        return trt_bindings.TensorSpec.make(int(dtype), int(trt.TensorFormat.LINEAR), desc, at(dims, PROFILE[0]), at(dims, PROFILE[1]), at(dims, PROFILE[2]))

    out_dims = [e if harness.is_constant(e) else None for e in out_exprs[0]]
    out_dims = [harness.evaluate(e, []) if e is not None else "dyn" for e in out_dims]
    io_dims = [shapes[t] for t in node.input] + [out_dims]
    io_types = in_types + [dtype_of[t] for t in out_types]
    combos = call("getSupportedFormatCombinations", harness.format_combinations, build, [spec(t, d) for t, d in zip(io_types, io_dims)], len(node.input))
    format_of = {int(v): v for v in trt.TensorFormat.__members__.values()}
    out["format_combinations"] = [[str(dtype_of[t]), str(format_of[f])] for t, f in combos[0]] if combos else []
    chosen = [dtype_of[t] for t, _ in combos[0]] if combos else io_types
    specs = [spec(t, d) for t, d in zip(chosen, io_dims)]
    call("configurePlugin", lambda *a: (harness.configure(*a),), build, specs, len(node.input))
    tactics = harness.tactics(build)
    out["tactics"] = tactics
    out["timing_cache_id"] = harness.timing_cache_id(build)
    call("setTactic", lambda *a: (harness.set_tactic(*a),), build, tactics[0] if tactics else 0)
    launch = call("getLaunchParams", harness.launch_params, build, in_exprs, specs)
    arg_dtype = {int(v): v for v in trt.PluginArgDataType.__members__.values()}
    for slot, (expr, _, dt) in zip(SLOTS, launch["slots"]):
        if dt == -2:
            raise CallFailed(f"getLaunchParams left {slot} unset")
    out["launch"] = {key: [harness.evaluate(e, env) for e, _, _ in launch["slots"]] for key, env in cases.items()}
    out["launch_arg_types"] = sorted({str(arg_dtype[dt]) for _, _, dt in launch["slots"]})
    out["extra_args"] = len(launch["extra"])
    out["extra_arg_types"] = [str(arg_dtype[dt]) for _, _, dt in launch["extra"]]
    out["extra_values"] = {key: [harness.evaluate(e, env) for e, _, _ in launch["extra"]] for key, env in cases.items()}
    kernel = call("getKernel", harness.get_kernel, build, [spec(t, d, concrete=True) for t, d in zip(chosen, io_dims)], len(node.input))
    ptx = kernel["kernel"]
    text = ptx.decode()
    entry = re.search(r"\.entry\s+([\w$]+)\s*\((.*?)\)", text, re.S)
    out["kernel"] = {
        "name": kernel["name_at_return"],
        "name_after_allocations": kernel["name_after_allocations"],
        "ptx_sha256": hashlib.sha256(ptx).hexdigest(),
        "entry": entry.group(1),
        "params": len([x for x in entry.group(2).split(",") if x.strip()]),
        "target": re.search(r"\.target\s+(\w+)", text).group(1),
        "isa": re.search(r"\.version\s+([\d.]+)", text).group(1),
        "reqntid": int(re.search(r"\.reqntid\s+(\d+)", text).group(1)),
        "cc": cc,
    }
    return out


# What the probe hands createPlugin: a list, a float list, a string and a scalar, as the
# ONNX parser turns INTS / FLOATS / STRING / INT attributes into fields.
PROBE_FIELDS = {"ints": [1, 2, 3], "floats": [0.5, 1.5], "text": "abc", "one": [7]}


def field_probe(trt, harness) -> dict:
    """Create the probe plugin through the C++ interface and report what NVIDIA's
    plugin layer decoded from each field."""
    F = trt.PluginFieldType
    # The binding's own PluginField getter (every version, 10.3 too): a field made in
    # Python, read back through NVIDIA's compiled ``.data``.
    made = {
        "ints": trt.PluginField("ints", np.array(PROBE_FIELDS["ints"], np.int32), F.INT32),
        "floats": trt.PluginField("floats", np.array(PROBE_FIELDS["floats"], np.float32), F.FLOAT32),
        "one": trt.PluginField("one", np.array(PROBE_FIELDS["one"], np.int32), F.INT32),
    }
    constructed = {name: np.asarray(f.data).tolist() for name, f in made.items()}
    if not hasattr(trt, "QuickPluginCreationRequest"):
        return {"constructed": constructed}
    import trt_field_probe

    fields = [
        ("ints", np.array(PROBE_FIELDS["ints"], np.int32).tobytes(), int(F.INT32), 3),
        ("floats", np.array(PROBE_FIELDS["floats"], np.float32).tobytes(), int(F.FLOAT32), 2),
        ("text", PROBE_FIELDS["text"].encode() + b"\0", int(F.CHAR), len(PROBE_FIELDS["text"]) + 1),
        ("one", np.array(PROBE_FIELDS["one"], np.int32).tobytes(), int(F.INT32), 1),
    ]
    namespace, name = trt_field_probe.PROBE_ID.split("::")
    creator = harness.find_creator(name, "1", namespace)
    plugin = harness.create_plugin(creator, name, namespace, fields)
    build = harness.capability(plugin, trt_bindings.BUILD)
    rc, _ = harness.output_types(build, [int(trt.float32)], [2], 1)
    seen = trt_field_probe.SEEN[-1] if trt_field_probe.SEEN else None
    return {"constructed": constructed, "declared": harness.field_names(creator), "rc": rc, "seen": seen}


def null_factories(trt) -> dict:
    """What NVIDIA's constructors do when libnvinfer (here: ours) gives them null, raw and
    through swinedge's wrapper."""
    from swinedge.engine import trt_constructing
    from swinedge.errors import SwinedgeError

    out = {}
    for name in ("Builder", "Runtime"):
        try:
            getattr(trt, name)(trt.Logger(trt.Logger.WARNING))
            out[name] = "constructed"
        except Exception as e:  # noqa: BLE001 - the answer is the finding
            out[name] = f"{type(e).__name__}: {e}"
        try:
            with trt_constructing(f"a {name.lower()}"):
                getattr(trt, name)(trt.Logger(trt.Logger.WARNING))
        except SwinedgeError as e:
            out[f"{name} via swinedge"] = str(e)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("version")
    ap.add_argument("--graph", action="append", default=[])
    ap.add_argument("--cc", type=int, action="append", default=[])
    ap.add_argument("--negative", action="store_true", help="also feed an FP16 bias and report the plugin's refusal")
    ap.add_argument("--field-probe", action="store_true", help="report what NVIDIA's plugin layer reads from list, float and string fields")
    ap.add_argument("--null-factories", action="store_true", help="report what Builder() and Runtime() do when libnvinfer gives them null")
    ap.add_argument("--plugin-module", help="register this file instead of swinedge.plugin.tensorrt_plugin (tests of the contract itself)")
    a = ap.parse_args(argv)
    result: dict = {"version": a.version}
    trt, harness = trt_bindings.load_tensorrt(a.version)
    result["has_quick_aot"] = hasattr(trt, "QuickPluginCreationRequest")
    if a.field_probe:
        result["field_probe"] = field_probe(trt, harness)
    if a.null_factories:
        result["null_factories"] = null_factories(trt)
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
                    nodes.append(replay_node(trt, harness, node, types, shapes, cc))
                except Exception as e:  # noqa: BLE001 - reported, asserted by the test
                    nodes.append({"node": node.name, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
            per_cc[cc] = nodes
        if a.negative:
            node = plugin_nodes(proto)[0]
            try:
                replay_node(trt, harness, node, types, shapes, a.cc[0], bias_type=trt.float16)
                per_cc["negative"] = "accepted"
            except Exception as e:  # noqa: BLE001
                per_cc["negative"] = f"{type(e).__name__}: {e}"
        result["graphs"][path] = per_cc
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
