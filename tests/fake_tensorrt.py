"""Recording fakes of the TensorRT calls swinedge makes, and of torch's CUDA, for tests
that run swinedge's TensorRT layer on a CPU machine.

Everything here is OURS, not NVIDIA's: it is neither the ``tensorrt`` package nor its
compiled bindings (``tests/test_trt_contract.py`` checks the names against those). Each
fake answers the way TensorRT's documentation says the real call answers, including its
failure answers (``None``, ``False``, ``-1``) where a test asks for one, and records what
it was asked, so a test can check what swinedge does with each answer. They prove
swinedge's handling of those answers, nothing about TensorRT itself.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

# Names of the calls a FakeTensorRT can be told to fail (``fail={...}``), with the
# failure answer TensorRT gives for each.
# Constructors raise what NVIDIA's bindings raise when libnvinfer gives them null
# (pybind11's TypeError, measured on the real modules in tests/test_trt_contract.py).
NULL_FACTORY_ERROR = TypeError("__init__(): incompatible return: pybind11::init(): factory function returned nullptr")
FAILURES = {
    "Builder": NULL_FACTORY_ERROR,
    "Runtime": NULL_FACTORY_ERROR,
    "create_network": None,
    "OnnxParser": NULL_FACTORY_ERROR,
    "create_builder_config": None,
    "create_optimization_profile": None,
    "add_optimization_profile": -1,
    "build_serialized_network": None,
    "deserialize_cuda_engine": None,
}


class FakeTensorRT:
    """Stands in for the ``tensorrt`` module (ours, not NVIDIA's): records every call in
    ``calls`` and the ONNX graphs its parser is handed in ``parsed``.

    ``fail``: calls (see :data:`FAILURES`) that give TensorRT's failure answer.
    ``forbid``: every call raises AssertionError (for checks that must come first).
    ``engine``: what ``Runtime.deserialize_cuda_engine`` returns."""

    float32, float16, bfloat16 = "float32", "float16", "bfloat16"

    class NetworkDefinitionCreationFlag:  # 11.x numbering
        STRONGLY_TYPED, PREFER_JIT_PYTHON_PLUGINS, PREFER_AOT_PYTHON_PLUGINS = 0, 1, 2

    class MemoryPoolType:
        WORKSPACE = 0

    class TensorIOMode:
        INPUT, OUTPUT = 1, 2

    QuickPluginCreationRequest = object  # present: the AOT plugin gate opens

    def __init__(self, version: str = "11.4.0", *, fail: set[str] | frozenset = frozenset(), forbid: bool = False, engine: Any = None):
        assert set(fail) <= set(FAILURES), set(fail) - set(FAILURES)
        self.__version__ = version
        self.fail = set(fail)
        self.forbid = forbid
        self.engine = engine
        self.calls: list[tuple] = []
        self.parsed: list[onnx.ModelProto] = []
        fake = self

        class Logger:
            WARNING, VERBOSE = 2, 4

            def __init__(self, severity: int) -> None:
                fake.call("Logger", severity)

        self.Logger = Logger

    def call(self, name: str, *args: Any) -> Any:
        """Record a call; the failure answer when it is to fail, else ``...``."""
        if self.forbid:
            raise AssertionError(f"TensorRT was called ({name}) before the check that must come first")
        self.calls.append((name, *args))
        if name in self.fail and isinstance(FAILURES[name], Exception):
            raise FAILURES[name]
        return FAILURES[name] if name in self.fail else ...

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def Builder(self, logger) -> "_Builder":  # noqa: N802 - TensorRT's name
        self.call("Builder")
        return _Builder(self)

    def OnnxParser(self, network, logger):  # noqa: N802
        self.call("OnnxParser")
        return _Parser(self, network)

    def Runtime(self, logger) -> "_Runtime":  # noqa: N802
        self.call("Runtime")
        return _Runtime(self)


class _Builder:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def create_network(self, flags: int):
        return None if self.trt.call("create_network", flags) is None else _Network()

    def create_builder_config(self):
        return None if self.trt.call("create_builder_config") is None else _Config(self.trt)

    def create_optimization_profile(self):
        return None if self.trt.call("create_optimization_profile") is None else _Profile(self.trt)

    def build_serialized_network(self, network, config):
        return None if self.trt.call("build_serialized_network") is None else b"FAKE PLAN"


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class _Network:
    def __init__(self) -> None:
        self.input_name = "input"

    def get_input(self, index: int) -> _Input:
        return _Input(self.input_name)


class _Parser:
    num_errors = 0

    def __init__(self, trt: FakeTensorRT, network: _Network) -> None:
        self.trt, self.network = trt, network

    def parse_from_file(self, path: str) -> bool:
        self.trt.call("parse_from_file", path)
        proto = onnx.load(path)
        self.trt.parsed.append(proto)
        if proto.graph.input:
            self.network.input_name = proto.graph.input[0].name
        return True


class _Config:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt
        self.profiles = 0

    def set_memory_pool_limit(self, pool: int, size: int) -> None:
        self.trt.call("set_memory_pool_limit", pool, size)

    def create_timing_cache(self, data: bytes):
        return ("cache", data)

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        return True

    def add_optimization_profile(self, profile) -> int:
        if self.trt.call("add_optimization_profile") is not ...:
            return -1
        self.profiles += 1
        return self.profiles - 1


class _Profile:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self.trt.call("set_shape", name, tuple(lo), tuple(opt), tuple(hi))


class _Runtime:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def deserialize_cuda_engine(self, data: bytes):
        return None if self.trt.call("deserialize_cuda_engine") is None else self.trt.engine


class FakeContext:
    """Stands in for TensorRT's IExecutionContext (ours, not NVIDIA's): records each call
    in ``calls``. ``output_shapes`` gives each output's shape from the input shape;
    ``accepts(shape)`` is what ``set_input_shape`` answers (False: outside the active
    profile); ``bad_addresses`` are tensors whose ``set_tensor_address`` answers False.
    ``execute_async_v3`` writes the run's number into every bound output buffer it finds
    in ``memory`` (the tensors :func:`fake_cuda` allocated)."""

    def __init__(
        self,
        output_shapes: dict[str, Callable[[tuple], tuple]] | None = None,
        *,
        accepts: Callable[[tuple], bool] = lambda shape: True,
        bad_addresses: tuple[str, ...] = (),
        memory: list | None = None,
    ) -> None:
        self.output_shapes = output_shapes or {}
        self.accepts = accepts
        self.bad_addresses = bad_addresses
        self.memory = memory if memory is not None else []
        self.calls: list[tuple] = []
        self.addresses: dict[str, int] = {}
        self.input_shape: tuple | None = None
        self.runs = 0

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.calls.append(("profile", index))
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(shape)
        self.calls.append(("set_input_shape", name, shape))
        ok = self.accepts(shape)
        if ok:
            self.input_shape = shape
        return ok

    def get_tensor_shape(self, name: str) -> tuple:
        assert self.input_shape is not None, "output shape read before the input shape was set"
        return self.output_shapes[name](self.input_shape)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.calls.append(("set_tensor_address", name, address))
        if name in self.bad_addresses:
            return False
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.calls.append(("execute_async_v3",))
        self.runs += 1
        for name, address in self.addresses.items():
            for t in self.memory:
                if t.data_ptr() == address and name in self.output_shapes:
                    t.fill_(float(self.runs))
        return True


class FakeEngine:
    """Stands in for TensorRT's ICudaEngine (ours, not NVIDIA's): one input, ``outputs``
    (name -> shape from the input shape), float32 tensors. ``context`` is what
    ``create_execution_context`` returns (None: activation memory could not be allocated)."""

    def __init__(self, outputs: dict[str, Callable[[tuple], tuple]], context: Any = "make", *, input_name: str = "input", device_memory: int | None = 512 << 20):
        self.input_name = input_name
        self.outputs = outputs
        self.context = FakeContext(outputs) if context == "make" else context
        if device_memory is not None:
            self.device_memory_size_v2 = device_memory

    @property
    def num_io_tensors(self) -> int:
        return 1 + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return [self.input_name, *self.outputs][index]

    def get_tensor_mode(self, name: str) -> int:
        return FakeTensorRT.TensorIOMode.INPUT if name == self.input_name else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> str:
        return FakeTensorRT.float32

    def create_execution_context(self):
        return self.context


class FakeStream:
    """Stands in for torch.cuda.Stream (ours): a handle and a synchronize that does nothing."""

    cuda_stream = 7

    def synchronize(self) -> None:
        pass


def fake_cuda(monkeypatch) -> list[torch.Tensor]:
    """torch's CUDA as swinedge's TensorRT code uses it, on the CPU (ours, not torch's):
    ``Tensor.to("cuda")`` and ``torch.empty(device="cuda")`` give CPU tensors, streams
    do nothing. Returns the list of tensors ``torch.empty`` allocated for "cuda"."""
    allocated: list[torch.Tensor] = []
    real_to, real_empty = torch.Tensor.to, torch.empty

    def to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return real_to(self, *args, **kwargs)

    def empty(*args, device=None, **kwargs):
        on_gpu = isinstance(device, str) and device.startswith("cuda")
        t = real_empty(*args, device="cpu" if on_gpu else device, **kwargs)
        if on_gpu:
            allocated.append(t)
        return t

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    return allocated


GPU = ("NVIDIA H100 80GB HBM3", 90)


def write_plan(path: Path, **fields: Any) -> Path:
    """A plan file (its bytes are not an engine: the fake runtime never reads them) with a
    manifest as build_engine writes one, for this fake GPU and TensorRT."""
    from swinedge.manifest import write_artifact_with_manifest

    fields.setdefault("tensorrt", {"version": "11.4.0", "gpu": GPU[0], "compute_capability": GPU[1], "strongly_typed": True})
    fields.setdefault("precision", "fp32")
    write_artifact_with_manifest("tensorrt-engine", path, b"FAKE PLAN", **fields)
    return path


def use_fake_runtime(monkeypatch, trt: FakeTensorRT, gpu: tuple[str, int] = GPU) -> None:
    """Make the TensorRT runner load with ``trt`` on ``gpu`` (name, compute capability)."""
    import swinedge.runners.trt_runner as trt_runner

    monkeypatch.setattr(trt_runner, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_runner, "gpu_identity", lambda: gpu)


def use_fake_builder(monkeypatch, trt: FakeTensorRT, gpu: tuple[str, int] = GPU) -> None:
    """Make build_engine build with ``trt`` on ``gpu``; the plugin's registration module
    (which imports the real ``tensorrt``) is replaced by a recording one of ours."""
    import sys
    import types

    import swinedge.engine as engine
    import swinedge.plugin

    monkeypatch.setattr(engine, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(engine, "gpu_identity", lambda: gpu)
    registration = types.ModuleType("swinedge.plugin.tensorrt_plugin")
    registration.set_compute_capability = lambda cc: trt.calls.append(("set_compute_capability", cc))
    monkeypatch.setitem(sys.modules, "swinedge.plugin.tensorrt_plugin", registration)
    monkeypatch.setattr(swinedge.plugin, "tensorrt_plugin", registration, raising=False)
