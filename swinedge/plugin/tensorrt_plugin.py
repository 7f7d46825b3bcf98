"""``swinedge::SwinWindowAttention`` (and Swin V2's ``swinedge::SwinV2WindowAttention``)
as TensorRT quickly deployable plugins (AOT).

Importing this module registers the plugin with TensorRT's ``tensorrt.plugin``. The AOT
implementation compiles the Triton kernel to PTX for the build GPU's architecture and the
tensor dtype TensorRT picked; the serialized engine embeds that PTX and runs in any
TensorRT runtime (trtexec, C++) without Python: loading a plan never imports this module.

Thin on purpose: shapes, launch dimensions, dtype rules and PTX come from plain
functions (:mod:`swinedge.ops.aot`) tested without TensorRT, and this module itself is
exercised against NVIDIA's own ``tensorrt.plugin`` package of every TensorRT version in
``swinedge.engine.CONTRACT_VERSIONS`` (``tests/test_trt_contract.py``).

Two rules NVIDIA's code imposes here (see ``../shared/notes``):

- no ``from __future__ import annotations``: NVIDIA's validators test the annotation
  objects themselves (``issubclass``), so they must not be strings;
- integer attributes are annotated ``npt.NDArray[np.int32]``: the ONNX parser hands
  them over as length-1 int32 fields, and TensorRT 10.9-11.1 convert ``int``-annotated
  attributes with ``int(array)``, which NumPy >= 2.4 refuses.
"""

from typing import Optional, Tuple, Union

import numpy as np
import numpy.typing as npt
import tensorrt as trt
import tensorrt.plugin as trtp

from swinedge.ops.aot import compile_window_attention, plugin_io_error
from swinedge.ops.onnx_plugin import COSINE_PLUGIN_NAME, PLUGIN_NAME, PLUGIN_NAMESPACE
from swinedge.ops.window_attention import WindowGeometry

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
COSINE_PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{COSINE_PLUGIN_NAME}"
_TRT_TO_DTYPE = {trt.float16: "float16", trt.float32: "float32", trt.bfloat16: "bfloat16"}
_TARGET_CC: Optional[int] = None


def set_compute_capability(compute_capability: Optional[int]) -> None:
    """The architecture ``aot_impl`` compiles for (the build GPU's); None: ask torch."""
    global _TARGET_CC
    _TARGET_CC = compute_capability


def _compute_capability() -> int:
    if _TARGET_CC is not None:
        return _TARGET_CC
    import torch

    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


def _dtype_name(dtype: "trt.DataType") -> str:
    return _TRT_TO_DTYPE.get(dtype, str(dtype).rsplit(".", 1)[-1].lower())


def _scalar(attr: npt.NDArray[np.int32]) -> int:
    return int(np.asarray(attr).reshape(-1)[0])


def _output_desc(qkv: trtp.TensorDesc, height, width, num_heads, head_dim) -> trtp.TensorDesc:
    # [B, H*W, 3C] -> [B, H*W, C], same dtype as qkv. Any-size nodes (height = width = 0):
    # [B, H, W, 3C] -> [B, H, W, C], H and W whatever the profile gives.
    channels = _scalar(num_heads) * _scalar(head_dim)
    if _scalar(height) == 0 and _scalar(width) == 0:
        if len(qkv.shape_expr) != 4:
            raise ValueError(f"an any-size window-attention node takes qkv [B, H, W, 3C], got rank {len(qkv.shape_expr)}")
        e = qkv.shape_expr
        return trtp.from_shape_expr((e[0], e[1], e[2], channels), dtype=qkv.dtype)
    tokens = _scalar(height) * _scalar(width)
    return trtp.from_shape_expr((qkv.shape_expr[0], tokens, channels), dtype=qkv.dtype)


