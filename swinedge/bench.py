"""Latency measurement over a :class:`~swinedge.runtime.Runner`.

CPU runners are timed with ``perf_counter`` around each call; CUDA runners with CUDA
events on the current stream (the runner synchronizes). Warm-up iterations are never
counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from swinedge.errors import SwinedgeError
from swinedge.runtime import Runner


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
