"""The fused kernel's score table: relative-position bias and shift mask, precomputed.

A shifted window's additive scores depend only on the head and on which edge of the
padded grid the window touches: after the cyclic shift, only the last row of windows
splits its rows into regions, only the last column its columns. So four patterns cover
every window (interior, last row, last column, corner; one without a shift), and the
kernel reads ``table[pattern, head]`` instead of computing bias indices and region ids
(hundreds of integer instructions per thread). Built once per block (at export, or
cached by the model in eval), float32 as the bias always was.

Layout ``[patterns, heads, query_rows, key_cols]``, both sides padded to the kernel's
tiles so that every table load is a full, unmasked, 16-byte-aligned row:

- values are ``(bias + mask) / scale``, in the units of ``q.k``: the kernel starts its
  q.k^T product from the table (the MMA accumulator, no separate add and no second tile
  live in registers) and scales once, in base 2: ``(q.k + table) * scale * log2(e)``,
  then ``exp2``, the same softmax. Cosine attention (Swin V2) scales the normalised q
  by the head's logit scale before the product, so its table is ``bias + mask`` as it
  is and the kernel multiplies by ``log2(e)`` alone;
- key columns past the window (``>= N``, tile padding) are ``-inf``;
- query rows past the window are 0 (never stored).

:func:`window_attention_from_table` is the same math in plain torch, for the CPU op,
ONNX Runtime and tests; the independent reference stays
:func:`swinedge.ops.window_attention.window_attention_reference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from swinedge.ops.window_attention import MASK_VALUE, WindowGeometry, l2_normalize, partition_qkv, reverse_windows

LOG2E = 1.0 / math.log(2.0)


@dataclass(frozen=True)
class Tiling:
    """How the kernel tiles one window: query rows per program, key columns per step."""

    block_m: int
    block_n: int
    query_blocks: int
    key_blocks: int
    num_warps: int

    @property
    def rows(self) -> int:
        return self.block_m * self.query_blocks

    @property
    def cols(self) -> int:
        return self.block_n * self.key_blocks


def _pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def tiling(g: WindowGeometry) -> Tiling:
    """The kernel's tiles for a geometry (the table layout follows them).

    A window of up to 64 tokens is one program and one key block (one-pass softmax).
    Larger ones, and head dim 128, use one-warp programs of 16 queries stepping over 16 keys at a time: an
    exact tiling of 144 (12x12) and 256 (16x16) tokens, at 64 registers on sm_90
    (``python -m swinedge.benchmarks.kernel_report`` measured the alternatives)."""
    n = g.tokens_per_window
    if n <= 64 and g.head_dim <= 64:  # head dim 128 would need 64 KiB of shared memory here
        block = max(16, _pow2(n))
        return Tiling(block, block, 1, 1, 4 if block == 64 else (2 if block == 32 else 1))
    return Tiling(16, 16, -(-n // 16), -(-n // 16), 1)


def num_patterns(g: WindowGeometry) -> int:
    return 4 if g.shift else 1


def window_patterns(g: WindowGeometry) -> torch.Tensor:
    """Pattern index of every window, row-major: 2 * (last row) + (last column)."""
    rows, cols = g.padded_height // g.window, g.padded_width // g.window
    if not g.shift:
        return torch.zeros(rows * cols, dtype=torch.long)
    wy = torch.arange(rows)[:, None].expand(rows, cols)
    wx = torch.arange(cols)[None, :].expand(rows, cols)
    return ((wy == rows - 1).long() * 2 + (wx == cols - 1).long()).reshape(-1)


def pattern_masks(g: WindowGeometry) -> torch.Tensor:
    """Additive shift mask ``[patterns, N, N]`` (0 or -100) of each window pattern."""
    n, ws = g.tokens_per_window, g.window
    if not g.shift:
        return torch.zeros(1, n, n)
    slot = torch.arange(n)
    # Inside a window of the last row (column), rows (columns) at or past window - shift
    # belong to the wrapped-around region.
    y_split = (slot // ws >= ws - g.shift).long()
    x_split = (slot % ws >= ws - g.shift).long()
    masks = []
    for last_row in (0, 1):
        for last_col in (0, 1):
            ids = last_row * y_split * 3 + last_col * x_split
            masks.append(torch.where(ids[:, None] == ids[None, :], 0.0, MASK_VALUE))
    return torch.stack(masks)


def pattern_scores(bias: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """``[heads, N, N]`` bias -> ``[P, heads, N, N]`` bias plus each pattern's shift mask,
    in the units the native core adds to its scaled scores (pattern 0, an interior
    window, is the bias alone). What a graph serving several sizes holds: every window's
    scores at any size are one of these."""
    return bias.float()[None] + pattern_masks(g).to(bias.device)[:, None]


def attention_table(bias: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """``[heads, N, N]`` relative-position bias -> the kernel's ``[P, heads, rows, cols]`` table."""
    n, t = g.tokens_per_window, tiling(g)
    scores = bias.float()[None] + pattern_masks(g).to(bias.device)[:, None]  # [P, heads, N, N]
    if not g.cosine:
        scores = scores / g.scale
    table = torch.zeros(num_patterns(g), g.num_heads, t.rows, t.cols, dtype=torch.float32, device=bias.device)
    table[..., :n, :n] = scores
    if t.cols > n:
        table[..., n:] = float("-inf")
    return table


def table_shape(g: WindowGeometry) -> tuple[int, int, int, int]:
    t = tiling(g)
    return (num_patterns(g), g.num_heads, t.rows, t.cols)


def window_attention_from_table(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: torch.Tensor | None,
    geometry: WindowGeometry,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The kernel's math in plain torch: ``[B, H*W, 3C]`` -> ``[B, H*W, C]``.
    ``logit_scale`` ``[heads]``: cosine attention only."""
    g = geometry
    if tuple(table.shape) != table_shape(g):
        raise ValueError(f"table must be {list(table_shape(g))} for {g}, got {list(table.shape)}")
    if g.cosine and (logit_scale is None or logit_scale.numel() != g.num_heads):
        raise ValueError(f"cosine attention needs a logit scale of {g.num_heads} values")
    n = g.tokens_per_window
    q, k, v = partition_qkv(qkv, pad_qkv, g)  # [B*nW, heads, N, hd]
    q, k = q.float(), k.float()
    if g.cosine:
        q = l2_normalize(q) * logit_scale.float().reshape(g.num_heads, 1, 1)
        k = l2_normalize(k)
    scores = q @ k.transpose(-2, -1)
    per_window = table[:, :, :n, :n][window_patterns(g).to(table.device)]  # [nW, heads, N, N]
    scores = (scores.reshape(-1, g.num_windows, g.num_heads, n, n) + per_window).reshape(-1, g.num_heads, n, n)
    scores = scores * (LOG2E if g.cosine else g.scale * LOG2E)
    p = torch.exp2(scores - scores.amax(-1, keepdim=True))
    out = (p / p.sum(-1, keepdim=True)) @ v.float()
    return reverse_windows(out.to(qkv.dtype), g)
