"""A bounded load test of a served image ensemble on a real local ``tritonserver``.

The embedded digits model (trained once, cached) is exported, written as a model
repository by ``swinedge serve-repo --onnx-backend python --onnx-device cpu`` (the
bundled server has no onnxruntime backend: ONNX Runtime runs inside the Python backend),
served on 127.0.0.1, and sent a fixed number of PNG-encoded digits over gRPC at each
concurrency. Prints p50/p90/p99 latency, throughput, failed requests and the server's
resident memory (server and Python-backend stubs) before and after each level; ``--json``
for the records. CPU figures, this machine only.

    python -m swinedge.benchmarks.triton_load --concurrency 1,4,8 --requests 400
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def digit_pngs(count: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """``count`` held-out handwritten digits (the 8x8 scans, 0..255) as PNG bytes, and their labels."""
    from PIL import Image

    from swinedge.digits import held_out_scans

    images01, labels = held_out_scans()
    pick = np.random.default_rng(seed).permutation(len(images01))[:count]
    out = []
    for i in pick:
        buf = io.BytesIO()
        Image.fromarray(np.round(images01[i] * 255).astype(np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, labels[pick]


def image_request(grpc_module, payloads: list[bytes]):
    inp = grpc_module.InferInput("image", [len(payloads), 1], "BYTES")
    inp.set_data_from_numpy(np.array(payloads, dtype=np.object_).reshape(-1, 1))
    return inp


def load_level(url: str, model: str, payloads: list[bytes], concurrency: int, requests: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """``requests`` single-image requests, ``concurrency`` at a time (one gRPC client per
    worker), stopped after ``timeout_s`` whatever is left."""
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + timeout_s

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    client.infer(model, [image_request(grpcclient, [payloads[i % len(payloads)]])], client_timeout=60)
                    ok, why = True, ""
                except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the test
                    ok, why = False, str(e)[:200]
                elapsed = time.perf_counter() - start
                with lock:
                    (latencies.append(elapsed) if ok else failures.append(why))
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000.0
    pct = (lambda q: float(np.percentile(ms, q))) if len(ms) else (lambda q: float("nan"))
    return {
        "concurrency": concurrency, "requests": requests, "completed": len(latencies), "failed": len(failures),
        "failures": failures[:5], "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "throughput_per_s": len(latencies) / wall if wall > 0 else 0.0, "seconds": wall,
    }  # fmt: skip


def _json_request(items: list, shape: list[int] | None = None, datatype: str = "BYTES") -> bytes:
    return json.dumps({"inputs": [{"name": "image", "datatype": datatype, "shape": shape or [len(items), 1], "data": items}]}).encode()


def bad_requests(max_image_bytes: int) -> list[tuple[str, str, bytes, str]]:
    """(case, model, HTTP JSON body, what the answer must say) for malformed requests."""
    return [
        ("wrong dtype", "digits_image", _json_request([1.0], datatype="FP32"), "data-type is 'FP32'"),
        ("wrong shape", "digits_image", _json_request(["a", "b"], shape=[1, 2]), "unexpected shape"),
        ("corrupt image", "digits_image", _json_request(["this is not an image"]), "does not decode as an image"),
        ("empty image", "digits_image", _json_request([""]), "is empty"),
        ("oversized image", "digits_image", _json_request(["x" * (max_image_bytes + 1000)]), "over this model's limit"),
        ("unknown model", "no_such_model", _json_request(["x"]), "unknown model"),
        # Triton 2.51 answers a body that is not JSON with 500 (its parser's code), not 4xx.
        ("body not JSON", "digits_image", b"{not json", "failed to parse the request JSON"),
    ]


def post_json(http_url: str, model: str, body: bytes) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://{http_url}/v2/models/{model}/infer", data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def serve_digits(folder: Path, instances: int = 1, max_image_mb: float = 1.0) -> Path:
    """The digits classifier exported and written as a CPU model repository under ``folder``."""
    from swinedge.digits import digits_checkpoint
    from swinedge.export import export_onnx
    from swinedge.pipeline import default_cache_dir
    from swinedge.serving.repository import RepositoryOptions, write_model_repository

    checkpoint, _ = digits_checkpoint(default_cache_dir())
    graph = export_onnx(checkpoint, folder / "digits.onnx").onnx_path
    repo = folder / "repo"
    write_model_repository([graph], repo, RepositoryOptions(onnx_backend="python", onnx_device="cpu", instances=instances, top_k=3, max_image_mb=max_image_mb))
    return repo


def run(levels: list[int], requests: int, folder: Path) -> dict[str, Any]:
    from swinedge.serving.server import LocalTritonServer

    repo = serve_digits(folder)
    payloads, _ = digit_pngs(64)
    rows = []
    with LocalTritonServer(repo) as server:
        load_level(server.grpc_url, "digits_image", payloads, 2, 20)  # warm-up: stubs, sessions, allocator
        for c in levels:
            before = server.memory_bytes()
            row = load_level(server.grpc_url, "digits_image", payloads, c, requests)
            rows.append({**row, "memory_before_mib": before / 2**20, "memory_after_mib": server.memory_bytes() / 2**20})
        bad = []
        for case, model, body, _ in bad_requests(1 << 20):
            status, _text = post_json(server.http_url, model, body)
            after = load_level(server.grpc_url, "digits_image", payloads, 1, 1)
            bad.append({"case": case, "http_status": status, "next_request_ok": after["failed"] == 0})
    return {"model": "digits_image (swin_nano_patch2_window4_32, FP32 ONNX on ONNX Runtime in the Python backend, CPU)", "levels": rows, "bad_requests": bad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=400, help="requests per level (1..100000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    if not levels or not all(1 <= c <= 256 for c in levels) or not 1 <= args.requests <= 100_000:
        raise SystemExit("--concurrency takes levels 1..256 and --requests 1..100000")
    with tempfile.TemporaryDirectory(prefix="swinedge-load-") as tmp:
        result = run(levels, args.requests, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(result["model"])
    print(f"{'concurrency':>11} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'req/s':>7} {'RSS MiB before -> after':>24}")
    for r in result["levels"]:
        print(f"{r['concurrency']:>11} {r['completed']:>8} {r['failed']:>6} {r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} "
              f"{r['throughput_per_s']:>7.1f} {r['memory_before_mib']:>11.0f} -> {r['memory_after_mib']:.0f}")  # fmt: skip
    print(f"{'malformed request':>18} {'HTTP':>5} {'next request':>13}")
    for b in result["bad_requests"]:
        print(f"{b['case']:>18} {b['http_status']:>5} {'served' if b['next_request_ok'] else 'FAILED':>13}")


if __name__ == "__main__":
    main()
