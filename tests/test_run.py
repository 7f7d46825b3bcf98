"""`swinedge run` end to end on the embedded default (CPU: no engines, says so)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app

pytestmark = pytest.mark.slow


def test_run_on_embedded_default(digits_cache, tmp_path: Path, monkeypatch) -> None:
    cache, _, _ = digits_cache
    monkeypatch.setenv("SWINEDGE_CACHE", str(cache))  # reuse the session's trained model
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--out", str(out), "--iters", "2"])
    assert r.exit_code == 0, r.output
    assert "accuracy: digits" in r.stdout and "int8 onnx" in r.stdout
    summary = json.loads((out / "report.json").read_text())
    acc = {a["precision"]: a for a in summary["accuracy"]}
    assert acc["fp32 onnx"]["top1"] == acc["fp32 onnx"]["top1_reference"] > 90
    assert acc["int8 onnx"]["top1_drop"] <= 0.5 and acc["fp16 onnx"]["top1_drop"] <= 0.1
    assert all(a["passed"] for a in summary["accuracy"])
    # The guarded INT8 row: the aggressive placement, measured on training images.
    guard = summary["guard"]
    assert "int8 guarded onnx" in acc and guard["budget"] == {"max_top1_drop": 0.5, "min_cosine": 0.99}
    assert guard["data"]["source"] == "digits-train" and guard["path"][-1]["within_budget"] or any(p["within_budget"] for p in guard["path"])
    assert "| int8 guarded onnx |" in (out / "report.md").read_text()
    runners = {x["runner"] for x in summary["benchmark"]["results"]}
    assert {"torch-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8", "onnxruntime-int8-guarded"} <= runners
    md = (out / "report.md").read_text()
    assert "| int8 onnx |" in md and "median ms" in md
    with Image.open(out / "latency.png") as im:
        assert im.format == "PNG"
    # The run's graphs as a Triton repository, in the final folder, each with its image ensemble.
    assert summary["triton"]["repository"] == str(out / "triton")
    assert summary["triton"]["models"] == ["model_fp32", "model_fp16", "model_int8"]
    assert (out / "triton" / "model_int8_image" / "config.pbtxt").is_file() and "Triton model repository" in md
    import torch

    if not torch.cuda.is_available():
        assert any("TensorRT engines" in s for s in summary["benchmark"]["skipped"])


def test_run_with_a_model_and_separate_eval_set(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "eval" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (90, 70), (40 * i, 120, 30 if cls == "a" else 220)).save(tmp_path / "eval" / cls / f"{i}.png")
    out = tmp_path / "run"
    args = ["run", "swin_micro_patch4_window4_64", "--data", str(tmp_path / "eval"), "--calib-size", "12", "--out", str(out), "--iters", "1", "--batch", "1"]
    # Folders named neither by class index nor in a class list: refused before any work.
    r = CliRunner().invoke(app, args)
    assert "cannot tell which class each folder" in one_line_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no half run folder
    (tmp_path / "eval" / "a").rename(tmp_path / "eval" / "7")
    (tmp_path / "eval" / "b").rename(tmp_path / "eval" / "300")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "report.json").read_text())
    assert summary["eval_data"] == str(tmp_path / "eval") and summary["calibration"] == {"source": "default", "count": 12}
    assert summary["accuracy"][0]["top1_reference"] is not None  # labelled folders give top-1
    assert (out / "swin_micro_patch4_window4_64.pt.json").exists()
    assert str(out / "model.int8.onnx") in {a["artifact"] for a in summary["accuracy"]}  # paths name the final folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "run"]  # no scratch folder left beside it
