"""Ahead-of-time PTX for the TensorRT plugin, compiled on this (GPU-less) machine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swinedge.errors import SwinedgeError
from swinedge.ops.aot import compile_in_subprocess, strip_unused_params
from swinedge.ops.window_attention import WindowGeometry

pytest.importorskip("triton")

SWIN_T_STAGE1_SHIFTED = WindowGeometry(56, 56, 7, 3, 3, 32)


def _ptxas() -> str | None:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return str(bundled) if bundled.exists() else shutil.which("ptxas")


@pytest.mark.slow
@pytest.mark.parametrize("cc,target", [(87, "sm_87"), (89, "sm_89"), (90, "sm_90a")])
def test_compiles_for_jetson_ada_hopper(cc: int, target: str, tmp_path: Path) -> None:
    k = compile_in_subprocess(SWIN_T_STAGE1_SHIFTED, compute_capability=cc)
    assert k["ptx_target"] == target
    assert k["ptx_isa"] == "8.0"  # loads on CUDA 12.0+ drivers (Jetson Orin's JetPack 6)
    assert k["ptx_params"] == 4  # qkv, bias, pad_qkv, out: exactly what TensorRT passes
    assert k["block_x"] == k["num_warps"] * 32
    assert k["grid_per_image"] == 64 and k["grid_y"] == 3  # 8x8 windows, one 64-query block; 3 heads
    assert 0 < k["shared_mem"] <= 48 * 1024
    assert f".visible .entry {k['name']}(" in k["ptx"]
    ptxas = _ptxas()
    if ptxas:  # the stripped PTX still assembles
        (tmp_path / "k.ptx").write_text(k["ptx"])
        proc = subprocess.run([ptxas, f"-arch={target}", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "geometry,dtype",
    [
        (WindowGeometry(56, 56, 7, 3, 3, 32), "float32"),
        (WindowGeometry(28, 28, 7, 3, 6, 32), "bfloat16"),
        (WindowGeometry(24, 24, 12, 6, 4, 32), "float16"),  # Swin-B/L 384 windows
        (WindowGeometry(16, 16, 16, 8, 2, 64), "float16"),  # largest window, head dim 64
        (WindowGeometry(10, 10, 7, 3, 2, 128), "float16"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"w{v.window}d{v.head_dim}",
)
def test_every_supported_shape_fits_a_plain_launch(geometry: WindowGeometry, dtype: str) -> None:
    k = compile_in_subprocess(geometry, compute_capability=90, dtype=dtype)
    assert k["shared_mem"] <= 48 * 1024 and k["ptx_params"] == 4


@pytest.mark.slow
def test_padded_geometry_reads_pad_input() -> None:
    k = compile_in_subprocess(WindowGeometry(10, 10, 7, 3, 1, 32), compute_capability=90)
    body = k["ptx"][k["ptx"].index("{", k["ptx"].index(".entry")) :]
    assert re.search(rf"{k['name']}_param_2\b", body)  # pad_qkv is read when padding exists


def test_unsupported_geometry_fails_before_compiling() -> None:
    with pytest.raises(SwinedgeError, match="at most 256 tokens"):
        compile_in_subprocess(WindowGeometry(34, 34, 17, 0, 1, 32), compute_capability=90)


PTX = """
.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u64 .ptr .global .align 1 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2
)
{
\tld.param.u64 %rd1, [k_param_0];
\tld.param.u64 %rd2, [k_param_1];
}
"""


def test_strip_unused_params() -> None:
    out = strip_unused_params(PTX, "k", keep=2)
    assert "k_param_2" not in out and "k_param_1" in out
    with pytest.raises(SwinedgeError, match="reads hidden parameters"):
        strip_unused_params(PTX, "k", keep=1)
