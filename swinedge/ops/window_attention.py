"""Shifted-window attention: geometry, shift mask, relative-position bias and the
plain-torch reference.

The attention core takes the qkv projection in natural token order ``[B, H*W, 3C]``
and returns the attention output in natural token order ``[B, H*W, C]``. Everything
between (cyclic shift, padding, window partition, bias, shift mask, softmax, P.V,
window reverse, reverse shift) is the core; the qkv and proj Linears stay outside,
so a backend can fuse the core into one kernel and leave the GEMMs alone.

Swin V2's core (``geometry.cosine``) differs only in its scores: q and k are
L2-normalised per head and their product is multiplied by a per-head logit scale
(already clamped and exponentiated), instead of scaling q by ``head_dim ** -0.5``.

Padding follows timm: after the cyclic shift the token grid is zero-padded at the
bottom/right to a window multiple *before* the qkv projection, so padded tokens carry
``q, k, v = qkv_bias`` and take part in attention as keys. Since the projection is
per-token, padding the projected qkv with the qkv bias is the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# timm and the official implementation mask cross-region pairs with -100, not -inf.
MASK_VALUE = -100.0


@dataclass(frozen=True)
class WindowGeometry:
    """Static geometry of one attention block."""

    height: int
    width: int
    window: int
    shift: int
    num_heads: int
    head_dim: int
    cosine: bool = False  # Swin V2: scaled cosine attention

    @property
    def padded_height(self) -> int:
        return -(-self.height // self.window) * self.window

    @property
    def padded_width(self) -> int:
        return -(-self.width // self.window) * self.window

    @property
    def tokens_per_window(self) -> int:
        return self.window * self.window

    @property
    def num_windows(self) -> int:
        return (self.padded_height // self.window) * (self.padded_width // self.window)

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w-1)^2`` bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    rel = rel + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def relative_position_bias(table: torch.Tensor, window: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """``[(2w-1)^2, heads]`` table -> ``[heads, N, N]`` bias. ``index``: the flattened
    :func:`relative_position_index` already on the table's device (a model keeps it as a
    buffer, so forward never copies it from the host)."""
    n = window * window
    if index is None:
        index = relative_position_index(window).to(table.device).reshape(-1)
    return table[index].reshape(n, n, -1).permute(2, 0, 1).contiguous()


def region_ids(padded: int, window: int, shift: int) -> torch.Tensor:
    """Region id (0, 1, 2) of each coordinate along one axis of the shifted, padded grid.

    After a cyclic shift by ``shift``, the last window along an axis holds tokens that
    were not neighbours in the image; Swin splits that axis into three regions at
    ``padded - window`` and ``padded - shift`` and lets a token attend only within its
    own region. Computed from coordinates, which is what the fused kernel does too.
    """
    coord = torch.arange(padded)
    if shift == 0:
        return torch.zeros(padded, dtype=torch.long)
    return (coord >= padded - window).long() + (coord >= padded - shift).long()


def shift_mask(geometry: WindowGeometry) -> torch.Tensor | None:
    """Additive mask ``[num_windows, N, N]`` (0 or -100), or None without a shift."""
    if geometry.shift == 0:
        return None
    g = geometry
    rows = region_ids(g.padded_height, g.window, g.shift)
    cols = region_ids(g.padded_width, g.window, g.shift)
    ids = (rows[:, None] * 3 + cols[None, :])[None, :, :, None].float()  # [1, Hp, Wp, 1]
    windows = window_partition(ids, g.window, g.padded_height, g.padded_width, 1).reshape(-1, g.tokens_per_window)  # [nW, N]
    same = windows[:, :, None] == windows[:, None, :]
    return torch.zeros(same.shape).masked_fill(~same, MASK_VALUE)


def window_partition(x: torch.Tensor, window: int, height: int, width: int, channels: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * nW, window, window, C]`` (H and W multiples of window).

    Sizes are passed as ints, not read from ``x``, so exported graphs hold no Shape ops.
    """
    h, w, c = height, width, channels
    x = x.reshape(-1, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    c = channels
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def partition_qkv(qkv: torch.Tensor, pad_qkv: torch.Tensor | None, g: WindowGeometry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, H*W, 3C]`` -> q, k, v of every window, each ``[B*nW, heads, N, hd]``: cyclic
    shift, padding with the qkv bias (as timm pads before the projection), partition."""
    x = qkv.reshape(-1, g.height, g.width, 3 * g.dim)  # -1: only the batch is dynamic
    if g.shift:
        x = torch.roll(x, shifts=(-g.shift, -g.shift), dims=(1, 2))
    pad_h, pad_w = g.padded_height - g.height, g.padded_width - g.width
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if pad_qkv is not None:
            valid = torch.zeros(1, g.padded_height, g.padded_width, 1, dtype=x.dtype, device=x.device)
            valid[:, : g.height, : g.width] = 1
            x = x + (1 - valid) * pad_qkv.to(x.dtype)
    n = g.tokens_per_window
    windows = window_partition(x, g.window, g.padded_height, g.padded_width, 3 * g.dim).reshape(-1, n, 3, g.num_heads, g.head_dim)
    q, k, v = windows.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def reverse_windows(out: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """``[B*nW, heads, N, hd]`` -> ``[B, H*W, C]`` in natural token order (inverse of
    :func:`partition_qkv`: window reverse, crop, reverse shift)."""
    out = out.transpose(1, 2).reshape(-1, g.window, g.window, g.dim)
    out = window_reverse(out, g.window, g.padded_height, g.padded_width, g.dim)
    out = out[:, : g.height, : g.width]
    if g.shift:
        out = torch.roll(out, shifts=(g.shift, g.shift), dims=(1, 2))
    return out.reshape(-1, g.height * g.width, g.dim)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize`` over the last dim, written out (same eps): its ``expand_as`` would
    put Shape ops in an exported graph."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def window_attention_reference(
    qkv: torch.Tensor,
    bias: torch.Tensor,
    pad_qkv: torch.Tensor | None,
    geometry: WindowGeometry,
    mask: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain-torch shifted-window attention core.

    Args:
        qkv: ``[B, H*W, 3C]`` projection in natural token order.
        bias: ``[heads, N, N]`` relative-position bias.
        pad_qkv: ``[3C]`` value of a padded token's qkv (the qkv Linear's bias), or None
            for zeros. Only used when H or W is not a multiple of the window.
        geometry: the block's static geometry.
        mask: precomputed ``[nW, N, N]`` shift mask; computed when None and shift > 0.
        logit_scale: cosine attention only, the per-head multiplier of the cosine
            similarities (``[heads]`` or ``[heads, 1, 1]``, clamped and exponentiated).

    Returns:
        ``[B, H*W, C]`` attention output (before the output projection).
    """
    g = geometry
    n = g.tokens_per_window
    q, k, v = partition_qkv(qkv, pad_qkv, g)
    if g.cosine:
        if logit_scale is None:
            raise ValueError("cosine attention needs the per-head logit scale")
        attn = l2_normalize(q) @ l2_normalize(k).transpose(-2, -1)
        attn = attn * logit_scale.reshape(g.num_heads, 1, 1).to(attn.dtype)
    else:
        attn = (q * g.scale) @ k.transpose(-2, -1)
    attn = attn + bias.to(attn.dtype).unsqueeze(0)
    if g.shift:
        if mask is None:
            mask = shift_mask(g)
        nw = g.num_windows
        attn = attn.reshape(-1, nw, g.num_heads, n, n) + mask.to(attn.dtype)[None, :, None]
        attn = attn.reshape(-1, g.num_heads, n, n)
    attn = attn.softmax(dim=-1)
    return reverse_windows(attn @ v, g)


def window_attention_any_size(
    qkv: torch.Tensor,
    scores: torch.Tensor,
    pad_qkv: torch.Tensor | None,
    window: int,
    shift: int,
    num_heads: int,
    *,
    cosine: bool = False,
    logit_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shifted-window attention core whose feature-map size is read from ``qkv``:
    ``[B, H, W, 3C]`` -> ``[B, H, W, C]``, the same math as
    :func:`window_attention_reference` at that size.

    For graphs that serve several input sizes: no size is a Python int here, so a traced
    export computes padding, window counts and window-edge patterns from the input's
    shape, and no branch depends on the size (a traced graph run at a map no wider than
    the window returns NaN: that size is another model). ``scores``: ``[P, heads, N, N]`` bias plus
    shift mask per window-edge pattern (:func:`swinedge.ops.attention_table.pattern_scores`;
    pattern 0 is an interior window, bias alone), added to the scaled scores.
    """
    ws, n = window, window * window
    dim = qkv.shape[-1] // 3
    head_dim = dim // num_heads
    height, width = qkv.shape[1], qkv.shape[2]
    x = torch.roll(qkv, shifts=(-shift, -shift), dims=(1, 2)) if shift else qkv
    pad_h, pad_w = (ws - height % ws) % ws, (ws - width % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    if pad_qkv is not None:
        rows = torch.arange(padded_h, device=x.device)[:, None] >= height
        cols = torch.arange(padded_w, device=x.device)[None, :] >= width
        outside = (rows | cols).to(x.dtype)[None, :, :, None]  # [1, Hp, Wp, 1]
        x = x + outside * pad_qkv.to(x.dtype)
    rows_w, cols_w = padded_h // ws, padded_w // ws
    windows = x.reshape(-1, rows_w, ws, cols_w, ws, 3, num_heads, head_dim)
    q, k, v = windows.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, rows_w * cols_w, num_heads, n, head_dim).unbind(0)
    if cosine:
        if logit_scale is None:
            raise ValueError("cosine attention needs the per-head logit scale")
        attn = l2_normalize(q) @ l2_normalize(k).transpose(-2, -1)
        attn = attn * logit_scale.reshape(num_heads, 1, 1).to(attn.dtype)
    else:
        attn = (q * head_dim**-0.5) @ k.transpose(-2, -1)  # [B, nW, heads, N, N]
    if shift:
        last_row = (torch.arange(rows_w, device=x.device) == rows_w - 1).long()
        last_col = (torch.arange(cols_w, device=x.device) == cols_w - 1).long()
        pattern = (last_row[:, None] * 2 + last_col[None, :]).reshape(-1)  # [nW]
        attn = attn + scores.to(attn.dtype)[pattern]
    else:
        attn = attn + scores.to(attn.dtype)[0]
    out = attn.softmax(dim=-1) @ v  # [B, nW, heads, N, hd]
    out = out.reshape(-1, rows_w, cols_w, num_heads, ws, ws, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(-1, padded_h, padded_w, dim)[:, :height, :width]
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    if isinstance(height, torch.Tensor):
        # In a traced graph: a map no wider than the window is another model (timm
        # clamps its window and drops the shift), which this graph cannot compute; it
        # answers NaN there instead of a plausible wrong map. Eager callers check sizes
        # before (BackboneConfig.any_size_problem).
        fits = (height > ws) & (width > ws)
        out = torch.where(fits, out, torch.full_like(out, float("nan")))
    return out
