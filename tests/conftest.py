"""Shared fixtures and the skip rules for hardware-marked tests.

``gpu`` tests need CUDA, ``tensorrt`` tests need TensorRT and CUDA, ``timm`` tests need
timm importable. Each skips with the reason where its requirement is absent.
"""

from __future__ import annotations

import importlib.util
import os

import torch

# Triton reads TRITON_INTERPRET once, at import: without a GPU, run the kernel in its
# interpreter. Set before anything imports Triton; AOT compilation runs in a subprocess.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _timm_importable() -> bool:
    if not _has("timm"):
        return False
    try:
        import timm  # noqa: F401
    except Exception:  # timm needs torchvision, which has no CPU build here
        return False
    return True


def _triton_server_problem() -> str | None:
    """Why the real-server tests cannot run; in CI (which installs both) they never skip."""
    from swinedge.serving.server import server_problem

    problem = server_problem()
    return None if problem is None or os.environ.get("CI") else f"needs a local tritonserver: {problem}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = torch.cuda.is_available()
    reasons = {
        "gpu": None if cuda else "needs a CUDA GPU (run on the GPU machine)",
        "tensorrt": None
        if (cuda and _has("tensorrt"))
        else "needs TensorRT and a CUDA GPU (install TensorRT from NVIDIA on the GPU machine)",
        "timm": None if _timm_importable() else "needs timm importable (it needs torchvision; installed on the GPU machine)",
        "triton_server": _triton_server_problem(),
    }
    for item in items:
        missing = [reason for mark, reason in reasons.items() if reason and mark in item.keywords]
        if missing:
            item.add_marker(pytest.mark.skip(reason="; ".join(dict.fromkeys(missing))))


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """SWINEDGE_CACHE for the session, with the digits model trained once into it."""
    from swinedge.digits import digits_checkpoint

    cache = tmp_path_factory.mktemp("swinedge-cache")
    path, summary = digits_checkpoint(cache)
    return cache, path, summary
