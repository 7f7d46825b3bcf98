"""What this machine can do with swinedge, and what to do about what is missing."""

from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path


@dataclass
class Check:
    name: str
    status: str  # "ok", "missing", "warn"
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def run_checks() -> list[Check]:
    checks = []
    py_ok = sys.version_info >= (3, 10)
    checks.append(Check("python", "ok" if py_ok else "missing", platform.python_version(), "" if py_ok else "use Python >= 3.10"))

    import torch

    checks.append(Check("torch", "ok", torch.__version__))
    cuda = torch.cuda.is_available()
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        checks.append(Check("cuda", "ok", f"CUDA {torch.version.cuda}"))
        checks.append(Check("gpu", "ok", f"{torch.cuda.get_device_name()} (sm_{major}{minor})"))
    else:
        fix = "install a CUDA build of torch on a machine with an NVIDIA GPU" if torch.version.cuda is None else "check the NVIDIA driver (nvidia-smi)"
        checks.append(Check("cuda", "missing", f"torch {'CPU build' if torch.version.cuda is None else 'sees no GPU'}", fix))
        checks.append(Check("gpu", "missing", "none visible", "engines, the fused kernel and GPU benchmarks need one"))

    trt_version = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    try:
        import tensorrt as trt

        trt_version = trt.__version__
        from swinedge.engine import PluginEnvironment, plugin_blockers, plugin_risks

        checks.append(Check("tensorrt", "ok", trt_version))
        if cuda:
            env = PluginEnvironment.detect(trt, major * 10 + minor)
            blockers, risks = plugin_blockers(env), plugin_risks(env)
        else:
            blockers, risks = ["no GPU to build for"], []
        if blockers or risks:
            why = (blockers or risks)[0]
            hint = "build-engine --plugin auto builds native attention and says why" + ("" if blockers else "; --plugin on builds the plugin anyway")
            checks.append(Check("fused plugin", "warn", f"engines use native attention: {why}", hint))
        else:
            checks.append(Check("fused plugin", "ok", "AOT plugin engines can be built here", ""))
    except ImportError:
        checks.append(Check("tensorrt", "missing", "not importable", "install TensorRT from NVIDIA (pip install tensorrt on x86/SBSA; JetPack on Jetson)"))
        checks.append(Check("fused plugin", "missing", "needs TensorRT >= 10.9", "install TensorRT >= 10.9"))

    mo = _version("nvidia-modelopt")
    checks.append(Check("modelopt", "ok" if mo else "missing", mo or "not installed", "" if mo else "pip install 'swinedge[quantize]'"))

    tr = _version("triton")
    ptxas = None
    if tr:
        import triton

        bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
        ptxas = str(bundled) if bundled.exists() else shutil.which("ptxas")
    from swinedge.ops.aot import MIN_TRITON, triton_version_ok

    need = ".".join(map(str, MIN_TRITON))
    if not tr:
        status, fix = "missing", f"pip install 'swinedge[kernel]' (fused kernel and plugin PTX need Triton >= {need})"
    elif not triton_version_ok(tr):
        status, fix = "warn", f"Triton {tr} is too old for the plugin kernel (needs >= {need}): pip install 'triton>={need}' (torch 2.6/2.7 CUDA wheels pin 3.2/3.3)"
    else:
        status, fix = "ok", ""
    checks.append(
        Check(
            "triton",
            status,
            f"{tr} (needs >= {need})" + ("; ptxas bundled" if ptxas and "triton" in ptxas else "; ptxas on PATH" if ptxas else "; no ptxas") if tr else "not installed",
            fix,
        )
    )

    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    providers = []
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        pass
    ort_packages = [p for p in ("onnxruntime", "onnxruntime-gpu") if _version(p)]
    if len(ort_packages) > 1:
        checks.append(Check("onnxruntime", "warn", f"both {' and '.join(ort_packages)} installed", "uninstall one: they share one module"))
    else:
        checks.append(Check("onnxruntime", "ok" if ort else "missing", f"{ort}; providers {', '.join(providers)}" if ort else "not installed", "" if ort else "pip install onnxruntime"))
    ext = _version("onnxruntime-extensions")
    checks.append(
        Check("onnxruntime-extensions", "ok" if ext else "missing", ext or "not installed", "" if ext else "pip install 'swinedge[quantize]' (plugin graphs on CPU)")
    )
    timm = _version("timm")
    checks.append(Check("timm", "ok" if timm else "warn", timm or "not installed", "" if timm else "optional: timm parity tests"))
    checks.append(leftovers_check())
    return checks


def leftovers_check(folders: list[Path] | None = None) -> Check:
    """Temp folders (under TMPDIR) and partial outputs (here and in ./swinedge-out) left
    by swinedge processes that were killed before they could clean up."""
    from swinedge.io import find_leftovers, outer_tempdir

    temp = str(outer_tempdir())  # TMPDIR as given, not the command's own private folder
    where = folders if folders is not None else [Path("."), Path("swinedge-out")]
    found = find_leftovers(temp, temp=True)
    for folder in where:
        found += find_leftovers(folder)
    if not found:
        return Check("leftovers", "ok", f"none in {temp} or {', '.join(map(str, where))}")
    stale = [f"{p} (process {pid} gone)" for p, pid in found if pid is not None]
    older = [f"{p} (an older swinedge's, no process id)" for p, pid in found if pid is None]
    fix = []
    if stale:
        fix.append("the next swinedge command writing there removes those of gone processes")
    if older:
        fix.append("delete the older ones by hand once no swinedge is running")
    return Check("leftovers", "warn", f"{len(found)} left by interrupted runs: " + "; ".join(stale + older), "; ".join(fix))
