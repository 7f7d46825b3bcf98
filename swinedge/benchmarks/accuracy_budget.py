"""Accuracy you can budget, on real data: the digits task through every INT8 route.

    python -m swinedge.benchmarks.accuracy_budget [--model vit_nano_patch4_32] [--epochs 25]
        [--max-top1-drop 0.3] [--min-cosine 0.9999] [--qat-epochs 2] [--json FILE]

Trains (or reuses, cached) the digits model, exports it and builds, on ONNX Runtime CPU:

- PTQ default: the recipe (LayerNorm, softmax, residual Adds and attention matmuls in
  high precision);
- PTQ aggressive: residual Adds and attention matmuls quantized too, max calibration;
- guarded: the aggressive graph through the guard (budget measured on 256 training
  images, other than the 128 that calibrate), which returns blocks to high precision;
- QAT: the default placement fine-tuned under fake quantization (modelopt's torch QAT
  quantizes Linear modules; it has no handle on the residual Adds), compared with PTQ at
  that placement.

Top-1 is measured on the 539 held-out digits, which neither calibration, the guard nor
QAT sees. Every graph keeps FP32 for what is not quantized (CPU verification graphs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

GUARD_IMAGES = 256
CALIB_IMAGES = 128


def accuracy_budget_table(
    workdir: str | Path,
    checkpoint: str | Path,
    *,
    max_top1_drop: float = 0.3,
    min_cosine: float = 0.9999,
    qat_epochs: int = 2,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from swinedge.export import export_onnx
    from swinedge.guard import Budget, guarded_quantize
    from swinedge.pipeline import compare_graphs
    from swinedge.qat import QatOptions, qat
    from swinedge.quantize import QuantizeOptions, quantize_onnx
    from swinedge.data import Preprocess, open_images

    say = status or (lambda _m: None)
    work = Path(workdir)
    say("exporting")
    fp32 = export_onnx(checkpoint, work / "fp32.onnx").onnx_path
    default = QuantizeOptions(calib="digits-train", calib_size=CALIB_IMAGES, method="max", high_precision_dtype="fp32")
    aggressive = replace(default, quantize_residual=True, quantize_softmax=True, quantize_attention_matmuls=True)
    say("PTQ default")
    ptq = quantize_onnx(fp32, work / "ptq.onnx", default).onnx_path
    say("PTQ aggressive")
    agg = quantize_onnx(fp32, work / "aggressive.onnx", aggressive).onnx_path
    say("guard")
    budget = Budget(max_top1_drop=max_top1_drop, min_cosine=min_cosine, data="digits-train", size=GUARD_IMAGES)
    guarded, record = guarded_quantize(fp32, work / "guarded.onnx", aggressive, budget)
    say("QAT")
    trained = qat(checkpoint, work / "qat.onnx", QatOptions(data="digits-train", epochs=qat_epochs, batch=32, lr=1e-5, calib_size=CALIB_IMAGES))
    test = open_images("digits", Preprocess(32))
    say("evaluating on the held-out split")
    graphs = [
        ("FP32", fp32),
        ("PTQ INT8, default placement", ptq),
        ("PTQ INT8, aggressive placement", agg),
        (f"guarded INT8 (aggressive, {len(record['high_precision_blocks'])} blocks restored)", guarded.onnx_path),
        (f"QAT INT8, default placement ({qat_epochs} epochs)", trained.onnx_path),
    ]
    rows = []
    for label, path, c in compare_graphs(checkpoint, graphs, test):
        rows.append({"graph": label, "artifact": str(path), "top1": c.top1_candidate, "top1_drop": c.top1_drop, "top1_agreement": c.top1_agreement, "cosine_mean": c.cosine_mean})
    return {
        "task": "sklearn digits, 539 held-out images",
        "checkpoint": str(checkpoint),
        "calibration": {"source": "digits-train", "count": CALIB_IMAGES, "method": "max"},
        "guard": {k: record[k] for k in ("budget", "data", "high_precision_blocks", "ranking", "path")},
        "qat": {"epochs": qat_epochs, "loss_per_epoch": trained.losses},
        "rows": rows,
    }


def format_table(table: dict[str, Any]) -> str:
    lines = [f"{'graph':<52} {'top-1 %':>8} {'drop':>6} {'agree %':>8} {'cosine':>8}"]
    for r in table["rows"]:
        lines.append(f"{r['graph']:<52} {r['top1']:>8.2f} {r['top1_drop']:>+6.2f} {r['top1_agreement']:>8.2f} {r['cosine_mean']:>8.5f}")
    g = table["guard"]
    budget = ", ".join(f"{k} {v}" for k, v in g["budget"].items())
    lines.append(f"guard budget ({budget}) on {g['data']['size']} training images; kept in high precision: {', '.join(g['high_precision_blocks']) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from swinedge.digits import digits_checkpoint
    from swinedge.pipeline import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_nano_patch4_32", help="digits model to train (cached)")
    ap.add_argument("--epochs", type=int, default=25, help="training epochs of the digits model")
    ap.add_argument("--max-top1-drop", type=float, default=0.3)
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--json", help="write the table here")
    a = ap.parse_args(argv)
    path, _ = digits_checkpoint(default_cache_dir(), model=a.model, epochs=a.epochs)
    with tempfile.TemporaryDirectory(prefix="swinedge-budget-") as work:
        table = accuracy_budget_table(
            work, path, max_top1_drop=a.max_top1_drop, min_cosine=a.min_cosine, qat_epochs=a.qat_epochs,
            status=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
        )  # fmt: skip
    print(format_table(table))
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
