"""Latency measurement over a :class:`~swinedge.runners.Runner`.

CPU runners are timed with ``perf_counter`` around each call; CUDA runners with CUDA
events on the current stream (the runner synchronizes). Warm-up iterations are never
counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import check_image_source, tile_batch
from swinedge.errors import SwinedgeError
from swinedge.runners import Runner
from swinedge.verify import LogitComparer, check_same_model, infer_chunk, open_eval_images, runner_batch, stream_logits

# Bounds that catch a typo (an extra digit) before hours of work.
MAX_BATCH = 4096
MAX_ITERS = 100_000

__all__ = ["benchmark_artifacts", "percentile", "summarize", "tile_batch", "time_runner", "write_report"]


@dataclass
class LatencyStats:
    batch: int
    iters: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput_ips: float  # images per second at the median latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not samples:
        raise SwinedgeError("no timing samples")
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(samples_ms: list[float], batch: int) -> LatencyStats:
    median = percentile(samples_ms, 50)
    return LatencyStats(
        batch=batch,
        iters=len(samples_ms),
        median_ms=median,
        p90_ms=percentile(samples_ms, 90),
        p99_ms=percentile(samples_ms, 99),
        mean_ms=float(sum(samples_ms) / len(samples_ms)),
        min_ms=min(samples_ms),
        throughput_ips=batch * 1000.0 / median if median > 0 else float("inf"),
    )


def time_runner(
    runner: Runner,
    batch: np.ndarray,
    *,
    iters: int = 20,
    warmup: int = 3,
    on_iter: Callable[[int], None] | None = None,
) -> LatencyStats:
    """Time ``runner.infer(batch)``; returns statistics over ``iters`` timed calls."""
    if iters < 1 or warmup < 0:
        raise SwinedgeError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")
    for _ in range(warmup):
        runner.infer(batch)
    runner.synchronize()
    samples = []
    timer = _cuda_timer() if runner.device.startswith("cuda") else None
    for _ in range(iters):
        if timer is not None:
            samples.append(timer(lambda: runner.infer(batch)))
        else:
            t0 = time.perf_counter()
            runner.infer(batch)
            samples.append((time.perf_counter() - t0) * 1000.0)
        if on_iter is not None:
            on_iter(1)
    return summarize(samples, len(batch))


def _cuda_timer():
    import torch

    def timed(fn: Callable[[], Any]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    return timed


# --- the `swinedge benchmark` report --------------------------------------------------


@dataclass
class RunnerResult:
    artifact: str
    runner: str
    device: str
    latency: list[LatencyStats]
    accuracy: dict[str, Any] | None
    peak_gpu_mem_mb: float | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "runner": self.runner,
            "device": self.device,
            "latency": [s.to_dict() for s in self.latency],
            "accuracy": self.accuracy,
            "peak_gpu_mem_mb": self.peak_gpu_mem_mb,
            "skipped": self.skipped,
        }


def benchmark_artifacts(
    artifacts: list[str],
    *,
    batches: list[int],
    iters: int = 20,
    warmup: int = 3,
    data: str | None = None,
    reference: str | None = None,
    size: int | None = None,
    device: str | None = None,
    torch_precisions: tuple[str, ...] = ("fp32",),
    torch_attentions: tuple[str, ...] = ("reference",),
    labels_file: str | Path | None = None,
    on_step: Callable[[str, int | None], None] | None = None,
    on_iter: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Latency and accuracy of each artifact against the float torch reference.

    Torch artifacts (variant names, checkpoints) run once per combination of
    ``torch_precisions`` (fp32, fp16 autocast) and ``torch_attentions`` (reference,
    fused); combinations this device cannot run are skipped with the reason."""
    import tempfile

    import torch

    from swinedge.runners import open_runner
    from swinedge.runners.torch_runner import TorchRunner

    if not artifacts:
        raise SwinedgeError("give at least one artifact to benchmark")
    if not batches or min(batches) < 1 or max(batches) > MAX_BATCH:
        raise SwinedgeError(f"--batch takes integers 1..{MAX_BATCH}, e.g. 1,8,32")
    if not 1 <= iters <= MAX_ITERS or not 0 <= warmup <= MAX_ITERS:
        raise SwinedgeError(f"--iters must be 1..{MAX_ITERS} and --warmup 0..{MAX_ITERS}, got {iters} and {warmup}")
    for p in torch_precisions:
        if p not in ("fp32", "fp16"):
            raise SwinedgeError(f"--torch-precision takes fp32 and/or fp16, got '{p}'")
    for a in torch_attentions:
        if a not in ("reference", "fused"):
            raise SwinedgeError(f"--torch-attention takes reference and/or fused, got '{a}'")
    check_image_source(data, "--data")
    say = on_step or (lambda _m, _total=None: None)
    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    from swinedge.features import is_backbone_artifact

    for a in artifacts:
        p = Path(a)
        if p.suffix and not p.exists():
            raise SwinedgeError(f"artifact not found: {a}")
        if is_backbone_artifact(a):
            raise SwinedgeError(f"{a} is a backbone: benchmark measures classifiers (logit accuracy); check a backbone's stages with `swinedge verify`")
    runners = [(a, open_runner(a, device=device)) for a in artifacts]  # classified, not loaded
    ref_source = reference or next((a for a, r in runners if isinstance(r, TorchRunner)), None)
    if ref_source is None:
        ref_source = _reference_from_manifests(artifacts)
    ref_runner = TorchRunner(ref_source, device=device)
    skipped_notes: list[str] = []
    # The reference's logits go to a scratch file, not memory: each runner then streams
    # the images again and is compared batch by batch, whatever the set's size.
    scratch = tempfile.TemporaryDirectory(prefix="swinedge-bench-")
    try:
        with ref_runner:
            ref_spec = ref_runner.input_spec
            images = open_eval_images(ref_runner, data, size=size, labels_file=labels_file)
            say(f"reference: {ref_source} (torch fp32), images", len(images))
            ref_logits, _ = stream_logits(ref_runner, images, Path(scratch.name) / "reference.npy", 32, on_batch, warn)
            latency_inputs = images.head(max(batches))
        jobs: list[tuple[str, Runner]] = []
        for artifact, r0 in runners:
            if not isinstance(r0, TorchRunner):
                jobs.append((artifact, r0))
                continue
            for p in torch_precisions:
                for a in torch_attentions:
                    if device == "cpu" and (p == "fp16" or a == "fused"):
                        skipped_notes.append(f"{artifact}: torch {p} / {a} attention needs a CUDA GPU")
                        continue
                    jobs.append((artifact, open_runner(artifact, device=device, precision=p, attention=a)))
        results: list[RunnerResult] = []
        for artifact, runner in jobs:
            try:
                runner.load()
            except SwinedgeError as e:  # missing TensorRT / GPU / manifest: skip, say why
                results.append(RunnerResult(artifact, getattr(runner, "name", "?"), device, [], None, skipped=str(e)))
                skipped_notes.append(f"{artifact}: {e}")
                continue
            try:
                check_same_model(ref_spec, runner.input_spec, artifact)
                say(f"{runner.name}: accuracy, images", len(images))
                limit = runner.batch_range
                comparer = LogitComparer()
                done = 0
                for chunk in images.batches(runner_batch(runner, 32)):
                    comparer.update(ref_logits[done : done + len(chunk)], infer_chunk(runner, chunk.images), chunk.labels)
                    done += len(chunk)
                    if on_batch is not None:
                        on_batch(len(chunk))
                c = comparer.result()
                accuracy = {
                    "top1_agreement": c.top1_agreement,
                    "cosine_mean": c.cosine_mean,
                    "cosine_min": c.cosine_min,
                    "max_abs_err": c.max_abs_err,
                    "top1": c.top1_candidate,
                    "top1_reference": c.top1_reference,
                }
                stats = []
                peak = None
                gpu_runner = runner.device.startswith("cuda")
                if gpu_runner:
                    torch.cuda.reset_peak_memory_stats()
                for b in batches:
                    if limit and not limit[0] <= b <= limit[1]:
                        accepted = f"its fixed batch {limit[0]}" if limit[0] == limit[1] else f"its profile {limit[0]}..{limit[1]}"
                        skipped_notes.append(f"{artifact}: batch {b} is outside {accepted}")
                        continue
                    say(f"{runner.name}: batch {b}, iterations", iters)
                    stats.append(time_runner(runner, tile_batch(latency_inputs, b), iters=iters, warmup=warmup, on_iter=on_iter))
                if gpu_runner:
                    # torch's allocator (inputs, outputs, torch models) + TensorRT's own context memory
                    peak = (torch.cuda.max_memory_allocated() + getattr(runner, "device_memory_bytes", 0)) / 2**20
                results.append(RunnerResult(artifact, runner.name, runner.device, stats, accuracy, peak))
            finally:
                runner.close()
        del ref_logits  # the memory map, before its folder goes
    finally:
        scratch.cleanup()
    if not cuda:
        skipped_notes.append("no CUDA GPU: TensorRT engines and GPU runners skipped; torch and onnxruntime ran on CPU")
    if not any(r.latency for r in results):
        first = skipped_notes[0] if skipped_notes else "no artifact could run"
        raise SwinedgeError(f"nothing was benchmarked: {first}")
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "reference": ref_source,
        "data": images.describe(),
        "batches": batches,
        "iters": iters,
        "warmup": warmup,
        "results": [r.to_dict() for r in results],
        "skipped": skipped_notes,
    }


