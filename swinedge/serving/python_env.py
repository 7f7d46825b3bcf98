"""The Python environment a local ``tritonserver``'s Python backend runs in.

The backend's stub process embeds libpython and takes its ``sys.path`` from the first
``python3`` on ``PATH`` (a virtual environment there is honoured through its
``pyvenv.cfg``), not from ``PYTHONPATH``. The stub in the ``nvidia-pytriton`` wheel
(Triton 2.51) was built for NumPy 1: under NumPy 2 the arrays it hands to Python hold
garbage (a BYTES input reads back as its first byte repeated). So its environment is a
virtual environment of its own, with NumPy 1, Pillow and ONNX Runtime, made once:

    python -m swinedge.serving.python_env [FOLDER]

It downloads those three packages from the package index: it runs only when asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from swinedge.errors import SwinedgeError

PACKAGES = ("numpy>=1.24,<2", "pillow>=10", "onnxruntime>=1.18")
ENV_VARIABLE = "SWINEDGE_TRITON_PYTHON_ENV"


def default_python_env() -> Path:
    """``$SWINEDGE_TRITON_PYTHON_ENV``, else ``~/.cache/swinedge/triton-python``."""
    given = os.environ.get(ENV_VARIABLE)
    return Path(given) if given else Path.home() / ".cache" / "swinedge" / "triton-python"


def python_env_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a usable stub environment (None when it is)."""
    if not (folder / "pyvenv.cfg").is_file() or not (folder / "bin" / "python3").exists():
        return f"no Python environment for Triton's Python backend at {folder}: make it with `python -m swinedge.serving.python_env {folder}`"
    if not (folder / ".swinedge-ready").is_file():
        return f"the Python environment at {folder} is incomplete: make it again with `python -m swinedge.serving.python_env {folder}`"
    return None


def python_env_version(folder: Path) -> tuple[int, int]:
    for line in (folder / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            major, minor = value.strip().split(".")[:2]
            return int(major), int(minor)
    return sys.version_info[:2]


def make_python_env(folder: str | Path) -> Path:
    """Create the environment at ``folder`` (a venv of this interpreter, then PACKAGES)."""
    folder = Path(folder)
    marker = folder / ".swinedge-ready"
    if marker.is_file():
        return folder
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(folder)], check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python3"), "install", "-q", "--disable-pip-version-check", *PACKAGES],
            check=True,
        )
    except subprocess.CalledProcessError as e:
        raise SwinedgeError(f"making the Triton Python environment at {folder} failed ({e}): check the package index is reachable") from None
    marker.write_text(" ".join(PACKAGES) + "\n")
    return folder


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default_python_env()
    print(make_python_env(target))
