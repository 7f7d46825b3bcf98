"""Fused shifted-window attention in Triton.

One program computes one block of queries of one window for one head (the head is the
fastest launch index, so the programs running side by side read the same qkv rows),
reading q, k, v straight from the qkv projection in natural token order and writing the
output in natural token order. Fused inside: cyclic shift (index arithmetic), window
partition, padding to a window multiple (padded keys carry the qkv bias, as in timm),
relative-position bias and shift mask (one table per window-edge pattern, see
:mod:`swinedge.ops.attention_table`), softmax in base 2 with fp32 statistics (one pass
when the window fits one key block, online over key blocks otherwise), P.V, window
reverse and reverse shift.

Two pairs of entry points share the body: the static kernels, where every size is a
compile-time constant (one compiled kernel per feature-map size), and the any-size
kernels, where the feature-map height and width are run-time int32 arguments (one
compiled kernel per block for every size, e.g. a TensorRT engine with several
optimization profiles); window, shift, heads, head dim and tiles are constexprs in both.

The same kernel source is used three ways: launched on a GPU, run by Triton's
interpreter on CPU (tests), and compiled ahead of time to PTX for the TensorRT plugin
(:mod:`swinedge.ops.aot`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.ops.attention_table import LOG2E, Tiling, table_shape, tiling
from swinedge.ops.window_attention import WindowGeometry

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # the kernel is optional: reference attention needs no Triton
    HAVE_TRITON = False

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
# 24x24 (Swin V2's window 24): larger windows loop over more 16-key blocks, the same code.
MAX_TOKENS_PER_WINDOW = 576
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _slot_tokens(slot, wy, wx, H, W, WS: tl.constexpr, SHIFT: tl.constexpr, RUNTIME_HW: tl.constexpr):
    """Window slot -> shifted, padded grid -> natural token index, and whether the slot is
    a real token of the image (0 for slots past the window or in the padding).

    ``H``, ``W``: constexprs (the static kernels) or, with ``RUNTIME_HW``, int32 scalars
    (the any-size kernels), where the cyclic shift is one conditional subtraction instead
    of ``%``: a valid slot has ``y < H``, so ``y + SHIFT < 2 H`` while ``SHIFT <= H``."""
    y = wy * WS + slot // WS
    x = wx * WS + slot % WS
    valid = (slot < WS * WS) & (y < H) & (x < W)
    if RUNTIME_HW:
        if SHIFT > 0:
            ys = y + SHIFT
            xs = x + SHIFT
            ys = tl.where(ys >= H, ys - H, ys)
            xs = tl.where(xs >= W, xs - W, xs)
            tok = tl.where(valid, ys * W + xs, 0)
        else:
            tok = tl.where(valid, y * W + x, 0)
    else:
        if SHIFT > 0:
            tok = tl.where(valid, ((y + SHIFT) % H) * W + (x + SHIFT) % W, 0)
        else:
            tok = tl.where(valid, y * W + x, 0)
    return tok, valid


if HAVE_TRITON:  # a device function the kernel calls; interpreted where the kernel is
    _slot_tokens = triton.jit(_slot_tokens)


def _l2_normalized(x, SCALE):
    """Rows of ``x`` divided by their L2 norm (floored at 1e-12, as F.normalize) and
    multiplied by ``SCALE`` (a row-broadcast factor), in fp32, back in ``x``'s dtype."""
    xf = x.to(tl.float32)
    norm = tl.maximum(tl.sqrt(tl.sum(xf * xf, 1)), 1e-12)
    return (xf * (SCALE / norm)[:, None]).to(x.dtype)


