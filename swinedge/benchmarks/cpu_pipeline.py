"""CPU figures of the export and quantize stages on Swin-T.

    python -m swinedge.benchmarks.cpu_pipeline [--model NAME] [--batches 1,8] [--iters 10]

Prints export time, quantize time per calibration method, and the median latency of
torch eager, ONNX Runtime FP32 and ONNX Runtime INT8 at each batch, with ratios
measured in this one run. No timed assertions: this script reports, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from swinedge.bench import time_runner
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, quantize_onnx
from swinedge.runners.ort_runner import OnnxRuntimeRunner
from swinedge.runners.torch_runner import TorchRunner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swin_tiny_patch4_window7_224")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    figures: dict = {"model": args.model, "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        fp32 = export_onnx(args.model, d / "m.onnx").onnx_path
        figures["export_s"] = time.perf_counter() - t0
        figures["quantize_s"] = {}
        int8 = None
        for method in ("max", "entropy"):
            t0 = time.perf_counter()
            int8 = quantize_onnx(
                fp32, d / f"m.int8.{method}.onnx", QuantizeOptions(calib_size=args.calib_size, method=method, high_precision_dtype="fp32")
            ).onnx_path
            figures["quantize_s"][method] = time.perf_counter() - t0
        print(f"{args.model}: export {figures['export_s']:.1f} s; quantize int8 "
              + ", ".join(f"{m} {s:.1f} s" for m, s in figures["quantize_s"].items())
              + f" ({args.calib_size} images, {figures['threads']} threads)")
        runners = [TorchRunner(args.model), OnnxRuntimeRunner(fp32), OnnxRuntimeRunner(int8)]
        labels = ["torch fp32 eager", "onnxruntime fp32", "onnxruntime int8 (entropy)"]
        figures["latency"] = {}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            row = {}
            for label, runner in zip(labels, runners):
                with runner:
                    row[label] = time_runner(runner, x, iters=args.iters, warmup=args.warmup).median_ms
            figures["latency"][batch] = row
            base = row[labels[0]]
            print(f"\nbatch {batch}: median latency (speed-up vs torch eager)")
            for label in labels:
                print(f"  {label:28s} {row[label]:9.1f} ms  ({base / row[label]:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
