"""Ahead-of-time PTX for the TensorRT plugin, compiled on this (GPU-less) machine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swinedge.errors import SwinedgeError
from swinedge.ops.aot import (
    SUPPORTED_CC,
    compile_in_subprocess,
    entry_name,
    plugin_io_error,
    ptx_version_for,
    rename_entry,
    strip_unused_params,
    triton_version_ok,
)
from swinedge.ops.window_attention import WindowGeometry

pytest.importorskip("triton")

SWIN_T_STAGE1_SHIFTED = WindowGeometry(56, 56, 7, 3, 3, 32)


def _ptxas() -> str | None:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return str(bundled) if bundled.exists() else shutil.which("ptxas")


# Every architecture the project advertises: PTX target and the ISA it is pinned to. The
# ISA floors for Blackwell are LLVM's own (below them it aborts the whole process).
ARCHITECTURES = {80: ("sm_80", "8.0"), 86: ("sm_86", "8.0"), 87: ("sm_87", "8.0"), 89: ("sm_89", "8.0"),
                 90: ("sm_90a", "8.0"), 100: ("sm_100a", "8.6"), 120: ("sm_120a", "8.7")}  # fmt: skip


def test_every_advertised_architecture_has_an_expectation() -> None:
    assert set(SUPPORTED_CC) == set(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("cc", sorted(ARCHITECTURES))
def test_compiles_for_every_advertised_architecture(cc: int, tmp_path: Path) -> None:
    target, isa = ARCHITECTURES[cc]
    k = compile_in_subprocess(SWIN_T_STAGE1_SHIFTED, compute_capability=cc)  # a fresh process: LLVM aborts kill only it
    assert k["ptx_target"] == target
    assert k["ptx_isa"] == isa  # 8.0 loads on CUDA 12.0+ drivers (Jetson Orin's JetPack 6)
    assert k["ptx_params"] == 4  # qkv, table, pad_qkv, out: exactly what TensorRT passes
    assert k["block_x"] == k["num_warps"] * 32
    assert k["grid_per_image"] == 64 * 3 and k["grid_y"] == 1  # 8x8 windows x 3 heads, one 64-query program each
    assert 0 < k["shared_mem"] <= 48 * 1024
    assert k["name"] == f"swinedge_window_attention_fp16_sm{cc}_56x56_w7_s3_h3_d32"
    assert f".visible .entry {k['name']}(" in k["ptx"]
    assert not re.search(r"(?<![\w$])_kernel(_param_\d+)?(?![\w$])", k["ptx"])  # Triton's name is gone everywhere
    ptxas = _ptxas()
    if ptxas:  # the renamed, stripped PTX still assembles
        (tmp_path / "k.ptx").write_text(k["ptx"])
        proc = subprocess.run([ptxas, f"-arch={target}", str(tmp_path / "k.ptx"), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_too_old_ptx_isa_is_refused_before_llvm() -> None:
    assert ptx_version_for(90) == 80 and ptx_version_for(100) == 86 and ptx_version_for(120) == 87
    assert ptx_version_for(87, 83) == 83
    with pytest.raises(SwinedgeError, match="PTX ISA 8.0 cannot target sm_120: it needs at least 8.7"):
        ptx_version_for(120, 80)


def test_entry_names_are_unique_per_geometry_dtype_and_architecture() -> None:
    geometries = [WindowGeometry(56, 56, 7, s, 3, 32) for s in (0, 3)] + [WindowGeometry(28, 28, 7, 3, 6, 32), WindowGeometry(10, 12, 7, 3, 6, 32)]
    names = {entry_name(g, dt, cc) for g in geometries for dt in ("float16", "float32", "bfloat16") for cc in SUPPORTED_CC}
    assert len(names) == len(geometries) * 3 * len(SUPPORTED_CC)
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names)  # valid PTX identifiers


def test_rename_entry_renames_the_entry_and_its_parameters_only() -> None:
    ptx = PTX.replace("k_param", "_kernel_param").replace("entry k(", "entry _kernel(") + "// @_kernel\n// my_kernel_x\n"
    out = rename_entry(ptx, "_kernel", "swinedge_k")
    assert ".entry swinedge_k(" in out and "[swinedge_k_param_0]" in out and "swinedge_k_param_2" in out
    assert "my_kernel_x" in out and "_kernel_param" not in out.replace("swinedge_k_param", "")
    with pytest.raises(SwinedgeError, match="no entry named"):
        rename_entry(ptx, "absent", "x")


@pytest.mark.parametrize(
    "io,problem",
    [
        (("float16", "float32", "float16", "float16"), None),
        (("float32", "float32", "float32", "float32"), None),
        (("bfloat16", "float32", "bfloat16", "bfloat16"), None),
        (("float16", "float16", "float16", "float16"), "table must be float32, got float16"),
        (("float16", "float32", "float32", "float16"), "pad_qkv must have the dtype of qkv (float16), got float32"),
        (("float16", "float32", "float16", "float32"), "the output must have the dtype of qkv (float16), got float32"),
        (("int8", "float32", "int8", "int8"), "qkv must be float16, float32, bfloat16, got int8"),
    ],
)
def test_plugin_io_dtypes(io, problem) -> None:
    assert plugin_io_error(*io) == problem


def test_triton_version_floor() -> None:
    assert triton_version_ok("3.4.0") and triton_version_ok("3.9.0") and triton_version_ok("4.0")
    assert not triton_version_ok("3.3.1") and not triton_version_ok("3.2.0") and not triton_version_ok(None) and not triton_version_ok("dev")


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
    with pytest.raises(SwinedgeError, match="at most 576 tokens"):
        compile_in_subprocess(WindowGeometry(50, 50, 25, 0, 1, 32), compute_capability=90)


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
