"""Comparison metrics and `swinedge verify` on good and damaged graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.export import export_onnx
from swinedge.verify import compare_logits

NAME = "swin_micro_patch4_window4_64"
runner = CliRunner()


def test_compare_logits_known_values() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    cand = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    c = compare_logits(ref, cand, labels=np.array([0, 2]))
    assert c.top1_agreement == 100.0
    assert c.cosine_min == pytest.approx(1 / np.sqrt(2))
    assert c.cosine_mean == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    assert c.max_abs_err == 1.0
    assert c.top1_reference == 50.0 and c.top1_drop == 0.0
    flipped = compare_logits(ref, -ref)
    assert flipped.cosine_mean == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("v")
    good = export_onnx(NAME, d / "good.onnx").onnx_path
    proto = onnx.load(str(good))
    # Damage: flip the sign of one attention projection's weights in the last stage.
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 2 and arr.shape == (256, 256):
            init.CopyFrom(numpy_helper.from_array(-arr * 3, init.name))
            break
    else:
        raise AssertionError("no 256x256 weight found")
    bad = d / "bad.onnx"
    onnx.save(proto, str(bad))
    return good, bad


def test_verify_passes_on_faithful_export(graphs) -> None:
    good, _ = graphs
    r = runner.invoke(app, ["verify", NAME, str(good), "--json", "--size", "16"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["passed"] and report["cosine_min"] > 0.99999 and report["top1_agreement"] == 100.0


def test_verify_trips_on_damaged_graph(graphs) -> None:
    good, bad = graphs
    r = runner.invoke(app, ["verify", str(good), str(bad), "--size", "16"])
    assert r.exit_code == 1
    assert "FAILED: mean logit cosine" in r.stderr


def test_verify_with_labels_reports_top1(graphs, tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "data"
    for cls in ("a", "b"):
        for i in range(2):
            (data / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (80, 80), (60 * i, 90, 200)).save(data / cls / f"{i}.png")
    good, _ = graphs
    r = runner.invoke(app, ["verify", NAME, str(good), "--data", str(data), "--json"])
    assert "cannot tell which class each folder" in one_line_error(r)  # never numbered by the folders present
    classes = model_classes()
    (tmp_path / "classes.txt").write_text("\n".join(["b", "a", *(f"c{i}" for i in range(2, classes))]) + "\n")
    r = runner.invoke(app, ["verify", NAME, str(good), "--data", str(data), "--labels", str(tmp_path / "classes.txt"), "--json"])
    report = json.loads(r.stdout)
    assert report["images"] == 4 and report["top1_reference"] is not None and report["top1_drop"] == 0.0
    (tmp_path / "short.txt").write_text("a\nb\n")
    r = runner.invoke(app, ["verify", NAME, str(good), "--data", str(data), "--labels", str(tmp_path / "short.txt")])
    assert f"--labels lists 2 classes but the model has {classes}" in one_line_error(r)


def model_classes() -> int:
    from swinedge.models import create_model

    return create_model(NAME).head.fc.out_features


def test_verify_missing_candidate(tmp_path: Path) -> None:
    r = runner.invoke(app, ["verify", NAME, str(tmp_path / "nope.onnx")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "not found" in r.stderr


def test_verify_preprocessing_overrides(graphs) -> None:
    good, _ = graphs
    r = runner.invoke(
        app, ["verify", NAME, str(good), "--size", "4", "--resize", "96", "--interpolation", "nearest", "--mean", "0.5", "--std", "0.5", "--json"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["data"]["preprocess"]["resize"] == 96 and report["data"]["preprocess"]["interpolation"] == "nearest"
    assert report["cosine_min"] > 0.99999


def test_streamed_comparison_equals_the_whole_array_comparison() -> None:
    """Batch-by-batch accumulation gives the metrics of one comparison over everything."""
    from swinedge.verify import LogitComparer

    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(37, 10)), rng.normal(size=(37, 10))
    labels = rng.integers(0, 10, 37)
    whole = compare_logits(ref, cand, labels)
    comparer = LogitComparer()
    for i in range(0, 37, 5):
        comparer.update(ref[i : i + 5], cand[i : i + 5], labels[i : i + 5])
    streamed = comparer.result()
    assert streamed.images == whole.images and streamed.top1_agreement == whole.top1_agreement
    assert streamed.cosine_mean == pytest.approx(whole.cosine_mean) and streamed.cosine_min == whole.cosine_min
    assert streamed.max_abs_err == whole.max_abs_err and streamed.top1_candidate == whole.top1_candidate


def test_verify_reads_images_one_batch_ahead_at_most(graphs, tmp_path: Path, monkeypatch) -> None:
    """Memory is one batch whatever the set's size: between two inferences at most one
    batch of files is decoded, and every image is compared."""
    from PIL import Image

    from swinedge import data
    from swinedge.runners.ort_runner import OnnxRuntimeRunner
    from swinedge.verify import verify

    for i in range(23):
        Image.new("RGB", (70, 70), (i * 10, 50, 200)).save(tmp_path / f"{i:02d}.png")
    decoded, inferred, ahead = [0], [0], []
    real_decode, real_infer = data._FileReader.decode, OnnxRuntimeRunner.infer

    def decode(self, i):
        decoded[0] += 1
        ahead.append(decoded[0] - inferred[0])
        return real_decode(self, i)

    def infer(self, x):
        inferred[0] += len(x)
        return real_infer(self, x)

    monkeypatch.setattr(data._FileReader, "decode", decode)
    monkeypatch.setattr(OnnxRuntimeRunner, "infer", infer)
    good, _ = graphs
    report = verify(good, good, data=str(tmp_path), batch=4)
    assert report.comparison.images == 23 and decoded[0] == 23 and inferred[0] == 2 * 23
    assert max(ahead) <= 4


def test_progress_lines_with_eta_when_stderr_is_not_a_terminal(capsys) -> None:
    from swinedge.cli import ProgressReport

    with ProgressReport("verifying (images)", every=0.0) as progress:
        progress.start(100)
        progress.advance(25)
        progress.advance(25)
        progress.step("next step", 10)
        progress.advance(10)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("verifying (images): 25/100 (25%), 0:00:00 elapsed, about 0:00:00 left")
    assert lines[1].startswith("verifying (images): 50/100 (50%)")
    assert lines[-1].startswith("next step: 10/10 (100%)") and "left" not in lines[-1]
