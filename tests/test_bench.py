"""Latency statistics, the benchmark report, and doctor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from swinedge.bench import benchmark_artifacts, percentile, summarize, tile_batch, time_runner, write_report
from swinedge.cli import app
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, quantize_onnx
from swinedge.runners import Runner

NAME = "swin_micro_patch4_window4_64"
runner = CliRunner()


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    samples = list(np.random.default_rng(q).exponential(3.0, size=37))
    assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_summarize() -> None:
    s = summarize([4.0, 2.0, 3.0, 1.0, 100.0], batch=8)
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.iters == 5
    assert s.throughput_ips == pytest.approx(8 * 1000 / 3.0)
    assert s.p99_ms > s.p90_ms > s.median_ms


class CountingRunner(Runner):
    """A plain interface implementation (not a backend stand-in): counts calls."""

    def __init__(self):
        self.calls = 0

    def load(self):
        return self

    def infer(self, batch):
        self.calls += 1
        return np.zeros((len(batch), 3), np.float32)


def test_warmup_is_not_timed() -> None:
    r = CountingRunner()
    stats = time_runner(r, np.zeros((4, 3, 8, 8), np.float32), iters=7, warmup=3)
    assert r.calls == 10 and stats.iters == 7 and stats.batch == 4


def test_tile_batch() -> None:
    x = np.arange(3)[:, None].astype(np.float32)
    assert tile_batch(x, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("b")
    fp32 = export_onnx(NAME, d / "m.onnx").onnx_path
    int8 = quantize_onnx(fp32, d / "m.int8.onnx", QuantizeOptions(calib_size=8, method="max", high_precision_dtype="fp32")).onnx_path
    plan = d / "m.plan"
    plan.write_bytes(b"\x00")  # a plan this machine cannot run: must be skipped, not fail
    return [NAME, str(fp32), str(int8), str(plan)]


def test_benchmark_report(artifacts: list[str], tmp_path: Path) -> None:
    report = benchmark_artifacts(artifacts, batches=[1, 2], iters=3, warmup=1, size=8)
    by = {r["artifact"]: r for r in report["results"]}
    torch_row, fp32_row, int8_row, plan_row = (by[a] for a in artifacts)
    assert [s["batch"] for s in fp32_row["latency"]] == [1, 2]
    assert torch_row["accuracy"]["cosine_min"] == pytest.approx(1.0)
    assert fp32_row["accuracy"]["cosine_min"] > 0.99999 and fp32_row["accuracy"]["top1_agreement"] == 100.0
    assert 0.99 < int8_row["accuracy"]["cosine_mean"] < 1.0
    assert plan_row["skipped"] and not plan_row["latency"]
    files = write_report(report, tmp_path / "out")
    assert json.loads(Path(files["json"]).read_text())["iters"] == 3
    md = Path(files["markdown"]).read_text()
    assert "| onnxruntime-int8 | 2 |" in md and "Skipped:" in md
    with Image.open(files["chart"]) as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_benchmark_needs_a_reference_for_trained_graphs(tmp_path: Path) -> None:
    import torch

    from swinedge.errors import SwinedgeError
    from swinedge.models import create_model, save_checkpoint

    torch.manual_seed(5)
    ckpt = save_checkpoint(create_model(NAME, num_classes=3), tmp_path / "c.pt", name=NAME, source=None)
    onnx_path = export_onnx(ckpt, tmp_path / "c.onnx").onnx_path
    with pytest.raises(SwinedgeError, match="pass --reference"):
        benchmark_artifacts([str(onnx_path)], batches=[1], iters=1, size=2)
    report = benchmark_artifacts([str(onnx_path)], batches=[1], iters=1, size=2, reference=str(ckpt))
    assert report["results"][0]["accuracy"]["cosine_min"] > 0.99999


def test_benchmark_cli(artifacts: list[str], tmp_path: Path) -> None:
    r = runner.invoke(app, ["benchmark", *artifacts[:2], "--batch", "1", "--iters", "2", "--warmup", "0", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert len(report["results"]) == 2 and Path(report["files"]["chart"]).exists()


def test_doctor_reports_this_machine() -> None:
    import importlib.util

    import torch

    r = runner.invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    assert {"python", "torch", "cuda", "gpu", "tensorrt", "fused plugin", "modelopt", "triton", "onnxruntime"} <= set(checks)
    assert (checks["cuda"]["status"] == "ok") == torch.cuda.is_available()
    trt_present = importlib.util.find_spec("tensorrt") is not None
    assert (checks["tensorrt"]["status"] == "ok") == trt_present
    for c in checks.values():
        if c["status"] == "missing":
            assert c["fix"], f"{c['name']} is missing with no advice"


def test_torch_variants_on_cpu_are_skipped_with_reason(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU behaviour")
    report = benchmark_artifacts(
        [NAME], batches=[1], iters=1, warmup=0, size=2, torch_precisions=("fp32", "fp16"), torch_attentions=("reference", "fused")
    )
    assert [r["runner"] for r in report["results"]] == ["torch-fp32"]
    assert sum("needs a CUDA GPU" in s for s in report["skipped"]) == 3


def test_bad_torch_variant() -> None:
    from swinedge.errors import SwinedgeError

    with pytest.raises(SwinedgeError, match="--torch-precision takes fp32 and/or fp16"):
        benchmark_artifacts([NAME], batches=[1], iters=1, size=2, torch_precisions=("int4",))
