"""Peak memory of `swinedge quantize` on CPU, per calibration count and batch.

    python -m swinedge.benchmarks.quantize_memory [--model NAME] [--configs int8:64:8,int8:256:8,...]

Exports the model (random weights) once, then runs each quantization in its own
process (`swinedge quantize ... --json`) and prints the peak resident memory that
process reports, with the time it took. Calibration reads its images a batch at a time,
so the count should change the time and not the peak; the batch changes the peak
(ONNX Runtime's calibration session holds every activation of one batch). This script
reports; it does not judge.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from swinedge.export import export_onnx
from swinedge.models import build_checkpoint

DEFAULT_CONFIGS = "int8:64:8,int8:256:8,int8:64:2,int8:64:32,fp16:64:8"


def parse_configs(text: str) -> list[tuple[str, int, int]]:
    configs = []
    for item in text.split(","):
        precision, size, batch = item.split(":")
        configs.append((precision, int(size), int(batch)))
    return configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swin_tiny_patch4_window7_224")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="precision:calib_size:calib_batch, comma-separated")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = build_checkpoint(args.model, work / "m.pt")["checkpoint"]
        fp32 = export_onnx(checkpoint, work / "m.onnx").onnx_path
        size_mb = fp32.stat().st_size / 2**20
        print(f"{args.model}: FP32 ONNX {size_mb:.0f} MB", flush=True)
        for i, (precision, calib_size, calib_batch) in enumerate(parse_configs(args.configs)):
            cmd = [sys.executable, "-m", "swinedge.cli", "quantize", str(fp32), "--precision", precision, "--calib-size", str(calib_size),
                   "--calib-batch", str(calib_batch), "--out", str(work / f"q{i}.onnx"), "--json"]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"quantize failed: {proc.stderr.strip().splitlines()[-1:]}")
            result = json.loads(proc.stdout)
            rows.append((precision, calib_size, calib_batch, result["peak_memory_mb"], result["seconds"]))
            print(f"{precision} calib-size {calib_size} calib-batch {calib_batch}: peak {result['peak_memory_mb'] / 1024:.2f} GiB, {result['seconds']:.1f} s", flush=True)
    print()
    print("| precision | --calib-size | --calib-batch | peak memory | time |")
    print("|---|---:|---:|---:|---:|")
    for precision, size, batch, peak, seconds in rows:
        print(f"| {precision} | {size} | {batch} | {peak / 1024:.2f} GiB | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
