"""Every variant through the CPU flow: build, export, quantize (INT8), verify.

    python -m swinedge.benchmarks.variant_sweep [--families swinv2,vit] [--names a,b]
        [--calib-size 4] [--size 4] [--json FILE]

Random weights (a bare name draws them with a fixed seed), bundled photographs, ONNX
Runtime on CPU: this proves each variant goes through every step and prints what each
step measured (export parity with torch, the INT8 graph's agreement with the float model
on a few photos). Agreement on random weights says nothing about accuracy; the digits
task does that. Each variant runs in a scratch folder that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def sweep_one(name: str, calib_size: int, size: int) -> dict:
    from swinedge.export import export_onnx
    from swinedge.models.checkpoint import get_spec
    from swinedge.quantize import QuantizeOptions, quantize_onnx
    from swinedge.verify import verify

    row: dict = {"model": name, "family": getattr(get_spec(name).config, "family", "swin")}
    with tempfile.TemporaryDirectory(prefix="swinedge-sweep-") as d:
        t = time.perf_counter()
        exported = export_onnx(name, Path(d) / "fp32.onnx")
        row["export_s"] = round(time.perf_counter() - t, 1)
        row["onnx_mb"] = round(exported.onnx_path.stat().st_size / 2**20, 1)
        row["export_max_abs_err"] = exported.max_abs_err
        t = time.perf_counter()
        opts = QuantizeOptions(calib_size=calib_size, calib_batch=min(2, calib_size), method="max", high_precision_dtype="fp32")
        q = quantize_onnx(exported.onnx_path, Path(d) / "int8.onnx", opts)
        row["quantize_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        report = verify(name, q.onnx_path, size=size, batch=2)
        row["verify_s"] = round(time.perf_counter() - t, 1)
        row["int8_top1_agreement"] = round(report.comparison.top1_agreement, 1)
        row["int8_cosine_mean"] = round(report.comparison.cosine_mean, 4)
    return row


def main(argv: list[str] | None = None) -> int:
    from swinedge.models.checkpoint import MODEL_SPECS, SWINV2_SPECS, VIT_SPECS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="swin,swinv2,vit", help="comma list of swin, swinv2, vit")
    ap.add_argument("--names", help="comma list of variant names (overrides --families)")
    ap.add_argument("--calib-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=4, help="photos verify compares on")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    families = {"swin": MODEL_SPECS, "swinv2": SWINV2_SPECS, "vit": VIT_SPECS}
    if a.names:
        names = a.names.split(",")
    else:
        names = [n for f in a.families.split(",") for n in families[f] if not any(t in n for t in ("nano", "micro"))]
    rows = []
    print(f"{'model':<40} {'export s':>8} {'MB':>7} {'parity':>9} {'quant s':>8} {'verify s':>8} {'agree %':>8} {'cosine':>7}", flush=True)
    for name in names:
        try:
            r = sweep_one(name, a.calib_size, a.size)
        except Exception as e:  # noqa: BLE001 - a failing variant is the finding; the sweep goes on
            r = {"model": name, "error": f"{type(e).__name__}: {e}"}
            print(f"{name:<40} FAILED {r['error']}", flush=True)
        else:
            print(
                f"{name:<40} {r['export_s']:>8} {r['onnx_mb']:>7} {r['export_max_abs_err']:>9.2e} {r['quantize_s']:>8} "
                f"{r['verify_s']:>8} {r['int8_top1_agreement']:>8} {r['int8_cosine_mean']:>7}",
                flush=True,
            )
        rows.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    failed = [r["model"] for r in rows if "error" in r]
    print(f"{len(rows) - len(failed)}/{len(rows)} variants through build, export, quantize and verify" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
