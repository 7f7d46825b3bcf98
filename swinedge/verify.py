"""Accuracy of a candidate graph against a float reference on the same images.

Comparison logic only; inference goes through :mod:`swinedge.runners`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import MAX_IMAGES, ImageStream, check_image_source, Preprocess, open_images, preprocess_for_spec, read_class_names, tile_batch
from swinedge.defaults import MAX_TOP1_DROP, MIN_COSINE
from swinedge.errors import SwinedgeError
from swinedge.runners import Runner, open_runner

# The built-in photo set has 9 photos; verification draws this many (photos + seeded crops).
DEFAULT_SET_SIZE = 64
# A batch this large is a typo (one image at 224 is 0.6 MB in float32).
MAX_BATCH = 4096


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


class LogitComparer:
    """:class:`Comparison` metrics accumulated batch by batch (float64 math), so a
    comparison over any number of images holds one batch of logits."""

    def __init__(self) -> None:
        self.images = 0
        self.agree = 0
        self.cos_sum = 0.0
        self.cos_min = float("inf")
        self.max_abs = 0.0
        self.ref_correct = 0
        self.cand_correct = 0
        self.labelled: bool | None = None

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> None:
        if reference.shape != candidate.shape:
            raise SwinedgeError(f"logit shapes differ: reference {reference.shape} vs candidate {candidate.shape}")
        ref = reference.astype(np.float64)
        cand = candidate.astype(np.float64)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = (ref * cand).sum(1) / np.maximum(norms, 1e-30)
        ref_top, cand_top = ref.argmax(1), cand.argmax(1)
        self.images += len(ref)
        self.agree += int((ref_top == cand_top).sum())
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min()))
        err = np.abs(ref - cand)
        self.max_abs = float("nan") if not np.isfinite(err).all() else max(self.max_abs, float(err.max()))
        self.labelled = labels is not None
        if labels is not None:
            self.ref_correct += int((ref_top == labels).sum())
            self.cand_correct += int((cand_top == labels).sum())

    def result(self) -> Comparison:
        if not self.images:
            raise SwinedgeError("no images were compared")
        out = Comparison(
            images=self.images,
            top1_agreement=self.agree * 100.0 / self.images,
            cosine_mean=self.cos_sum / self.images,
            cosine_min=self.cos_min,
            max_abs_err=self.max_abs,
        )
        if self.labelled:
            out.top1_reference = self.ref_correct * 100.0 / self.images
            out.top1_candidate = self.cand_correct * 100.0 / self.images
        return out


def compare_logits(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Comparison:
    """Metrics of two ``[N, classes]`` logit arrays (float64 math)."""
    comparer = LogitComparer()
    comparer.update(reference, candidate, labels)
    return comparer.result()


def runner_batch(runner: Runner, batch: int) -> int:
    """``batch`` clipped to the batches the runner accepts (fixed-batch graph, profile)."""
    limits = runner.batch_range
    return batch if limits is None else min(max(batch, limits[0]), limits[1])


def infer_chunk(runner: Runner, images: np.ndarray, *, all_outputs: bool = False) -> Any:
    """Logits of ``images`` (at most the runner's largest batch), or every output by name
    with ``all_outputs`` (a backbone's stage maps); a chunk smaller than the runner's
    smallest batch is filled up with repeats, whose outputs are dropped."""
    limits = runner.batch_range
    n = len(images)
    if limits is not None and n < limits[0]:
        images = tile_batch(images, limits[0])
    if all_outputs:
        return {k: v[:n] for k, v in runner.infer_outputs(images).items()}
    return runner.infer(images)[:n]


def run_batches(runner: Runner, images: np.ndarray, batch: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits of every image of an in-memory set, ``batch`` at a time, within the
    batches the runner accepts."""
    batch = runner_batch(runner, batch)
    outs = []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        outs.append(infer_chunk(runner, chunk))
        if on_batch is not None:
            on_batch(len(chunk))
    return np.concatenate(outs)


def stream_logits(
    runner: Runner,
    images: ImageStream,
    path: Path,
    batch: int = 32,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``runner``'s logits for every image of the stream, written to a memory-mapped
    ``.npy`` file at ``path`` (RAM holds one batch), and the labels when there are any."""
    out = None
    labels: list[np.ndarray] = []
    done = 0
    for chunk in images.batches(runner_batch(runner, batch), warn=warn):
        logits = infer_chunk(runner, chunk.images)
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(images), logits.shape[1]))
        out[done : done + len(chunk)] = logits
        done += len(chunk)
        if chunk.labels is not None:
            labels.append(chunk.labels)
        if on_batch is not None:
            on_batch(len(chunk))
    assert out is not None  # the stream raises when nothing was readable
    return out[:done], (np.concatenate(labels) if labels else None)


def preprocess_for(runner: Runner) -> Preprocess:
    spec = runner.input_spec
    if not spec.get("img_size"):
        raise SwinedgeError(f"cannot tell the input size of {runner.name}: give a swinedge artifact (with its manifest)")
    return preprocess_for_spec(spec)


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


def check_same_model(reference: dict[str, Any], candidate: dict[str, Any], name: str) -> None:
    """A candidate must take the reference's images and give its classes."""
    for key in ("img_size", "in_chans", "num_classes"):
        if reference.get(key) and candidate.get(key) and reference[key] != candidate[key]:
            raise SwinedgeError(
                f"{name} and the reference differ in {key}: {candidate[key]} vs {reference[key]}; compare artifacts of one model"
            )


def check_threshold_options(max_top1_drop: float, min_cosine: float, batch: int, size: int | None = None) -> None:
    """Thresholds, batch and image count as the user typed them, checked before any work."""
    if size is not None and not 1 <= size <= MAX_IMAGES:
        raise SwinedgeError(f"--size must be 1..{MAX_IMAGES:,}, got {size}")
    if not 0 <= max_top1_drop <= 100:  # also false for NaN
        raise SwinedgeError(f"--max-top1-drop must be 0..100 points, got {max_top1_drop}")
    if not -1 <= min_cosine <= 1:
        raise SwinedgeError(f"--min-cosine must be -1..1, got {min_cosine}")
    if not 1 <= batch <= MAX_BATCH:
        raise SwinedgeError(f"--batch must be 1..{MAX_BATCH}, got {batch}")


def open_eval_images(
    runner: Runner,
    data: str | None,
    *,
    size: int | None = None,
    seed: int = 0,
    labels_file: str | Path | None = None,
    preprocess_overrides: dict | None = None,
) -> ImageStream:
    """The evaluation images for ``runner``'s model, listed (not read): its input size
    and preprocessing, labels numbered by its class list (``labels_file`` wins)."""
    if size is None and data in (None, "default"):
        size = DEFAULT_SET_SIZE
    spec = runner.input_spec
    preprocess = preprocess_for(runner).with_overrides(**(preprocess_overrides or {}))
    class_names = read_class_names(labels_file) if labels_file is not None else spec.get("class_names")
    num_classes = spec.get("num_classes")
    if class_names is not None and num_classes and len(class_names) != num_classes:
        raise SwinedgeError(f"--labels lists {len(class_names)} classes but the model has {num_classes}: give the model's own class list")
    return open_images(data, preprocess, size=size, seed=seed, class_names=class_names, num_classes=num_classes)


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
    labels_file: str | Path | None = None,
    preprocess_overrides: dict | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Run both artifacts on the same images, a batch at a time, and compare them.

    Memory holds one batch of images and logits whatever the set's size; ``on_start``
    receives the number of images before the first batch, ``on_batch`` each batch's."""
    check_threshold_options(max_top1_drop, min_cosine, batch, size)
    check_image_source(data, "--data")
    ref_runner = open_runner(reference)
    cand_runner = open_runner(candidate)
    with ref_runner, cand_runner:
        check_same_model(ref_runner.input_spec, cand_runner.input_spec, str(candidate))
        images = open_eval_images(ref_runner, data, size=size, seed=seed, labels_file=labels_file, preprocess_overrides=preprocess_overrides)
        if on_start is not None:
            on_start(len(images))
        # One read of each batch feeds both runners, each within the batches it accepts.
        step = min(runner_batch(ref_runner, batch), runner_batch(cand_runner, batch))
        comparer = LogitComparer()
        for chunk in images.batches(step, warn=warn):
            comparer.update(infer_chunk(ref_runner, chunk.images), infer_chunk(cand_runner, chunk.images), chunk.labels)
            if on_batch is not None:
                on_batch(len(chunk))
        comparison = comparer.result()
        names = (ref_runner.name, cand_runner.name)
    return VerifyReport(
        reference=f"{reference} ({names[0]})",
        candidate=f"{candidate} ({names[1]})",
        data=images.describe(comparison.images),
        comparison=comparison,
        thresholds={"max_top1_drop": max_top1_drop, "min_cosine": min_cosine},
        failures=check_thresholds(comparison, max_top1_drop, min_cosine),
    )
