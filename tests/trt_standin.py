"""A minimal stand-in for TensorRT's compiled module ``tensorrt_bindings/tensorrt.so``.

Only what NVIDIA's pure-Python code (``__init__.py``, ``tensorrt/plugin``) and the
contract replay need, shaped as the binding shapes it (``PluginField.data`` is a 1-D
numpy array of the field's type, as pybind11 makes it), and filtered per version:
:func:`build` exports a name, or an enum member, only when that version's compiled
module binds it, so NVIDIA's code cannot lean on a name its version lacks.

It is not TensorRT: nothing here parses, builds, loads PTX or runs a kernel. Dimension
expressions are small trees that the replay evaluates for concrete batch sizes.
"""

from __future__ import annotations

import types
from typing import Any, Container, Iterable

import numpy as np


# -- enums (pybind11-like: members are instances, ``__members__``, int values) ---------
class _EnumMember:
    def __init__(self, enum_name: str, name: str, value: int):
        self.name, self.value, self._enum = name, value, enum_name

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EnumMember) and (other._enum, other.value) == (self._enum, self.value)

    def __hash__(self) -> int:
        return hash((self._enum, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum}.{self.name}: {self.value}>"

    __str__ = lambda self: f"{self._enum}.{self.name}"  # noqa: E731


def _enum(name: str, members: Iterable[str], names: Container[str]) -> type:
    cls = type(name, (_EnumMember,), {})
    kept = {m: cls(name, m, i) for i, m in enumerate(members) if m in names}
    for member_name, member in kept.items():
        setattr(cls, member_name, member)
    cls.__members__ = kept
    return cls


# -- plugin fields ---------------------------------------------------------------------
_FIELD_NP = {"FLOAT32": np.float32, "FLOAT64": np.float64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
             "INT64": np.int64, "CHAR": np.int8, "UNKNOWN": np.int8}  # fmt: skip


class PluginField:
    """``.data`` is a 1-D numpy array of the field's type, as the binding returns it."""

    def __init__(self, name: str = "", data: Any = None, type: Any = None):  # noqa: A002 - binding's keyword
        self.name = name
        self.type = type
        raw = b"" if data is None else (bytes(data) if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data).tobytes())
        self._raw = raw
        dtype = _FIELD_NP.get(getattr(type, "name", "UNKNOWN"))
        if dtype is None:
            raise AttributeError(f"stand-in: no numpy view for field type {type}")
        self.data = np.frombuffer(raw, dtype=dtype).copy()
        self.size = len(self.data)


class PluginFieldCollection(list):
    pass


# -- shapes and symbolic dimensions ------------------------------------------------------
class IDimensionExpr:
    """A constant, a named symbol (``batch``) or an operation over two expressions."""

    def __init__(self, op: Any = None, a: Any = None, b: Any = None, value: int | None = None, symbol: str | None = None):
        self.op, self.a, self.b, self.value, self.symbol = op, a, b, value, symbol

    def is_constant(self) -> bool:
        return self.value is not None

    def get_constant_value(self) -> int:
        return int(self.value)

    def evaluate(self, env: dict[str, int]) -> int:
        if self.value is not None:
            return self.value
        if self.symbol is not None:
            return env[self.symbol]
        x, y = self.a.evaluate(env), self.b.evaluate(env)
        return _OPS[self.op.name](x, y)


