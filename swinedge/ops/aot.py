"""Ahead-of-time compilation of the fused kernel to PTX (no GPU needed).

This is what the TensorRT plugin's AOT implementation returns: kernel name, PTX and
launch parameters. TensorRT launches an AOT kernel with the arguments
``(inputs..., extra scalars..., outputs...)``; ours are ``(qkv, table, pad_qkv, out)``
(Swin V2's cosine kernel: ``(qkv, table, pad_qkv, logit_scale, out)``) with no extra scalars (every size is a compile-time constant but the batch, which only
enters the grid). The any-size kernels (``any_size=True``) take the feature-map height
and width as the two extra int32 scalars: ``(qkv, table, pad_qkv, [logit_scale,] height,
width, out)``, one PTX for every size of a block (an engine with several optimization
profiles); their grid is ``batch * ceil(H / window) * ceil(W / window) *
programs_per_window`` (:meth:`AotKernel.launch_dims_at`).

Triton >= 3.3 appends hidden scratch-pointer parameters to every kernel. TensorRT would
not pass them, so we require the compiled kernel to need no scratch memory, check that
the PTX body never reads those parameters, and drop their declarations: the PTX entry
then takes exactly TensorRT's arguments.

Run as a module to compile one geometry and print a JSON summary::

    python -m swinedge.ops.aot --cc 90 --height 56 --window 7 --shift 3 --heads 3 --head-dim 32
    python -m swinedge.ops.aot --cc 90 --any-size --window 7 --shift 3 --heads 3 --head-dim 32
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass

from swinedge.errors import SwinedgeError
from swinedge.ops.triton_kernel import any_size_constexprs, check_geometry, constexprs, kernel, launch_config
from swinedge.ops.window_attention import WindowGeometry

KERNEL_ARGS = ("qkv", "table", "pad_qkv", "out")
COSINE_KERNEL_ARGS = ("qkv", "table", "pad_qkv", "logit_scale", "out")
# The run-time sizes: TensorRT's extra int32 scalars, after the inputs, before the output.
SIZE_ARGS = ("height", "width")
ANY_SIZE_KERNEL_ARGS = ("qkv", "table", "pad_qkv", *SIZE_ARGS, "out")
ANY_SIZE_COSINE_KERNEL_ARGS = ("qkv", "table", "pad_qkv", "logit_scale", *SIZE_ARGS, "out")


def kernel_args(geometry: WindowGeometry, any_size: bool = False) -> tuple[str, ...]:
    """The kernel's parameters, in TensorRT's order: inputs, then (any-size kernels) the
    height and width scalars, then the output."""
    if any_size:
        return ANY_SIZE_COSINE_KERNEL_ARGS if geometry.cosine else ANY_SIZE_KERNEL_ARGS
    return COSINE_KERNEL_ARGS if geometry.cosine else KERNEL_ARGS

# The GPUs the kernel is compiled and tested for. Others (sm_75, sm_103, Thor, sm_121 ...)
# get the native attention graph: see ``swinedge.engine.plugin_blockers``.
SUPPORTED_CC = (80, 86, 87, 89, 90, 100, 120)
# Triton >= 3.4: ``ASTSource(constexprs=...)`` and ``triton.knobs``.
MIN_TRITON = (3, 4)
# PTX ISA 8.0 loads on every CUDA 12.0+ driver (Jetson Orin's JetPack 6 included). Left
# alone, Triton picks the ISA of whatever ptxas it finds, which can need a newer driver
# than the deployment target has. Blackwell targets need newer ISAs, and LLVM aborts the
# whole process (no Python exception) when asked for less, so the floor is checked here.
DEFAULT_PTX_VERSION = 80
MIN_PTX_VERSION = {100: 86, 120: 87}  # sm_100a: 8.6, sm_120a: 8.7 (LLVM's own minimums)
# Dynamic shared memory a kernel may use without cudaFuncSetAttribute opt-in.
MAX_SHARED_MEM = 48 * 1024
_DTYPES = {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}


@dataclass(frozen=True)
class AotKernel:
    name: str
    ptx: str
    compute_capability: int
    dtype: str
    num_warps: int
    shared_mem: int
    # Static kernels: grid_x = batch * grid_per_image (windows x query blocks x heads).
    # Any-size kernels: 0 (the window count is a run-time figure): see launch_dims_at.
    grid_per_image: int
    grid_y: int
    block_x: int
    programs_per_window_head: int = 1  # query blocks
    programs_per_window: int = 0  # query blocks x heads
    window: int = 0
    any_size: bool = False  # takes (height, width) int32 scalars after the inputs

    def launch_dims(self, batch: int) -> tuple[int, int, int, int, int, int, int]:
        """(grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_mem) for ``batch``
        (static kernels; an any-size kernel's grid depends on the size: launch_dims_at)."""
        if self.any_size:
            raise SwinedgeError(f"{self.name} takes its size at run time: use launch_dims_at(batch, height, width)")
        return (batch * self.grid_per_image, self.grid_y, 1, self.block_x, 1, 1, self.shared_mem)

    def launch_dims_at(self, batch: int, height: int, width: int) -> tuple[int, int, int, int, int, int, int]:
        """:meth:`launch_dims` for a ``height`` x ``width`` feature map: grid_x =
        ``batch * ceil(height / window) * ceil(width / window) * programs_per_window``.
        A static kernel runs only at the size it was compiled for."""
        grid = batch * -(-height // self.window) * -(-width // self.window) * self.programs_per_window
        if not self.any_size and grid != batch * self.grid_per_image:
            raise SwinedgeError(f"{self.name} is compiled for one size; {height}x{width} is not it")
        return (grid, self.grid_y, 1, self.block_x, 1, 1, self.shared_mem)

    def summary(self) -> dict:
        d = asdict(self)
        ptx = d.pop("ptx")
        d["ptx_sha256"] = hashlib.sha256(ptx.encode()).hexdigest()
        d["ptx_params"] = len(entry_params(ptx, self.name))
        d["ptx_target"] = re.search(r"\.target\s+(\w+)", ptx).group(1)
        d["ptx_isa"] = re.search(r"\.version\s+([\d.]+)", ptx).group(1)
        return d


def entry_params(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if not m:
        raise SwinedgeError(f"PTX has no entry named {name}")
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


def plugin_io_error(qkv: str, table: str, pad_qkv: str, out: str, logit_scale: str | None = None) -> str | None:
    """What is wrong with the plugin's I/O dtypes, or None: qkv float16/float32/bfloat16,
    table (and a V2 node's logit scale) float32 (the kernel reads them as such), pad and
    output the dtype of qkv."""
    if qkv not in _DTYPES:
        return f"qkv must be {', '.join(_DTYPES)}, got {qkv}"
    if table != "float32":
        return f"table must be float32, got {table}"
    if logit_scale is not None and logit_scale != "float32":
        return f"logit_scale must be float32, got {logit_scale}"
    if pad_qkv != qkv:
        return f"pad_qkv must have the dtype of qkv ({qkv}), got {pad_qkv}"
    if out != qkv:
        return f"the output must have the dtype of qkv ({qkv}), got {out}"
    return None


def ptx_version_for(compute_capability: int, requested: int | None = None) -> int:
    """The PTX ISA to emit for a target: ``requested`` or the lowest the target accepts."""
    floor = max(DEFAULT_PTX_VERSION, MIN_PTX_VERSION.get(compute_capability, 0))
    if requested is None:
        return floor
    if requested < floor:
        raise SwinedgeError(
            f"PTX ISA {requested / 10:.1f} cannot target sm_{compute_capability}: it needs at least {floor / 10:.1f}"
        )
    return requested


def triton_version_ok(version: str | None) -> bool:
    """Whether a Triton version string is new enough for the AOT compile."""
    m = re.match(r"^(\d+)\.(\d+)", version or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= MIN_TRITON


def entry_name(geometry: WindowGeometry, dtype: str, compute_capability: int, any_size: bool = False) -> str:
    """A PTX entry name unique to geometry, dtype and architecture (any-size kernels:
    ``anysize`` in place of the size, which they do not depend on).

    TensorRT keys loaded AOT kernels by name in ways it does not document; every plugin
    layer of another shape must therefore never share one name with different PTX."""
    g = geometry
    kind = "cosine_window_attention" if g.cosine else "window_attention"
    size = "anysize" if any_size else f"{g.height}x{g.width}"
    return (
        f"swinedge_{kind}_{_DTYPES[dtype]}_sm{compute_capability}"
        f"_{size}_w{g.window}_s{g.shift}_h{g.num_heads}_d{g.head_dim}"
    )


def rename_entry(ptx: str, old: str, new: str) -> str:
    """Rename a PTX entry and its parameter symbols (``old_param_N``), whole tokens only."""
    pattern = re.compile(rf"(?<![\w$]){re.escape(old)}(?=(_param_\d+)?(?![\w$]))")
    renamed = pattern.sub(new, ptx)
    entry_params(renamed, new)  # raises if the entry is gone
    return renamed


def strip_unused_params(ptx: str, name: str, keep: int) -> str:
    """Drop entry parameters after the first ``keep`` when the body never reads them."""
    params = entry_params(ptx, name)
    if len(params) < keep:
        raise SwinedgeError(f"kernel {name} has {len(params)} parameters, expected at least {keep}")
    extra = [p.split()[-1] for p in params[keep:]]
    body = ptx[ptx.index("{", ptx.index(f".entry {name}")) :]
    used = [p for p in extra if re.search(rf"\b{re.escape(p)}\b", body)]
    if used:
        raise SwinedgeError(f"kernel {name} reads hidden parameters {used}: TensorRT cannot pass them")
    if not extra:
        return ptx
    m = re.search(rf"(\.entry\s+{re.escape(name)}\s*\()(.*?)(\))", ptx, re.S)
    kept = ",\n".join("\t" + p for p in params[:keep])
    return ptx[: m.start(2)] + "\n" + kept + "\n" + ptx[m.end(2) :]


def compile_window_attention(
    geometry: WindowGeometry,
    *,
    compute_capability: int = 90,
    dtype: str = "float16",
    has_pad: bool | None = None,
    ptx_version: int | None = None,
    any_size: bool = False,
) -> AotKernel:
    """Compile the kernel for one geometry, dtype and GPU architecture to PTX.

    ``ptx_version`` None: the lowest ISA the target accepts (8.0 up to sm_90).
    ``any_size``: the kernel that takes height and width as int32 arguments
    (:func:`kernel_args`); the geometry's height and width are ignored (every size of
    one block gets the same, cached, PTX) and padding is always handled (``has_pad``
    may not be False)."""
    if any_size:
        if has_pad is False:
            raise SwinedgeError("the any-size kernel always handles padding: has_pad=False does not apply")
        geometry, has_pad = dataclasses.replace(geometry, height=0, width=0), None
    return _compile_window_attention(
        geometry, compute_capability=compute_capability, dtype=dtype, has_pad=has_pad, ptx_version=ptx_version, any_size=any_size
    )


@functools.lru_cache(maxsize=64)  # TensorRT asks once per plugin instance; blocks share geometries
def _compile_window_attention(
    geometry: WindowGeometry,
    *,
    compute_capability: int,
    dtype: str,
    has_pad: bool | None,
    ptx_version: int | None,
    any_size: bool,
) -> AotKernel:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    check_geometry(geometry)
    if dtype not in _DTYPES:
        raise SwinedgeError(f"dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
    if compute_capability not in SUPPORTED_CC:
        raise SwinedgeError(f"compute capability {compute_capability} is not one of {', '.join(map(str, SUPPORTED_CC))}")
    if not triton_version_ok(triton.__version__):
        need = ".".join(map(str, MIN_TRITON))
        raise SwinedgeError(f"the plugin kernel needs Triton >= {need}, this is {triton.__version__}: pip install 'triton>={need}'")
    ptx_version = ptx_version_for(compute_capability, ptx_version)
    g = geometry
    cfg = launch_config(g)
    if any_size:
        consts = any_size_constexprs(g, cfg, ieee_fp32=dtype == "float32")
    else:
        if has_pad is None:
            has_pad = g.padded_height != g.height or g.padded_width != g.width
        consts = constexprs(g, cfg, has_pad=has_pad, ieee_fp32=dtype == "float32")
    t = _DTYPES[dtype]
    # In the kernel's parameter order (the ASTSource signature is positional).
    signature = {"qkv_ptr": f"*{t}", "table_ptr": "*fp32", "pad_ptr": f"*{t}"}
    if g.cosine:
        signature["scale_ptr"] = "*fp32"
    if any_size:
        signature.update({"H": "i32", "W": "i32"})  # no divisibility or ==1 specialisation
    signature["out_ptr"] = f"*{t}"
    signature.update({name: "constexpr" for name in consts})
    # Every buffer is assumed 16-byte aligned, so Triton emits 16-byte vector loads and
    # stores instead of scalar ones. NVIDIA documents 256-byte alignment for network I/O
    # and allocations, not for the activations and constants a plugin is handed
    # (README, "The kernel TensorRT runs"); a misaligned pointer would stop the
    # engine with CUDA's "misaligned address" error, never give wrong numbers, so the
    # `tensorrt` tests on a GPU are the check.
    args = kernel_args(g, any_size)
    aligned = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(args) if a not in SIZE_ARGS}  # pointers only
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # pin today's default; silences a notice
    compiled = triton.compile(
        ASTSource(fn=kernel(interpret=False, cosine=g.cosine, any_size=any_size), signature=signature, constexprs=consts, attrs=aligned),
        target=GPUTarget("cuda", compute_capability, 32),
        options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "ptx_version": ptx_version},
    )
    md = compiled.metadata
    for scratch in ("global_scratch_size", "profile_scratch_size"):
        if getattr(md, scratch, 0):
            raise SwinedgeError(f"compiled kernel needs {scratch}={getattr(md, scratch)}: TensorRT cannot provide it")
    if md.shared > MAX_SHARED_MEM:
        raise SwinedgeError(f"kernel for {g} needs {md.shared} bytes of shared memory, over the {MAX_SHARED_MEM} a plugin launch gets")
    name = entry_name(g, dtype, compute_capability, any_size)
    ptx = rename_entry(strip_unused_params(compiled.asm["ptx"], md.name, keep=len(args)), md.name, name)
    return AotKernel(
        name=name,
        ptx=ptx,
        compute_capability=compute_capability,
        dtype=dtype,
        num_warps=md.num_warps,
        shared_mem=md.shared,
        grid_per_image=0 if any_size else cfg.programs_per_image(g),
        grid_y=1,
        block_x=md.num_warps * 32,
        programs_per_window_head=cfg.query_blocks,
        programs_per_window=cfg.programs_per_window(g),
        window=g.window,
        any_size=any_size,
    )


def compile_in_subprocess(geometry: WindowGeometry, *, compute_capability: int, dtype: str = "float16", any_size: bool = False) -> dict:
    """Compile in a fresh process (needed where this one runs Triton interpreted):
    :meth:`AotKernel.summary` with the PTX. ``any_size``: the run-time-size kernel."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    g = geometry
    cmd = [
        sys.executable, "-m", "swinedge.ops.aot", "--cc", str(compute_capability), "--dtype", dtype,
        "--height", str(g.height), "--width", str(g.width), "--window", str(g.window), "--shift", str(g.shift),
        "--heads", str(g.num_heads), "--head-dim", str(g.head_dim), "--with-ptx",
    ] + (["--cosine"] if g.cosine else []) + (["--any-size"] if any_size else [])  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SwinedgeError((proc.stderr.strip().splitlines() or ["kernel compilation failed"])[-1])
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compile the fused window-attention kernel to PTX.")
    ap.add_argument("--cc", type=int, default=90, help="compute capability, e.g. 87 (Orin), 89 (L4), 90 (H100)")
    ap.add_argument("--dtype", default="float16", choices=sorted(_DTYPES))
    ap.add_argument("--height", type=int, help="feature-map height (not with --any-size)")
    ap.add_argument("--width", type=int)
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--shift", type=int, default=0)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--cosine", action="store_true", help="Swin V2's cosine attention (takes the logit scale)")
    ap.add_argument("--any-size", action="store_true", help="the kernel taking height and width as int32 arguments (one PTX for every size)")
    ap.add_argument("--ptx-version", type=int, default=None, help="PTX ISA, e.g. 80 = 8.0 (CUDA 12.0+ drivers); default: the lowest the target accepts")
    ap.add_argument("--with-ptx", action="store_true", help="include the PTX text in the JSON")
    ap.add_argument("--out", help="write the PTX here")
    a = ap.parse_args(argv)
    if a.height is None and not a.any_size:
        ap.error("--height is required (unless --any-size)")
    height = a.height or 0
    g = WindowGeometry(height, a.width or height, a.window, a.shift, a.heads, a.head_dim, a.cosine)
    try:
        k = compile_window_attention(g, compute_capability=a.cc, dtype=a.dtype, ptx_version=a.ptx_version, any_size=a.any_size)
    except SwinedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.out:
        from swinedge.io import write_bytes_atomic

        write_bytes_atomic(a.out, k.ptx.encode())
    summary = k.summary()
    if a.with_ptx:
        summary["ptx"] = k.ptx
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
