"""A Swin backbone through the whole CPU flow, by the CLI, at detection sizes.

For each size: ``build --features`` (random weights at the training init, per-stage
norms as a detector has), ``export`` native and plugin, ``quantize`` INT8 and FP16, and
``verify`` each graph stage by stage on scikit-image's photographs. Prints one row per
graph and stage; ``--json`` for the records. No TensorRT here: the graphs are the ones
``build-engine`` takes.

With ``--one-graph`` the sizes share one graph of each kind (``export --sizes``): one
native and one plugin export, one INT8 and one FP16 quantization (calibration images
shared out across the sizes), each verified at every size.

    python -m swinedge.benchmarks.backbone_flow --model swin_tiny_patch4_window7_224 \\
        --sizes 800x1333,640x640 --calib-size 4 --images 8 [--one-graph]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _swinedge(*args: str) -> tuple[str, float]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "swinedge.cli", *args], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"swinedge {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout, time.perf_counter() - start


def _flow_rows(ckpt: Path, export_args: list[str], tag: str, calib_size: int, images: int, folder: Path, size: str) -> list[dict]:
    """Export native and plugin, quantize INT8 and FP16, verify each: one row per stage
    (and size, for graphs of several)."""
    graphs = {}
    for attention in ("native", "plugin"):
        path = folder / f"bb_{tag}_{attention}.onnx"
        _, t = _swinedge("export", str(ckpt), "--attention", attention, *export_args, "--out", str(path))
        graphs[f"fp32 {attention}"] = (path, t)
    native = graphs["fp32 native"][0]
    for precision in ("int8", "fp16"):
        path = folder / f"bb_{tag}_{precision}.onnx"
        _, t = _swinedge(
            "quantize", str(native), "-p", precision, "--calib-size", str(calib_size), "--calib-batch", "1",
            "--high-precision-dtype", "fp32" if precision == "int8" else "fp16", "--out", str(path),
        )  # fmt: skip
        graphs[precision] = (path, t)
    rows = []
    for name, (path, seconds) in graphs.items():
        out, t_verify = _swinedge("verify", str(ckpt), str(path), "--size", str(images), "--batch", "1", "--json")
        report = json.loads(out)
        for s in report["stages"]:
            rows.append({
                "size": s.get("size", size), "graph": name, "stage": s["stage"].split(" @ ")[0], "shape": s["shape"],
                "cosine_mean": s["cosine_mean"], "cosine_min": s["cosine_min"], "rel_err_mean": s["rel_err_mean"],
                "passed": report["passed"], "make_seconds": round(seconds, 1), "verify_seconds": round(t_verify, 1),
                "images": s["images"],
            })  # fmt: skip
    return rows


def run(model: str, sizes: list[str], calib_size: int, images: int, folder: Path) -> list[dict]:
    """One graph of each kind per size."""
    rows = []
    for size in sizes:
        tag = size.replace("x", "_")
        ckpt = folder / f"bb_{tag}.pt"
        _, t_build = _swinedge("build", model, "--features", "--stage-norms", "--input-size", size, "--out", str(ckpt))
        rows += _flow_rows(ckpt, [], tag, calib_size, images, folder, size)
        rows.append({"size": size, "graph": "build", "seconds": round(t_build, 1)})
    return rows


def run_one_graph(model: str, sizes: list[str], calib_size: int, images: int, folder: Path) -> list[dict]:
    """One graph of each kind for every size (export --sizes)."""
    ckpt = folder / "bb.pt"
    _, t_build = _swinedge("build", model, "--features", "--stage-norms", "--input-size", sizes[0], "--out", str(ckpt))
    rows = _flow_rows(ckpt, ["--sizes", ",".join(sizes)], "all", calib_size, images, folder, sizes[0])
    rows.append({"size": ",".join(sizes), "graph": "build", "seconds": round(t_build, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="swin_tiny_patch4_window7_224")
    ap.add_argument("--sizes", default="800x1333,640x640")
    ap.add_argument("--calib-size", type=int, default=4)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--one-graph", action="store_true", help="one graph of each kind for every size (export --sizes)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="swinedge-backbone-") as d:
        flow = run_one_graph if a.one_graph else run
        rows = flow(a.model, a.sizes.split(","), a.calib_size, a.images, Path(d))
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    graphs = "one graph per kind for all sizes" if a.one_graph else "one graph per kind and size"
    print(f"{a.model} backbone, random weights (training init), {a.images} photographs, calibration {a.calib_size} photographs, {graphs}")
    print(f"| size | graph | stage | C x H x W | cosine mean | cosine min | rel err mean | verify |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for r in rows:
        if r["graph"] == "build":
            continue
        shape = "x".join(str(d) for d in r["shape"])
        print(f"| {r['size']} | {r['graph']} | {r['stage']} | {shape} | {r['cosine_mean']:.6f} | {r['cosine_min']:.6f} | {r['rel_err_mean']:.4f} | {'pass' if r['passed'] else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
