"""``torch.ops.swinedge.window_attention`` (and ``cosine_window_attention``, Swin V2's,
which also takes the per-head logit scale): one op, three implementations.

* CPU: the kernel's math in plain torch (:func:`window_attention_from_table`);
* CUDA: the fused Triton kernel;
* fake/meta: output shape only, so ``torch.export``, ``torch.compile`` and ONNX export
  trace through it.

It takes the kernel's score table (bias and shift mask per window-edge pattern, see
:mod:`swinedge.ops.attention_table`) instead of the bias. The model selects it with
``set_attention_impl("fused")``; results equal "reference". Inference only: no autograd
formula is registered.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from swinedge.ops.attention_table import window_attention_from_table
from swinedge.ops.window_attention import WindowGeometry

OP_NAME = "swinedge::window_attention"
COSINE_OP_NAME = "swinedge::cosine_window_attention"


def _geometry(
    qkv: torch.Tensor, height: int, width: int, window: int, shift: int, num_heads: int, cosine: bool = False
) -> WindowGeometry:
    """The block's geometry; ``height == width == 0``: an any-size call, whose ``qkv`` is
    ``[B, H, W, 3C]`` and whose map size is read from it."""
    dim = qkv.shape[-1] // 3
    if height == 0 and width == 0:
        if qkv.dim() != 4:
            raise ValueError(f"an any-size call (height = width = 0) takes qkv [B, H, W, 3C], got {list(qkv.shape)}")
        height, width = int(qkv.shape[1]), int(qkv.shape[2])
    return WindowGeometry(height, width, window, shift, num_heads, dim // num_heads, cosine)


def _tokens(qkv: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """``[B, H, W, 3C]`` -> ``[B, H*W, 3C]`` (the same memory); 3-D input as it is."""
    return qkv.reshape(qkv.shape[0], g.height * g.width, qkv.shape[-1]) if qkv.dim() == 4 else qkv


def _like(out: torch.Tensor, qkv: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    return out.reshape(qkv.shape[0], g.height, g.width, g.dim) if qkv.dim() == 4 else out


def _out_shape(qkv: torch.Tensor, height: int, width: int) -> list:
    if height == 0 and width == 0:
        return [*qkv.shape[:-1], qkv.shape[-1] // 3]
    return [qkv.shape[0], height * width, qkv.shape[-1] // 3]


@torch.library.custom_op(OP_NAME, mutates_args=())
def window_attention(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: Optional[torch.Tensor],
    height: int,
    width: int,
    window: int,
    shift: int,
    num_heads: int,
) -> torch.Tensor:
    """Shifted-window attention core: ``[B, H*W, 3C]`` -> ``[B, H*W, C]`` (natural order);
    with height = width = 0, ``[B, H, W, 3C]`` -> ``[B, H, W, C]`` at the size of qkv."""
    g = _geometry(qkv, height, width, window, shift, num_heads)
    return _like(window_attention_from_table(_tokens(qkv, g), table, pad_qkv, g), qkv, g)


@window_attention.register_kernel("cuda")
def _window_attention_cuda(qkv, table, pad_qkv, height, width, window, shift, num_heads):
    from swinedge.ops.triton_kernel import window_attention_triton

    g = _geometry(qkv, height, width, window, shift, num_heads)
    return _like(window_attention_triton(_tokens(qkv, g), table, pad_qkv, g), qkv, g)


@window_attention.register_fake
def _window_attention_fake(qkv, table, pad_qkv, height, width, window, shift, num_heads):
    return qkv.new_empty(_out_shape(qkv, height, width))


@torch.library.custom_op(COSINE_OP_NAME, mutates_args=())
def cosine_window_attention(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: Optional[torch.Tensor],
    logit_scale: torch.Tensor,
    height: int,
    width: int,
    window: int,
    shift: int,
    num_heads: int,
) -> torch.Tensor:
    """Swin V2's core: cosine scores times the per-head ``logit_scale`` ``[heads]``."""
    g = _geometry(qkv, height, width, window, shift, num_heads, cosine=True)
    return _like(window_attention_from_table(_tokens(qkv, g), table, pad_qkv, g, logit_scale), qkv, g)


@cosine_window_attention.register_kernel("cuda")
def _cosine_window_attention_cuda(qkv, table, pad_qkv, logit_scale, height, width, window, shift, num_heads):
    from swinedge.ops.triton_kernel import window_attention_triton

    g = _geometry(qkv, height, width, window, shift, num_heads, cosine=True)
    return _like(window_attention_triton(_tokens(qkv, g), table, pad_qkv, g, logit_scale=logit_scale), qkv, g)


@cosine_window_attention.register_fake
def _cosine_window_attention_fake(qkv, table, pad_qkv, logit_scale, height, width, window, shift, num_heads):
    return qkv.new_empty(_out_shape(qkv, height, width))


def window_attention_fused(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: Optional[torch.Tensor],
    geometry: WindowGeometry,
    logit_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The op for ``geometry`` (cosine geometries need ``logit_scale`` ``[heads]``)."""
    g = geometry
    if qkv.is_cuda:
        from swinedge.ops.triton_kernel import check_geometry

        check_geometry(g, qkv.dtype)  # clear error before tracing or launching
    if pad_qkv is None:
        pad_qkv = qkv.new_zeros(3 * g.dim)
    if g.cosine:
        if logit_scale is None:
            raise ValueError("cosine window attention needs the per-head logit scale")
        return torch.ops.swinedge.cosine_window_attention(
            qkv, table, pad_qkv, logit_scale.reshape(g.num_heads).float(), g.height, g.width, g.window, g.shift, g.num_heads
        )
    return torch.ops.swinedge.window_attention(qkv, table, pad_qkv, g.height, g.width, g.window, g.shift, g.num_heads)


def window_attention_fused_any_size(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: Optional[torch.Tensor],
    geometry: WindowGeometry,
    logit_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The op at the size of ``qkv`` ``[B, H, W, 3C]`` -> ``[B, H, W, C]``: called with
    height = width = 0, so an exported plugin node reads the size from its input (one
    graph, and one engine, for several input sizes). ``geometry`` gives the window,
    shift and heads; its height and width are not used."""
    return window_attention_fused(qkv, table, pad_qkv, replace(geometry, height=0, width=0), logit_scale)
