"""NVIDIA's real TensorRT bindings wheels, for contract tests on a machine without TensorRT.

``tensorrt-cu12-bindings==X`` on PyPI (about 1.3 MB) holds the compiled module
``tensorrt_bindings/tensorrt.so`` (it cannot be imported without libnvinfer), NVIDIA's
pure-Python package ``__init__.py`` and, from 10.6, NVIDIA's whole quickly deployable
plugin layer ``tensorrt_bindings/plugin/``. This module downloads those wheels into a
cache (never installs them), reads the names the compiled module binds (its strings) and
imports NVIDIA's Python code on top of :mod:`trt_standin`, a minimal stand-in for the
compiled module that exposes only names that version binds.

What that proves: NVIDIA's own Python (decorator validation, attribute conversion, the
AOT plugin class, launch-parameter plumbing) accepts swinedge's plugin, and every name
swinedge touches exists in that version. What it cannot: anything libnvinfer does
(parsing, PTX loading and launch, format negotiation, numerics).
"""

from __future__ import annotations

import ast
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


def load_tensorrt(version: str):
    """Import ``tensorrt`` = NVIDIA's ``__init__.py`` (and ``tensorrt.plugin``, where the
    version has it) over the stand-in compiled module. Call once per process."""
    import trt_standin

    if "tensorrt" in sys.modules:
        raise RuntimeError("tensorrt is already imported in this process")
    pkg = wheel_dir(version) / "tensorrt_bindings"
    sys.modules["tensorrt.tensorrt"] = trt_standin.build(bound_names(version))
    spec = importlib.util.spec_from_file_location("tensorrt", pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensorrt"] = module
    spec.loader.exec_module(module)
    return module
