"""Verification of backbones: each stage map of a candidate against the float model.

A backbone has no classes, so there is no top-1: every returned stage (``stage{i}``,
NCHW) is compared image by image as one vector, by cosine and by relative error
``||candidate - reference|| / ||reference||``, in float64. Comparison logic only;
inference goes through :mod:`swinedge.runners`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import check_image_source, open_images
from swinedge.errors import SwinedgeError
from swinedge.runners import open_runner
from swinedge.verify import DEFAULT_SET_SIZE, MAX_BATCH, infer_chunk, preprocess_for, runner_batch
from swinedge.data import MAX_IMAGES

# Defaults: an INT8 Swin-T backbone on photographs keeps every stage above 0.99 cosine
# (README, backbone table); FP16 far above.
MIN_STAGE_COSINE = 0.99
MAX_STAGE_REL_ERR = 0.15


@dataclass
class StageStats:
    name: str
    shape: list[int]  # [C, H, W]
    images: int = 0
    cos_sum: float = 0.0
    cos_min: float = math.inf
    rel_sum: float = 0.0
    rel_max: float = 0.0
    max_abs: float = 0.0
    size: str | None = None  # HxW, for artifacts verified at several sizes

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.reshape(len(ref), -1).astype(np.float64)
        c = cand.reshape(len(cand), -1).astype(np.float64)
        rn, cn = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
        cos = (r * c).sum(1) / np.maximum(rn * cn, 1e-30)
        rel = np.linalg.norm(r - c, axis=1) / np.maximum(rn, 1e-30)
        finite = bool(np.isfinite(c).all())
        self.images += len(r)
        self.cos_sum += float(cos.sum()) if finite else math.nan
        self.cos_min = min(self.cos_min, float(cos.min())) if finite else math.nan
        self.rel_sum += float(rel.sum()) if finite else math.nan
        self.rel_max = max(self.rel_max, float(rel.max())) if finite else math.nan
        self.max_abs = max(self.max_abs, float(np.abs(r - c).max())) if finite else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "shape": self.shape,
            "images": self.images,
            "cosine_mean": self.cos_sum / self.images,
            "cosine_min": self.cos_min,
            "rel_err_mean": self.rel_sum / self.images,
            "rel_err_max": self.rel_max,
            "max_abs_err": self.max_abs,
            **({"size": self.size} if self.size else {}),
        }


@dataclass
class FeatureReport:
    reference: str
    candidate: str
    data: dict[str, Any]
    stages: list[dict[str, Any]]
    thresholds: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "backbone",
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "stages": self.stages,
            "thresholds": self.thresholds,
            "passed": self.passed,
            "failures": self.failures,
        }


def is_backbone_artifact(artifact: str | Path) -> bool:
    """Whether the manifest beside ``artifact`` says it is a backbone. Only a hint for
    dispatch: nothing is checked here, so a damaged or mismatched manifest is reported by
    the command that reads it properly."""
    import json

    from swinedge.manifest import manifest_path

    path = Path(str(artifact))
    try:
        manifest = json.loads(manifest_path(path).read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("task") == "backbone"


def check_feature_options(min_cosine: float, max_rel_err: float, batch: int, size: int | None) -> None:
    if size is not None and not 1 <= size <= MAX_IMAGES:
        raise SwinedgeError(f"--size must be 1..{MAX_IMAGES:,}, got {size}")
    if not -1 <= min_cosine <= 1:  # also false for NaN
        raise SwinedgeError(f"--min-cosine must be -1..1, got {min_cosine}")
    if not 0 <= max_rel_err <= 10:
        raise SwinedgeError(f"--max-rel-err must be 0..10, got {max_rel_err}")
    if not 1 <= batch <= MAX_BATCH:
        raise SwinedgeError(f"--batch must be 1..{MAX_BATCH}, got {batch}")


def stage_failures(stages: list[dict[str, Any]], min_cosine: float, max_rel_err: float) -> list[str]:
    failures = []
    for s in stages:
        if not (math.isfinite(s["cosine_mean"]) and math.isfinite(s["rel_err_mean"])):
            failures.append(f"{s['stage']}: candidate produced non-finite values")
            continue
        if s["cosine_mean"] < min_cosine:
            failures.append(f"{s['stage']}: mean cosine {s['cosine_mean']:.5f} < {min_cosine}")
        if s["rel_err_mean"] > max_rel_err:
            failures.append(f"{s['stage']}: mean relative error {s['rel_err_mean']:.4f} > {max_rel_err}")
    return failures


def verify_features(
    reference: str | Path,
    candidate: str | Path,
    *,
    data: str | None = None,
    size: int | None = None,
    min_cosine: float = MIN_STAGE_COSINE,
    max_rel_err: float = MAX_STAGE_REL_ERR,
    batch: int = 4,
    seed: int = 0,
    preprocess_overrides: dict | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> FeatureReport:
    """Both backbones on the same images (the candidate's size and preprocessing), every
    stage compared; memory holds one batch of images and maps."""
    check_feature_options(min_cosine, max_rel_err, batch, size)
    check_image_source(data, "--data")
    cand_runner = open_runner(candidate)
    with cand_runner:
        cand_spec = cand_runner.input_spec
        if cand_spec.get("task") != "backbone":
            raise SwinedgeError(f"{candidate} is not a backbone (its manifest has no stage outputs): verify classifiers without --features")
        if size is None and data in (None, "default"):
            size = DEFAULT_SET_SIZE
        base = preprocess_for(cand_runner).with_overrides(**(preprocess_overrides or {}))
        # A graph or engine of several sizes is verified at each, on the same images.
        sizes = [tuple(s) for s in cand_spec.get("input_sizes") or [cand_spec["input_size"]]]
        if on_start is not None:
            on_start(len(open_images(data, base, size=size, seed=seed, labelled=False)) * len(sizes))
        stats: dict[tuple[str, tuple[int, int]], StageStats] = {}
        for hw in sizes:
            ref_runner = open_runner(reference, input_size=hw)
            with ref_runner:
                ref_spec = ref_runner.input_spec
                if ref_spec.get("task") != "backbone":
                    raise SwinedgeError(f"{reference} is a classifier, not a backbone: give the backbone checkpoint or FP32 export")
                ref_sizes = [tuple(s) for s in ref_spec.get("input_sizes") or [ref_spec["input_size"]]]
                if hw not in ref_sizes:
                    raise SwinedgeError(
                        f"{candidate} takes {hw[0]}x{hw[1]} inputs, the reference "
                        f"{' or '.join(f'{a}x{b}' for a, b in ref_sizes)}: compare artifacts of one size "
                        "(a checkpoint serves every size)"
                    )
                if list(ref_spec["outputs"]) != list(cand_spec["outputs"]):
                    raise SwinedgeError(f"{candidate} returns {cand_spec['outputs']}, the reference {ref_spec['outputs']}: compare artifacts of one backbone")
                preprocess = dataclasses.replace(base, height=hw[0], width=hw[1])
                images = open_images(data, preprocess, size=size, seed=seed, labelled=False)
                step = min(runner_batch(ref_runner, batch), runner_batch(cand_runner, batch))
                for chunk in images.batches(step, warn=warn):
                    ref, cand = infer_chunk(ref_runner, chunk.images, all_outputs=True), infer_chunk(cand_runner, chunk.images, all_outputs=True)
                    for name in cand_spec["outputs"]:
                        if ref[name].shape != cand[name].shape:
                            raise SwinedgeError(f"{name} shapes differ: reference {ref[name].shape} vs candidate {cand[name].shape}")
                        label = name if len(sizes) == 1 else f"{name} @ {hw[0]}x{hw[1]}"
                        at = f"{hw[0]}x{hw[1]}" if len(sizes) > 1 else None
                        stats.setdefault((name, hw), StageStats(label, list(ref[name].shape[1:]), size=at)).update(ref[name], cand[name])
                    if on_batch is not None:
                        on_batch(len(chunk))
                names = (ref_runner.name, cand_runner.name)
    stages = [s.to_dict() for s in stats.values()]
    return FeatureReport(
        reference=f"{reference} ({names[0]})",
        candidate=f"{candidate} ({names[1]})",
        data={
            **images.describe(stages[0]["images"] if stages else 0),
            **({"sizes": [f"{h}x{w}" for h, w in sizes]} if len(sizes) > 1 else {}),
        },
        stages=stages,
        thresholds={"min_cosine": min_cosine, "max_rel_err": max_rel_err},
        failures=stage_failures(stages, min_cosine, max_rel_err),
    )
