"""The embedded accuracy task: FP32 / FP16 / INT8 top-1 on held-out handwritten digits.

Trains the digits model once per test session (about a minute on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swinedge.pipeline import digits_accuracy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def digits_ckpt(digits_cache) -> Path:
    _, path, summary = digits_cache
    assert summary["test_images"] == 539
    return path


@pytest.fixture(scope="session")
def table(digits_ckpt: Path, tmp_path_factory) -> dict:
    return digits_accuracy(tmp_path_factory.mktemp("digits-work"), checkpoint=digits_ckpt)


def _top1(table: dict, runtime: str) -> float:
    return next(r["top1"] for r in table["rows"] if r["runtime"] == runtime)


def test_fp32_model_really_learned(table: dict) -> None:
    assert _top1(table, "torch fp32") > 93.0  # chance is 10%
    assert _top1(table, "onnxruntime fp32") == _top1(table, "torch fp32")


def test_fp16_within_0_1_points(table: dict) -> None:
    assert _top1(table, "torch fp32") - _top1(table, "onnxruntime fp16") <= 0.1


def test_int8_within_0_5_points(table: dict) -> None:
    fp32, int8 = _top1(table, "torch fp32"), _top1(table, "onnxruntime int8")
    assert fp32 - int8 <= 0.5, f"INT8 {int8:.2f} vs FP32 {fp32:.2f}"
    row = next(r for r in table["rows"] if r["runtime"] == "onnxruntime int8")
    assert row["top1_agreement"] >= 98.0


# -- the same task for a small ViT (issue #11: INT8 within 0.5 points, FP16 within 0.1) ----------------
VIT_EPOCHS = 25
@pytest.fixture(scope="session")
def vit_table(digits_cache, tmp_path_factory) -> dict:
    from swinedge.digits import digits_checkpoint

    cache, _, _ = digits_cache
    # 25 epochs (64 s here) reach 97.4 %, as the accuracy-budget benchmark trains it.
    path, summary = digits_checkpoint(cache, model="vit_nano_patch4_32", epochs=VIT_EPOCHS)
    assert summary["model"] == "vit_nano_patch4_32" and summary["test_images"] == 539
    return digits_accuracy(tmp_path_factory.mktemp("digits-vit"), checkpoint=path)


def test_vit_learned_and_keeps_its_accuracy_in_fp16_and_int8(vit_table: dict) -> None:
    fp32 = _top1(vit_table, "torch fp32")
    assert fp32 > 93.0 and _top1(vit_table, "onnxruntime fp32") == fp32
    assert fp32 - _top1(vit_table, "onnxruntime fp16") <= 0.1
    int8 = _top1(vit_table, "onnxruntime int8")
    assert fp32 - int8 <= 0.5, f"INT8 {int8:.2f} vs FP32 {fp32:.2f}"


@pytest.fixture(scope="session")
def swinv2_table(digits_cache, tmp_path_factory) -> dict:
    from swinedge.digits import digits_checkpoint

    cache, _, _ = digits_cache
    # 25 epochs (74 s here) reach 97 %: enough for the precision comparison, half the time.
    path, summary = digits_checkpoint(cache, model="swinv2_nano_window4_32", epochs=25)
    assert summary["model"] == "swinv2_nano_window4_32" and summary["test_images"] == 539
    return digits_accuracy(tmp_path_factory.mktemp("digits-swinv2"), checkpoint=path)


def test_swin_v2_learned_and_keeps_its_accuracy_in_fp16_and_int8(swinv2_table: dict) -> None:
    fp32 = _top1(swinv2_table, "torch fp32")
    assert fp32 > 93.0 and _top1(swinv2_table, "onnxruntime fp32") == fp32
    assert fp32 - _top1(swinv2_table, "onnxruntime fp16") <= 0.1
    int8 = _top1(swinv2_table, "onnxruntime int8")
    assert fp32 - int8 <= 0.5, f"INT8 {int8:.2f} vs FP32 {fp32:.2f}"


def test_vit_residual_int8_is_guarded_and_its_figures_are_what_verify_measures(digits_cache, vit_table: dict, tmp_path: Path) -> None:
    """``--quantize-residual`` on the digits ViT: the guard's figures are what `verify`
    measures on the same 539 held-out images, and the residual Adds really read
    quantized inputs."""
    import json
    import re

    import onnx
    from typer.testing import CliRunner

    from swinedge.cli import app
    from swinedge.digits import digits_checkpoint

    run = CliRunner().invoke
    path, _ = digits_checkpoint(digits_cache[0], model="vit_nano_patch4_32", epochs=VIT_EPOCHS)
    assert run(app, ["export", str(path), "--out", str(tmp_path / "f.onnx")]).exit_code == 0
    r = run(app, ["quantize", str(tmp_path / "f.onnx"), "--calib", "digits-train", "--calib-size", "128", "--quantize-residual",
                  "--data", "digits", "--data-size", "539", "--max-top1-drop", "100", "--high-precision-dtype", "fp32",
                  "--json", "--out", str(tmp_path / "r.onnx")])  # fmt: skip
    assert r.exit_code == 0, r.output
    guard = json.loads(r.stdout)["guard"]
    assert guard["high_precision_blocks"] == [] and guard["budget"] == {"max_top1_drop": 100.0}
    v = json.loads(run(app, ["verify", str(tmp_path / "f.onnx"), str(tmp_path / "r.onnx"), "--data", "digits", "--json"]).stdout)
    assert v["data"]["count"] == 539
    assert guard["top1_drop"] == pytest.approx(v["top1_drop"], abs=1e-3) and guard["cosine_mean"] == pytest.approx(v["cosine_mean"], abs=1e-5)
    proto = onnx.load(str(tmp_path / "r.onnx"))
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    residual = [n for n in proto.graph.node if re.fullmatch(r"/blocks/blocks\.\d+/Add(_\d+)?", n.name)]  # x + attn, x + mlp
    assert len(residual) == 8 and all(any(producer.get(i) == "DequantizeLinear" for i in n.input) for n in residual)


# -- issue #12: the guard and QAT on real data -------------------------------------------------------
GUARD_BUDGET = {"max_top1_drop": 0.3, "min_cosine": 0.9999}


@pytest.fixture(scope="session")
def budget_table(digits_cache, vit_table: dict, tmp_path_factory) -> dict:
    """The README's accuracy-budget table for the digits ViT (benchmarks/accuracy_budget)."""
    from swinedge.benchmarks.accuracy_budget import accuracy_budget_table
    from swinedge.digits import digits_checkpoint

    work = tmp_path_factory.mktemp("budget")
    path, _ = digits_checkpoint(digits_cache[0], model="vit_nano_patch4_32", epochs=VIT_EPOCHS)
    table = accuracy_budget_table(work, path, **GUARD_BUDGET, qat_epochs=2)
    return {**table, "work": work}


