"""ONNX Runtime backend: the reference runtime for exported, quantized and plugin graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from swinedge.errors import SwinedgeError
from swinedge.runners.base import Runner


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime: CPU provider, or CUDA when asked and present. Runs plugin graphs on CPU."""

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None, tensors: tuple[str, ...] = ()):
        """``tensors``: intermediate tensors to return too (:meth:`infer_tensors`), made
        graph outputs of the in-memory copy (the file is not touched)."""
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.tensors = tuple(tensors)
        self.session = None
        self.manifest: dict[str, Any] = {}
        self.name = "onnxruntime"

    def load(self) -> "OnnxRuntimeRunner":
        import onnxruntime as ort

        from swinedge.export import load_onnx, onnx_info

        proto = load_onnx(self.path)
        self.manifest = onnx_info(self.path, proto)
        if self.tensors:
            import onnx

            present = {o.name for o in proto.graph.output}
            proto.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.tensors if t not in present)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if has_qdq(proto):
            # ONNX Runtime's extended optimizations fuse DQ+MatMul into integer kernels:
            # none exists for float8, and on x86 CPUs without VNNI (AVX2 only) the u8s8
            # INT8 kernel saturates its pairwise sums at int16 (ONNX Runtime's quantization
            # docs), which cost a Swin V2 micro graph 0.012 of logit cosine here. Basic
            # optimizations run Q/DQ as written, as the reference TensorRT is held to.
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
        quantization = self.manifest.get("quantization") or {}
        how = "-guarded" if "guard" in quantization else ("-qat" if "(QAT)" in str(quantization.get("tool", "")) else "")
        self.name = f"onnxruntime-{precision}{how}" + ("-plugin" if has_plugin else "")
        return self

    @property
    def batch_range(self) -> tuple[int, int] | None:
        if self.session is None:
            return None
        b = self.session.get_inputs()[0].shape[0]
        return (b, b) if isinstance(b, int) and b > 0 else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.session is not None, "call load() first"
        inp = self.session.get_inputs()[0]
        try:
            out = self.session.run(None, {inp.name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SwinedgeError(f"onnxruntime cannot run {self.path} on images of shape {list(batch.shape)}: {first[:200]}") from None
        return np.asarray(out, dtype=np.float32)

    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self.session is not None, "call load() first"
        inp = self.session.get_inputs()[0]
        names = [o.name for o in self.session.get_outputs()]
        try:
            outs = self.session.run(names, {inp.name: np.ascontiguousarray(batch, dtype=np.float32)})
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SwinedgeError(f"onnxruntime cannot run {self.path} on images of shape {list(batch.shape)}: {first[:200]}") from None
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(names, outs)}

    def infer_tensors(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The requested intermediate tensors (float32) for one batch."""
        assert self.session is not None, "call load() first"
        inp = self.session.get_inputs()[0]
        outs = self.session.run(list(self.tensors), {inp.name: np.ascontiguousarray(batch, dtype=np.float32)})
        return {t: np.asarray(o, dtype=np.float32) for t, o in zip(self.tensors, outs)}

    @property
    def input_spec(self) -> dict[str, Any]:
        shape = self.manifest.get("input", {}).get("shape")
        if not shape:
            return {}
        cfg = self.manifest.get("config") or {}
        classes = cfg.get("num_classes")
        if classes is None and self.session is not None:  # a graph without a manifest: its output says
            out = self.session.get_outputs()[0].shape
            classes = out[1] if len(out) == 2 and isinstance(out[1], int) else None
        spec = {"img_size": int(shape[2]), "in_chans": int(shape[1]), "num_classes": classes, "preprocess": self.manifest.get("preprocess")}
        return {**spec, **backbone_spec(self.manifest)}

    def close(self) -> None:
        self.session = None


def has_qdq(proto) -> bool:
    """Explicit quantization: a QuantizeLinear node (INT8 or FP8)."""
    return any(n.op_type == "QuantizeLinear" for n in proto.graph.node) or has_float8(proto)


def has_float8(proto) -> bool:
    import onnx

    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ}
    return any(i.data_type in fp8 for i in proto.graph.initializer)


def backbone_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """A backbone artifact's input spec entries from its manifest (nothing for a classifier)."""
    if manifest.get("task") != "backbone":
        return {}
    shape = manifest["input"]["shape"]
    return {
        "task": "backbone",
        "img_size": max(int(shape[2]), int(shape[3])),
        "num_classes": None,
        "input_size": (int(shape[2]), int(shape[3])),
        "outputs": [o["name"] for o in manifest.get("outputs", [])],
        # An any-size graph (export --sizes) or an engine of several profiles: every size.
        "input_sizes": [_size(t) for t in manifest.get("input_sizes") or []] or [(int(shape[2]), int(shape[3]))],
    }


def _size(text: str) -> tuple[int, int]:
    h, w = str(text).lower().split("x")
    return int(h), int(w)
