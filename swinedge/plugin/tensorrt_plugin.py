"""``swinedge::SwinWindowAttention`` as a TensorRT quickly deployable plugin (AOT).

Importing this module registers the plugin with TensorRT's ``tensorrt.plugin``. The AOT
implementation compiles the Triton kernel to PTX for the build GPU's architecture and the
tensor dtype TensorRT picked; the serialized engine embeds that PTX and runs in any
TensorRT runtime (trtexec, C++) without Python.

Thin on purpose: shapes, launch dimensions and PTX come from plain functions
(:mod:`swinedge.ops.aot`) that are tested without TensorRT.
"""

from __future__ import annotations

from typing import Tuple, Union

import tensorrt as trt
import tensorrt.plugin as trtp

from swinedge.ops.aot import compile_window_attention
from swinedge.ops.onnx_plugin import PLUGIN_NAME, PLUGIN_NAMESPACE
from swinedge.ops.window_attention import WindowGeometry

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
_TRT_TO_DTYPE = {trt.float16: "float16", trt.float32: "float32", trt.bfloat16: "bfloat16"}


def _compute_capability() -> int:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


@trtp.register(PLUGIN_ID)
def _window_attention_desc(
    qkv: trtp.TensorDesc,
    bias: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    height: int,
    width: int,
    window: int,
    shift: int,
    num_heads: int,
    head_dim: int,
) -> trtp.TensorDesc:
    # [B, H*W, 3C] -> [B, H*W, C], same dtype as qkv.
    return trtp.from_shape_expr((qkv.shape_expr[0], height * width, num_heads * head_dim), dtype=qkv.dtype)


@trtp.aot_impl(PLUGIN_ID)
def _window_attention_aot(
    qkv: trtp.TensorDesc,
    bias: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    height: int,
    width: int,
    window: int,
    shift: int,
    num_heads: int,
    head_dim: int,
    outputs: Tuple[trtp.TensorDesc],
    tactic: int,
) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    g = WindowGeometry(height, width, window, shift, num_heads, head_dim)
    dtype = _TRT_TO_DTYPE.get(qkv.dtype)
    if dtype is None:
        raise ValueError(f"{PLUGIN_ID}: unsupported input dtype {qkv.dtype}")
    kernel = compile_window_attention(g, compute_capability=_compute_capability(), dtype=dtype)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = qkv.shape_expr[0] * kernel.grid_per_image
    launch.grid_y = kernel.grid_y
    launch.grid_z = 1
    launch.block_x = kernel.block_x
    launch.block_y = 1
    launch.block_z = 1
    launch.shared_mem = kernel.shared_mem
    # Every size but the batch is a compile-time constant: no extra scalar arguments.
    return kernel.name, kernel.ptx, launch, trtp.SymIntExprs(0)
