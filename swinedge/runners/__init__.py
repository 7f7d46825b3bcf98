"""Runners: one module per backend behind one interface (:class:`Runner`).

``torch_runner`` (the float reference), ``ort_runner`` (ONNX Runtime, CPU reference for
every graph handed to TensorRT) and ``trt_runner`` (TensorRT plans). Backends are
imported only when an artifact needs them.
"""

from __future__ import annotations

from pathlib import Path

from swinedge.engine import ENGINE_SUFFIXES
from swinedge.errors import SwinedgeError
from swinedge.runners.base import Runner

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")

__all__ = ["CHECKPOINT_SUFFIXES", "ENGINE_SUFFIXES", "Runner", "open_runner"]


def open_runner(
    artifact: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    attention: str = "reference",
    input_size: tuple[int, int] | None = None,
) -> Runner:
    """The runner for an artifact: a variant name or checkpoint -> torch, .onnx -> ONNX
    Runtime, .plan/.engine -> TensorRT. Not loaded yet."""
    s = str(artifact)
    path = Path(s)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from swinedge.runners.ort_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=device)
    if suffix in ENGINE_SUFFIXES:
        from swinedge.runners.trt_runner import TensorRTRunner

        return TensorRTRunner(path)
    if suffix in CHECKPOINT_SUFFIXES or (not path.exists() and suffix == ""):
        from swinedge.runners.torch_runner import TorchRunner

        return TorchRunner(s, device=device, precision=precision, attention=attention, input_size=input_size)
    if not path.exists():
        raise SwinedgeError(f"artifact not found: {path}")
    raise SwinedgeError(f"{path}: unknown artifact type '{suffix}' (expected a variant name, .pt/.safetensors, .onnx or .plan)")