def _reference_from_manifests(artifacts: list[str]) -> str:
    """A float reference from the artifacts' manifests: only a bare variant (fixed-seed
    init) can be rebuilt from a manifest; a trained checkpoint must be given."""
    from swinedge.manifest import read_manifest

    for a in artifacts:
        m = read_manifest(a)
        if m and m.get("model") and (m.get("source") or {}).get("init"):
            return m["model"]
    raise SwinedgeError("no float torch reference among the artifacts: pass --reference CHECKPOINT (the model they came from)")


def write_report(report: dict[str, Any], out_dir: str | Path, *, title: str = "swinedge benchmark") -> dict[str, str]:
    """benchmark.json, benchmark.md and latency.png (when matplotlib is present)."""
    from swinedge.io import atomic_path, write_bytes_atomic, write_json_atomic

    out_dir = Path(out_dir)
    files = {"json": str(write_json_atomic(out_dir / "benchmark.json", report))}
    write_bytes_atomic(out_dir / "benchmark.md", markdown_report(report, title).encode())
    files["markdown"] = str(out_dir / "benchmark.md")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        report.setdefault("skipped", []).append("latency chart: matplotlib not installed (pip install 'swinedge[report]')")
        return files
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for r in report["results"]:
        if r["latency"]:
            xs = [s["batch"] for s in r["latency"]]
            ax.plot(xs, [s["median_ms"] for s in r["latency"]], marker="o", label=f"{r['runner']}")
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batches = sorted({s["batch"] for r in report["results"] for s in r["latency"]})
    ax.set_xticks(batches)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch")
    ax.set_ylabel("median latency (ms)")
    where = report.get("gpu") or "CPU"
    ax.set_title(f"{title} ({where})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_dir / "latency.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    files["chart"] = str(out_dir / "latency.png")
    return files


def markdown_report(report: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"Device: {report.get('gpu') or 'CPU'}; reference: `{report['reference']}` (torch fp32); "
             f"{report['data']['count']} images from {report['data']['source']}; {report['iters']} timed iterations after {report['warmup']} warm-up.", ""]  # fmt: skip
    lines += ["| runner | batch | median ms | p90 ms | p99 ms | images/s |", "|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        for s in r["latency"]:
            lines.append(f"| {r['runner']} | {s['batch']} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['throughput_ips']:.1f} |")
    lines += ["", "| runner | top-1 agreement | cosine mean / min | max abs err | top-1 |", "|---|---:|---:|---:|---:|"]
    for r in report["results"]:
        a = r["accuracy"]
        if a:
            top1 = f"{a['top1']:.2f}%" if a.get("top1") is not None else "-"
            lines.append(f"| {r['runner']} | {a['top1_agreement']:.2f}% | {a['cosine_mean']:.6f} / {a['cosine_min']:.6f} | {a['max_abs_err']:.3g} | {top1} |")
    if report.get("skipped"):
        lines += ["", "Skipped:", *[f"- {s}" for s in report["skipped"]]]
    return "\n".join(lines) + "\n"
