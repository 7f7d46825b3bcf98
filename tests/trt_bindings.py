"""NVIDIA's real TensorRT bindings, imported on a machine without TensorRT, for contract tests.

``tensorrt-cu12-bindings==X`` on PyPI (about 1.3 MB) holds NVIDIA's compiled module
``tensorrt_bindings/tensorrt.so``, NVIDIA's ``__init__.py`` and, from 10.6, NVIDIA's
quickly deployable plugin layer ``tensorrt_bindings/plugin/``. This module downloads those
wheels into a cache (never installs them) and imports them **unmodified**.

``tensorrt.so`` links against libnvinfer, libnvonnxparser and libnvinfer_plugin, of which
it imports nine entry points. Those three libraries are ours: built here at test time from
``tests/trt_harness/`` with the machine's C/C++ compiler, under the sonames NVIDIA's
module asks for, and loaded with ``RTLD_GLOBAL`` before NVIDIA's ``__init__.py`` runs.

What is NVIDIA's: every class, method, enum, signature (``__doc__``), argument
conversion, pybind11 trampoline and all of ``tensorrt.plugin``. What is ours: the nine
entry points (the builder, runtime, refitter and parser factories return null, so no
engine can be built or run), the plugin registry that keeps the creators
``tensorrt.plugin`` registers, the dimension-expression builder and its expressions, the
launch-parameter and extra-argument objects, and the ``harness_*`` driver functions
through which :class:`Harness` calls a plugin's C++ virtual functions as libnvinfer does.
Nothing here parses ONNX, loads PTX, launches a kernel or computes a number on a GPU.
"""

from __future__ import annotations

import ast
import ctypes
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "tensorrt-cu12-bindings"


def cache_dir() -> Path:
    return Path(os.environ.get("SWINEDGE_TRT_WHEELS", REPO / ".cache" / "trt-bindings"))


