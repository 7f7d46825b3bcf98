"""ONNX export: parity with torch on ONNX Runtime, folded shapes, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from swinedge.errors import SwinedgeError
from swinedge.export import export_onnx, run_onnx_cpu
from swinedge.models import load_model

NAME = "swin_micro_patch4_window4_64"


@pytest.mark.parametrize("batch,run_batch", [("dynamic", 3), (4, 4)])
def test_export_matches_torch(tmp_path: Path, batch, run_batch: int) -> None:
    r = export_onnx(NAME, tmp_path / "m.onnx", batch=batch)
    model, _ = load_model(NAME)
    x = torch.randn(run_batch, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    got = run_onnx_cpu(r.onnx_path, x.numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() < 1e-4
    proto = onnx.load(str(r.onnx_path))
    onnx.checker.check_model(proto)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert (dim0.dim_param == "batch") if batch == "dynamic" else (dim0.dim_value == batch)


def test_no_shape_chains_left(tmp_path: Path) -> None:
    """Static spatial shapes: no Shape/Gather ops; Concat only from cyclic shifts (roll)."""
    r = export_onnx(NAME, tmp_path / "m.onnx")
    proto = onnx.load(str(r.onnx_path))
    ops = [n.op_type for n in proto.graph.node]
    assert "Shape" not in ops and "Gather" not in ops
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type == "Concat":
            assert [producers.get(i) for i in node.input] == ["Slice", "Slice"], node.name
        if node.op_type == "Reshape":
            shape_src = node.input[1]
            assert producers.get(shape_src) in (None, "Constant"), f"{node.name} shape is computed"


def test_manifest_beside_onnx(tmp_path: Path) -> None:
    r = export_onnx(NAME, tmp_path / "m.onnx", opset=18)
    m = json.loads((tmp_path / "m.onnx.json").read_text())
    assert m["kind"] == "onnx" and m["precision"] == "fp32" and m["opset"] == 18
    assert m["config"]["img_size"] == 64 and m["input"]["shape"] == ["batch", 3, 64, 64]
    assert m["parity"]["max_abs_err"] == r.max_abs_err < 1e-4
    assert m["source"]["init"].startswith("random")


def test_export_of_padded_size(tmp_path: Path) -> None:
    r = export_onnx(NAME, tmp_path / "m.onnx")  # warm path
    assert r.max_abs_err < 1e-4
    from swinedge.models import create_model

    model = create_model(NAME, img_size=72, num_classes=5).eval()  # 18 -> 9 -> 5 -> 3: pads everywhere
    r = export_onnx(model, tmp_path / "p.onnx")
    assert r.max_abs_err < 1e-4


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(batch="many"), "--batch must be 'dynamic' or an integer 1..4096"),
        (dict(batch=0), "--batch must be"),
        (dict(opset=9), "outside the supported range"),
        (dict(attention="flash"), "--attention must be one of"),
    ],
)
def test_bad_export_options(tmp_path: Path, kwargs, fragment: str) -> None:
    with pytest.raises(SwinedgeError, match=fragment):
        export_onnx(NAME, tmp_path / "m.onnx", **kwargs)
    assert not list(tmp_path.iterdir())
