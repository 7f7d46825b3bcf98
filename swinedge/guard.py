"""Guarded quantization: the fastest placement asked for, within an accuracy budget.

``guarded_quantize`` quantizes, measures the graph against the FP32 graph on real images
(top-1 drop with labels, top-1 agreement and logit cosine without), and while the budget
is missed returns whole blocks to high precision, most sensitive first, re-calibrating
each time. Sensitivity is the error a block adds in the per-layer error map of the first
graph (:mod:`swinedge.error_map`). Once within budget it tries to give back each restored
block (one whose return to INT8 still meets the budget is given back), so no single
restored block is unnecessary. It writes the first graph found that way, with what
it kept in high precision, the measured figures and the path it took in its manifest. When
even every block in high precision misses the budget, it is a one-line error and nothing is
written.

Placements that trade accuracy for speed (``--quantize-residual``, ``--aggressive``) are
always guarded. This module sits downstream of quantization, verification and the error
map (quantize -> runner -> report), so none of those imports it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from swinedge.data import ImageSet, ImageStream, check_image_source
from swinedge.defaults import MAX_TOP1_DROP, MIN_COSINE
from swinedge.errors import SwinedgeError
from swinedge.io import private_workspace
from swinedge.manifest import artifact_with_manifest, manifest_path
from swinedge.quantize import QuantizeOptions, QuantizeResult, check_output, quantize_onnx
from swinedge.verify import Comparison, check_threshold_options, verify

# Manifest fields build_manifest writes itself (the rest is copied from the chosen graph).
_BUILT_FIELDS = ("format", "kind", "file", "sha256", "created", "versions")
DEFAULT_GUARD_SIZE = 64
ERROR_MAP_IMAGES = 16  # the ranking needs the shape of the error, not a precise figure


@dataclass
class Budget:
    """What the quantized graph must meet against the FP32 graph, and on which images.

    Thresholds left None are not checked; with none given, verify's defaults apply
    (top-1 drop <= 0.5 points where the images are labelled, mean logit cosine >= 0.99).
    ``data`` None: the calibration source, read with another seed."""

    max_top1_drop: float | None = None
    min_agreement: float | None = None  # % of images whose top-1 class matches the FP32 graph
    min_cosine: float | None = None
    data: str | None = None
    size: int | None = DEFAULT_GUARD_SIZE
    batch: int = 16

    def validate(self) -> None:
        check_threshold_options(
            MAX_TOP1_DROP if self.max_top1_drop is None else self.max_top1_drop,
            MIN_COSINE if self.min_cosine is None else self.min_cosine,
            self.batch,
            self.size,
        )
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 100:  # also false for NaN
            raise SwinedgeError(f"--min-agreement must be 0..100 %, got {self.min_agreement}")
        check_image_source(self.data, "--data")

    def check_source(self, source: str | None) -> None:
        """Before any work: a top-1 budget needs labels, which the bundled photos lack."""
        if self.max_top1_drop is not None and source in (None, "default"):
            raise SwinedgeError("--max-top1-drop needs labelled images (--data with class folders, or 'digits'): use --min-agreement on the bundled photos")

    @property
    def defaulted(self) -> bool:
        return self.max_top1_drop is None and self.min_agreement is None and self.min_cosine is None

    def thresholds(self, labelled: bool) -> dict[str, float]:
        if self.defaulted:
            return {"max_top1_drop": MAX_TOP1_DROP, "min_cosine": MIN_COSINE} if labelled else {"min_cosine": MIN_COSINE}
        given = {"max_top1_drop": self.max_top1_drop, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine}
        return {k: v for k, v in given.items() if v is not None}

    def misses(self, c: Comparison) -> list[str]:
        """What ``c`` misses of the budget (empty: within)."""
        t = self.thresholds(c.top1_drop is not None)
        out = []
        if "max_top1_drop" in t:
            if c.top1_drop is None:
                raise SwinedgeError("--max-top1-drop needs labelled images (class folders or 'digits'): use --min-agreement on unlabelled ones")
            if c.top1_drop > t["max_top1_drop"]:
                out.append(f"top-1 drop {c.top1_drop:.2f} > {t['max_top1_drop']} points")
        if "min_agreement" in t and c.top1_agreement < t["min_agreement"]:
            out.append(f"top-1 agreement {c.top1_agreement:.2f} % < {t['min_agreement']} %")
        if "min_cosine" in t and c.cosine_mean < t["min_cosine"]:
            out.append(f"mean logit cosine {c.cosine_mean:.5f} < {t['min_cosine']}")
        return out


def _figures(c: Comparison) -> dict[str, Any]:
    return {
        "top1_drop": None if c.top1_drop is None else round(c.top1_drop, 3),
        "top1_agreement": round(c.top1_agreement, 3),
        "cosine_mean": round(c.cosine_mean, 6),
    }


def guarded_quantize(
    onnx_path: str | Path,
    out: str | Path,
    options: QuantizeOptions,
    budget: Budget,
    *,
    images: ImageSet | ImageStream | None = None,
    on_step: Callable[[str, int | None], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[QuantizeResult, dict[str, Any]]:
    """Quantize ``onnx_path`` within ``budget`` (see module); returns the result and the
    guard's record (also in the manifest under ``quantization.guard``)."""
    options.validate()
    budget.validate()
    out = check_output(onnx_path, out, options)
    if options.precision == "fp16":
        raise SwinedgeError("the guard restores INT8/FP8 blocks; an fp16 graph has none (check it with swinedge verify)")
    data = budget.data if budget.data is not None else options.calib
    budget.check_source(data)
    step = on_step or (lambda _msg, _total: None)
    path: list[dict[str, Any]] = []

    with private_workspace("swinedge-guard-") as scratch:
        trials: dict[tuple[str, ...], tuple[QuantizeResult, Comparison]] = {}

        def trial(blocks: tuple[str, ...]) -> tuple[QuantizeResult, Comparison, list[str]]:
            key = tuple(sorted(blocks))
            if key not in trials:
                label = f"{len(key)} block{'s' * (len(key) != 1)} in high precision" if key else "as asked"
                step(f"guard: quantizing ({label})", len(images) if images is not None else None)
                q = quantize_onnx(
                    onnx_path, scratch / f"trial{len(trials)}.onnx", replace(options, keep_blocks=key), images=images, on_batch=on_batch, warn=warn
                )
                report = verify(
                    onnx_path, q.onnx_path, data=data, size=budget.size, batch=budget.batch, seed=options.seed + 1,
                    max_top1_drop=100.0, min_cosine=-1.0, on_start=lambda n: step("guard: measuring against FP32", n), on_batch=on_batch,
                )  # fmt: skip
                trials[key] = (q, report.comparison)
                path.append({"high_precision_blocks": list(key), **_figures(report.comparison), "within_budget": not budget.misses(report.comparison)})
            q, c = trials[key]
            return q, c, budget.misses(c)

        best, comparison, missed = trial(())
        restored: tuple[str, ...] = ()
        ranking: list[str] = []
        if missed:
            from swinedge.error_map import error_map

            step("guard: per-layer error map", None)
            emap = error_map(onnx_path, best.onnx_path, data=data, size=min(budget.size or ERROR_MAP_IMAGES, ERROR_MAP_IMAGES), seed=options.seed + 1)
            ranking = emap.block_ranking()
            for block in ranking:
                restored = (*restored, block)
                best, comparison, missed = trial(restored)
                if not missed:
                    break
            if missed:
                raise SwinedgeError(
                    f"even with all {len(ranking)} blocks in high precision the graph misses the budget on these images "
                    f"({'; '.join(missed)}); nothing written: loosen the budget or quantize less (drop --aggressive / --quantize-residual)"
                )
            # Give back what the budget does not need: after this, giving back any one
            # restored block misses the budget (each such graph is in the path).
            for block in list(restored):
                fewer = tuple(b for b in restored if b != block)
                q, c, m = trial(fewer)
                if not m:
                    restored, best, comparison = fewer, q, c
        record = {
            "budget": budget.thresholds(comparison.top1_drop is not None),
            "data": {"source": data or "default", "size": budget.size, "seed": options.seed + 1},
            "high_precision_blocks": list(restored),
            "ranking": ranking,
            **_figures(comparison),
            "path": path,
        }
        with artifact_with_manifest("onnx", out) as pending:
            shutil.copyfile(best.onnx_path, pending.path)
            fields = {k: v for k, v in best.manifest.items() if k not in _BUILT_FIELDS}
            fields["quantization"] = {**fields["quantization"], "guard": record}
            pending.fields.update(fields)
    result = QuantizeResult(out, manifest_path(out), sum(t[0].seconds for t in trials.values()), best.calibration, pending.manifest, best.peak_memory_mb)
    return result, record