def wheel_dir(version: str) -> Path:
    """The unpacked wheel of ``version`` (downloaded on first use); its package is
    ``<dir>/tensorrt_bindings``."""
    root = cache_dir()
    target = root / version
    if (target / "tensorrt_bindings" / "tensorrt.so").exists():
        return target
    download = root / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    wheels = [w for w in download.glob(f"tensorrt_cu12_bindings-{version}-*.whl")]
    if not wheels:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "-d", str(download), f"{PACKAGE}=={version}",
        ]  # fmt: skip
        last = ""
        for _ in range(3):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
            last = (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
        else:
            raise RuntimeError(f"cannot download {PACKAGE}=={version}: {last}")
        wheels = list(download.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    partial = root / f".{version}.partial"
    for stale in (partial, target):
        shutil.rmtree(stale, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as z:
        members = [m for m in z.namelist() if m.startswith("tensorrt_bindings/")]
        z.extractall(partial, members)
    os.replace(partial, target)
    return target


class BoundNames:
    """The names one version's compiled module binds. ``name in bound`` is True for a
    whole string of the module and for the tail of one: the linker stores ``INPUT`` inside
    ``CONDITIONAL_INPUT`` (tail merging), so a short name may exist only as a tail."""

    def __init__(self, tokens: set[str]):
        self.tokens = frozenset(tokens)
        self._tails = None

    def __contains__(self, name: object) -> bool:
        if name in self.tokens:
            return True
        if self._tails is None:
            self._tails = {t[i:] for t in self.tokens for i in range(1, len(t))}
        return name in self._tails

    def missing(self, names) -> list[str]:
        return sorted(n for n in names if n not in self)


@lru_cache(maxsize=None)
def bound_names(version: str) -> BoundNames:
    """Every identifier in the compiled module's strings, plus the names NVIDIA's
    ``__init__.py`` defines in Python: a name absent here does not exist in ``version``."""
    pkg = wheel_dir(version) / "tensorrt_bindings"
    data = (pkg / "tensorrt.so").read_bytes()
    names = {m.decode() for m in re.findall(rb"[A-Za-z_][A-Za-z0-9_]*", data)}
    tree = ast.parse((pkg / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                elif isinstance(t, ast.Attribute):
                    names.add(t.attr)
    return BoundNames(names)


def has_plugin_package(version: str) -> bool:
    return (wheel_dir(version) / "tensorrt_bindings" / "plugin" / "_lib.py").exists()




HARNESS_SOURCES = Path(__file__).resolve().parent / "trt_harness"
# (soname stem, source, compiler) of the three libraries tensorrt.so links against.
_LIBRARIES = (
    ("libnvinfer", "libnvinfer_harness.cpp", "g++"),
    ("libnvonnxparser", "libnvonnxparser_stub.c", "gcc"),
    ("libnvinfer_plugin", "libnvinfer_plugin_stub.c", "gcc"),
)


class HarnessUnavailable(RuntimeError):
    """The stub libraries cannot be built here (no C/C++ compiler)."""


def trt_major(version: str) -> int:
    return int(version.split(".", 1)[0])


def build_harness(major: int) -> Path:
    """Compile the three libraries for TensorRT ``major`` (10 or 11) into the cache, once
    per source content; returns their folder."""
    sources = [HARNESS_SOURCES / src for _, src, _ in _LIBRARIES]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    target = cache_dir() / "harness" / f"{digest}-{major}"
    if all((target / f"{stem}.so.{major}").exists() for stem, _, _ in _LIBRARIES):
        return target
    for _, _, compiler in _LIBRARIES:
        if shutil.which(compiler) is None:
            raise HarnessUnavailable(f"no {compiler} on this machine: the libnvinfer stand-in libraries cannot be built")
    partial = target.parent / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for stem, src, compiler in _LIBRARIES:
        soname = f"{stem}.so.{major}"
        cmd = [compiler, "-shared", "-fPIC", "-O1", "-Wall", f"-DTRT_MAJOR={major}", f"-Wl,-soname,{soname}", "-o", str(partial / soname), str(HARNESS_SOURCES / src)]
        if compiler == "g++":
            cmd[1:1] = ["-std=c++17", "-Wno-unused-parameter"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"building {soname} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(partial, target)
    except OSError:  # another process built it first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def load_tensorrt(version: str):
    """Import ``tensorrt`` = NVIDIA's unmodified package of ``version`` over our three
    libraries; returns ``(tensorrt module, Harness)``. One version per process."""
    if "tensorrt" in sys.modules:
        raise RuntimeError("tensorrt is already imported in this process")
    major = trt_major(version)
    libs = build_harness(major)
    loaded = [ctypes.CDLL(str(libs / f"{stem}.so.{major}"), mode=ctypes.RTLD_GLOBAL) for stem, _, _ in _LIBRARIES]
    pkg = wheel_dir(version) / "tensorrt_bindings"
    spec = importlib.util.spec_from_file_location("tensorrt", pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensorrt"] = module
    spec.loader.exec_module(module)
    if not hasattr(module.tensorrt, "__file__") or Path(module.tensorrt.__file__).resolve() != (pkg / "tensorrt.so").resolve():
        raise RuntimeError("tensorrt.tensorrt is not NVIDIA's compiled module")
    # PyDLL: the GIL stays held while C++ calls back into the bindings' trampolines.
    return module, Harness(ctypes.PyDLL(str(libs / f"libnvinfer.so.{major}"), mode=ctypes.RTLD_GLOBAL), major, loaded)


class TensorSpec(ctypes.Structure):
    """``harness::TensorSpec``: a tensor's type, format and profile dimensions."""

    _fields_ = [("type", ctypes.c_int32), ("format", ctypes.c_int32), ("nbDims", ctypes.c_int32),
                ("desc", ctypes.c_int64 * 8), ("lo", ctypes.c_int64 * 8), ("opt", ctypes.c_int64 * 8), ("hi", ctypes.c_int64 * 8)]  # fmt: skip

    @classmethod
    def make(cls, dtype: int, fmt: int, desc, lo=None, opt=None, hi=None) -> "TensorSpec":
        s = cls()
        s.type, s.format, s.nbDims = int(dtype), int(fmt), len(desc)
        for field, dims in (("desc", desc), ("lo", lo or desc), ("opt", opt or desc), ("hi", hi or desc)):
            arr = getattr(s, field)
            for i, d in enumerate(dims):
                arr[i] = int(d)
        return s


P, I32, I64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
_SIGNATURES = {
    "harness_trt_major": ([], I32),
    "harness_registered_creators": ([], I32),
    "harness_find_creator": ([ctypes.c_char_p] * 3, P),
    "harness_interface_kind": ([P], ctypes.c_char_p),
    "harness_api_language": ([P], I32),
    "harness_field_names": ([P, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(I32), I32], I32),
    "harness_create_plugin": ([P, ctypes.c_char_p, ctypes.c_char_p, I32, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(P),
                               ctypes.POINTER(I32), ctypes.POINTER(I32), I32, I32], P),  # fmt: skip
    "harness_capability": ([P, I32], P),
    "harness_clone": ([P], P),
    "harness_num_outputs": ([P], I32),
    "harness_aliased_input": ([P, I32], I32),
    "harness_output_types": ([P, I32, ctypes.POINTER(I32), ctypes.POINTER(I32), I32, ctypes.POINTER(I32)], I32),
    "harness_constant": ([I64], P),
    "harness_symbol": ([I32], P),
    "harness_evaluate": ([P, ctypes.POINTER(I64), I32, ctypes.POINTER(I32)], I64),
    "harness_is_constant": ([P], I32),
    "harness_output_shapes": ([P, I32, ctypes.POINTER(I32), ctypes.POINTER(P), I32, ctypes.POINTER(I32), ctypes.POINTER(P)], I32),
    "harness_format_combinations": ([P, I32, I32, ctypes.POINTER(TensorSpec), ctypes.POINTER(I32), ctypes.POINTER(I32), I32], I32),
    "harness_configure": ([P, I32, I32, ctypes.POINTER(TensorSpec)], I32),
    "harness_tactics": ([P, ctypes.POINTER(I32), I32], I32),
    "harness_timing_cache_id": ([P], ctypes.c_char_p),
    "harness_set_tactic": ([P, I32], I32),
    "harness_launch_params": ([P, I32, ctypes.POINTER(I32), ctypes.POINTER(P), I32, ctypes.POINTER(TensorSpec), ctypes.POINTER(P),
                               ctypes.POINTER(I32), ctypes.POINTER(I32), ctypes.POINTER(I32), ctypes.POINTER(P), ctypes.POINTER(I32),
                               ctypes.POINTER(I32)], I32),  # fmt: skip
    "harness_get_kernel": ([P, I32, I32, ctypes.POINTER(TensorSpec), ctypes.c_char_p, ctypes.c_char_p, I32,
                            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(I32)], I32),  # fmt: skip
}
MAX_DIMS = 8
# PluginCapabilityType, TensorRTPhase, QuickPluginCreationRequest, PluginFieldType values
# (the headers' numbering; the tests also read them from NVIDIA's enums).
CORE, BUILD, RUNTIME = 0, 1, 2
PHASE_BUILD = 0
PREFER_AOT = 2


def _array(ctype, values):
    values = list(values)
    return (ctype * max(1, len(values)))(*values)


class Harness:
    """Calls a plugin's C++ virtual functions through our libnvinfer, as TensorRT does.

    Every method is one C++ call (or the two the builder pairs, such as the number of
    format combinations and the combinations); the arguments are built by our C++ as
    libnvinfer builds them, and the answers are what NVIDIA's trampolines return."""

    def __init__(self, lib, major: int, keep):
        self.lib, self.major, self._keep = lib, major, keep
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        if lib.harness_trt_major() != major:
            raise RuntimeError("the harness library was built for another TensorRT major version")

    # -- the registry and creation (onnx-tensorrt's FallbackPluginImporter) --------------------
    def find_creator(self, name: str, version: str, namespace: str) -> int | None:
        return self.lib.harness_find_creator(name.encode(), version.encode(), namespace.encode())

    def interface_kind(self, iface: int) -> str:
        return self.lib.harness_interface_kind(iface).decode()

    def field_names(self, creator: int) -> list[tuple[str, int]]:
        names, types = (ctypes.c_char_p * 64)(), (I32 * 64)()
        n = self.lib.harness_field_names(creator, names, types, 64)
        if n < 0:
            raise RuntimeError("getFieldNames returned null")
        if n > 64:
            raise RuntimeError(f"the creator declares {n} fields; the harness reads at most 64")
        return [(names[i].decode(), int(types[i])) for i in range(n)]

    def create_plugin(self, creator: int, name: str, namespace: str, fields: list[tuple[str, bytes, int, int]],
                      phase: int = PHASE_BUILD, request: int = PREFER_AOT) -> int | None:  # fmt: skip
        """``fields``: (name, raw bytes, PluginFieldType value, length in elements)."""
        buffers = [ctypes.create_string_buffer(raw, max(1, len(raw))) for _, raw, _, _ in fields]
        names = _array(ctypes.c_char_p, [f[0].encode() for f in fields])
        data = _array(P, [ctypes.cast(b, P) for b in buffers])
        types = _array(I32, [f[2] for f in fields])
        lengths = _array(I32, [f[3] for f in fields])
        plugin = self.lib.harness_create_plugin(creator, name.encode(), namespace.encode(), len(fields), names, data, types, lengths, phase, request)
        # The parser frees the field buffers once createPlugin returns: overwrite them, so
        # a plugin layer that kept a view of them answers the later calls wrongly.
        for b in buffers:
            ctypes.memset(b, 0xA5, len(b))
        return plugin

    def capability(self, plugin: int, kind: int) -> int | None:
        return self.lib.harness_capability(plugin, kind)

    def clone(self, plugin: int) -> int | None:
        return self.lib.harness_clone(plugin)

    # -- IPluginV3QuickBuild ---------------------------------------------------------------------
    def num_outputs(self, build: int) -> int:
        return self.lib.harness_num_outputs(build)

    def aliased_input(self, build: int, output: int) -> int:
        return self.lib.harness_aliased_input(build, output)

    def output_types(self, build: int, input_types: list[int], ranks: list[int], nb_outputs: int) -> tuple[int, list[int]]:
        out = (I32 * nb_outputs)()
        rc = self.lib.harness_output_types(build, len(input_types), _array(I32, input_types), _array(I32, ranks), nb_outputs, out)
        return rc, list(out)

    def constant(self, value: int) -> int:
        return self.lib.harness_constant(value)

    def symbol(self, index: int) -> int:
        return self.lib.harness_symbol(index)

    def evaluate(self, expr: int | None, env: list[int]) -> int | None:
        ok = I32(0)
        value = self.lib.harness_evaluate(expr, _array(I64, env), len(env), ctypes.byref(ok))
        return int(value) if ok.value else None

    def is_constant(self, expr: int) -> bool:
        return bool(self.lib.harness_is_constant(expr))

    def _exprs(self, dims_exprs: list[list[int]]):
        flat = [0] * (MAX_DIMS * len(dims_exprs))
        for i, dims in enumerate(dims_exprs):
            flat[i * MAX_DIMS : i * MAX_DIMS + len(dims)] = dims
        return _array(I32, [len(d) for d in dims_exprs]), _array(P, flat)

    def output_shapes(self, build: int, inputs: list[list[int]], nb_outputs: int) -> tuple[int, list[list[int]]]:
        nb, flat = self._exprs(inputs)
        out_nb, out_flat = (I32 * nb_outputs)(), (P * (MAX_DIMS * nb_outputs))()
        rc = self.lib.harness_output_shapes(build, len(inputs), nb, flat, nb_outputs, out_nb, out_flat)
        return rc, [[out_flat[i * MAX_DIMS + k] for k in range(out_nb[i])] for i in range(nb_outputs)]

    def format_combinations(self, build: int, specs: list[TensorSpec], nb_inputs: int) -> list[list[tuple[int, int]]]:
        n_io = len(specs)
        types, formats = (I32 * (64 * n_io))(), (I32 * (64 * n_io))()
        n = self.lib.harness_format_combinations(build, nb_inputs, n_io - nb_inputs, _array(TensorSpec, specs), types, formats, 64 * n_io)
        if n < 0:
            raise RuntimeError("getNbSupportedFormatCombinations / getSupportedFormatCombinations failed")
        if n > 64:
            raise RuntimeError(f"{n} format combinations; the harness reads at most 64")
        return [[(types[c * n_io + k], formats[c * n_io + k]) for k in range(n_io)] for c in range(n)]

    def configure(self, build: int, specs: list[TensorSpec], nb_inputs: int) -> int:
        return self.lib.harness_configure(build, nb_inputs, len(specs) - nb_inputs, _array(TensorSpec, specs))

    def tactics(self, build: int) -> list[int]:
        out = (I32 * 64)()
        n = self.lib.harness_tactics(build, out, 64)
        if n < 0:
            raise RuntimeError("getValidTactics failed")
        if n > 64:
            raise RuntimeError(f"{n} tactics; the harness reads at most 64")
        return list(out[:n])

    def timing_cache_id(self, build: int) -> str | None:
        raw = self.lib.harness_timing_cache_id(build)
        return None if raw is None else raw.decode()

    # -- IPluginV3QuickAOTBuild ------------------------------------------------------------------
    def set_tactic(self, aot: int, tactic: int) -> int:
        return self.lib.harness_set_tactic(aot, tactic)

    def launch_params(self, aot: int, inputs: list[list[int]], specs: list[TensorSpec]) -> dict:
        """{rc, slots: 7 x (expr, PluginArgType, PluginArgDataType), extra: [...]}; a slot the
        plugin never set has types -2."""
        nb, flat = self._exprs(inputs)
        slot_exprs, slot_types, slot_dtypes = (P * 7)(), (I32 * 7)(), (I32 * 7)()
        n_extra, extra_exprs, extra_types, extra_dtypes = I32(0), (P * 16)(), (I32 * 16)(), (I32 * 16)()
        rc = self.lib.harness_launch_params(aot, len(inputs), nb, flat, len(specs) - len(inputs), _array(TensorSpec, specs), slot_exprs, slot_types,
                                            slot_dtypes, ctypes.byref(n_extra), extra_exprs, extra_types, extra_dtypes)  # fmt: skip
        return {
            "rc": rc,
            "slots": [(slot_exprs[i], slot_types[i], slot_dtypes[i]) for i in range(7)],
            "extra": [(extra_exprs[i], extra_types[i], extra_dtypes[i]) for i in range(n_extra.value)],
        }

    def get_kernel(self, aot: int, specs: list[TensorSpec], nb_inputs: int) -> dict:
        """getKernel: {rc, name_at_return, name_after_allocations, kernel (bytes)}."""
        at_return, after = ctypes.create_string_buffer(512), ctypes.create_string_buffer(512)
        kernel, size = ctypes.c_void_p(), I32(0)
        rc = self.lib.harness_get_kernel(aot, nb_inputs, len(specs) - nb_inputs, _array(TensorSpec, specs), at_return, after, 512,
                                         ctypes.byref(kernel), ctypes.byref(size))  # fmt: skip
        blob = ctypes.string_at(kernel, size.value) if kernel.value and size.value > 0 else b""
        return {"rc": rc, "name_at_return": at_return.value.decode(), "name_after_allocations": after.value.decode(), "kernel": blob}
