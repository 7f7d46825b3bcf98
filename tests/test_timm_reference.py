"""Logit parity with timm's own model code, on a CPU machine without torchvision.

timm cannot be imported here because it needs torchvision, which has no CPU build on
this project's machines. So this test downloads timm's wheel from PyPI (about 2.5 MB,
into ``.cache/timm``; never installed) and imports it with a stand-in for torchvision
that only lets ``import timm`` finish. The model classes compared (Swin V1, Swin V2,
VisionTransformer, VisionTransformerDistilled) use torch alone, so the stand-in never
takes part in a forward pass. What this proves: swinedge's models take timm's state
dicts unchanged (strict) and give timm's logits for the same weights. What it cannot
prove: anything about torchvision, or timm versions other than the one pinned.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from swinedge.models import create_model

TIMM_VERSION = "1.0.31"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _timm_dir() -> Path:
    root = Path(os.environ.get("SWINEDGE_TIMM_WHEEL", REPO / ".cache" / "timm"))
    target = root / TIMM_VERSION
    if (target / "timm" / "__init__.py").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(root), f"timm=={TIMM_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wheels = list(root.glob(f"timm-{TIMM_VERSION}-*.whl"))
    if not wheels:
        pytest.skip(f"cannot download timm=={TIMM_VERSION}: {(proc.stderr.strip().splitlines() or ['no wheel'])[-1]}")
    partial = root / f".{TIMM_VERSION}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(partial, [m for m in z.namelist() if m.startswith("timm/")])
    os.replace(partial, target)
    return target


class _StandIn:
    """Any torchvision attribute: callable, subclassable, and nothing else."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> "_StandIn":
        return _StandIn()

    def __getattr__(self, name: str) -> "_StandIn":
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn()

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):  # noqa: ANN001
        module = types.ModuleType(spec.name)
        module.__path__, module.__file__ = [], os.devnull

        def attr(name: str) -> _StandIn:
            if name.startswith("__"):
                raise AttributeError(name)
            return _StandIn()

        module.__getattr__ = attr  # type: ignore[method-assign]
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        pass


@pytest.fixture(scope="module")
def timm_module():
    if "timm" in sys.modules or "torchvision" in sys.modules:
        pytest.skip("timm or torchvision is already imported in this process")
    where = _timm_dir()
    finder = _TorchvisionStandIn()
    sys.meta_path.insert(0, finder)
    sys.path.insert(0, str(where))
    try:
        import timm

        assert timm.__version__ == TIMM_VERSION and Path(timm.__file__).is_relative_to(where)
        yield timm
    finally:
        sys.meta_path.remove(finder)
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == "timm" or n.startswith(("timm.", "torchvision"))]:
            del sys.modules[name]


@pytest.mark.parametrize(
    "name",
    [
        "swin_tiny_patch4_window7_224",
        "swinv2_tiny_window8_256",
        "swinv2_base_window12to16_192to256",
        "vit_tiny_patch16_224",
        "deit_base_distilled_patch16_224",
    ],
)
def test_logits_equal_timm(timm_module, name: str) -> None:
    torch.manual_seed(0)
    theirs = timm_module.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # move every parameter off timm's init (zeros, ones, constants)
        for pname, p in theirs.named_parameters():
            # The V2 position-bias MLP starts near zero, where 16 * sigmoid is flat: shake it harder.
            p.add_(torch.randn_like(p) * (0.5 if "cpb_mlp" in pname else 0.02))
    ours = create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    size = ours.config.img_size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.abs().max() > 0.1  # a real signal, not a degenerate all-zero head
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
