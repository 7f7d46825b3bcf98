"""Static report of the fused kernel exactly as the TensorRT plugin ships it (no GPU needed).

    python -m swinedge.benchmarks.kernel_report [--cc 80,87,89,90] [--dtype float16]
        [--models swin_t,...] [--any-size] [--json FILE] [--check]

For every attention geometry of the Swin V1 and V2 variants (shifted and not, plus
padded sizes; V2's cosine kernel for V2) it compiles the AOT PTX the plugin returns (:func:`swinedge.ops.aot.compile_window_attention`),
assembles it with Triton's bundled ``ptxas -v`` (registers, spills, shared memory) and
reads it back with ``cuobjdump -sass``: SASS instructions per thread (straight-line code
plus loop bodies times their trip count: an upper bound when the compiler peels an
iteration), the widths of global loads and stores, and occupancy from the
architecture's limits. These are static measurements.

From them it builds a roofline estimate that is a **model, not a timing**: for batch 32,
bytes that must cross HBM (read qkv, write the output) against issue slots
(warp-instructions / (SMs x 4 schedulers x clock)), with data-sheet peaks of H100 SXM,
A100 SXM and Jetson AGX Orin. It leaves out latency, occupancy and the L2 traffic of the
score table and of keys re-read by several query programs (reported per (window, head)
beside it: the table is shared by every window and image, so it is read from L2, not
HBM). ``--check`` exits 1 when a limit of issue #9 is broken.

``--any-size`` adds, after each geometry's row, the kernel that takes the feature-map
height and width at run time (one PTX for every size of a block; ``any`` in the kind
column), and a table of what the run-time sizes cost against the static kernel
(registers, spills, SASS instructions per thread). Issue #9's per-geometry instruction
budgets are the static kernel's; the any-size rows are held to the limits every kernel
has (no spills, 16-byte accesses, shared memory) and, for Swin-T's geometries on sm_90,
to at most 96 registers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swinedge.ops.window_attention import WindowGeometry

# Data-sheet figures used only by the model: SMs, boost clock (GHz), HBM/DRAM GB/s.
GPUS = {
    "H100 SXM": {"cc": 90, "sms": 132, "clock_ghz": 1.98, "bandwidth_gbs": 3350},
    "A100 SXM": {"cc": 80, "sms": 108, "clock_ghz": 1.41, "bandwidth_gbs": 2039},
    "AGX Orin": {"cc": 87, "sms": 16, "clock_ghz": 1.30, "bandwidth_gbs": 204.8},
}
MODEL_GPU = {90: "H100 SXM", 80: "A100 SXM", 87: "AGX Orin"}
# Per-SM limits (CUDA programming guide, compute capabilities table).
SM_LIMITS = {
    80: {"threads": 2048, "blocks": 32, "smem": 164 * 1024},
    86: {"threads": 1536, "blocks": 16, "smem": 100 * 1024},
    87: {"threads": 1536, "blocks": 16, "smem": 164 * 1024},
    89: {"threads": 1536, "blocks": 24, "smem": 100 * 1024},
    90: {"threads": 2048, "blocks": 32, "smem": 228 * 1024},
    100: {"threads": 2048, "blocks": 32, "smem": 228 * 1024},
    120: {"threads": 1536, "blocks": 32, "smem": 100 * 1024},
}
REGISTERS_PER_SM = 65536
MODEL_BATCH = 32

# Swin V1 variants: (img, patch, window, embed_dim, depths, heads).
VARIANTS = {
    "swin_t": (224, 4, 7, 96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_s": (224, 4, 7, 96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_b": (224, 4, 7, 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_l": (224, 4, 7, 192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "swin_b_384": (384, 4, 12, 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin_l_384": (384, 4, 12, 192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
# Swin V2 variants (cosine attention), by timm's names: windows 8, 12, 16 and 24.
V2_VARIANTS = {
    "swinv2_t": "swinv2_tiny_window8_256",
    "swinv2_t_w16": "swinv2_tiny_window16_256",
    "swinv2_b": "swinv2_base_window8_256",
    "swinv2_b_w16": "swinv2_base_window16_256",
    "swinv2_b_192": "swinv2_base_window12_192",
    "swinv2_b_384": "swinv2_base_window12to24_192to384",
    "swinv2_l_384": "swinv2_large_window12to24_192to384",
}
MODELS = (*VARIANTS, *V2_VARIANTS)
# Sizes that are not a window multiple (padding inside the kernel).
PADDED = [WindowGeometry(10, 10, 7, 3, 3, 32), WindowGeometry(30, 30, 12, 6, 4, 32)]


def variant_geometries(name: str) -> list[WindowGeometry]:
    if name in V2_VARIANTS:
        from swinedge.models.swin_v2 import SWINV2_SPECS

        out: list[WindowGeometry] = []
        for stage in SWINV2_SPECS[V2_VARIANTS[name]].config.stage_geometries():
            for g in stage:
                if g not in out:
                    out.append(g)
        return out
    img, patch, window, dim, depths, heads = VARIANTS[name]
    out, res = [], img // patch
    for i, (depth, h) in enumerate(zip(depths, heads)):
        if i:
            res = (res + 1) // 2
        ws = min(window, res)
        shifts = {0} if res <= window else {0, window // 2}
        if depth < 2:
            shifts = {0}
        out += [WindowGeometry(res, res, ws, s, h, dim * 2**i // h) for s in sorted(shifts)]
    return out


@dataclass
class KernelStats:
    geometry: dict
    dtype: str
    cc: int
    name: str
    registers: int
    spill_stores: int
    spill_loads: int
    shared_mem: int
    threads: int
    programs_per_window_head: int
    sass_static: int
    sass_per_thread: int
    loops: int
    loads: dict = field(default_factory=dict)  # mnemonic -> count, e.g. LDG.E.128
    stores: dict = field(default_factory=dict)
    occupancy: float = 0.0
    warp_instructions_per_window_head: int = 0
    l2_bytes_per_window_head: int = 0  # what its programs read (q, k, v re-reads, table) and write
    model: dict = field(default_factory=dict)
    any_size: bool = False  # the kernel taking height and width at run time


def _tools() -> tuple[str, str]:
    import triton

    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return str(bindir / "ptxas"), str(bindir / "cuobjdump")


_SASS = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:(@!?U?P[T0-9]+)\s+)?([A-Z][A-Z0-9_.]*)(.*?);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")


def parse_sass(text: str) -> tuple[list[tuple[int, str, str]], dict[str, int]]:
    """Instructions ``(address, mnemonic, operands)`` and label -> address."""
    instructions, labels, pending = [], {}, []
    for line in text.splitlines():
        lm = _LABEL.match(line)
        if lm:
            pending.append(lm.group(1))
            continue
        m = _SASS.match(line)
        if m:
            addr = int(m.group(1), 16)
            for lab in pending:
                labels[lab] = addr
            pending = []
            instructions.append((addr, m.group(3), m.group(4)))
    return instructions, labels


def count_per_thread(instructions: list[tuple[int, str, str]], labels: dict[str, int], trips: int) -> tuple[int, int, int]:
    """(static count, per-thread count, loops): code up to the terminal self-branch;
    each backward branch's body counted ``trips`` times."""
    end = len(instructions)
    for i, (addr, op, rest) in enumerate(instructions):
        t = re.search(r"`\((\.L_x_\d+)\)", rest)
        if op == "BRA" and t and labels.get(t.group(1)) == addr:  # the trap after EXIT
            end = i
            break
    code = [x for x in instructions[:end] if x[1] != "NOP"]
    total, loops = len(code), 0
    for addr, op, rest in code:
        t = re.search(r"`\((\.L_x_\d+)\)", rest)
        if op == "BRA" and t and labels.get(t.group(1), addr) < addr:
            loops += 1
            body = sum(1 for a, o, _ in code if labels[t.group(1)] <= a <= addr)
            total += body * (trips - 1)
    return len(code), total, loops


