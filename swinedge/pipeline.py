"""Stage chains: the digits accuracy table, and (later stages) the full `run`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import ImageSet, Preprocess, load_image_set
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, quantize_onnx
from swinedge.runtime import OnnxRuntimeRunner, TorchRunner
from swinedge.verify import compare_logits, run_batches


def default_cache_dir() -> Path:
    """Where trained embedded models are cached: $SWINEDGE_CACHE or ~/.cache/swinedge."""
    env = os.environ.get("SWINEDGE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swinedge"


def digits_accuracy(
    workdir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    calib_size: int = 128,
    method: str = "entropy",
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """FP32 / FP16 / INT8 top-1 of the digits model on its held-out split.

    Trains (or reuses) the digits checkpoint, exports it, quantizes INT8 (calibrated on
    the training split) and FP16, and runs each graph on ONNX Runtime CPU. INT8 keeps
    FP32 for the non-quantized ops here (a CPU verification graph); TensorRT graphs use
    FP16 there.
    """
    from swinedge.digits import digits_checkpoint

    say = status or (lambda _msg: None)
    workdir = Path(workdir)
    if checkpoint is None:
        say("training the digits model (cached after the first run)")
        checkpoint, _ = digits_checkpoint(default_cache_dir())
    say("exporting")
    fp32 = export_onnx(checkpoint, workdir / "digits.fp32.onnx").onnx_path
    pre = Preprocess(32)
    test = load_image_set("digits", pre)
    calib = load_image_set("digits-train", pre, size=calib_size, seed=0)
    say(f"quantizing int8 ({method}, {calib_size} training images)")
    int8 = quantize_onnx(
        fp32, workdir / "digits.int8.onnx", QuantizeOptions(precision="int8", method=method, high_precision_dtype="fp32"), images=calib
    ).onnx_path
    say("converting fp16")
    fp16 = quantize_onnx(fp32, workdir / "digits.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=8), images=calib).onnx_path
    say("evaluating on the held-out split")
    with TorchRunner(checkpoint) as torch_runner:
        reference = run_batches(torch_runner, test.images, 128)
    rows = [_row("torch fp32", str(checkpoint), reference, reference, test)]
    for label, path in (("onnxruntime fp32", fp32), ("onnxruntime fp16", fp16), ("onnxruntime int8", int8)):
        with OnnxRuntimeRunner(path) as r:
            rows.append(_row(label, str(path), run_batches(r, test.images, 128), reference, test))
    return {
        "task": "sklearn digits, held-out split",
        "images": len(test),
        "checkpoint": str(checkpoint),
        "calibration": {"source": "digits-train", "count": calib_size, "method": method},
        "rows": rows,
        "artifacts": {"fp32": str(fp32), "fp16": str(fp16), "int8": str(int8)},
    }


def _row(label: str, artifact: str, logits: np.ndarray, reference: np.ndarray, data: ImageSet) -> dict[str, Any]:
    c = compare_logits(reference, logits, data.labels)
    return {
        "runtime": label,
        "artifact": artifact,
        "top1": c.top1_candidate,
        "top1_drop": c.top1_drop,
        "top1_agreement": c.top1_agreement,
        "cosine_mean": c.cosine_mean,
    }
