"""`swinedge qat`: INT8 quantization-aware training to a Q/DQ graph the rest of the flow takes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app

runner = CliRunner()
MICRO = "swin_micro_patch4_window4_64"


def test_qat_writes_a_linear_only_qdq_graph_that_verify_and_the_plugin_take(tmp_path: Path) -> None:
    r = runner.invoke(app, ["build", MICRO, "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["qat", str(tmp_path / "m.pt"), "--data", "digits-train", "--size", "32", "--batch", "16", "--calib-size", "16", "--distill", "--out", str(tmp_path / "q.onnx"), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert len(result["loss_per_epoch"]) == 1
    manifest = json.loads((tmp_path / "q.onnx.json").read_text())
    assert manifest["precision"] == "int8" and manifest["quantization"]["training"]["distill"] is True
    assert manifest["quantization"]["training"]["count"] == 32
    proto = onnx.load(str(tmp_path / "q.onnx"))
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # Every DQ feeds a Linear's MatMul (through the weight's Transpose): nothing else is quantized.
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for n in dq:
        users = consumers[n.output[0]]
        while len(users) == 1 and users[0].op_type == "Transpose":
            users = consumers[users[0].output[0]]
        assert all(u.op_type == "MatMul" and "/attn/" not in u.name.replace("/attn/qkv/", "").replace("/attn/proj/", "") for u in users), n.name
    assert not any(n.op_type == "DequantizeLinear" for n in (producer.get(i) for c in proto.graph.node if c.op_type in ("Add", "Softmax", "LayerNormalization") for i in c.input) if n)
    r = runner.invoke(app, ["verify", str(tmp_path / "m.pt"), str(tmp_path / "q.onnx"), "--size", "8", "--min-cosine", "0", "--json"])
    assert r.exit_code == 0, r.output
    from swinedge.engine import plugin_graph
    from swinedge.export import onnx_info

    graph, count, why_not = plugin_graph(proto, onnx_info(tmp_path / "q.onnx", proto))
    assert why_not is None and count == sum(manifest["config"]["depths"])  # one plugin node per block


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--epochs", "0"], "--epochs must be 1.."),
        (["--lr", "nan"], "--lr must be in (0, 1]"),
        (["--batch", "0"], "--batch must be 1.."),
        (["--data", "default"], "QAT trains on labelled images"),
        (["--data", "/nonexistent/folder"], "--data"),
        (["--out", "q.pt"], "ending in .onnx"),
    ],
)
def test_qat_bad_input_is_one_line_before_work(tmp_path: Path, extra: list, fragment: str) -> None:
    args = {"--data": "digits-train", "--out": str(tmp_path / "q.onnx")}
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v if k != "--out" else str(tmp_path / v)
    flat = [x for kv in args.items() for x in kv] + [x for kv in zip(extra[::2], extra[1::2]) if kv[0] not in args for x in kv]
    r = runner.invoke(app, ["qat", MICRO, *flat])
    assert r.exit_code != 0 and fragment in one_line_error(r)
    assert not list(tmp_path.iterdir())
