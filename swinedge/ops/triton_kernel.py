"""Fused shifted-window attention in Triton.

One program computes one block of queries of one window for one head, reading q, k, v
straight from the qkv projection in natural token order and writing the output in
natural token order. Fused inside: cyclic shift (index arithmetic), window partition,
zero-padding to a window multiple (padded keys carry the qkv bias, as in timm),
relative-position bias, shift mask (region ids from coordinates, never stored), softmax
with fp32 statistics (online, over key blocks, so N = 256 never materializes an NxN
tile), P.V, window reverse and reverse shift.

The same kernel source is used three ways: launched on a GPU, run by Triton's
interpreter on CPU (tests), and compiled ahead of time to PTX for the TensorRT plugin
(:mod:`swinedge.ops.aot`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.ops.window_attention import MASK_VALUE, WindowGeometry

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # the kernel is optional: reference attention needs no Triton
    HAVE_TRITON = False

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
MAX_TOKENS_PER_WINDOW = 256
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _kernel(
    qkv_ptr,
    bias_ptr,
    pad_ptr,
    out_ptr,
    H: tl.constexpr,
    W: tl.constexpr,
    WS: tl.constexpr,
    SHIFT: tl.constexpr,
    HEADS: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_PAD: tl.constexpr,
    IEEE_FP32: tl.constexpr,
    MASK: tl.constexpr,
):
    N: tl.constexpr = WS * WS
    HP: tl.constexpr = ((H + WS - 1) // WS) * WS
    WP: tl.constexpr = ((W + WS - 1) // WS) * WS
    NWX: tl.constexpr = WP // WS
    NW: tl.constexpr = (HP // WS) * NWX
    NQB: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M
    C: tl.constexpr = HEADS * D
    L: tl.constexpr = H * W

    pid = tl.program_id(0)
    head = tl.program_id(1)
    qb = pid % NQB
    win = (pid // NQB) % NW
    b = pid // (NQB * NW)
    wy = win // NWX
    wx = win % NWX
    offs_d = tl.arange(0, D)
    in_base = qkv_ptr + b.to(tl.int64) * (L * 3 * C)
    out_base = out_ptr + b.to(tl.int64) * (L * C)

    # Queries of this block: window-local index -> shifted/padded grid -> natural token.
    qi = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    q_in = qi < N
    qy = wy * WS + qi // WS
    qx = wx * WS + qi % WS
    q_valid = q_in & (qy < H) & (qx < W)
    q_tok = ((qy + SHIFT) % H) * W + (qx + SHIFT) % W
    q = tl.load(in_base + q_tok[:, None] * (3 * C) + head * D + offs_d[None, :], mask=q_valid[:, None], other=0.0)
    if SHIFT > 0:
        q_reg = ((qy >= HP - WS).to(tl.int32) + (qy >= HP - SHIFT).to(tl.int32)) * 3 + (
            (qx >= WP - WS).to(tl.int32) + (qx >= WP - SHIFT).to(tl.int32)
        )
    if HAS_PAD:
        pad_k = tl.load(pad_ptr + C + head * D + offs_d)
        pad_v = tl.load(pad_ptr + 2 * C + head * D + offs_d)

    scale = 1.0 / tl.sqrt(D * 1.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for kb in range(0, N, BLOCK_N):
        kj = kb + tl.arange(0, BLOCK_N)
        k_in = kj < N
        ky = wy * WS + kj // WS
        kx = wx * WS + kj % WS
        k_valid = k_in & (ky < H) & (kx < W)
        k_tok = ((ky + SHIFT) % H) * W + (kx + SHIFT) % W
        k_ptrs = in_base + k_tok[:, None] * (3 * C) + C + head * D + offs_d[None, :]
        k = tl.load(k_ptrs, mask=k_valid[:, None], other=0.0)
        v = tl.load(k_ptrs + C, mask=k_valid[:, None], other=0.0)
        if HAS_PAD:
            is_pad = (k_in & (k_valid == 0))[:, None]
            k = tl.where(is_pad, pad_k[None, :].to(k.dtype), k)
            v = tl.where(is_pad, pad_v[None, :].to(v.dtype), v)
        if IEEE_FP32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * scale
        bias = tl.load(
            bias_ptr + head * (N * N) + qi[:, None] * N + kj[None, :], mask=q_in[:, None] & k_in[None, :], other=0.0
        )
        s = s + bias.to(tl.float32)
        if SHIFT > 0:
            k_reg = ((ky >= HP - WS).to(tl.int32) + (ky >= HP - SHIFT).to(tl.int32)) * 3 + (
                (kx >= WP - WS).to(tl.int32) + (kx >= WP - SHIFT).to(tl.int32)
            )
            s = tl.where(q_reg[:, None] == k_reg[None, :], s, s + MASK)
        s = tl.where(k_in[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if IEEE_FP32:
            pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(
        out_base + q_tok[:, None] * C + head * D + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=q_valid[:, None]
    )


@dataclass(frozen=True)
class LaunchConfig:
    """Compile-time constants and grid of one geometry."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    query_blocks: int

    @property
    def key_blocks(self) -> int:
        return self.query_blocks * self.block_m // self.block_n

    def grid(self, g: WindowGeometry, batch: int) -> tuple[int, int, int]:
        return (batch * g.num_windows * self.query_blocks, g.num_heads, 1)


