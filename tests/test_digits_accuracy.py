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
@pytest.fixture(scope="session")
def vit_table(digits_cache, tmp_path_factory) -> dict:
    from swinedge.digits import digits_checkpoint

    cache, _, _ = digits_cache
    path, summary = digits_checkpoint(cache, model="vit_nano_patch4_32")
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