def occupancy(cc: int, registers: int, threads: int, shared: int) -> float:
    lim = SM_LIMITS[cc]
    warps = threads // 32
    regs_per_warp = math.ceil(registers * 32 / 256) * 256
    by_regs = (REGISTERS_PER_SM // regs_per_warp) // warps
    by_threads = lim["threads"] // threads
    by_smem = lim["smem"] // shared if shared else lim["blocks"]
    blocks = min(by_regs, by_threads, by_smem, lim["blocks"])
    return blocks * threads / lim["threads"]


def roofline(g: WindowGeometry, stats: KernelStats, elem: int) -> dict:
    gpu = MODEL_GPU.get(stats.cc)
    if gpu is None:
        return {}
    p = GPUS[gpu]
    tokens = g.height * g.width
    hbm_bytes = MODEL_BATCH * tokens * 4 * g.dim * elem  # read q, k, v; write the output
    warp_instr = MODEL_BATCH * g.num_windows * g.num_heads * stats.warp_instructions_per_window_head
    t_mem = hbm_bytes / (p["bandwidth_gbs"] * 1e9)
    t_issue = warp_instr / (p["sms"] * 4 * p["clock_ghz"] * 1e9)
    return {
        "gpu": gpu,
        "batch": MODEL_BATCH,
        "hbm_bytes": hbm_bytes,
        "warp_instructions": warp_instr,
        "t_memory_us": round(t_mem * 1e6, 2),
        "t_issue_us": round(t_issue * 1e6, 2),
        "roofline_fraction": round(t_mem / max(t_mem, t_issue), 3),
        "bound": "memory" if t_mem >= t_issue else "issue",
    }


def analyze(g: WindowGeometry, cc: int, dtype: str = "float16", any_size: bool = False) -> KernelStats:
    """Static figures of the kernel the plugin ships for ``g`` (``any_size``: the
    run-time-size kernel of ``g``'s block; the roofline still uses ``g``'s size)."""
    from swinedge.ops.aot import compile_window_attention
    from swinedge.ops.triton_kernel import launch_config

    k = compile_window_attention(g, compute_capability=cc, dtype=dtype, any_size=any_size)
    cfg = launch_config(g)
    ptxas, cuobjdump = _tools()
    arch = re.search(r"\.target\s+(\w+)", k.ptx).group(1)
    with tempfile.TemporaryDirectory(prefix="swinedge-sass-") as d:
        ptx, cubin = Path(d) / "k.ptx", Path(d) / "k.cubin"
        ptx.write_text(k.ptx)
        proc = subprocess.run([ptxas, "-v", f"-arch={arch}", str(ptx), "-o", str(cubin)], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"ptxas failed for {k.name}: {proc.stderr.strip()[-500:]}")
        info = proc.stderr
        sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info)
    instructions, labels = parse_sass(sass)
    static, per_thread, loops = count_per_thread(instructions, labels, cfg.key_blocks)
    loads, stores = {}, {}
    for _, op, _ in instructions:
        if op.startswith("LDG"):
            loads[op] = loads.get(op, 0) + 1
        elif op.startswith("STG"):
            stores[op] = stores.get(op, 0) + 1
    threads = k.block_x
    programs = k.programs_per_window_head
    s = KernelStats(
        geometry=asdict(g), dtype=dtype, cc=cc, name=k.name, registers=regs,
        spill_stores=int(spills.group(1)), spill_loads=int(spills.group(2)), shared_mem=k.shared_mem, threads=threads,
        programs_per_window_head=programs, sass_static=static, sass_per_thread=per_thread, loops=loops,
        loads=loads, stores=stores, occupancy=round(occupancy(cc, regs, threads, k.shared_mem), 3),
        warp_instructions_per_window_head=programs * (threads // 32) * per_thread, any_size=any_size,
    )  # fmt: skip
    elem = {"float16": 2, "bfloat16": 2, "float32": 4}[dtype]
    per_program = cfg.block_m * g.head_dim * elem * 2 + cfg.key_blocks * cfg.block_n * g.head_dim * elem * 2 + cfg.block_m * cfg.cols * 4
    s.l2_bytes_per_window_head = programs * per_program
    s.model = roofline(g, s, elem)
    return s


def _label(g: dict) -> str:
    cosine = " cos" if g.get("cosine") else ""
    return f"{g['height']}x{g['width']} w{g['window']} s{g['shift']} h{g['num_heads']} d{g['head_dim']}{cosine}"


# -- the limits of issue #9 (fp16, AOT build) ---------------------------------------------------
SWIN_T_STAGE1 = WindowGeometry(56, 56, 7, 3, 3, 32)
SWIN_T_STAGE1_PLAIN = WindowGeometry(56, 56, 7, 0, 3, 32)
WINDOW12_SHIFTED = WindowGeometry(96, 96, 12, 6, 4, 32)
# The any-size kernel's register limit for Swin-T's geometries (window 7, head dim 32) on sm_90.
ANY_SIZE_MAX_REGISTERS = 96


def check(stats: list[KernelStats]) -> list[str]:
    """Every limit a report breaks, as one line each (empty: all hold)."""
    problems = []
    for s in stats:
        where = f"{_label(s.geometry)} {s.dtype} sm_{s.cc}{' any-size' if s.any_size else ''}"
        if s.spill_stores or s.spill_loads:
            problems.append(f"{where}: spills ({s.spill_stores} B stored, {s.spill_loads} B loaded)")
        if s.shared_mem > 48 * 1024:
            problems.append(f"{where}: {s.shared_mem} B of shared memory > 48 KiB")
        if s.dtype in ("float16", "bfloat16"):
            scalar = {k: v for k, v in {**s.loads, **s.stores}.items() if k.endswith(".U16") or k.endswith(".S16")}
            if scalar:
                problems.append(f"{where}: 2-byte global accesses {scalar} (q/k/v/out must be 16-byte vectors)")
            if not any(k.endswith(".128") for k in s.loads) or not any(k.endswith(".128") for k in s.stores):
                problems.append(f"{where}: no 16-byte global loads or stores ({s.loads}, {s.stores})")
        g = WindowGeometry(**s.geometry)
        if s.any_size:
            if s.dtype == "float16" and s.cc == 90 and g.window == 7 and g.head_dim == 32 and s.registers > ANY_SIZE_MAX_REGISTERS:
                problems.append(f"{where} any-size: {s.registers} registers > {ANY_SIZE_MAX_REGISTERS}")
            continue  # issue #9's per-geometry budgets are the static kernel's
        if s.dtype == "float16":
            if g == SWIN_T_STAGE1 and s.cc == 90 and s.sass_per_thread > 550:
                problems.append(f"{where}: {s.sass_per_thread} SASS per thread > 550")
            if g == SWIN_T_STAGE1_PLAIN and s.cc == 90 and s.sass_per_thread > 500:
                problems.append(f"{where}: {s.sass_per_thread} SASS per thread > 500")
            if g in (SWIN_T_STAGE1, SWIN_T_STAGE1_PLAIN) and s.cc == 87 and (s.sass_per_thread > 700 or s.registers > 96):
                problems.append(f"{where}: {s.sass_per_thread} SASS per thread (<= 700) and {s.registers} registers (<= 96)")
            if g.window == 12 and g.shift and s.cc == 90:
                if s.registers > 96:
                    problems.append(f"{where}: {s.registers} registers > 96")
                if s.warp_instructions_per_window_head > 20000:
                    problems.append(f"{where}: {s.warp_instructions_per_window_head} warp-instructions per (window, head) > 20000")
    return problems


def table(stats: list[KernelStats]) -> str:
    head = f"{'geometry':<28} {'kind':<6} {'dtype':<8} {'sm':>3} {'regs':>4} {'spill':>5} {'smem':>6} {'occ':>5} {'SASS/thr':>8} {'warp-instr/(win,head)':>21} {'L2 KB':>6} {'LDG.128':>7} {'STG.128':>7} {'model':>12}"
    rows = [head, "-" * len(head)]
    for s in stats:
        model = f"{s.model['roofline_fraction'] * 100:.0f}% {s.model['gpu'].split()[0]}" if s.model else "-"
        rows.append(
            f"{_label(s.geometry):<28} {'any' if s.any_size else 'static':<6} {s.dtype:<8} {s.cc:>3} {s.registers:>4} {s.spill_stores + s.spill_loads:>5} {s.shared_mem:>6} "
            f"{s.occupancy:>5.2f} {s.sass_per_thread:>8} {s.warp_instructions_per_window_head:>21} {s.l2_bytes_per_window_head / 1024:>6.0f} "
            f"{s.loads.get('LDG.E.128', 0):>7} {s.stores.get('STG.E.128', 0):>7} {model:>12}"
        )
    return "\n".join(rows)


def any_size_cost(stats: list[KernelStats]) -> str:
    """Static against any-size kernel, per geometry and architecture: registers, spill
    bytes and SASS instructions per thread (empty without any-size rows)."""
    static = {(json.dumps(s.geometry, sort_keys=True), s.dtype, s.cc): s for s in stats if not s.any_size}
    head = f"{'geometry':<28} {'dtype':<8} {'sm':>3} {'regs static/any':>15} {'spill static/any':>16} {'SASS/thr static/any':>19} {'SASS +':>9}"
    rows = [head, "-" * len(head)]
    for a in stats:
        s = static.get((json.dumps(a.geometry, sort_keys=True), a.dtype, a.cc)) if a.any_size else None
        if s is None:
            continue
        extra = a.sass_per_thread - s.sass_per_thread
        rows.append(
            f"{_label(a.geometry):<28} {a.dtype:<8} {a.cc:>3} {f'{s.registers}/{a.registers}':>15} "
            f"{f'{s.spill_stores + s.spill_loads}/{a.spill_stores + a.spill_loads}':>16} "
            f"{f'{s.sass_per_thread}/{a.sass_per_thread}':>19} {f'{extra:+d} ({extra / s.sass_per_thread:+.0%})':>9}"
        )
    return "\n".join(rows) if len(rows) > 2 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default="80,87,89,90", help="compute capabilities, comma-separated")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--models", default=",".join(VARIANTS), help=f"any of {', '.join(MODELS)}")
    ap.add_argument("--no-padded", action="store_true", help="leave out the padded sizes")
    ap.add_argument("--any-size", action="store_true", help="also report the run-time-size kernel of every geometry, beside the static one")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--check", action="store_true", help="exit 1 when a limit of issue #9 is broken")
    a = ap.parse_args(argv)
    geometries: list[WindowGeometry] = []
    for name in a.models.split(","):
        if name not in MODELS:
            print(f"error: unknown model '{name}' (one of {', '.join(MODELS)})", file=sys.stderr)
            return 2
        geometries += [g for g in variant_geometries(name) if g not in geometries]
    if not a.no_padded:
        geometries += PADDED
    stats = []
    for cc in (int(c) for c in a.cc.split(",")):
        for g in geometries:
            stats.append(analyze(g, cc, a.dtype))
            if a.any_size:
                stats.append(analyze(g, cc, a.dtype, any_size=True))
            print(f"  compiled {_label(asdict(g))} sm_{cc}", file=sys.stderr, flush=True)
    print("static measurements (ptxas -v, cuobjdump -sass); 'model' = roofline MODEL at batch 32, not a timing")
    print(table(stats))
    cost = any_size_cost(stats)
    if cost:
        print("\nthe cost of run-time sizes: static kernel / any-size kernel (same geometry)")
        print(cost)
    problems = check(stats)
    if a.json:
        Path(a.json).write_text(json.dumps({"stats": [asdict(s) for s in stats], "problems": problems}, indent=1))
    for p in problems:
        print(f"LIMIT: {p}")
    print(f"{len(stats)} kernels, {len(problems)} limits broken")
    return 1 if (a.check and problems) else 0


if __name__ == "__main__":
    raise SystemExit(main())
