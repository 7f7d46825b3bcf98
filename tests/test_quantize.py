"""INT8 Q/DQ placement, FP16 AutoCast, calibration progress, CLI bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, attention_matmul_nodes, quantize_onnx

NAME = "swin_micro_patch4_window4_64"
runner = CliRunner()


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    return export_onnx(NAME, tmp_path_factory.mktemp("q") / "m.onnx").onnx_path


def _graph(path: Path):
    proto = onnx.load(str(path))
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    return proto, producers, inits


def _dq_fed(node, producers) -> list[bool]:
    return [i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input]


def _linear_matmuls(path: Path) -> list[str]:
    """Names of MatMuls with a weight operand in the FP32 graph (the Linears)."""
    proto, _, inits = _graph(path)
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and set(n.input) & inits]


@pytest.fixture(scope="module")
def int8(fp32: Path) -> tuple[Path, list[int]]:
    seen: list[int] = []
    out = fp32.with_name("m.int8.onnx")
    quantize_onnx(
        fp32, out, QuantizeOptions(calib_size=16, method="max", high_precision_dtype="fp32"), on_batch=seen.append
    )
    return out, seen


def test_int8_qdq_placement(fp32: Path, int8) -> None:
    path, _ = int8
    proto, producers, _ = _graph(path)
    by_name = {n.name: n for n in proto.graph.node}
    linears = _linear_matmuls(fp32)
    assert len(linears) == 2 * 8 + 3 + 2 * 8  # qkv+proj, merges, fc1+fc2 per block
    for name in linears:
        assert all(_dq_fed(by_name[name], producers)), f"{name} not quantized on both inputs"
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert not any(_dq_fed(node, producers)), f"Q/DQ feeds {node.name}"
        # Residual adds are the block's own Add / Add_1 (bias adds live under /attn/, /mlp/).
        if node.op_type == "Add" and node.name.rsplit("/", 2)[-2].startswith("blocks."):
            assert not any(_dq_fed(node, producers)), f"residual {node.name} quantized"
    # Attention matmuls, patch embedding and head stay in high precision by default.
    for name in attention_matmul_nodes(onnx.load(str(fp32))):
        assert not any(_dq_fed(by_name[name], producers)), name
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    head = next(n for n in proto.graph.node if n.op_type == "Gemm")
    assert not any(_dq_fed(conv, producers)) and not any(_dq_fed(head, producers))


def test_calibration_progress_counts_every_image(int8) -> None:
    _, seen = int8
    assert sum(seen) == 16


def test_int8_close_to_fp32(fp32: Path, int8) -> None:
    from swinedge.export import run_onnx_cpu

    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    a, b = run_onnx_cpu(fp32, x), run_onnx_cpu(int8[0], x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert not np.allclose(a, b, atol=1e-6)  # really quantized


def test_quantize_head_option(fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.onnx"
    quantize_onnx(fp32, out, QuantizeOptions(calib_size=8, method="max", quantize_head=True, high_precision_dtype="fp32"))
    proto, producers, _ = _graph(out)
    head = next(n for n in proto.graph.node if n.op_type == "Gemm")
    assert _dq_fed(head, producers)[0]


@pytest.mark.slow
def test_fp16_autocast_keeps_layernorm_fp32(fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.fp16.onnx"
    quantize_onnx(fp32, out, QuantizeOptions(precision="fp16", calib_size=8))
    proto = onnx.load(str(out))
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    fp16_inits = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_inits) > 20  # weights converted
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert types.get(node.input[0]) == onnx.TensorProto.FLOAT, node.name
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types


def test_cli_bad_input(fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "q.onnx"
    r = runner.invoke(app, ["quantize", str(tmp_path / "missing.onnx"), "--out", str(out)])
    assert "ONNX file not found" in one_line_error(r)
    r = runner.invoke(app, ["quantize", str(fp32), "--precision", "int4", "--out", str(out)])
    assert "--precision must be one of int8, fp8, fp16" in one_line_error(r)
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(fp32.read_bytes()[:5000])
    r = runner.invoke(app, ["quantize", str(truncated), "--out", str(out)])
    assert "is not a valid ONNX model" in one_line_error(r)
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["quantize", str(fp32), "--calib", str(tmp_path / "empty"), "--out", str(out)])
    assert "no readable images found" in one_line_error(r)
    r = runner.invoke(app, ["quantize", str(fp32), "--calib-size", "0", "--out", str(out)])
    assert "--calib-size must be 1..4096, got 0" in one_line_error(r)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_fp8_graph_runs_on_cpu(fp32: Path, tmp_path: Path) -> None:
    from swinedge.runners.ort_runner import OnnxRuntimeRunner

    out = tmp_path / "m.fp8.onnx"
    quantize_onnx(fp32, out, QuantizeOptions(precision="fp8", calib_size=8, method="max", high_precision_dtype="fp32"))
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 19
    assert any(i.data_type == onnx.TensorProto.FLOAT8E4M3FN for i in proto.graph.initializer)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with OnnxRuntimeRunner(fp32) as a, OnnxRuntimeRunner(out) as b:
        ya, yb = a.infer(x), b.infer(x)
    cos = (ya * yb).sum(1) / np.linalg.norm(ya, axis=1) / np.linalg.norm(yb, axis=1)
    assert cos.min() > 0.99 and not np.allclose(ya, yb, atol=1e-5)


def test_fp16_default_keeps_only_reductions_in_fp32(fp32: Path) -> None:
    assert QuantizeOptions(precision="fp16").kept_op_types == ("LayerNormalization", "Softmax")
    assert "Add" in QuantizeOptions(precision="int8").kept_op_types
    assert QuantizeOptions(precision="int8", keep_high_precision=()).kept_op_types == ()


def test_cli_preprocessing_overrides(fp32: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "o.onnx"
    r = runner.invoke(
        app,
        ["quantize", str(fp32), "--out", str(out), "--calib-size", "4", "--method", "max", "--high-precision-dtype", "fp32",
         "--mean", "0.5", "--std", "0.25,0.25,0.25", "--interpolation", "bilinear", "--resize", "80"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    pre = json.loads((tmp_path / "o.onnx.json").read_text())["quantization"]["calibration"]["preprocess"]
    assert pre == {"resize": 80, "crop": 64, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}
    bad = [
        (["--std", "0"], "--std values must be > 0"),
        (["--mean", "0.5,0.5"], "--mean needs 3 comma-separated values"),
        (["--mean", "a,b,c"], "--mean takes comma-separated numbers"),
        (["--interpolation", "lanczos"], "--interpolation must be one of"),
        (["--resize", "32"], "--resize must be 64..256 (the crop is 64px), got 32"),
    ]
    for extra, fragment in bad:
        r = runner.invoke(app, ["quantize", str(fp32), "--out", str(tmp_path / "x.onnx"), *extra])
        assert fragment in one_line_error(r), extra
    assert not (tmp_path / "x.onnx").exists()


# -- --quantize-residual / --aggressive: always guarded -----------------------------------------------
@pytest.fixture(scope="module")
def vit_micro_onnx(tmp_path_factory) -> Path:
    return export_onnx("vit_micro_patch8_64", tmp_path_factory.mktemp("vit") / "v.onnx").onnx_path


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--precision", "fp16"], "an fp16 graph has none to place"),
        (["--keep-high-precision", "Add,Softmax"], "quantizes the Add ops that --keep-high-precision keeps"),
        (["--data-size", "0"], "--size must be 1.."),
        (["--min-cosine", "nan"], "--min-cosine must be -1..1"),
        (["--min-agreement", "101"], "--min-agreement must be 0..100"),
        (["--max-top1-drop", "0.5"], "--max-top1-drop needs labelled images"),
        (["--data", str(Path("/nonexistent/images"))], "--data"),
    ],
)
def test_guard_options_are_checked_before_work(vit_micro_onnx: Path, tmp_path: Path, extra: list, fragment: str) -> None:
    r = runner.invoke(app, ["quantize", str(vit_micro_onnx), "--quantize-residual", *extra, "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code != 0 and fragment in one_line_error(r)
    assert not list(tmp_path.iterdir())


def test_a_budget_no_graph_meets_writes_nothing(vit_micro_onnx: Path, tmp_path: Path) -> None:
    """A mean cosine of exactly 1 is out of reach: with both blocks restored the graph
    still runs in FP16 (the default high-precision dtype). The guard tries every block,
    says so in one line and writes nothing."""
    r = runner.invoke(app, ["quantize", str(vit_micro_onnx), "--aggressive", "--calib-size", "8", "--data-size", "8", "--min-cosine", "1.0", "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code != 0 and "even with all 2 blocks in high precision the graph misses the budget" in one_line_error(r)
    assert not list(tmp_path.iterdir())


def test_a_loose_budget_keeps_every_block_quantized(vit_micro_onnx: Path, tmp_path: Path) -> None:
    import json

    r = runner.invoke(app, ["quantize", str(vit_micro_onnx), "--quantize-residual", "--calib-size", "8", "--data-size", "16", "--min-cosine", "0", "--out", str(tmp_path / "q.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    q = json.loads((tmp_path / "q.onnx.json").read_text())["quantization"]
    assert q["quantize_residual"] and "Add" not in q["keep_high_precision"]
    guard = q["guard"]
    assert guard["high_precision_blocks"] == [] and len(guard["path"]) == 1 and guard["path"][0]["within_budget"]
    assert guard["budget"] == {"min_cosine": 0.0} and guard["data"]["size"] == 16