_OPS = {
    "SUM": lambda x, y: x + y, "PROD": lambda x, y: x * y, "MAX": max, "MIN": min, "SUB": lambda x, y: x - y,
    "EQUAL": lambda x, y: int(x == y), "LESS": lambda x, y: int(x < y), "FLOOR_DIV": lambda x, y: x // y,
    "CEIL_DIV": lambda x, y: -(-x // y),
}  # fmt: skip


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        return IDimensionExpr(value=int(value))

    def operation(self, op: Any, a: IDimensionExpr, b: IDimensionExpr) -> IDimensionExpr:
        if a.is_constant() and b.is_constant():
            return IDimensionExpr(value=_OPS[op.name](a.value, b.value))
        return IDimensionExpr(op=op, a=a, b=b)

    def declare_size_tensor(self, *args: Any) -> IDimensionExpr:
        raise NotImplementedError("stand-in: size tensors are not used by swinedge")


class DimsExprs(list):
    def __init__(self, n: int | Iterable = 0):
        super().__init__([None] * n if isinstance(n, int) else n)


class Dims(tuple):
    MAX_DIMS = 8

    def __new__(cls, shape: Any = ()):
        return super().__new__(cls, () if isinstance(shape, int) else tuple(shape))


class PluginTensorDesc:
    def __init__(self) -> None:
        self.type = None
        self.format = None
        self.dims = Dims()
        self.scale = 1.0


class DynamicPluginTensorDesc:
    def __init__(self) -> None:
        self.desc = PluginTensorDesc()
        self.min = Dims()
        self.max = Dims()
        self.opt = Dims()


class KernelLaunchParams:
    """What TensorRT hands ``get_launch_params``: settable grid/block/shared-memory slots."""

    def __init__(self) -> None:
        for slot in ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem"):
            setattr(self, slot, None)


class ISymExprs(list):
    @property
    def nbSymExprs(self) -> int:  # noqa: N802 - binding's name
        return len(self)

    @nbSymExprs.setter
    def nbSymExprs(self, n: int) -> None:  # noqa: N802
        self[:] = [None] * n


# -- plugin interfaces and the registry ----------------------------------------------------
def _interface(name: str) -> type:
    return type(name, (), {"__init__": lambda self: None})


class _Registry:
    def __init__(self) -> None:
        self.creators: dict[tuple[str, str, str], Any] = {}

    def register_creator(self, creator: Any, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = "") -> Any:
        return self.creators.get((name, version, namespace))


_REGISTRY = _Registry()


class _NoLibrary:
    """TensorRT classes that need libnvinfer: present (for names), never constructible."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError(f"stand-in: {type(self).__name__} needs libnvinfer")


class ILogger:
    pass


def build(names: Container[str]) -> types.ModuleType:
    """The stand-in module for one TensorRT version (``names``: what its .so binds)."""
    m = types.ModuleType("tensorrt.tensorrt")
    e = lambda n, members: _enum(n, members, names)  # noqa: E731
    severity = e("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
    logger_base = type("ILogger", (ILogger,), {"Severity": severity})

    class Logger(logger_base):
        def __init__(self, min_severity: Any = None):
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    data_type = e("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4", "FP4", "E8M0"])
    candidates: dict[str, Any] = {
        "ILogger": logger_base,
        "Logger": Logger,
        "DataType": data_type,
        "TensorFormat": e("TensorFormat", ["LINEAR", "CHW2", "HWC8", "CHW4", "CHW16", "CHW32", "DHWC8", "CDHW32", "HWC", "DLA_LINEAR", "DLA_HWC4", "HWC16", "DHWC"]),
        "PluginFieldType": e("PluginFieldType", ["FLOAT16", "FLOAT32", "FLOAT64", "INT8", "INT16", "INT32", "CHAR", "DIMS", "UNKNOWN", "BF16", "INT64", "FP8", "INT4", "FP4"]),
        "TensorRTPhase": e("TensorRTPhase", ["BUILD", "RUNTIME"]),
        "QuickPluginCreationRequest": e("QuickPluginCreationRequest", ["UNKNOWN", "PREFER_JIT", "PREFER_AOT", "STRICT_JIT", "STRICT_AOT"]),
        "PluginCapabilityType": e("PluginCapabilityType", ["CORE", "BUILD", "RUNTIME"]),
        "DimensionOperation": e("DimensionOperation", ["SUM", "PROD", "MAX", "MIN", "SUB", "EQUAL", "LESS", "FLOOR_DIV", "CEIL_DIV"]),
        "PluginArgType": e("PluginArgType", ["INT"]),
        "PluginArgDataType": e("PluginArgDataType", ["INT8", "INT16", "INT32"]),
        "TensorIOMode": e("TensorIOMode", ["NONE", "INPUT", "OUTPUT"]),
        "PluginField": PluginField,
        "PluginFieldCollection": PluginFieldCollection,
        "IDimensionExpr": IDimensionExpr,
        "IExprBuilder": IExprBuilder,
        "DimsExprs": DimsExprs,
        "Dims": Dims,
        "PluginTensorDesc": PluginTensorDesc,
        "DynamicPluginTensorDesc": DynamicPluginTensorDesc,
        "KernelLaunchParams": KernelLaunchParams,
        "ISymExprs": ISymExprs,
        "get_plugin_registry": lambda: _REGISTRY,
    }
    for iface in ("IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild", "IPluginV3QuickRuntime", "IPluginV3QuickAOTBuild",
                  "IPluginCreatorV3Quick", "ISymExpr", "ITensor"):  # fmt: skip
        candidates[iface] = _interface(iface)
    for cls in ("ICudaEngine", "IExecutionContext", "Runtime", "IHostMemory", "Builder", "INetworkDefinition", "OnnxParser", "IBuilderConfig"):
        candidates[cls] = type(cls, (_NoLibrary,), {})
    aliases = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int8": "INT8", "int32": "INT32", "int64": "INT64",
               "bool": "BOOL", "uint8": "UINT8", "fp8": "FP8", "int4": "INT4", "fp4": "FP4"}  # fmt: skip
    for alias, member in aliases.items():
        if member in data_type.__members__:
            candidates[alias] = data_type.__members__[member]
    exported = [n for n in candidates if n in names]
    for n in exported:
        setattr(m, n, candidates[n])
    m.__all__ = exported
    return m
