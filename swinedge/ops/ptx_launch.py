"""Launch the AOT PTX exactly as the TensorRT plugin does, without TensorRT (GPU only).

TensorRT loads the PTX that ``aot_impl`` returns and launches its entry with the launch
parameters the plugin declared and the arguments ``(qkv, table, pad_qkv, out)``
(Swin V2's: ``(qkv, table, pad_qkv, logit_scale, out)``). This
module does the same through the CUDA driver API (``pip install cuda-python``), on torch
tensors and torch's current stream, so the kernel TensorRT runs can be checked against
the reference and timed on a GPU machine without TensorRT.
"""

from __future__ import annotations

import ctypes

import torch

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.ops.aot import AotKernel, compile_in_subprocess
from swinedge.ops.window_attention import WindowGeometry


def _driver():
    try:
        from cuda.bindings import driver  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as driver  # older cuda-python
        except ImportError:
            raise MissingDependencyError("launching the AOT PTX needs cuda-python: pip install cuda-python") from None
    return driver


def _check(result: tuple):
    """cuda-python returns ``(error, *outputs)``: raise on an error, return the output."""
    err, *rest = result
    if err != _driver().CUresult.CUDA_SUCCESS:
        raise SwinedgeError(f"CUDA driver call failed: {err}")
    return rest[0] if rest else None


class PtxKernel:
    """One AOT kernel loaded into the current CUDA context."""

    def __init__(self, kernel: AotKernel):
        torch.cuda.init()  # the primary context, shared with torch
        driver = _driver()
        self.kernel = kernel
        self.module = _check(driver.cuModuleLoadData(kernel.ptx.encode() + b"\0"))
        self.function = _check(driver.cuModuleGetFunction(self.module, kernel.name.encode()))

    def __call__(self, *buffers: torch.Tensor) -> None:
        """``buffers``: the kernel's inputs, then its output, in TensorRT's order."""
        driver = _driver()
        gx, gy, gz, bx, by, bz, smem = self.kernel.launch_dims(buffers[0].shape[0])
        args = tuple(b.data_ptr() for b in buffers)
        params = (args, (ctypes.c_void_p,) * len(args))
        stream = torch.cuda.current_stream().cuda_stream
        _check(driver.cuLaunchKernel(self.function, gx, gy, gz, bx, by, bz, smem, stream, params, 0))


def load_aot_kernel(g: WindowGeometry, dtype: torch.dtype) -> PtxKernel:
    """Compile (in a fresh process) the PTX the plugin would return for this GPU and load it."""
    major, minor = torch.cuda.get_device_capability()
    name = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    summary = compile_in_subprocess(g, compute_capability=major * 10 + minor, dtype=name)
    fields = {k: summary[k] for k in AotKernel.__dataclass_fields__}
    return PtxKernel(AotKernel(**fields))


def window_attention_aot(
    kernel: PtxKernel,
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad: torch.Tensor,
    g: WindowGeometry,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The plugin's computation: ``[B, H*W, 3C]`` -> ``[B, H*W, C]`` through the AOT PTX
    (``logit_scale`` ``[heads]``: cosine geometries only)."""
    out = torch.empty(qkv.shape[0], g.height * g.width, g.dim, device=qkv.device, dtype=qkv.dtype)
    inputs = [qkv.contiguous(), table.float().contiguous(), pad.to(qkv.dtype).contiguous()]
    if g.cosine:
        inputs.append(logit_scale.float().reshape(-1).contiguous())
    kernel(*inputs, out)
    return out
