"""The shifted-window attention core against brute-force constructions."""

from __future__ import annotations

import itertools

import pytest
import torch

from swinedge.ops.window_attention import (
    MASK_VALUE,
    WindowGeometry,
    relative_position_bias,
    relative_position_index,
    shift_mask,
    window_attention_reference,
)


def painted_mask(hp: int, wp: int, window: int, shift: int) -> torch.Tensor:
    """The published construction: paint 3x3 regions by slicing, compare ids per window."""
    img = torch.zeros(hp, wp)
    cnt = 0
    spans = ((0, hp - window), (hp - window, hp - shift), (hp - shift, hp))
    spans_w = ((0, wp - window), (wp - window, wp - shift), (wp - shift, wp))
    for (h0, h1), (w0, w1) in itertools.product(spans, spans_w):
        img[h0:h1, w0:w1] = cnt
        cnt += 1
    masks = []
    for wi in range(hp // window):
        for wj in range(wp // window):
            ids = img[wi * window : (wi + 1) * window, wj * window : (wj + 1) * window].reshape(-1)
            m = torch.zeros(ids.numel(), ids.numel())
            for a in range(ids.numel()):
                for b in range(ids.numel()):
                    if ids[a] != ids[b]:
                        m[a, b] = MASK_VALUE
            masks.append(m)
    return torch.stack(masks)


@pytest.mark.parametrize(
    "size,window,shift",
    [(8, 4, 2), (14, 7, 3), (28, 7, 3), (10, 7, 3), (12, 4, 2), (9, 4, 2), (24, 12, 6)],
)
def test_shift_mask_matches_painted_regions(size: int, window: int, shift: int) -> None:
    g = WindowGeometry(size, size, window, shift, num_heads=1, head_dim=4)
    expected = painted_mask(g.padded_height, g.padded_width, window, shift)
    mask = shift_mask(g)
    assert mask is not None
    torch.testing.assert_close(mask, expected, atol=0, rtol=0)


def test_no_mask_without_shift() -> None:
    assert shift_mask(WindowGeometry(14, 14, 7, 0, 1, 4)) is None


@pytest.mark.parametrize("window", [2, 4, 7])
def test_relative_position_index_brute_force(window: int) -> None:
    idx = relative_position_index(window)
    side = 2 * window - 1
    for a, b in itertools.product(range(window * window), repeat=2):
        (ya, xa), (yb, xb) = divmod(a, window), divmod(b, window)
        assert idx[a, b] == (ya - yb + window - 1) * side + (xa - xb + window - 1)


def brute_force_attention(qkv, table, pad_qkv, g: WindowGeometry) -> torch.Tensor:
    """Token by token: shifted coordinates -> window and region -> masked softmax."""
    b = qkv.shape[0]
    hp, wp, c = g.padded_height, g.padded_width, g.dim
    # Grid of the shifted, padded image: position (y, x) holds original token
    # ((y + shift) % H, (x + shift) % W) when y < H and x < W, else a pad token.
    bias = relative_position_bias(table, g.window)
    out = torch.zeros(b, g.height * g.width, c, dtype=torch.float64)

    def token(bi: int, y: int, x: int) -> torch.Tensor:
        if y < g.height and x < g.width:
            oy, ox = (y + g.shift) % g.height, (x + g.shift) % g.width
            return qkv[bi, oy * g.width + ox].double()
        return pad_qkv.double()

    def region(v: int, n: int) -> int:
        if g.shift == 0:
            return 0
        return int(v >= n - g.window) + int(v >= n - g.shift)

    for bi in range(b):
        for y in range(g.height):
            for x in range(g.width):
                wy, wx = y // g.window, x // g.window
                keys = [(wy * g.window + i, wx * g.window + j) for i in range(g.window) for j in range(g.window)]
                qi = (y % g.window) * g.window + (x % g.window)
                qrow = token(bi, y, x)
                for h in range(g.num_heads):
                    sl = slice(h * g.head_dim, (h + 1) * g.head_dim)
                    q = qrow[sl] * g.scale
                    logits = []
                    vals = []
                    for ki, (ky, kx) in enumerate(keys):
                        krow = token(bi, ky, kx)
                        logit = (q * krow[c:][sl]).sum() + bias[h, qi, ki].double()
                        if (region(y, hp), region(x, wp)) != (region(ky, hp), region(kx, wp)):
                            logit = logit + MASK_VALUE
                        logits.append(logit)
                        vals.append(krow[2 * c :][sl])
                    p = torch.softmax(torch.stack(logits), 0)
                    res = (p[:, None] * torch.stack(vals)).sum(0)
                    oy, ox = (y + g.shift) % g.height, (x + g.shift) % g.width
                    out[bi, oy * g.width + ox, sl] = res
    return out


@pytest.mark.parametrize(
    "h,window,shift,heads",
    [(8, 4, 0, 2), (8, 4, 2, 2), (6, 4, 2, 1), (5, 4, 2, 2)],  # 6, 5: padded
)
def test_reference_matches_brute_force(h: int, window: int, shift: int, heads: int) -> None:
    torch.manual_seed(0)
    g = WindowGeometry(h, h, window, shift, heads, head_dim=4)
    qkv = torch.randn(2, h * h, 3 * g.dim)
    table = torch.randn((2 * window - 1) ** 2, heads)
    pad_qkv = torch.randn(3 * g.dim)
    got = window_attention_reference(qkv, relative_position_bias(table, window), pad_qkv, g)
    expected = brute_force_attention(qkv, table, pad_qkv, g)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
