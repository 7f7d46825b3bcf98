"""The any-size fused kernel: feature-map height and width as run-time int32 arguments.

One kernel per block serves every size (a TensorRT engine with several optimization
profiles). Interpreted on CPU against the independent reference and the static kernel,
and compiled ahead of time to the PTX the plugin would ship (entry parameters in
TensorRT's order, one PTX for every size, ptxas figures).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swinedge.errors import SwinedgeError
from swinedge.ops.attention_table import attention_table
from swinedge.ops.window_attention import WindowGeometry, window_attention_reference

triton = pytest.importorskip("triton")
from swinedge.ops import triton_kernel as tk  # noqa: E402
from swinedge.ops.aot import AotKernel, compile_in_subprocess, compile_window_attention, kernel_args  # noqa: E402
from test_fused_kernel import _inputs  # noqa: E402 - the one-size kernel tests' inputs, the same draw

needs_interpreter = pytest.mark.skipif(not tk.interpreter_active(), reason="runs where TRITON_INTERPRET=1 (no GPU)")

# Sizes every family runs at: window multiples, padded on one or both sides, taller than
# wide and wider than tall, smaller than the window, exactly one window.
SIZES = [(14, 14), (15, 22), (21, 9), (8, 8), (7, 7), (5, 6)]


def _geometry(family: WindowGeometry, height: int, width: int) -> WindowGeometry:
    return WindowGeometry(height, width, family.window, family.shift, family.num_heads, family.head_dim, family.cosine)


def _cosine_inputs(g: WindowGeometry, batch: int, dtype=torch.float32, device="cpu", seed=0):
    qkv, bias, pad = _inputs(g, batch, dtype, device, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    pad[g.dim : 2 * g.dim] = 0  # V2 has no k bias
    bias = 16 * torch.sigmoid(bias)
    logit_scale = (torch.rand(g.num_heads, generator=gen) * 99 + 1).to(device)
    return qkv, bias, pad, logit_scale


# --- interpreter -------------------------------------------------------------------------


def test_any_size_entry_points_and_constexprs() -> None:
    g = WindowGeometry(15, 22, 7, 3, 2, 32)
    cfg = tk.launch_config(g)
    consts = tk.any_size_constexprs(g, cfg, ieee_fp32=False)
    assert list(consts) == ["WS", "SHIFT", "HEADS", "D", "BLOCK_M", "BLOCK_N", "KEY_BLOCKS", "IEEE_FP32", "QK_SCALE"]
    assert consts == {k: v for k, v in tk.constexprs(g, cfg, has_pad=True, ieee_fp32=False).items() if k not in ("H", "W", "HAS_PAD")}
    import inspect

    # TensorRT's AOT order: inputs, the extra scalars, the output; then the constexprs.
    assert list(inspect.signature(tk._any_size_kernel).parameters)[:6] == ["qkv_ptr", "table_ptr", "pad_ptr", "H", "W", "out_ptr"]
    assert list(inspect.signature(tk._any_size_cosine_kernel).parameters)[:7] == [
        "qkv_ptr", "table_ptr", "pad_ptr", "scale_ptr", "H", "W", "out_ptr",
    ]  # fmt: skip
    assert cfg.programs_per_window(g) == cfg.query_blocks * g.num_heads
    assert cfg.grid(g, 3)[0] == 3 * 3 * 4 * cfg.programs_per_window(g)  # ceil(15/7) x ceil(22/7) windows


@needs_interpreter
@pytest.mark.parametrize(
    "family",
    [WindowGeometry(0, 0, 7, 3, 2, 16), WindowGeometry(0, 0, 7, 0, 1, 32), WindowGeometry(0, 0, 7, 3, 1, 32)],
    ids=lambda g: f"w{g.window}s{g.shift}h{g.num_heads}d{g.head_dim}",
)
def test_one_kernel_every_size_matches_reference_and_static_kernel(family: WindowGeometry) -> None:
    kern = tk.kernel(True, any_size=True)
    for height, width in SIZES:
        g = _geometry(family, height, width)
        qkv, bias, pad = _inputs(g, 2)
        table = attention_table(bias, g)
        got = tk.window_attention_triton(qkv, table, pad, g, any_size=True)
        assert tk.kernel(True, any_size=True) is kern  # the same kernel at every size
        torch.testing.assert_close(got, window_attention_reference(qkv, bias, pad, g), atol=1e-5, rtol=1e-5, msg=lambda m: f"{g}: {m}")
        # The same arithmetic as the kernel compiled for this size: bit for bit.
        assert torch.equal(got, tk.window_attention_triton(qkv, table, pad, g)), g


@needs_interpreter
def test_any_size_fp16_equals_static_kernel() -> None:
    g = WindowGeometry(15, 22, 7, 3, 2, 16)
    qkv, bias, pad = _inputs(g, 1, dtype=torch.float16)
    table = attention_table(bias, g)
    got = tk.window_attention_triton(qkv, table, pad, g, any_size=True)
    assert got.dtype == torch.float16 and torch.equal(got, tk.window_attention_triton(qkv, table, pad, g))


@needs_interpreter
def test_without_pad_both_kernels_pad_with_zeros_as_the_reference() -> None:
    g = WindowGeometry(15, 22, 7, 3, 1, 16)  # padded keys share regions with real queries
    qkv, bias, _ = _inputs(g, 1)
    table = attention_table(bias, g)
    got = tk.window_attention_triton(qkv, table, None, g, any_size=True)
    torch.testing.assert_close(got, window_attention_reference(qkv, bias, None, g), atol=1e-5, rtol=1e-5)
    assert torch.equal(got, tk.window_attention_triton(qkv, table, None, g))  # the static kernel (it read token 0 before)


@needs_interpreter
def test_any_size_multiple_key_blocks() -> None:
    g = WindowGeometry(13, 13, 12, 6, 1, 32)  # 144 tokens: nine 16x16 tiles; padded 13 -> 24, all four patterns
    qkv, bias, pad = _inputs(g, 1)
    got = tk.window_attention_triton(qkv, attention_table(bias, g), pad, g, any_size=True)
    torch.testing.assert_close(got, window_attention_reference(qkv, bias, pad, g), atol=1e-5, rtol=1e-5)


@needs_interpreter
@pytest.mark.parametrize("size", [(16, 16), (12, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_size_cosine_matches_reference(size) -> None:
    g = WindowGeometry(*size, 8, 4, 2, 16, cosine=True)
    qkv, bias, pad, scale = _cosine_inputs(g, 1)
    got = tk.window_attention_triton(qkv, attention_table(bias, g), pad, g, logit_scale=scale, any_size=True)
    expected = window_attention_reference(qkv.double(), bias.double(), pad.double(), g, logit_scale=scale.double())
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=2e-5)


def test_any_size_refuses_a_map_smaller_than_the_shift() -> None:
    g = WindowGeometry(2, 8, 7, 3, 1, 16)
    qkv, bias, pad = _inputs(g, 1)
    with pytest.raises(SwinedgeError, match=r"at least the shift \(3\); got 2x8"):
        tk.window_attention_triton(qkv, attention_table(bias, g), pad, g, any_size=True, interpret=tk.interpreter_active())
    tk.check_any_size(WindowGeometry(3, 3, 7, 3, 1, 16))  # shift <= H: one subtraction is exact
    tk.check_any_size(WindowGeometry(1, 1, 7, 0, 1, 16))


# --- AOT ---------------------------------------------------------------------------------

SWIN_T_ANY_SIZE = [WindowGeometry(56, 56, 7, s, h, 32) for h in (3, 6, 12, 24) for s in (0, 3)]
# Compiled in one fresh process (this one may run Triton interpreted): the plugin's PTX
# for each case, and ptxas/SASS figures of Swin-T's any-size kernels.
_AOT_SCRIPT = """
import json, sys
from dataclasses import asdict
from swinedge.benchmarks.kernel_report import analyze
from swinedge.ops.aot import compile_window_attention
from swinedge.ops.window_attention import WindowGeometry
cases, figures = json.loads(sys.argv[1])
out = {"ptx": [], "figures": []}
for g, cc in cases:
    k = compile_window_attention(WindowGeometry(**g), compute_capability=cc, any_size=True)
    out["ptx"].append({**k.summary(), "ptx": k.ptx})
