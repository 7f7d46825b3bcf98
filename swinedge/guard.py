"""Quantization that is checked before it is written: quantize, compare with the FP32
graph on real images, and write the graph only when it is within the thresholds.

A placement that trades accuracy for speed (``--quantize-residual``: the residual Adds
quantized, which collapsed ViT-B INT8 in a public study) is only offered through this
gate. It sits downstream of both quantization and verification (quantize -> runner ->
report), so neither of those imports it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from swinedge.data import ImageSet, ImageStream, check_image_source
from swinedge.defaults import MAX_TOP1_DROP, MIN_COSINE
from swinedge.errors import SwinedgeError
from swinedge.io import private_workspace
from swinedge.manifest import artifact_with_manifest, manifest_path
from swinedge.quantize import QuantizeOptions, QuantizeResult, check_output, quantize_onnx
from swinedge.verify import check_threshold_options, verify

# Manifest fields build_manifest writes itself (the rest is copied from the trial graph).
_BUILT_FIELDS = ("format", "kind", "file", "sha256", "created", "versions")
DEFAULT_GATE_SIZE = 64


@dataclass
class Gate:
    """Images and thresholds a quantized graph must meet against its FP32 graph.

    ``data`` None: the calibration source, read with another seed (other picks where the
    source has more images than both need; say ``--gate-data`` for a held-out set)."""

    data: str | None = None
    size: int | None = DEFAULT_GATE_SIZE
    max_top1_drop: float = MAX_TOP1_DROP
    min_cosine: float = MIN_COSINE
    batch: int = 16

    def validate(self) -> None:
        check_threshold_options(self.max_top1_drop, self.min_cosine, self.batch, self.size)
        check_image_source(self.data, "--gate-data")


def gated_quantize(
    onnx_path: str | Path,
    out: str | Path,
    options: QuantizeOptions,
    gate: Gate,
    *,
    images: ImageSet | ImageStream | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_gate_start: Callable[[int], None] | None = None,
    on_gate_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[QuantizeResult, dict[str, Any]]:
    """Quantize into a private folder, compare with ``onnx_path`` on the gate's images,
    and write ``out`` (with the gate's figures in its manifest) only when it passes; a
    failure is a one-line error naming the figures, and ``out`` is not written."""
    options.validate()
    gate.validate()
    out = check_output(onnx_path, out, options)
    with private_workspace("swinedge-gate-") as scratch:
        trial = quantize_onnx(onnx_path, scratch / "trial.onnx", options, images=images, on_batch=on_batch, warn=warn)
        report = verify(
            onnx_path,
            trial.onnx_path,
            data=gate.data if gate.data is not None else options.calib,
            size=gate.size,
            max_top1_drop=gate.max_top1_drop,
            min_cosine=gate.min_cosine,
            batch=gate.batch,
            seed=options.seed + 1,  # not the calibration picks, where the source has more
            on_start=on_gate_start,
            on_batch=on_gate_batch,
            warn=warn,
        )
        c = report.comparison
        figures = {
            "data": report.data,
            "thresholds": report.thresholds,
            "top1_agreement": round(c.top1_agreement, 3),
            "cosine_mean": round(c.cosine_mean, 6),
            "top1_drop": None if c.top1_drop is None else round(c.top1_drop, 3),
            "passed": report.passed,
        }
        if not report.passed:
            raise SwinedgeError(
                f"the {options.precision} graph fails its gate on {c.images} images ({'; '.join(report.failures)}); "
                f"nothing written: keep more in high precision (drop --quantize-residual) or loosen --max-top1-drop / --min-cosine"
            )
        with artifact_with_manifest("onnx", out) as pending:
            shutil.copyfile(trial.onnx_path, pending.path)
            fields = {k: v for k, v in trial.manifest.items() if k not in _BUILT_FIELDS}
            fields["quantization"] = {**fields["quantization"], "gate": figures}
            pending.fields.update(fields)
    result = QuantizeResult(out, manifest_path(out), trial.seconds, trial.calibration, pending.manifest, trial.peak_memory_mb)
    return result, figures
