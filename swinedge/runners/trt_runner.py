"""TensorRT backend: runs a plan built by :func:`swinedge.engine.build_engine`.

Buffers and the stream come from torch (no pycuda). The runner owns its stream: on the
legacy default stream TensorRT warns and adds synchronizations. Loading a plan never
imports ``swinedge.plugin``: the fused kernel is in the plan as AOT PTX, so a plan runs
in any TensorRT runtime, this one included, without the plugin's Python.

Input shapes are set only when the shape changes and output buffers are kept per
shape: AOT plugin modules leak on every input-shape change in TensorRT 11.1/11.2.1
(NVIDIA/TensorRT#4849), so a runner that calls ``infer`` with one shape never triggers
it (one that alternates sizes of a several-size engine does: each change costs that).

An engine built for several input sizes (``build-engine`` on an ``export --sizes``
graph) has one optimization profile per size; the runner picks the profile of each
batch's size (:func:`swinedge.engine.check_input_covered`) before setting its shape.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from swinedge.engine import (
    check_engine_fits,
    check_input_covered,
    check_precision_supported,
    engine_profiles,
    gpu_identity,
    require_tensorrt,
    trt_constructing,
)
from swinedge.errors import SwinedgeError
from swinedge.io import require_file
from swinedge.manifest import read_manifest
from swinedge.runners.base import Runner


class TensorRTRunner(Runner):
    """A TensorRT plan with its manifest."""

    def __init__(self, plan: str | Path):
        self.plan = Path(plan)
        self.device = "cuda"
        self.name = "tensorrt"
        self.manifest: dict[str, Any] = {}
        self.engine = None
        self.context = None
        self.stream = None
        self._shape: tuple[int, ...] | None = None
        self._profile = 0  # TensorRT's context starts on profile 0
        self._outputs: dict[tuple[tuple[int, ...], str], Any] = {}  # (input shape, output name) -> buffer

    def load(self) -> "TensorRTRunner":
        require_file(self.plan, "engine")
        self.manifest = read_manifest(self.plan, required=True, kind="tensorrt-engine") or {}  # checks the plan's hash
        trt = require_tensorrt()
        gpu, cc = gpu_identity()
        check_precision_supported(self.manifest.get("precision"), gpu, cc)  # before "rebuild it here", which cannot help
        check_engine_fits(self.manifest, gpu=gpu, compute_capability=cc, trt_version=trt.__version__, plan=str(self.plan))
        import torch

        with trt_constructing("a runtime"):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise SwinedgeError(f"TensorRT could not deserialize {self.plan}: rebuild it with swinedge build-engine")
        self.context = self.engine.create_execution_context()
        if self.context is None:  # its activation memory could not be allocated (NVIDIA/TensorRT#3017, #3554)
            raise SwinedgeError(self._no_context_message())
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.output_name = self.output_names[0]
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16}
        self._dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in (self.input_name, *self.output_names)}
        self._in_dtype = self._dtypes[self.input_name]
        self._out_dtype = self._dtypes[self.output_name]
        precision = self.manifest.get("precision", "")
        self.name = f"tensorrt-{precision}" + ("-plugin" if self.manifest.get("plugin", {}).get("used") else "")
        return self

    @property
    def batch_range(self) -> tuple[int, int] | None:
        profile = self.manifest.get("profile")
        return (profile["min"][0], profile["max"][0]) if profile else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._bound(batch) as outs:
            result = outs[self.output_name].float().cpu()
        self.stream.synchronize()
        return result.numpy()

    def infer_tensors(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the plan (a plan built from a graph with intermediate tensors
        marked as outputs: :func:`swinedge.error_map.error_map` on TensorRT), float32."""
        with self._bound(batch) as outs:
            result = {name: t.float().cpu() for name, t in outs.items()}
        self.stream.synchronize()
        return {name: t.numpy() for name, t in result.items()}

    @contextmanager
    def _bound(self, batch: np.ndarray):
        """Run ``batch`` on the runner's stream; yields the output buffers (name -> tensor),
        to be read inside the block. The profile and the input shape are set only when they
        change, and output buffers are kept per input shape and output (see module)."""
        import torch

        assert self.context is not None, "call load() first"
        profile = check_input_covered(self.manifest, tuple(batch.shape))
        with torch.cuda.stream(self.stream):
            x = torch.from_numpy(np.ascontiguousarray(batch)).to("cuda", non_blocking=False).to(self._in_dtype)
            shape = tuple(x.shape)
            self._select_profile(profile)
            if shape != self._shape:
                if not self.context.set_input_shape(self.input_name, shape):
                    raise SwinedgeError(
                        f"TensorRT refused input shape {list(shape)}: it is outside optimization profile {self._profile} of {self.plan} "
                        "(the plan does not match its manifest): rebuild the engine with swinedge build-engine"
                    )
                self._shape = shape
            outs = {}
            for name in self.output_names:
                y = self._outputs.get((shape, name))
                if y is None:
                    out_shape = tuple(self.context.get_tensor_shape(name))
                    y = self._outputs[(shape, name)] = torch.empty(out_shape, device="cuda", dtype=self._dtypes[name])
                outs[name] = y
            for name, t in ((self.input_name, x), *outs.items()):
                if not self.context.set_tensor_address(name, t.data_ptr()):
                    raise SwinedgeError(f"TensorRT refused the address of tensor {name} of {self.plan}: report this line as a swinedge bug")
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise SwinedgeError("TensorRT execution failed")
            yield outs

    def _no_context_message(self) -> str:
        """Why ``create_execution_context`` answered None, and what to do."""
        size = self.device_memory_bytes
        memory = f"its {_format_bytes(size)} of device memory" if size else "its device memory"
        batches = [p["max"][0] for p in engine_profiles(self.manifest) if p.get("max")]
        batch = f" at the profile's max batch {max(batches)}" if batches else ""
        return (
            f"TensorRT could not create an execution context for {self.plan}: {memory} for activations{batch} could not be "
            "allocated on the GPU; rebuild it with a smaller --max-batch, or free GPU memory (other processes, Jetson's shared memory)"
        )

    def _select_profile(self, index: int) -> None:
        """Switch the context to optimization profile ``index`` (an engine of several
        sizes); the input shape must be set again after a switch."""
        if index != self._profile:
            if not self.context.set_optimization_profile_async(index, self.stream.cuda_stream):
                raise SwinedgeError(f"TensorRT could not select optimization profile {index} of {self.plan}")
            self._profile = index
            self._shape = None

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory TensorRT allocates for the context (outside torch's allocator)."""
        if self.engine is None:
            return 0
        size = getattr(self.engine, "device_memory_size_v2", None)  # 10.x and 11.x
        return int(size if size is not None else getattr(self.engine, "device_memory_size", 0))

    @property
    def input_spec(self) -> dict[str, Any]:
        shape = self.manifest.get("input", {}).get("shape") or [None, 3, None, None]
        cfg = self.manifest.get("config") or {}
        from swinedge.runners.ort_runner import backbone_spec

        spec = {"img_size": shape[2], "in_chans": shape[1], "num_classes": cfg.get("num_classes"), "preprocess": self.manifest.get("preprocess")}
        return {**spec, **backbone_spec(self.manifest)}

    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.infer_tensors(batch)

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.stream = None
        self._outputs.clear()
        self._shape = None
        self._profile = 0


def _format_bytes(size: int) -> str:
    """Device memory in MiB below 1 GiB, else in GiB."""
    if size < 1 << 30:
        return f"{size / (1 << 20):.0f} MiB"
    return f"{size / (1 << 30):.1f} GiB"