for g in figures:
    out["figures"].append(asdict(analyze(WindowGeometry(**g), 90, "float16", any_size=True)))
print(json.dumps(out))
"""
PTX_CASES = [
    (WindowGeometry(56, 56, 7, 3, 3, 32), 90),
    (WindowGeometry(15, 22, 7, 3, 3, 32), 90),  # same block, another size: the same PTX
    (WindowGeometry(56, 56, 7, 3, 3, 32), 87),
    (WindowGeometry(64, 64, 8, 4, 4, 32, cosine=True), 90),
    (WindowGeometry(30, 44, 8, 4, 4, 32, cosine=True), 87),
]


@pytest.fixture(scope="module")
def aot() -> dict:
    from dataclasses import asdict

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    arg = json.dumps([[[asdict(g), cc] for g, cc in PTX_CASES], [asdict(g) for g in SWIN_T_ANY_SIZE]])
    proc = subprocess.run([sys.executable, "-c", _AOT_SCRIPT, arg], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _params(k: dict) -> list[tuple[str, str]]:
    """(type, name) of each entry parameter: 'ptr' for a global pointer, else u32/s32/..."""
    m = re.search(rf"\.entry\s+{re.escape(k['name'])}\s*\((.*?)\)", k["ptx"], re.S)
    out = []
    for p in (p.strip() for p in m.group(1).split(",") if p.strip()):
        kind = "ptr" if re.match(r"\.param\s+\.u64\s+\.ptr\s+\.global", p) else re.match(r"\.param\s+\.(\w+)", p).group(1)
        out.append((kind, p.split()[-1]))
    return out


def test_any_size_ptx_takes_tensorrt_arguments_in_order(aot: dict) -> None:
    for (g, cc), k in zip(PTX_CASES, aot["ptx"]):
        kind = "cosine_window_attention" if g.cosine else "window_attention"
        assert k["name"] == f"swinedge_{kind}_fp16_sm{cc}_anysize_w{g.window}_s{g.shift}_h{g.num_heads}_d{g.head_dim}"
        assert k["any_size"] and k["grid_per_image"] == 0 and k["window"] == g.window
        assert k["programs_per_window"] == k["programs_per_window_head"] * g.num_heads
        assert k["ptx_target"] == ("sm_90a" if cc == 90 else f"sm_{cc}") and k["ptx_isa"] == "8.0"
        params = _params(k)
        inputs = 4 if g.cosine else 3
        assert len(params) == inputs + 3 == k["ptx_params"]  # no scratch parameters left
        assert [t for t, _ in params[:inputs]] == ["ptr"] * inputs
        assert all(t in ("u32", "s32") for t, _ in params[inputs : inputs + 2])  # height, width: int32
        assert params[-1][0] == "ptr"  # out
        body = k["ptx"][k["ptx"].index("{", k["ptx"].index(".entry")) :]
        for _, name in params:  # every parameter is read: pad always, height and width too
            assert re.search(rf"\[{re.escape(name)}\]", body), name
        assert len(kernel_args(g, any_size=True)) == len(params)


def test_any_size_ptx_is_the_same_for_every_size(aot: dict) -> None:
    a, b = aot["ptx"][0], aot["ptx"][1]
    assert a["ptx"] == b["ptx"] and a["name"] == b["name"] and a["ptx_sha256"] == b["ptx_sha256"]
    assert aot["ptx"][0]["ptx"] != aot["ptx"][2]["ptx"]  # another architecture


def test_any_size_ptx_assembles_and_meets_the_register_limit(aot: dict) -> None:
    """Swin-T's any-size kernels on sm_90 (every head count, shifted and not): no spills,
    at most 96 registers, 16-byte global accesses."""
    assert len(aot["figures"]) == len(SWIN_T_ANY_SIZE)
    for s in aot["figures"]:
        assert s["any_size"] and "_anysize_" in s["name"]
        assert s["spill_stores"] == s["spill_loads"] == 0, s["name"]
        assert s["registers"] <= 96, (s["name"], s["registers"])
        assert s["loads"].get("LDG.E.128", 0) >= 4 and s["stores"].get("STG.E.128", 0) >= 1


def test_any_size_launch_dims() -> None:
    k = AotKernel(name="k", ptx="", compute_capability=90, dtype="float16", num_warps=4, shared_mem=1024, grid_per_image=0,
                  grid_y=1, block_x=128, programs_per_window_head=1, programs_per_window=3, window=7, any_size=True)  # fmt: skip
    assert k.launch_dims_at(2, 15, 22) == (2 * 3 * 4 * 3, 1, 1, 128, 1, 1, 1024)
    assert k.launch_dims_at(1, 200, 334)[0] == 29 * 48 * 3  # 800x1333 stage 1
    with pytest.raises(SwinedgeError, match="launch_dims_at"):
        k.launch_dims(2)
    static = AotKernel(name="s", ptx="", compute_capability=90, dtype="float16", num_warps=4, shared_mem=1024, grid_per_image=64 * 3,
                       grid_y=1, block_x=128, programs_per_window_head=1, programs_per_window=3, window=7)  # fmt: skip
    assert static.launch_dims_at(5, 56, 56) == static.launch_dims(5)
    with pytest.raises(SwinedgeError, match="compiled for one size"):
        static.launch_dims_at(5, 28, 28)


def test_any_size_compile_refuses_unsupported_head_dim_clearly() -> None:
    with pytest.raises(SwinedgeError, match="head dims 16, 32, 64, 128; got 48"):
        compile_window_attention(WindowGeometry(0, 0, 7, 3, 2, 48), any_size=True)
    with pytest.raises(SwinedgeError, match="head dims 16, 32, 64, 128; got 48"):
        compile_in_subprocess(WindowGeometry(14, 14, 7, 3, 2, 48), compute_capability=90, any_size=True)
    with pytest.raises(SwinedgeError, match="always handles padding"):
        compile_window_attention(WindowGeometry(14, 14, 7, 3, 2, 32), any_size=True, has_pad=False)


# --- GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_gpu_any_size_kernel_at_detection_sizes(dtype, tol: float) -> None:
    """One JIT-compiled kernel (H and W not specialised) at Swin-T's stage sizes of a
    640x640 and an 800x1333 input."""
    family = WindowGeometry(0, 0, 7, 3, 3, 32)
    for height, width in ((160, 160), (200, 334), (25, 42), (13, 21)):
        g = _geometry(family, height, width)
        qkv, bias, pad = _inputs(g, 2, dtype=dtype, device="cuda")
        got = tk.window_attention_triton(qkv, attention_table(bias, g), pad, g, any_size=True)
        expected = window_attention_reference(qkv.float(), bias, pad.float(), g)
        torch.testing.assert_close(got.float(), expected, atol=tol, rtol=tol)


@pytest.mark.gpu
def test_gpu_any_size_aot_ptx_with_int_arguments() -> None:
    """The any-size PTX launched through the CUDA driver as TensorRT would: pointers,
    then height and width as int32, then the output; one loaded kernel, several sizes."""
    pytest.importorskip("cuda", reason="needs cuda-python (pip install cuda-python)")
    import ctypes

    from swinedge.ops.ptx_launch import PtxKernel, _check, _driver

    family = WindowGeometry(0, 0, 7, 3, 3, 32)
    major, minor = torch.cuda.get_device_capability()
    summary = compile_in_subprocess(_geometry(family, 56, 56), compute_capability=major * 10 + minor, any_size=True)
    ptx = PtxKernel(AotKernel(**{k: summary[k] for k in AotKernel.__dataclass_fields__}))
    for height, width in ((56, 56), (25, 42), (15, 22)):
        g = _geometry(family, height, width)
        qkv, bias, pad = _inputs(g, 3, dtype=torch.float16, device="cuda")
        table = attention_table(bias, g).contiguous()
        out = torch.empty(3, height * width, g.dim, device="cuda", dtype=torch.float16)
        values = (qkv.data_ptr(), table.data_ptr(), pad.data_ptr(), height, width, out.data_ptr())
        types = (ctypes.c_void_p,) * 3 + (ctypes.c_int32,) * 2 + (ctypes.c_void_p,)
        gx, gy, gz, bx, by, bz, smem = ptx.kernel.launch_dims_at(3, height, width)
        stream = torch.cuda.current_stream().cuda_stream
        _check(_driver().cuLaunchKernel(ptx.function, gx, gy, gz, bx, by, bz, smem, stream, (values, types), 0))
        torch.cuda.synchronize()
        expected = window_attention_reference(qkv.float(), bias, pad.float(), g)
        torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)


def test_aot_cli_any_size_needs_no_height(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "swinedge.ops.aot", "--cc", "90", "--window", "7", "--heads", "2", "--head-dim", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "--height is required (unless --any-size)" in proc.stderr
    proc = subprocess.run([*cmd, "--any-size", "--out", str(tmp_path / "k.ptx")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["name"] == "swinedge_window_attention_fp16_sm90_anysize_w7_s0_h2_d16" and summary["ptx_params"] == 6
    assert (tmp_path / "k.ptx").read_text().count(f".entry {summary['name']}(") == 1