def _row(table: dict, prefix: str) -> dict:
    return next(r for r in table["rows"] if r["graph"].startswith(prefix))


def test_guard_brings_the_aggressive_graph_within_budget_with_the_fewest_blocks(budget_table: dict) -> None:
    import itertools

    from swinedge.quantize import QuantizeOptions, quantize_onnx
    from swinedge.verify import verify

    work, record = budget_table["work"], budget_table["guard"]
    fp32, guarded = work / "fp32.onnx", work / "guarded.onnx"
    assert not record["path"][0]["within_budget"] and record["path"][0]["high_precision_blocks"] == []  # aggressive alone misses
    kept = record["high_precision_blocks"]
    assert kept and record["budget"] == GUARD_BUDGET
    # What the guard claims, measured again here on the same 256 training images.
    again = verify(fp32, guarded, data="digits-train", size=256, seed=1).comparison
    assert again.top1_drop <= GUARD_BUDGET["max_top1_drop"] and again.cosine_mean >= GUARD_BUDGET["min_cosine"]
    # Fewest: every set of one block fewer than the guard kept misses the budget (all
    # such subsets, not only those the guard tried).
    aggressive = QuantizeOptions(calib="digits-train", calib_size=128, method="max", high_precision_dtype="fp32",
                                 quantize_residual=True, quantize_softmax=True, quantize_attention_matmuls=True)  # fmt: skip
    for fewer in itertools.combinations([f"blocks.{i}" for i in range(4)], len(kept) - 1):
        from dataclasses import replace

        q = quantize_onnx(fp32, work / "fewer.onnx", replace(aggressive, keep_blocks=fewer))
        c = verify(fp32, q.onnx_path, data="digits-train", size=256, seed=1).comparison
        assert c.top1_drop > GUARD_BUDGET["max_top1_drop"] or c.cosine_mean < GUARD_BUDGET["min_cosine"], fewer
        q.onnx_path.unlink()
        q.manifest_path.unlink()


def test_qat_is_not_worse_than_ptq_at_its_placement(budget_table: dict) -> None:
    qat, ptq = _row(budget_table, "QAT INT8"), _row(budget_table, "PTQ INT8, default")
    assert qat["top1"] >= ptq["top1"], (qat, ptq)
    losses = budget_table["qat"]["loss_per_epoch"]
    assert len(losses) == 2 and losses[1] <= losses[0] * 1.05  # training did not diverge
    import onnx

    proto = onnx.load(str(budget_table["work"] / "qat.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) == 2 * 4 * 4  # 4 Linears x 4 blocks, weight + input
