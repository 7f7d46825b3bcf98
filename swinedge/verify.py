"""Accuracy of a candidate graph against a float reference on the same images.

Comparison logic only; inference goes through :mod:`swinedge.runners`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import ImageSet, Preprocess, load_image_set, tile_batch
from swinedge.defaults import MAX_TOP1_DROP, MIN_COSINE
from swinedge.errors import SwinedgeError
from swinedge.runners import Runner, open_runner

# The built-in photo set has 9 photos; verification draws this many (photos + seeded crops).
DEFAULT_SET_SIZE = 64


@dataclass
class Comparison:
    images: int
    top1_agreement: float  # % of images where both pick the same class
    cosine_mean: float
    cosine_min: float
    max_abs_err: float
    top1_reference: float | None = None  # % correct, when labels exist
    top1_candidate: float | None = None

    @property
    def top1_drop(self) -> float | None:
        if self.top1_reference is None or self.top1_candidate is None:
            return None
        return self.top1_reference - self.top1_candidate

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "top1_drop": self.top1_drop}


def compare_logits(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Comparison:
    """Metrics of two ``[N, classes]`` logit arrays (float64 math)."""
    if reference.shape != candidate.shape:
        raise SwinedgeError(f"logit shapes differ: reference {reference.shape} vs candidate {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(1) / np.maximum(norms, 1e-30)
    ref_top, cand_top = ref.argmax(1), cand.argmax(1)
    out = Comparison(
        images=len(ref),
        top1_agreement=float((ref_top == cand_top).mean() * 100),
        cosine_mean=float(cos.mean()),
        cosine_min=float(cos.min()),
        max_abs_err=float(np.abs(ref - cand).max()),
    )
    if labels is not None:
        out.top1_reference = float((ref_top == labels).mean() * 100)
        out.top1_candidate = float((cand_top == labels).mean() * 100)
    return out


def run_batches(runner: Runner, images: np.ndarray, batch: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits of every image, ``batch`` at a time, within the batches the runner accepts
    (a fixed-batch graph or an engine profile): a short last chunk is filled up with
    repeats of its images, whose outputs are dropped."""
    limits = runner.batch_range
    if limits is not None:
        batch = min(max(batch, limits[0]), limits[1])
    outs = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        n = len(chunk)
        if limits is not None and n < limits[0]:
            chunk = tile_batch(chunk, limits[0])
        outs.append(runner.infer(chunk)[:n])
        if on_batch is not None:
            on_batch(n)
    return np.concatenate(outs)


def preprocess_for(runner: Runner) -> Preprocess:
    spec = runner.input_spec
    if not spec.get("img_size"):
        raise SwinedgeError(f"cannot tell the input size of {runner.name}: give a swinedge artifact (with its manifest)")
    return Preprocess.from_spec(spec["img_size"], spec.get("in_chans", 3), spec.get("preprocess"))


@dataclass
class VerifyReport:
    reference: str
    candidate: str
    data: dict[str, Any]
    comparison: Comparison
    thresholds: dict[str, float]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            **self.comparison.to_dict(),
            "thresholds": self.thresholds,
            "passed": self.passed,
            "failures": self.failures,
        }


def check_thresholds(c: Comparison, max_top1_drop: float, min_cosine: float) -> list[str]:
    failures = []
    if c.cosine_mean < min_cosine:
        failures.append(f"mean logit cosine {c.cosine_mean:.5f} < {min_cosine}")
    drop = c.top1_drop
    if drop is not None and drop > max_top1_drop:
        failures.append(f"top-1 drop {drop:.2f} points > {max_top1_drop}")
    if not np.isfinite(c.max_abs_err):
        failures.append("candidate produced non-finite logits")
    return failures


def verify(
    reference: str | Path,
    candidate: str | Path,
    *,
    data: str | None = None,
    size: int | None = None,
    max_top1_drop: float = MAX_TOP1_DROP,
    min_cosine: float = MIN_COSINE,
    batch: int = 16,
    seed: int = 0,
    images: ImageSet | None = None,
    preprocess_overrides: dict | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run both artifacts on the same images and compare them."""
    if batch < 1:
        raise SwinedgeError(f"--batch must be >= 1, got {batch}")
    ref_runner = open_runner(reference)
    cand_runner = open_runner(candidate)
    with ref_runner, cand_runner:
        ref_spec, cand_spec = ref_runner.input_spec, cand_runner.input_spec
        for key in ("img_size", "in_chans", "num_classes"):
            if ref_spec.get(key) and cand_spec.get(key) and ref_spec[key] != cand_spec[key]:
                raise SwinedgeError(f"reference and candidate differ in {key}: {ref_spec[key]} vs {cand_spec[key]}; compare artifacts of one model")
        if images is None:
            if size is None and data in (None, "default"):
                size = DEFAULT_SET_SIZE
            preprocess = preprocess_for(ref_runner).with_overrides(**(preprocess_overrides or {}))
            images = load_image_set(data, preprocess, size=size, seed=seed, warn=warn)
        ref_logits = run_batches(ref_runner, images.images, batch, on_batch)
        cand_logits = run_batches(cand_runner, images.images, batch, on_batch)
        comparison = compare_logits(ref_logits, cand_logits, images.labels)
        names = (ref_runner.name, cand_runner.name)
    return VerifyReport(
        reference=f"{reference} ({names[0]})",
        candidate=f"{candidate} ({names[1]})",
        data=images.describe(),
        comparison=comparison,
        thresholds={"max_top1_drop": max_top1_drop, "min_cosine": min_cosine},
        failures=check_thresholds(comparison, max_top1_drop, min_cosine),
    )