def _attend(
    qkv_ptr,
    table_ptr,
    pad_ptr,
    scale_ptr,
    out_ptr,
    H,
    W,
    WS: tl.constexpr,
    SHIFT: tl.constexpr,
    HEADS: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    KEY_BLOCKS: tl.constexpr,
    HAS_PAD: tl.constexpr,
    IEEE_FP32: tl.constexpr,
    QK_SCALE: tl.constexpr,
    COSINE: tl.constexpr,
    RUNTIME_HW: tl.constexpr,
):
    """The shared body. ``H``, ``W``: constexprs, or int32 scalars with ``RUNTIME_HW``
    (then the window grid and token count are run-time values too, and ``HAS_PAD`` must
    be set: whether a size needs padding is only known at run time)."""
    N: tl.constexpr = WS * WS
    NQB: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M
    ROWS: tl.constexpr = NQB * BLOCK_M
    COLS: tl.constexpr = KEY_BLOCKS * BLOCK_N
    C: tl.constexpr = HEADS * D
    ROW: tl.constexpr = 3 * C  # elements per token in qkv

    pid = tl.program_id(0)
    head = pid % HEADS
    rest = pid // HEADS
    qb = rest % NQB
    if RUNTIME_HW:
        NWY = (H + WS - 1) // WS
        NWX = (W + WS - 1) // WS
        L = H * W
        # Two run-time divisions (by the window count and by the windows per row), unsigned
        # (every figure is non-negative; 9 fewer instructions than signed on sm_90); the
        # remainders from products.
        image_win = (rest // NQB).to(tl.uint32)
        NW = (NWY * NWX).to(tl.uint32)
        b = (image_win // NW).to(tl.int32)
        win = (image_win - b.to(tl.uint32) * NW).to(tl.int32)
        wy = (win.to(tl.uint32) // NWX.to(tl.uint32)).to(tl.int32)
        wx = win - wy * NWX
    else:
        NWY: tl.constexpr = (H + WS - 1) // WS
        NWX: tl.constexpr = (W + WS - 1) // WS
        L: tl.constexpr = H * W
        win = (rest // NQB) % (NWY * NWX)
        b = rest // (NQB * NWY * NWX)
        wy = win // NWX
        wx = win % NWX
    if SHIFT > 0:
        pattern = (wy == NWY - 1).to(tl.int32) * 2 + (wx == NWX - 1).to(tl.int32)
    else:
        pattern = 0
    offs_d = tl.arange(0, D)
    in_base = qkv_ptr + b.to(tl.int64) * (L * ROW) + head * D
    out_base = out_ptr + b.to(tl.int64) * (L * C) + head * D
    table_base = table_ptr + (pattern * HEADS + head) * (ROWS * COLS)

    qi = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    q_tok, q_valid = _slot_tokens(qi, wy, wx, H, W, WS, SHIFT, RUNTIME_HW)
    # No masks on loads: a slot outside the image reads token 0 (its scores are -inf in
    # the table past the window, and its output is never stored) or, for keys padding
    # the image to a window multiple, the pad row (the qkv bias, as timm pads). Every
    # row is then one unpredicated 16-byte-vector load.
    q_rows = q_tok * ROW
    q = tl.load(in_base + q_rows[:, None] + offs_d[None, :])
    if COSINE:
        # Swin V2: unit q and k; the head's logit scale rides on q, so the table (bias
        # and mask in score units) is still the dot's accumulator.
        q = _l2_normalized(q, tl.load(scale_ptr + head))
    pad_base = pad_ptr + head * D

    if KEY_BLOCKS == 1:
        # The whole window is one key block: keys are the query slots (BLOCK_N == BLOCK_M).
        if HAS_PAD:
            k_base = tl.multiple_of(tl.where(q_valid, in_base + q_rows, pad_base), 16)
        else:
            k_base = in_base + q_rows
        k = tl.load(k_base[:, None] + C + offs_d[None, :])
        if COSINE:
            k = _l2_normalized(k, 1.0)
        v = tl.load(k_base[:, None] + 2 * C + offs_d[None, :])
        # The table is the dot's accumulator: (q.k + table) * scale * log2(e).
        t = tl.load(table_base + qi[:, None] * COLS + tl.arange(0, BLOCK_N)[None, :])
        if IEEE_FP32:
            s = tl.dot(q, tl.trans(k), t, input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k), t)
        s = s * QK_SCALE
        m = tl.max(s, 1)
        p = tl.exp2(s - m[:, None])
        l_i = tl.sum(p, 1)
        if IEEE_FP32:
            acc = tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for kb in range(KEY_BLOCKS):
            kj = kb * BLOCK_N + tl.arange(0, BLOCK_N)
            k_tok, k_valid = _slot_tokens(kj, wy, wx, H, W, WS, SHIFT, RUNTIME_HW)
            if HAS_PAD:
                k_base = tl.multiple_of(tl.where(k_valid, in_base + k_tok * ROW, pad_base), 16)
            else:
                k_base = in_base + k_tok * ROW
            k = tl.load(k_base[:, None] + C + offs_d[None, :])
            if COSINE:
                k = _l2_normalized(k, 1.0)
            v = tl.load(k_base[:, None] + 2 * C + offs_d[None, :])
            t = tl.load(table_base + qi[:, None] * COLS + kj[None, :])
            if IEEE_FP32:
                s = tl.dot(q, tl.trans(k), t, input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k), t)
            s = s * QK_SCALE
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if IEEE_FP32:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
    # One reciprocal per row and a multiply per element: a full fp32 division per element
    # costs about five instructions.
    out = acc * (1.0 / l_i)[:, None]
    tl.store(out_base + (q_tok * C)[:, None] + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=q_valid[:, None])


if HAVE_TRITON:
    _l2_normalized = triton.jit(_l2_normalized)
    _attend = triton.jit(_attend)


# The two entry points: TensorRT passes exactly (inputs..., outputs...), so V1's kernel
# takes no logit-scale pointer. The body is shared and inlined; COSINE is a constexpr,
# so V1's code is what it was.
def _kernel(
    qkv_ptr, table_ptr, pad_ptr, out_ptr,
    H: tl.constexpr, W: tl.constexpr, WS: tl.constexpr, SHIFT: tl.constexpr, HEADS: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_BLOCKS: tl.constexpr, HAS_PAD: tl.constexpr,
    IEEE_FP32: tl.constexpr, QK_SCALE: tl.constexpr,
):  # fmt: skip
    _attend(
        qkv_ptr, table_ptr, pad_ptr, table_ptr, out_ptr,
        H, W, WS, SHIFT, HEADS, D, BLOCK_M, BLOCK_N, KEY_BLOCKS, HAS_PAD, IEEE_FP32, QK_SCALE, False, False,
    )  # fmt: skip


def _cosine_kernel(
    qkv_ptr, table_ptr, pad_ptr, scale_ptr, out_ptr,
    H: tl.constexpr, W: tl.constexpr, WS: tl.constexpr, SHIFT: tl.constexpr, HEADS: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_BLOCKS: tl.constexpr, HAS_PAD: tl.constexpr,
    IEEE_FP32: tl.constexpr, QK_SCALE: tl.constexpr,
):  # fmt: skip
    _attend(
        qkv_ptr, table_ptr, pad_ptr, scale_ptr, out_ptr,
        H, W, WS, SHIFT, HEADS, D, BLOCK_M, BLOCK_N, KEY_BLOCKS, HAS_PAD, IEEE_FP32, QK_SCALE, True, False,
    )  # fmt: skip


# The any-size entry points: H and W are run-time int32 arguments (TensorRT's extra
# scalars, between the inputs and the output), so one compiled kernel serves every
# feature-map size of a block (one engine, several optimization profiles). Window, shift,
# heads, head dim and tiles stay constexprs; padding is always handled (HAS_PAD), since
# whether a size needs it is only known at run time, so ``pad_ptr`` must always be valid.
def _any_size_kernel(
    qkv_ptr, table_ptr, pad_ptr, H, W, out_ptr,
    WS: tl.constexpr, SHIFT: tl.constexpr, HEADS: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_BLOCKS: tl.constexpr,
    IEEE_FP32: tl.constexpr, QK_SCALE: tl.constexpr,
):  # fmt: skip
    _attend(
        qkv_ptr, table_ptr, pad_ptr, table_ptr, out_ptr,
        H, W, WS, SHIFT, HEADS, D, BLOCK_M, BLOCK_N, KEY_BLOCKS, True, IEEE_FP32, QK_SCALE, False, True,
    )  # fmt: skip


def _any_size_cosine_kernel(
    qkv_ptr, table_ptr, pad_ptr, scale_ptr, H, W, out_ptr,
    WS: tl.constexpr, SHIFT: tl.constexpr, HEADS: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, KEY_BLOCKS: tl.constexpr,
    IEEE_FP32: tl.constexpr, QK_SCALE: tl.constexpr,
):  # fmt: skip
    _attend(
        qkv_ptr, table_ptr, pad_ptr, scale_ptr, out_ptr,
        H, W, WS, SHIFT, HEADS, D, BLOCK_M, BLOCK_N, KEY_BLOCKS, True, IEEE_FP32, QK_SCALE, True, True,
    )  # fmt: skip


# The run-time size arguments, never specialised by the JIT (on 1 or on divisibility by
# 16): the GPU JIT then compiles the code the AOT plugin ships, one kernel for all sizes.
ANY_SIZE_SCALARS = ("H", "W")


@dataclass(frozen=True)
class LaunchConfig(Tiling):
    """The tiles of one geometry, plus what the launch needs beyond them."""

    num_stages: int = 1

    def programs_per_image(self, g: WindowGeometry) -> int:
        return g.num_windows * self.query_blocks * g.num_heads

    def programs_per_window(self, g: WindowGeometry) -> int:
        """Programs of one window (query blocks x heads): the any-size grid is
        ``batch * ceil(H / window) * ceil(W / window) * programs_per_window``."""
        return self.query_blocks * g.num_heads

    def grid(self, g: WindowGeometry, batch: int) -> tuple[int, int, int]:
        return (batch * self.programs_per_image(g), 1, 1)


def check_geometry(g: WindowGeometry, dtype: torch.dtype | None = None) -> None:
    """Raise a clear error, before any launch, for what the kernel does not support."""
    if g.tokens_per_window > MAX_TOKENS_PER_WINDOW:
        raise SwinedgeError(
            f"fused window attention supports windows of at most {MAX_TOKENS_PER_WINDOW} tokens (24x24); "
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


def check_any_size(g: WindowGeometry) -> None:
    """What the any-size kernel needs of a run-time size beyond :func:`check_geometry`:
    its cyclic shift is one conditional subtraction, exact while ``shift <= H`` and
    ``shift <= W`` (a TensorRT profile's minimum sizes must keep to it)."""
    if g.height < 1 or g.width < 1:
        raise SwinedgeError(f"the any-size kernel needs a feature map of at least 1x1, got {g.height}x{g.width}")
    if g.shift > min(g.height, g.width):
        raise SwinedgeError(
            f"the any-size kernel needs height and width of at least the shift ({g.shift}); got {g.height}x{g.width}"
        )


def launch_config(g: WindowGeometry) -> LaunchConfig:
    # One stage: the key loop of large windows is short, and software pipelining (cp.async
    # into shared memory) cost registers and instructions without a measured gain.
    return LaunchConfig(**asdict(tiling(g)), num_stages=1)


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
        "KEY_BLOCKS": cfg.key_blocks,
        "HAS_PAD": has_pad,
        "IEEE_FP32": ieee_fp32,
        # Cosine attention: the logit scale is applied to q in the kernel.
        "QK_SCALE": LOG2E if g.cosine else g.scale * LOG2E,
    }


def any_size_constexprs(g: WindowGeometry, cfg: LaunchConfig, *, ieee_fp32: bool) -> dict:
    """The any-size kernels' constexprs: :func:`constexprs` without H, W and HAS_PAD
    (the geometry's height and width are not read)."""
    consts = constexprs(g, cfg, has_pad=True, ieee_fp32=ieee_fp32)
    for name in ("H", "W", "HAS_PAD"):
        del consts[name]
    return consts


_KERNELS: dict[tuple[bool, bool, bool], object] = {}


def interpreter_active() -> bool:
    """Triton decides at import time (TRITON_INTERPRET=1) whether its own language
    helpers run interpreted; a kernel can only be interpreted in such a process."""
    return HAVE_TRITON and bool(triton.knobs.runtime.interpret)


def kernel(interpret: bool | None = None, cosine: bool = False, any_size: bool = False):
    """The kernel as a Triton JIT function (GPU, AOT) or an interpreted one (CPU);
    ``cosine``: Swin V2's, which takes the logit-scale pointer after ``pad``;
    ``any_size``: the entry with H and W as int32 arguments after the inputs
    (``_any_size_kernel`` / ``_any_size_cosine_kernel``)."""
    if not HAVE_TRITON:
        raise MissingDependencyError("the fused kernel needs Triton: pip install 'swinedge[kernel]'")
    if interpret is None:
        interpret = interpreter_active()
    if interpret and not interpreter_active():
        raise SwinedgeError("the Triton interpreter needs TRITON_INTERPRET=1 set before Triton is imported")
    if not interpret and interpreter_active():
        raise SwinedgeError("this process runs Triton interpreted (TRITON_INTERPRET=1): compile kernels in another process")
    key = (interpret, cosine, any_size)
    if key not in _KERNELS:
        if any_size:
            fn = _any_size_cosine_kernel if cosine else _any_size_kernel
        else:
            fn = _cosine_kernel if cosine else _kernel
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            _KERNELS[key] = InterpretedFunction(fn)
        else:
            from triton.runtime.jit import JITFunction

            _KERNELS[key] = JITFunction(fn, do_not_specialize=ANY_SIZE_SCALARS) if any_size else JITFunction(fn)
    return _KERNELS[key]


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """The kernel reads every buffer with 16-byte vector loads (as compiled for TensorRT,
    whose buffers are aligned): a view at an odd offset is copied first."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def window_attention_triton(
    qkv: torch.Tensor,
    table: torch.Tensor,
    pad_qkv: torch.Tensor | None,
    geometry: WindowGeometry,
    *,
    logit_scale: torch.Tensor | None = None,
    interpret: bool | None = None,
    any_size: bool = False,
) -> torch.Tensor:
    """Launch the fused kernel: ``[B, H*W, 3C]`` -> ``[B, H*W, C]`` (same dtype).

    ``table``: :func:`swinedge.ops.attention_table.attention_table` of the block's bias.
    ``logit_scale``: ``[heads]``, for a cosine (Swin V2) geometry only.
    ``any_size``: launch the entry that takes ``geometry.height`` and ``.width`` as
    run-time int32 arguments (one compiled kernel for every size; what a TensorRT engine
    with several optimization profiles runs) instead of the one compiled for this size.
    ``pad_qkv`` None pads with zeros, as the reference does."""
    g = geometry
    check_geometry(g, qkv.dtype)
    if any_size:
        check_any_size(g)
    expected = (g.height * g.width, 3 * g.dim)
    if qkv.dim() != 3 or tuple(qkv.shape[1:]) != expected:
        raise SwinedgeError(f"qkv must be [batch, {expected[0]}, {expected[1]}] for this geometry, got {list(qkv.shape)}")
    if tuple(table.shape) != table_shape(g):
        raise SwinedgeError(f"table must be {list(table_shape(g))} for this geometry, got {list(table.shape)}")
    if pad_qkv is not None and tuple(pad_qkv.shape) != (3 * g.dim,):
        raise SwinedgeError(f"pad_qkv must be [{3 * g.dim}], got {list(pad_qkv.shape)}")
    if g.cosine != (logit_scale is not None):
        raise SwinedgeError("a cosine geometry needs logit_scale [heads], and only a cosine geometry takes one")
    if logit_scale is not None and logit_scale.numel() != g.num_heads:
        raise SwinedgeError(f"logit_scale must have {g.num_heads} values, got {logit_scale.numel()}")
    if interpret is None:
        interpret = interpreter_active()
    if not qkv.is_cuda and not interpret:
        raise SwinedgeError("the fused kernel runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")
    qkv = _aligned(qkv.contiguous())
    table = _aligned(table.to(device=qkv.device, dtype=torch.float32).contiguous())
    needs_pad = g.padded_height != g.height or g.padded_width != g.width
    if needs_pad and pad_qkv is None:
        # Padded keys are zeros then, as in the reference: without a pad row the kernel
        # would read token 0 for them.
        pad_qkv = torch.zeros(3 * g.dim, device=qkv.device, dtype=qkv.dtype)
    has_pad = needs_pad
    pad = _aligned(pad_qkv.to(device=qkv.device, dtype=qkv.dtype).contiguous()) if has_pad else qkv  # unused when not has_pad
    out = torch.empty(qkv.shape[0], g.height * g.width, g.dim, device=qkv.device, dtype=qkv.dtype)
    if qkv.shape[0] == 0:
        return out
    cfg = launch_config(g)
    kern = kernel(interpret, cosine=g.cosine, any_size=any_size)
    ieee_fp32 = qkv.dtype == torch.float32
    if any_size:
        # The any-size kernel always reads the pad row for keys past the image.
        if pad_qkv is None:
            pad = torch.zeros(3 * g.dim, device=qkv.device, dtype=qkv.dtype)
        else:
            pad = _aligned(pad_qkv.to(device=qkv.device, dtype=qkv.dtype).contiguous())
        consts = any_size_constexprs(g, cfg, ieee_fp32=ieee_fp32)
    else:
        consts = constexprs(g, cfg, has_pad=has_pad, ieee_fp32=ieee_fp32)
    buffers = [qkv, table, pad]
    if g.cosine:
        buffers.append(_aligned(logit_scale.to(device=qkv.device, dtype=torch.float32).reshape(-1).contiguous()))
    if any_size:
        buffers += [g.height, g.width]
    kern[cfg.grid(g, qkv.shape[0])](*buffers, out, **consts, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
