"""The plugin-node export: structure for TensorRT, and execution on ONNX Runtime CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import defs
from typer.testing import CliRunner

from swinedge.cli import app
from swinedge.export import export_onnx, run_onnx_cpu
from swinedge.models import create_model, load_model
from swinedge.ops.attention_table import table_shape
from swinedge.ops.onnx_plugin import PLUGIN_DOMAIN, PLUGIN_NAME, node_geometry, plugin_nodes

NAME = "swin_micro_patch4_window4_64"
runner = CliRunner()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("plugin")
    native = export_onnx(NAME, d / "native.onnx").onnx_path
    plugin = export_onnx(NAME, d / "plugin.onnx", attention="plugin").onnx_path
    return native, plugin


def test_one_plugin_node_per_block(graphs) -> None:
    _, plugin = graphs
    proto = onnx.load(str(plugin))
    nodes = plugin_nodes(proto)
    model, _ = load_model(NAME)
    geoms = [m.geometry for m in model.attention_modules()]
    assert len(nodes) == len(geoms) == 8
    assert [node_geometry(n) for n in nodes] == geoms
    assert not any(n.op_type in ("Softmax",) for n in proto.graph.node)  # attention fully replaced
    assert any(o.domain == PLUGIN_DOMAIN for o in proto.opset_import)


def test_node_is_what_tensorrt_parses(graphs) -> None:
    _, plugin = graphs
    proto = onnx.load(str(plugin))
    inits = {i.name: i for i in proto.graph.initializer}
    standard = {s.name for s in defs.get_all_schemas()}
    assert PLUGIN_NAME not in standard  # the parser would otherwise import a built-in op
    for node in plugin_nodes(proto):
        attrs = {a.name: a for a in node.attribute}
        assert onnx.helper.get_attribute_value(attrs["plugin_namespace"]) == b"swinedge"
        assert "plugin_version" not in attrs  # the parser's default "1"; never forwarded as a field
        assert all(a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.STRING) for a in node.attribute)
        g = node_geometry(node)
        table = inits[node.input[1]]
        assert tuple(table.dims) == table_shape(g) and table.data_type == onnx.TensorProto.FLOAT
        assert list(inits[node.input[2]].dims) == [3 * g.dim]


@pytest.mark.parametrize("batch", [1, 3])
def test_plugin_graph_matches_native_on_onnxruntime(graphs, batch: int) -> None:
    native, plugin = graphs
    x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
    a = run_onnx_cpu(native, x)
    b = run_onnx_cpu(plugin, x, with_plugin=True)
    assert np.abs(a - b).max() < 1e-4


def test_plugin_export_of_padded_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(NAME, img_size=72, num_classes=4).eval()
    r = export_onnx(model, tmp_path / "p.onnx", attention="plugin")
    assert r.max_abs_err < 1e-4
    assert model.attention_modules()[0].impl == "reference"  # export left the model as it was


def test_verify_accepts_plugin_graphs(graphs) -> None:
    native, plugin = graphs
    r = runner.invoke(app, ["verify", str(native), str(plugin), "--size", "8", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert "plugin" in report["candidate"] and report["cosine_min"] > 0.99999


def test_quantize_refuses_plugin_graph(graphs, tmp_path: Path) -> None:
    _, plugin = graphs
    r = runner.invoke(app, ["quantize", str(plugin), "--out", str(tmp_path / "q.onnx"), "--calib-size", "2"])
    assert r.exit_code != 0 and "quantize the native export" in r.stderr


# --- substitution into native / quantized graphs (what build-engine does) -----------


def _substituted(path: Path, tmp_path: Path) -> tuple[Path, onnx.ModelProto, int]:
    from swinedge.models import MODEL_SPECS
    from swinedge.ops.onnx_plugin import substitute_plugin_nodes

    proto, count = substitute_plugin_nodes(onnx.load(str(path)), MODEL_SPECS[NAME].config)
    onnx.checker.check_model(proto)
    out = tmp_path / f"sub.{path.name}"
    onnx.save(proto, str(out))
    return out, proto, count


def test_substitution_in_native_graph_matches(graphs, tmp_path: Path) -> None:
    native, plugin = graphs
    out, proto, count = _substituted(native, tmp_path)
    assert count == 8 and not any(n.op_type == "Softmax" for n in proto.graph.node)
    assert [node_geometry(n) for n in plugin_nodes(proto)] == [node_geometry(n) for n in plugin_nodes(onnx.load(str(plugin)))]
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert np.abs(run_onnx_cpu(native, x) - run_onnx_cpu(out, x, with_plugin=True)).max() < 1e-4


def test_substitution_keeps_int8_linears(graphs, tmp_path: Path) -> None:
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    native, _ = graphs
    int8 = quantize_onnx(native, tmp_path / "q.onnx", QuantizeOptions(calib_size=8, method="max", high_precision_dtype="fp32")).onnx_path
    out, proto, count = _substituted(int8, tmp_path)
    q_before = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    assert count == 8 and sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) == q_before
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.name.endswith("attn/proj/MatMul"):  # proj still reads the plugin output through Q/DQ
            dq = producers[node.input[0]]
            assert dq.op_type == "DequantizeLinear"
            assert producers[producers[dq.input[0]].input[0]].op_type == PLUGIN_NAME
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    a, b = run_onnx_cpu(int8, x), run_onnx_cpu(out, x, with_plugin=True)
    assert np.abs(a - b).max() < 1e-3


@pytest.mark.slow
def test_substitution_in_fp16_graph_types(graphs, tmp_path: Path) -> None:
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    native, _ = graphs
    fp16 = quantize_onnx(native, tmp_path / "h.onnx", QuantizeOptions(precision="fp16", calib_size=4)).onnx_path
    _, proto, count = _substituted(fp16, tmp_path)
    inits = {i.name: i for i in proto.graph.initializer}
    assert count == 8
    for node in plugin_nodes(proto):
        assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT  # bias: fp32, as the kernel reads it
        assert inits[node.input[2]].data_type == onnx.TensorProto.FLOAT16  # pad: the qkv dtype


@pytest.fixture(scope="module")
def quantized(graphs, tmp_path_factory) -> dict[str, Path]:
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    native, _ = graphs
    d = tmp_path_factory.mktemp("quantized")
    opts = {
        "fp16": QuantizeOptions(precision="fp16", calib_size=4),
        "int8": QuantizeOptions(calib_size=8, method="max"),
        "fp8": QuantizeOptions(precision="fp8", calib_size=8, method="max"),
        "int8-fp32": QuantizeOptions(calib_size=8, method="max", high_precision_dtype="fp32"),
    }
    return {k: quantize_onnx(native, d / f"{k}.onnx", o).onnx_path for k, o in opts.items()}


QKV_TYPE = {"fp16": onnx.TensorProto.FLOAT16, "int8": onnx.TensorProto.FLOAT16, "fp8": onnx.TensorProto.FLOAT16, "int8-fp32": onnx.TensorProto.FLOAT}


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(QKV_TYPE))
def test_plugin_output_has_the_type_of_the_tensor_it_replaced(quantized, precision: str, tmp_path: Path) -> None:
    from swinedge.ops.onnx_plugin import tensor_types

    path = quantized[precision]
    before = tensor_types(onnx.load(str(path)))
    _, proto, count = _substituted(path, tmp_path)
    inits = {i.name: i for i in proto.graph.initializer}
    assert count == 8
    for node in plugin_nodes(proto):
        qkv, bias, pad = node.input
        assert before[qkv] == QKV_TYPE[precision]
        assert inits[bias].data_type == onnx.TensorProto.FLOAT and inits[pad].data_type == QKV_TYPE[precision]
        assert before[node.output[0]] == QKV_TYPE[precision]  # the plugin writes qkv's dtype, the type that tensor had
    if precision.startswith("int8"):  # Q/DQ around the GEMMs are untouched
        assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) == sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def test_substitution_restores_another_output_type_with_a_cast(graphs, tmp_path: Path) -> None:
    """A core whose last op runs in FLOAT while qkv is FLOAT16 (as a graph that kept the
    attention in FP32 would): the plugin writes FLOAT16 and a Cast restores FLOAT."""
    from swinedge.models import MODEL_SPECS
    from swinedge.ops.onnx_plugin import substitute_plugin_nodes, tensor_types
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    native, _ = graphs
    fp16 = quantize_onnx(native, tmp_path / "h.onnx", QuantizeOptions(precision="fp16", calib_size=2)).onnx_path
    proto = onnx.load(str(fp16))
    prefix = "/layers/layers.0/blocks/blocks.0/attn/"
    producer = {o: n for n in proto.graph.node for o in n.output}
    proj = next(n for n in proto.graph.node if n.name == prefix + "proj/MatMul")
    core_out = proj.input[0]
    while producer[core_out].op_type in ("Cast", "QuantizeLinear", "DequantizeLinear"):
        core_out = producer[core_out].input[0]
    last = producer[core_out]  # the core's last op: make it compute in FLOAT
    last.input[0], cast_in = last.input[0] + "_f32", last.input[0]
    consumers = [n for n in proto.graph.node if core_out in n.input]
    for n in consumers:
        n.input[list(n.input).index(core_out)] = core_out + "_f16"
    proto.graph.node.extend([
        onnx.helper.make_node("Cast", [cast_in], [last.input[0]], name=prefix + "test/Cast_in", to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Cast", [core_out], [core_out + "_f16"], name=prefix + "test/Cast_out", to=onnx.TensorProto.FLOAT16),
    ])  # fmt: skip
    stale = [vi for vi in proto.graph.value_info if vi.name == core_out]  # its type changed
    for vi in stale:
        proto.graph.value_info.remove(vi)
    sorted_nodes = _topological(proto)
    del proto.graph.node[:]
    proto.graph.node.extend(sorted_nodes)
    assert tensor_types(proto)[core_out] == onnx.TensorProto.FLOAT
    sub, count = substitute_plugin_nodes(proto, MODEL_SPECS[NAME].config)
    onnx.checker.check_model(sub)
    assert count == 8
    node = next(n for n in plugin_nodes(sub) if n.name.startswith(prefix))
    cast = next(n for n in sub.graph.node if list(n.input) == [node.output[0]])
    assert node.output[0] != core_out and cast.op_type == "Cast" and list(cast.output) == [core_out]
    assert onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.FLOAT
    after = tensor_types(sub)
    assert after[node.output[0]] == onnx.TensorProto.FLOAT16 and after[core_out] == onnx.TensorProto.FLOAT


def _topological(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    ready = {i.name for i in proto.graph.input} | {i.name for i in proto.graph.initializer} | {""}
    pending, ordered = list(proto.graph.node), []
    while pending:
        progress = [n for n in pending if all(x in ready for x in n.input)]
        assert progress, "graph has a cycle"
        for n in progress:
            ordered.append(n)
            ready.update(n.output)
        pending = [n for n in pending if n not in progress]
    return ordered
