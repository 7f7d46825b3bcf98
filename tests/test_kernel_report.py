"""The static kernel report: the AOT PTX the plugin ships meets issue #9's limits.

Static measurements (ptxas -v, cuobjdump -sass of the exact PTX TensorRT receives), run
here without a GPU; the report's roofline figures are a model and are not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swinedge.benchmarks.kernel_report import KernelStats, check, count_per_thread, parse_sass
from swinedge.ops.window_attention import WindowGeometry

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("kernel-report") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "swinedge.benchmarks.kernel_report", "--cc", "87,90", "--models", "swin_t,swin_b_384,swinv2_b_384", "--json", str(out), "--check"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "model" in proc.stdout and "not a timing" in proc.stdout  # the model is labelled as one
    return json.loads(out.read_text())


def _find(report: dict, g: WindowGeometry, cc: int) -> dict:
    return next(s for s in report["stats"] if WindowGeometry(**s["geometry"]) == g and s["cc"] == cc)


@pytest.mark.slow
def test_swin_t_stage1_instruction_budget(report: dict) -> None:
    shifted, plain = WindowGeometry(56, 56, 7, 3, 3, 32), WindowGeometry(56, 56, 7, 0, 3, 32)
    assert _find(report, shifted, 90)["sass_per_thread"] <= 550
    assert _find(report, plain, 90)["sass_per_thread"] <= 500
    for g in (shifted, plain):
        s = _find(report, g, 87)
        assert s["sass_per_thread"] <= 700 and s["registers"] <= 96


@pytest.mark.slow
def test_window_12_budget(report: dict) -> None:
    for side, heads in ((96, 4), (48, 8), (24, 16)):
        s = _find(report, WindowGeometry(side, side, 12, 6, heads, 32), 90)
        assert s["registers"] <= 96 and s["warp_instructions_per_window_head"] <= 20000


@pytest.mark.slow
def test_every_kernel_uses_16_byte_accesses_no_spills_small_shared_memory(report: dict) -> None:
    assert report["problems"] == []
    for s in report["stats"]:
        assert s["spill_stores"] == s["spill_loads"] == 0
        assert s["shared_mem"] <= 48 * 1024
        assert not any(op.endswith((".U16", ".S16", ".U8", ".S8")) for op in {**s["loads"], **s["stores"]})
        assert s["loads"].get("LDG.E.128", 0) >= 4 and s["stores"].get("STG.E.128", 0) >= 1


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0020*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0030*/                   FADD R5, R5, R6 ;
        /*0040*/                   ISETP.NE.AND P0, PT, R0, 0x9, PT ;
        /*0050*/              @P0 BRA `(.L_x_0) ;
        /*0060*/                   STG.E.128 desc[UR4][R2.64], R4 ;
        /*0070*/                   EXIT ;
.L_x_1:
        /*0080*/                   BRA `(.L_x_1);
        /*0090*/                   NOP;
"""


def test_sass_count_multiplies_loop_bodies_and_stops_at_the_trap() -> None:
    instructions, labels = parse_sass(SASS)
    assert len(instructions) == 10 and labels == {".L_x_0": 0x20, ".L_x_1": 0x80}
    static, per_thread, loops = count_per_thread(instructions, labels, trips=9)
    assert (static, loops) == (8, 1)  # the self-branch after EXIT and its NOPs never run
    assert per_thread == 8 + 4 * 8  # the 4-instruction body runs 9 times


def test_check_reports_each_broken_limit() -> None:
    g = WindowGeometry(56, 56, 7, 3, 3, 32)
    bad = KernelStats(geometry=g.__dict__, dtype="float16", cc=90, name="k", registers=128, spill_stores=8, spill_loads=8,
                      shared_mem=64 * 1024, threads=128, programs_per_window_head=1, sass_static=900, sass_per_thread=900, loops=0,
                      loads={"LDG.E.U16": 39}, stores={"STG.E.U16": 13})  # fmt: skip
    problems = check([bad])
    assert any("spills" in p for p in problems) and any("shared memory" in p for p in problems)
    assert any("2-byte global accesses" in p for p in problems) and any("900 SASS per thread > 550" in p for p in problems)


@pytest.mark.slow
def test_swin_v2_cosine_kernels_are_covered(report: dict) -> None:
    """Swin V2-B 384's geometries (windows 24 and 12, the 576-token one shifted) are in the
    report, each compiled as the cosine kernel, without spills and within 96 registers."""
    v2 = [s for s in report["stats"] if s["geometry"]["cosine"]]
    windows = {s["geometry"]["window"] for s in v2}
    assert windows == {12, 24}
    assert _find(report, WindowGeometry(96, 96, 24, 12, 4, 32, cosine=True), 90)["name"].startswith("swinedge_cosine_window_attention_")
    for s in v2:
        assert s["registers"] <= 96 and s["spill_stores"] == s["spill_loads"] == 0