def _aot_kernel(g: WindowGeometry, plugin_id: str, qkv, table, pad_qkv, logit_scale, outputs):
    problem = plugin_io_error(
        _dtype_name(qkv.dtype),
        _dtype_name(table.dtype),
        _dtype_name(pad_qkv.dtype),
        _dtype_name(outputs[0].dtype),
        None if logit_scale is None else _dtype_name(logit_scale.dtype),
    )
    if problem:
        # Raised inside TensorRT's build: the message reaches the user through its log.
        raise ValueError(f"{plugin_id} {g}: {problem}")
    any_size = g.height == 0 and g.width == 0
    kernel = compile_window_attention(g, compute_capability=_compute_capability(), dtype=_dtype_name(qkv.dtype), any_size=any_size)
    launch = trtp.KernelLaunchParams()
    if any_size:
        # The map size is the profile's: H and W reach the kernel as two int32 scalars
        # (after the inputs), and the grid counts the windows of that size.
        height, width = qkv.shape_expr[1], qkv.shape_expr[2]
        ws = kernel.window
        windows = ((height + (ws - 1)) // ws) * ((width + (ws - 1)) // ws)
        launch.grid_x = qkv.shape_expr[0] * windows * kernel.programs_per_window
        extra = trtp.SymIntExprs(2)
        extra[0] = trtp.SymInt32(height)
        extra[1] = trtp.SymInt32(width)
    else:
        launch.grid_x = qkv.shape_expr[0] * kernel.grid_per_image
        extra = trtp.SymIntExprs(0)  # every size but the batch is a compile-time constant
    launch.grid_y = kernel.grid_y
    launch.grid_z = 1
    launch.block_x = kernel.block_x
    launch.block_y = 1
    launch.block_z = 1
    launch.shared_mem = kernel.shared_mem
    return kernel.name, kernel.ptx, launch, extra


def _geometry(height, width, window, shift, num_heads, head_dim, cosine: bool) -> WindowGeometry:
    return WindowGeometry(*(_scalar(a) for a in (height, width, window, shift, num_heads, head_dim)), cosine)


@trtp.register(PLUGIN_ID)
def _window_attention_desc(
    qkv: trtp.TensorDesc,
    table: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    height: npt.NDArray[np.int32],
    width: npt.NDArray[np.int32],
    window: npt.NDArray[np.int32],
    shift: npt.NDArray[np.int32],
    num_heads: npt.NDArray[np.int32],
    head_dim: npt.NDArray[np.int32],
) -> trtp.TensorDesc:
    return _output_desc(qkv, height, width, num_heads, head_dim)


# NVIDIA's AOT path passes every registered attribute positionally, in the order above:
# all six are declared here too, in that order.
@trtp.aot_impl(PLUGIN_ID)
def _window_attention_aot(
    qkv: trtp.TensorDesc,
    table: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    height: npt.NDArray[np.int32],
    width: npt.NDArray[np.int32],
    window: npt.NDArray[np.int32],
    shift: npt.NDArray[np.int32],
    num_heads: npt.NDArray[np.int32],
    head_dim: npt.NDArray[np.int32],
    outputs: Tuple[trtp.TensorDesc],
    tactic: int,
) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    g = _geometry(height, width, window, shift, num_heads, head_dim, False)
    return _aot_kernel(g, PLUGIN_ID, qkv, table, pad_qkv, None, outputs)


@trtp.register(COSINE_PLUGIN_ID)
def _cosine_window_attention_desc(
    qkv: trtp.TensorDesc,
    table: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    logit_scale: trtp.TensorDesc,
    height: npt.NDArray[np.int32],
    width: npt.NDArray[np.int32],
    window: npt.NDArray[np.int32],
    shift: npt.NDArray[np.int32],
    num_heads: npt.NDArray[np.int32],
    head_dim: npt.NDArray[np.int32],
) -> trtp.TensorDesc:
    return _output_desc(qkv, height, width, num_heads, head_dim)


@trtp.aot_impl(COSINE_PLUGIN_ID)
def _cosine_window_attention_aot(
    qkv: trtp.TensorDesc,
    table: trtp.TensorDesc,
    pad_qkv: trtp.TensorDesc,
    logit_scale: trtp.TensorDesc,
    height: npt.NDArray[np.int32],
    width: npt.NDArray[np.int32],
    window: npt.NDArray[np.int32],
    shift: npt.NDArray[np.int32],
    num_heads: npt.NDArray[np.int32],
    head_dim: npt.NDArray[np.int32],
    outputs: Tuple[trtp.TensorDesc],
    tactic: int,
) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    g = _geometry(height, width, window, shift, num_heads, head_dim, True)
    return _aot_kernel(g, COSINE_PLUGIN_ID, qkv, table, pad_qkv, logit_scale, outputs)