def check_geometry(g: WindowGeometry, dtype: torch.dtype | None = None) -> None:
    """Raise a clear error, before any launch, for what the kernel does not support."""
    if g.tokens_per_window > MAX_TOKENS_PER_WINDOW:
        raise SwinedgeError(
            f"fused window attention supports windows of at most {MAX_TOKENS_PER_WINDOW} tokens (16x16); "
            f"got window {g.window} ({g.tokens_per_window} tokens): use attention 'reference'"
        )
    if g.window < 2:
        raise SwinedgeError(f"fused window attention needs a window of at least 2, got {g.window}")
    if g.head_dim not in SUPPORTED_HEAD_DIMS:
        raise SwinedgeError(
            f"fused window attention supports head dims {', '.join(map(str, SUPPORTED_HEAD_DIMS))}; got {g.head_dim}: use attention 'reference'"
        )
    if not 0 <= g.shift < g.window:
        raise SwinedgeError(f"shift must be in [0, window); got shift {g.shift} for window {g.window}")
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        raise SwinedgeError(f"fused window attention supports float32, float16 and bfloat16 tensors; got {dtype}")


def launch_config(g: WindowGeometry) -> LaunchConfig:
    n = g.tokens_per_window
    block = max(16, min(64, triton_next_pow2(n)))
    # Two pipeline stages keep shared memory <= 48 KiB for every supported geometry (three
    # need 56 KiB at 16x16 windows): launchers that do not opt in to more can run it.
    return LaunchConfig(block_m=block, block_n=block, num_warps=4, num_stages=2, query_blocks=-(-n // block))


def triton_next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def constexprs(g: WindowGeometry, cfg: LaunchConfig, *, has_pad: bool, ieee_fp32: bool) -> dict:
    return {
        "H": g.height,
        "W": g.width,
        "WS": g.window,
        "SHIFT": g.shift,
        "HEADS": g.num_heads,
        "D": g.head_dim,
        "BLOCK_M": cfg.block_m,
        "BLOCK_N": cfg.block_n,
        "HAS_PAD": has_pad,
        "IEEE_FP32": ieee_fp32,
        "MASK": MASK_VALUE,
    }


_KERNELS: dict[bool, object] = {}


def interpreter_active() -> bool:
    """Triton decides at import time (TRITON_INTERPRET=1) whether its own language
    helpers run interpreted; a kernel can only be interpreted in such a process."""
    return HAVE_TRITON and bool(triton.knobs.runtime.interpret)


def kernel(interpret: bool | None = None):
    """The kernel as a Triton JIT function (GPU, AOT) or an interpreted one (CPU)."""
    if not HAVE_TRITON:
        raise MissingDependencyError("the fused kernel needs Triton: pip install 'swinedge[kernel]'")
    if interpret is None:
        interpret = interpreter_active()
    if interpret and not interpreter_active():
        raise SwinedgeError("the Triton interpreter needs TRITON_INTERPRET=1 set before Triton is imported")
    if not interpret and interpreter_active():
        raise SwinedgeError("this process runs Triton interpreted (TRITON_INTERPRET=1): compile kernels in another process")
    if interpret not in _KERNELS:
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            _KERNELS[interpret] = InterpretedFunction(_kernel)
        else:
            from triton.runtime.jit import JITFunction

            _KERNELS[interpret] = JITFunction(_kernel)
    return _KERNELS[interpret]


def window_attention_triton(
    qkv: torch.Tensor,
    bias: torch.Tensor,
    pad_qkv: torch.Tensor | None,
    geometry: WindowGeometry,
    *,
    interpret: bool | None = None,
) -> torch.Tensor:
    """Launch the fused kernel: ``[B, H*W, 3C]`` -> ``[B, H*W, C]`` (same dtype)."""
    g = geometry
    check_geometry(g, qkv.dtype)
    expected = (g.height * g.width, 3 * g.dim)
    if qkv.dim() != 3 or tuple(qkv.shape[1:]) != expected:
        raise SwinedgeError(f"qkv must be [batch, {expected[0]}, {expected[1]}] for this geometry, got {list(qkv.shape)}")
    n = g.tokens_per_window
    if tuple(bias.shape) != (g.num_heads, n, n):
        raise SwinedgeError(f"bias must be [{g.num_heads}, {n}, {n}], got {list(bias.shape)}")
    if pad_qkv is not None and tuple(pad_qkv.shape) != (3 * g.dim,):
        raise SwinedgeError(f"pad_qkv must be [{3 * g.dim}], got {list(pad_qkv.shape)}")
    if interpret is None:
        interpret = interpreter_active()
    if not qkv.is_cuda and not interpret:
        raise SwinedgeError("the fused kernel runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")
    qkv = qkv.contiguous()
    bias = bias.to(device=qkv.device, dtype=torch.float32).contiguous()
    needs_pad = g.padded_height != g.height or g.padded_width != g.width
    has_pad = needs_pad and pad_qkv is not None
    pad = pad_qkv.to(device=qkv.device, dtype=qkv.dtype).contiguous() if has_pad else bias  # unused when not has_pad
    out = torch.empty(qkv.shape[0], g.height * g.width, g.dim, device=qkv.device, dtype=qkv.dtype)
    if qkv.shape[0] == 0:
        return out
    cfg = launch_config(g)
    grid = cfg.grid(g, qkv.shape[0])
    kern = kernel(interpret)
    consts = constexprs(g, cfg, has_pad=has_pad, ieee_fp32=qkv.dtype == torch.float32)
    kern[grid[:2]](qkv, bias, pad, out, **consts, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
