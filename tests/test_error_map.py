"""The per-layer error map (`swinedge inspect`): its points are the modules they are named
after, and it measures what separates a candidate graph from the FP32 export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.error_map import error_map, map_points
from swinedge.export import export_onnx, load_onnx
from swinedge.models import load_model
from swinedge.quantize import QuantizeOptions, quantize_onnx

runner = CliRunner()
V1, V2, VIT = "swin_micro_patch4_window4_64", "swinv2_micro_window4_64", "vit_micro_patch8_64"


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("emap")
    out = {}
    for name in (V1, V2, VIT):
        out[name] = export_onnx(name, d / f"{name}.onnx").onnx_path
    fp32 = out[V1]
    opts = dict(calib_size=8, high_precision_dtype="fp32", method="max")
    out["int8"] = quantize_onnx(fp32, d / "int8.onnx", QuantizeOptions(**opts)).onnx_path
    out["int8_residual"] = quantize_onnx(fp32, d / "int8r.onnx", QuantizeOptions(quantize_residual=True, **opts)).onnx_path
    out["fp8"] = quantize_onnx(fp32, d / "fp8.onnx", QuantizeOptions(precision="fp8", **opts)).onnx_path
    out["fp16"] = quantize_onnx(fp32, d / "fp16.onnx", QuantizeOptions(precision="fp16", calib_size=2)).onnx_path
    out["plugin"] = export_onnx(V1, d / "plugin.onnx", attention="plugin").onnx_path
    return out


@pytest.mark.parametrize("name", [V1, V2, VIT])
def test_points_are_the_outputs_of_the_modules_they_name(graphs: dict, name: str) -> None:
    """Each point's tensor on ONNX Runtime equals the torch output of the module it names
    (forward hooks on the float model): the map measures what it says it does."""
    from swinedge.runners.ort_runner import OnnxRuntimeRunner

    points = map_points(load_onnx(graphs[name]))
    kinds = {p.kind for p in points}
    assert {"block", "attn", "mlp"} <= kinds and (("merge" in kinds) == (name != VIT))
    model, _ = load_model(name)
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for p in points:
        modules[p.name].register_forward_hook(lambda m, i, o, key=p.name: captured.__setitem__(key, o.detach()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
    with OnnxRuntimeRunner(graphs[name], tensors=tuple(p.tensor for p in points)) as r:
        got = r.infer_tensors(x.numpy())
    for p in points:
        np.testing.assert_allclose(got[p.tensor].reshape(2, -1), captured[p.name].numpy().reshape(2, -1), atol=2e-4, rtol=1e-4)


def test_self_and_plugin_graphs_show_no_error(graphs: dict) -> None:
    same = error_map(graphs[V1], graphs[V1], size=4)
    assert all(p.rel_err == 0.0 and p.cosine_mean == pytest.approx(1.0) for p in same.points)
    plugin = error_map(graphs[V1], graphs["plugin"], size=4)  # exact math through the custom op
    assert not plugin.absent and max(p.rel_err for p in plugin.points) < 1e-5


def test_error_grows_with_what_is_quantized(graphs: dict) -> None:
    """FP16 < INT8 (recipe) < INT8 with the residual Adds quantized, at the last block."""
    last = {}
    for key in ("fp16", "int8", "int8_residual"):
        m = error_map(graphs[V1], graphs[key], size=8)
        assert not m.absent
        last[key] = [p for p in m.points if p.point.kind == "block"][-1].rel_err
        assert sorted(m.block_ranking()) == sorted(p.point.name for p in m.points if p.point.kind == "block")
    assert 0 < last["fp16"] < last["int8"] < last["int8_residual"]
    fp8 = error_map(graphs[V1], graphs["fp8"], size=4)  # FP8 Q/DQ run on ONNX Runtime too
    assert not fp8.absent and all(0 < p.rel_err < 1 for p in fp8.points)


def test_inspect_cli_table_json_and_chart(graphs: dict, tmp_path: Path) -> None:
    chart = tmp_path / "map.png"
    r = runner.invoke(app, ["inspect", str(graphs[V1]), str(graphs["int8"]), "--size", "4", "--chart", str(chart), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["data"]["count"] == 4 and len(data["points"]) == len(map_points(load_onnx(graphs[V1])))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["inspect", str(graphs[V1]), str(graphs["int8"]), "--size", "4", "--top", "3"])
    assert r.exit_code == 0 and "worst first" in r.output and "blocks by the error they add" in r.output
    rows = [line for line in r.output.splitlines() if line.startswith("  layers.")]
    assert len(rows) == 3


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["REF", V1], "the error map compares ONNX graphs"),
        (["INT8", "REF"], "give the FP32 native export"),
        (["REF", "V2"], "is another model than"),
        (["REF", "INT8", "--size", "0"], "--size must be 1.."),
        (["REF", "INT8", "--chart", "x.jpg"], "ending in .png"),
        (["REF", "INT8", "--top", "-1"], "--top must be"),
        (["REF", "INT8", "--runtime", "tvm"], "--runtime must be one of onnxruntime, tensorrt"),
    ],
)
def test_inspect_bad_input_is_one_line(graphs: dict, tmp_path: Path, args: list, fragment: str) -> None:
    names = {"REF": str(graphs[V1]), "INT8": str(graphs["int8"]), "V2": str(graphs[V2])}
    r = runner.invoke(app, ["inspect", *[names.get(a, a) for a in args]])
    assert r.exit_code != 0 and fragment in one_line_error(r)


@pytest.mark.tensorrt
def test_error_map_on_tensorrt(graphs: dict) -> None:
    """The candidate as a TensorRT engine with the points marked as outputs: an FP32
    engine stays near the FP32 graph everywhere, an INT8 one departs like the ONNX map."""
    fp32 = error_map(graphs[V1], graphs[V1], size=8, runtime="tensorrt")
    assert not fp32.absent and max(p.rel_err for p in fp32.points) < 1e-2
    int8 = error_map(graphs[V1], graphs["int8"], size=8, runtime="tensorrt")
    assert not int8.absent and 0 < [p for p in int8.points if p.point.kind == "block"][-1].rel_err < 0.5


@pytest.mark.parametrize("candidate", [V1, "int8", "fp16", "fp8"])
def test_tensorrt_map_hands_the_builder_typed_outputs(graphs: dict, candidate: str, monkeypatch) -> None:
    """`inspect --runtime tensorrt` up to the first call TensorRT itself would answer:
    the graph build_engine hands the parser (after plugin substitution) passes
    onnx.checker, and each point is a graph output with the element type and shape ONNX
    shape inference gives its tensor in the candidate. TensorRT is a recording fake of
    ours (tests/fake_tensorrt.py), not NVIDIA's; its build fails, so the map stops there."""
    import onnx

    from fake_tensorrt import FakeTensorRT, use_fake_builder
    from swinedge.errors import SwinedgeError
    from swinedge.ops.onnx_plugin import plugin_nodes

    trt = FakeTensorRT(fail={"build_serialized_network"})
    use_fake_builder(monkeypatch, trt)
    with pytest.raises(SwinedgeError, match="TensorRT failed to build the engine"):
        error_map(graphs[V1], graphs[candidate], size=2, runtime="tensorrt")
    (parsed,) = trt.parsed
    onnx.checker.check_model(parsed)
    assert len(plugin_nodes(parsed)) == 8  # the micro model's blocks: substituted, outputs kept
    inferred = onnx.shape_inference.infer_shapes(load_onnx(graphs[candidate])).graph
    types = {vi.name: vi.type for vi in [*inferred.value_info, *inferred.output]}
    outputs = {o.name: o.type for o in parsed.graph.output}
    points = map_points(load_onnx(graphs[V1]))
    for p in points:
        assert outputs[p.tensor] == types[p.tensor], p.name
        assert outputs[p.tensor].tensor_type.elem_type and len(outputs[p.tensor].tensor_type.shape.dim) >= 3
    assert len(outputs) == len(points) + 1  # the logits stay first


def test_a_tensor_without_an_inferred_type_is_not_marked(graphs: dict) -> None:
    from swinedge.error_map import mark_outputs
    from swinedge.errors import SwinedgeError

    proto = load_onnx(graphs[V1])
    with pytest.raises(SwinedgeError, match="cannot make no/such/tensor an output of the TensorRT engine: ONNX shape inference gives no type"):
        mark_outputs(proto, ("no/such/tensor",))
