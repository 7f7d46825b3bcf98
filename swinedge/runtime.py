"""One runner interface over the backends: torch, ONNX Runtime, TensorRT.

A runner is loaded once, then ``infer(batch) -> logits`` on NCHW float32 numpy
batches, then closed. Comparison and timing logic lives elsewhere (``verify``,
``bench``) and only sees this interface.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinedge.errors import MissingDependencyError, SwinedgeError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
ENGINE_SUFFIXES = (".plan", ".engine")


class Runner(abc.ABC):
    """load() -> infer(batch) -> close(); also a context manager."""

    name: str = "runner"
    device: str = "cpu"

    @abc.abstractmethod
    def load(self) -> "Runner": ...

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to free
        pass

    def synchronize(self) -> None:  # noqa: B027 - CPU backends are synchronous
        pass

    @property
    def input_spec(self) -> dict[str, Any]:
        """``{"img_size", "in_chans", "num_classes", "preprocess"}`` where known."""
        return {}

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchRunner(Runner):
    """The PyTorch model: fp32 or fp16 autocast, reference or fused attention, CPU or CUDA."""

    def __init__(self, source: str | Path, *, device: str = "cpu", precision: str = "fp32", attention: str = "reference"):
        if precision not in ("fp32", "fp16"):
            raise SwinedgeError(f"torch runner precision must be fp32 or fp16, got '{precision}'")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SwinedgeError("torch runner asked for CUDA but no GPU is visible: use --device cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise SwinedgeError("fp16 autocast of the torch runner needs a CUDA device")
        self.source = source
        self.device = device
        self.precision = precision
        self.attention = attention
        self.name = f"torch-{precision}" + ("-fused" if attention == "fused" else "")
        self.model: torch.nn.Module | None = None
        self.info: dict[str, Any] = {}

    def load(self) -> "TorchRunner":
        from swinedge.models import SwinTransformer, load_model

        if isinstance(self.source, SwinTransformer):
            model, self.info = self.source, {"model": "custom", "config": self.source.config.to_dict()}
        else:
            model, self.info = load_model(self.source)
        model.set_attention_impl(self.attention)
        self.model = model.eval().to(self.device)
        return self

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.model is not None, "call load() first"
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            y = self.model(x)
        return y.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @property
    def input_spec(self) -> dict[str, Any]:
        cfg = self.model.config if self.model is not None else None
        if cfg is None:
            return {}
        from swinedge.export import preprocess_spec

        return {"img_size": cfg.img_size, "in_chans": cfg.in_chans, "num_classes": cfg.num_classes, "preprocess": preprocess_spec(cfg.img_size)}

    def close(self) -> None:
        self.model = None


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime: CPU provider, or CUDA when asked and present. Runs plugin graphs on CPU."""

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None):
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.session = None
        self.manifest: dict[str, Any] = {}
        self.name = "onnxruntime"

    def load(self) -> "OnnxRuntimeRunner":
        import onnxruntime as ort

        from swinedge.export import load_onnx, onnx_info

        proto = load_onnx(self.path)
        self.manifest = onnx_info(self.path, proto)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if has_float8(proto):
            # ONNX Runtime's extended optimizations fuse DQ+MatMul into MatMulIntegerToFloat,
            # which has no float8 kernel; basic ones run FP8 Q/DQ graphs as they are.
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if self.threads:
            opts.intra_op_num_threads = self.threads
        has_plugin = any(n.domain == "swinedge" for n in proto.graph.node)
        if has_plugin:
            from swinedge.ops.onnx_plugin import register_ort_custom_ops

            register_ort_custom_ops(opts)
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise SwinedgeError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SwinedgeError(f"onnxruntime cannot load {self.path}: {first[:200]}") from None
        precision = self.manifest.get("precision", "unknown")
        self.name = f"onnxruntime-{precision}" + ("-plugin" if has_plugin else "")
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.session is not None, "call load() first"
        inp = self.session.get_inputs()[0]
        return np.asarray(self.session.run(None, {inp.name: np.ascontiguousarray(batch, dtype=np.float32)})[0], dtype=np.float32)

    @property
    def input_spec(self) -> dict[str, Any]:
        shape = self.manifest.get("input", {}).get("shape")
        if not shape:
            return {}
        cfg = self.manifest.get("config") or {}
        return {"img_size": int(shape[2]), "in_chans": int(shape[1]), "num_classes": cfg.get("num_classes"), "preprocess": self.manifest.get("preprocess")}

    def close(self) -> None:
        self.session = None


def has_float8(proto) -> bool:
    import onnx

    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ}
    return any(i.data_type in fp8 for i in proto.graph.initializer)


def open_runner(artifact: str | Path, *, device: str = "cpu", precision: str = "fp32", attention: str = "reference") -> Runner:
    """The runner for an artifact: a variant name or checkpoint -> torch, .onnx -> ONNX
    Runtime, .plan/.engine -> TensorRT. Not loaded yet."""
    s = str(artifact)
    path = Path(s)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntimeRunner(path, device=device)
    if suffix in ENGINE_SUFFIXES:
        from swinedge.engine import TensorRTRunner

        return TensorRTRunner(path)
    if suffix in CHECKPOINT_SUFFIXES or (not path.exists() and suffix == ""):
        return TorchRunner(s, device=device, precision=precision, attention=attention)
    if not path.exists():
        raise SwinedgeError(f"artifact not found: {path}")
    raise SwinedgeError(f"{path}: unknown artifact type '{suffix}' (expected a variant name, .pt/.safetensors, .onnx or .plan)")


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(
            "TensorRT is not installed: install it from NVIDIA on a GPU machine (pip install tensorrt, or JetPack on Jetson)"
        ) from None
    return trt
