"""GPU figures of the fused window attention (needs CUDA and Triton).

    python -m swinedge.benchmarks.gpu_attention [--batches 1,32,64] [--iters 50] [--tensorrt auto|off] [--json FILE]

For every Swin-T and Swin-B stage geometry (shifted and not), in fp16, prints the
median time of five implementations of the same attention core, measured in one run:
the AOT PTX the TensorRT plugin ships, launched with the plugin's own launch parameters
(needs ``pip install cuda-python``; the column says "-" without it), the same Triton
kernel launched by Triton (JIT), the unfused torch eager path (roll, partition, bias,
mask, softmax, reverse), a torch ``scaled_dot_product_attention`` path (same data
movement, fused softmax), and TensorRT without the plugin ("trt ms"): a strongly typed
FP16 engine (:func:`build_attention_engine`, one static profile per batch) of a graph
holding only the reference window attention of that geometry
(:func:`write_attention_onnx`: the subgraph swinedge's native export gives TensorRT for
one block, all FP16), so whether TensorRT fuses it into its own MHA kernel is
TensorRT's choice, as in a native engine. The column says "-" where TensorRT is not
importable, and why. Each sample is a loop of launches between two CUDA events,
with L2 flushed before it, so neither Python launch cost nor a warm L2 flatters the
kernel (TensorRT's ``execute_async_v3`` is launched and timed on the runner's stream).
"vs trt" is TensorRT's time over the plugin kernel's (the AOT PTX where measured,
else the JIT kernel). It also prints the kernel's achieved bandwidth (bytes it must move / time)
against the GPU's memory bandwidth (a device-to-device copy measured in this run, and
the data-sheet peak where the GPU is known), and whole-model Swin-T forward time with
fused vs reference attention.

Targets (issue #4): fused >= 3x faster than eager at batch 32 on H100, >= 60% of the
memory-bandwidth roofline, whole-model forward >= 1.3x faster.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.models import SwinConfig, create_model
from swinedge.ops.attention_table import attention_table
from swinedge.ops.window_attention import WindowGeometry, shift_mask, window_attention_reference, window_partition, window_reverse

# Data-sheet memory bandwidth, GB/s (SXM parts where two exist).
PEAK_BANDWIDTH_GBS = {"H100": 3350, "H200": 4800, "A100": 2039, "L4": 300, "L40S": 864, "A10": 600, "Orin": 205, "T4": 320}


def attention_bytes(g: WindowGeometry, batch: int, elem: int = 2) -> int:
    """Bytes the fused kernel must move: read qkv and bias, write the output."""
    tokens = g.height * g.width
    return batch * tokens * 4 * g.dim * elem + g.num_heads * g.tokens_per_window**2 * 4


def window_attention_sdpa(qkv, bias, pad_qkv, g: WindowGeometry, mask=None):
    """The same core through torch's fused SDPA (data movement in torch, as eager)."""
    x = qkv.reshape(-1, g.height, g.width, 3 * g.dim)
    if g.shift:
        x = torch.roll(x, shifts=(-g.shift, -g.shift), dims=(1, 2))
    ph, pw = g.padded_height - g.height, g.padded_width - g.width
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
        valid = torch.zeros(1, g.padded_height, g.padded_width, 1, dtype=x.dtype, device=x.device)
        valid[:, : g.height, : g.width] = 1
        x = x + (1 - valid) * pad_qkv
    n = g.tokens_per_window
    w = window_partition(x, g.window, g.padded_height, g.padded_width, 3 * g.dim).reshape(-1, n, 3, g.num_heads, g.head_dim)
    q, k, v = w.permute(2, 0, 3, 1, 4).unbind(0)
    add = bias.to(q.dtype).unsqueeze(0)
    if g.shift:
        m = mask if mask is not None else shift_mask(g).to(q.device)
        add = (add.unsqueeze(0) + m.to(q.dtype)[None, :, None]).reshape(-1, g.num_heads, n, n)
        add = add.repeat(q.shape[0] // add.shape[0], 1, 1, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=add)
    out = out.transpose(1, 2).reshape(-1, g.window, g.window, g.dim)
    out = window_reverse(out, g.window, g.padded_height, g.padded_width, g.dim)[:, : g.height, : g.width]
    if g.shift:
        out = torch.roll(out, shifts=(g.shift, g.shift), dims=(1, 2))
    return out.reshape(-1, g.height * g.width, g.dim)


_L2_FLUSH: torch.Tensor | None = None


def flush_l2() -> None:
    """Overwrite a buffer larger than any L2 (256 MiB; H100's L2 is 50 MB)."""
    global _L2_FLUSH
    if _L2_FLUSH is None:
        _L2_FLUSH = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    _L2_FLUSH.zero_()


def cuda_median_ms(fn, iters: int, warmup: int = 5, loop: int = 10) -> float:
    """Median over ``iters`` samples of the mean time of ``loop`` back-to-back calls,
    L2 flushed before each sample."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        flush_l2()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(loop):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / loop)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth_gbs(iters: int = 20) -> float:
    x = torch.empty(512 * 1024 * 1024 // 2, dtype=torch.float16, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_median_ms(lambda: y.copy_(x), iters)
    return 2 * x.numel() * 2 / (ms * 1e-3) / 1e9


def stage_geometries() -> dict[str, list[WindowGeometry]]:
    out = {}
    for label, cfg in (("Swin-T", SwinConfig()), ("Swin-B", SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)))):
        seen = []
        for stage in cfg.stage_geometries():
            for g in stage[:2]:
                if g not in seen:
                    seen.append(g)
        out[label] = seen
    return out


def _aot_ms(g: WindowGeometry, qkv, table, pad, iters: int) -> float | None:
    """The AOT PTX with the plugin's launch parameters, or None without cuda-python."""
    from swinedge.ops.ptx_launch import load_aot_kernel

    try:
        kernel = load_aot_kernel(g, qkv.dtype)
    except MissingDependencyError:
        return None
    out = torch.empty(qkv.shape[0], g.height * g.width, g.dim, device="cuda", dtype=qkv.dtype)
    return cuda_median_ms(lambda: kernel(qkv, table, pad, out), iters)


# -- TensorRT without the plugin ------------------------------------------------------------
ATTENTION_INPUT = "qkv"
ATTENTION_OUTPUT = "out"
ATTENTION_OPSET = 17  # swinedge's export default (swinedge.export.DEFAULT_OPSET)


class _ReferenceAttention(torch.nn.Module):
    """One block's attention core as swinedge's native export traces it: the qkv
    projection in natural token order in, the attention output in natural token order out;
    bias, shift mask and pad row are constants of the graph."""

    def __init__(self, g: WindowGeometry, bias: torch.Tensor, pad_qkv: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.g = g
        mask = shift_mask(g)
        self.register_buffer("bias", bias.detach().to("cpu", dtype))
        self.register_buffer("pad_qkv", None if pad_qkv is None else pad_qkv.detach().to("cpu", dtype))
        self.register_buffer("mask", None if mask is None else mask.to(dtype))

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return window_attention_reference(qkv, self.bias, self.pad_qkv, self.g, self.mask)


def write_attention_onnx(
    g: WindowGeometry,
    path: str | Path,
    *,
    bias: torch.Tensor,
    pad_qkv: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write an ONNX graph of only the reference window attention of ``g`` to ``path``.

    Input ``qkv`` ``[batch, H*W, 3C]`` (dynamic batch), output ``out`` ``[batch, H*W, C]``,
    both ``dtype``, computed by
    :func:`swinedge.ops.window_attention.window_attention_reference` (cyclic shift, padding
    with ``pad_qkv``, window partition, ``(q * scale) @ k^T``, + ``bias`` ``[heads, N, N]``,
    + shift mask, softmax, ``@ v``, window reverse, reverse shift), traced as
    ``swinedge export`` traces a block (TorchScript exporter, opset 17, constant folding),
    with every tensor in ``dtype``: for ``float16`` a strongly typed TensorRT network of it
    runs in FP16 throughout. Standard ONNX ops only, no plugin node."""
    if dtype not in (torch.float32, torch.float16):
        raise SwinedgeError(f"the attention graph is float32 or float16, got {dtype}")
    n = g.tokens_per_window
    if tuple(bias.shape) != (g.num_heads, n, n):
        raise SwinedgeError(f"bias must be [{g.num_heads}, {n}, {n}] for {g}, got {list(bias.shape)}")
    if pad_qkv is not None and tuple(pad_qkv.shape) != (3 * g.dim,):
        raise SwinedgeError(f"pad_qkv must be [{3 * g.dim}] for {g}, got {list(pad_qkv.shape)}")
    path = Path(path)
    module = _ReferenceAttention(g, bias, pad_qkv, dtype).eval()
    example = torch.zeros(2, g.height * g.width, 3 * g.dim, dtype=dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python ints
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[ATTENTION_INPUT],
            output_names=[ATTENTION_OUTPUT],
            dynamic_axes={ATTENTION_INPUT: {0: "batch"}, ATTENTION_OUTPUT: {0: "batch"}},
            opset_version=ATTENTION_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def tensorrt_status() -> tuple[str | None, str | None]:
    """(TensorRT version, None) where the column can be measured, else (None, why not)."""
    from swinedge.engine import require_tensorrt

    try:
        trt = require_tensorrt()
    except MissingDependencyError as e:
        return None, str(e)
    return trt.__version__, None


def build_attention_engine(graph: Path, input_shape: tuple[int, ...], timing_cache: Path | None = None) -> bytes:
    """A TensorRT plan of :func:`write_attention_onnx`'s graph: strongly typed (the
    graph's FP16 is the precision, as in :func:`swinedge.engine.build_engine`), no plugin,
    one static profile at ``input_shape``. Not ``build_engine`` itself: that takes image
    classifiers only. The TensorRT names used here are the ones ``swinedge.engine`` and
    the TensorRT runner use, which ``tests/test_trt_contract.py`` checks in every version."""
    from swinedge.engine import TrtVersion, add_profiles, attach_timing_cache, require_tensorrt, save_timing_cache, trt_constructing, trt_made

    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    with trt_constructing("a builder"):
        builder = trt.Builder(logger)
    flags = 0
    if TrtVersion.parse(trt.__version__).needs_strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = trt_made(builder.create_network(flags), "the network definition")
    with trt_constructing("the ONNX parser"):
        parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        parse_error = parser.get_error(0) if parser.num_errors else None
        raise SwinedgeError(f"TensorRT cannot parse {graph.name}: {parse_error.desc() if parse_error is not None else 'unknown error'}")
    config = trt_made(builder.create_builder_config(), "the builder config")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    cache, _ = attach_timing_cache(config, timing_cache)  # shared by every build of the run
    add_profiles(builder, config, ATTENTION_INPUT, [(input_shape, input_shape, input_shape)])
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise SwinedgeError(f"TensorRT failed to build {graph.name} for input {list(input_shape)}")
    if timing_cache is not None and cache is not None:
        save_timing_cache(cache, timing_cache, lambda _m: None)
    return bytes(plan)


def _trt_ms(g: WindowGeometry, qkv, bias, pad, iters: int, workdir: Path) -> float:
    """TensorRT's own attention for ``g`` (no plugin) on the benchmark's qkv, timed like the
    other columns: events, L2 flush and launches on the stream the engine runs on."""
    from swinedge.engine import require_tensorrt, trt_constructing

    trt = require_tensorrt()
    batch = qkv.shape[0]
    stem = f"attn_{g.height}x{g.width}_w{g.window}_s{g.shift}_h{g.num_heads}_d{g.head_dim}"
    graph = write_attention_onnx(g, workdir / f"{stem}.onnx", bias=bias, pad_qkv=pad, dtype=qkv.dtype)
    plan = build_attention_engine(graph, tuple(qkv.shape), workdir / "timing.cache")
    with trt_constructing("a runtime"):
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise SwinedgeError(f"TensorRT could not deserialize the plan it built for {stem}")
    context = engine.create_execution_context()
    if context is None:
        raise SwinedgeError(f"TensorRT could not create an execution context for {stem} at batch {batch} (GPU memory): use smaller --batches")
    out = torch.empty(batch, g.height * g.width, g.dim, device="cuda", dtype=qkv.dtype)
    if not context.set_input_shape(ATTENTION_INPUT, tuple(qkv.shape)):
        raise SwinedgeError(f"TensorRT refused input shape {list(qkv.shape)} for {stem}, the one shape its engine was built for: report this line as a swinedge bug")
    # torch's allocations meet setTensorAddress's 256-byte alignment.
    for name, tensor in ((ATTENTION_INPUT, qkv), (ATTENTION_OUTPUT, out)):
        if not context.set_tensor_address(name, tensor.data_ptr()):
            raise SwinedgeError(f"TensorRT refused the address of tensor {name} for {stem} (CUDA memory, 256-byte aligned, is expected): report this line as a swinedge bug")
    stream = torch.cuda.Stream()  # not the legacy default stream, on which TensorRT adds synchronizations

    def launch() -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise SwinedgeError(f"TensorRT execution failed for {stem} at batch {batch}")

    torch.cuda.synchronize()  # qkv was written on the default stream
    try:
        with torch.cuda.stream(stream):
            return cuda_median_ms(launch, iters)
    finally:
        torch.cuda.synchronize()
        del context, engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,32,64")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--tensorrt", choices=("auto", "off"), default="auto",
                    help="auto: time TensorRT's native attention where TensorRT is importable (one engine build per geometry and batch)")  # fmt: skip
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs a CUDA GPU")
    from swinedge.ops.triton_kernel import window_attention_triton

    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BANDWIDTH_GBS.items() if k in gpu), None)
    copy_bw = copy_bandwidth_gbs()
    print(f"GPU: {gpu}; device-to-device copy {copy_bw:.0f} GB/s; data-sheet peak {peak or 'unknown'} GB/s")
    trt_version, trt_skipped = tensorrt_status() if args.tensorrt == "auto" else (None, "--tensorrt off")
    print(f"TensorRT native attention (trt ms): {f'TensorRT {trt_version}, FP16, no plugin' if trt_version else f'skipped: {trt_skipped}'}")
    trt_dir = tempfile.TemporaryDirectory(prefix="swinedge-trt-attention-") if trt_version else None
    rows = []
    header = (f"{'model':7s} {'geometry':24s} {'batch':>5s} {'aot ms':>8s} {'fused ms':>9s} {'eager ms':>9s} {'sdpa ms':>9s} {'trt ms':>8s} "
              f"{'vs eager':>8s} {'vs sdpa':>8s} {'vs trt':>7s} {'GB/s':>7s} {'%copy':>6s} {'%peak':>6s}")  # fmt: skip
    print(header)
    for label, geoms in stage_geometries().items():
        for g in geoms:
            for batch in [int(b) for b in args.batches.split(",")]:
                gen = torch.Generator(device="cuda").manual_seed(0)
                qkv = torch.randn(batch, g.height * g.width, 3 * g.dim, device="cuda", dtype=torch.float16, generator=gen)
                bias = torch.randn(g.num_heads, g.tokens_per_window, g.tokens_per_window, device="cuda", generator=gen)
                pad = torch.randn(3 * g.dim, device="cuda", dtype=torch.float16, generator=gen)
                mask = shift_mask(g).cuda() if g.shift else None
                table = attention_table(bias, g)  # built once per block, as the model and the plugin do
                aot = _aot_ms(g, qkv, table, pad, args.iters)
                fused = cuda_median_ms(lambda: window_attention_triton(qkv, table, pad, g), args.iters)
                eager = cuda_median_ms(lambda: window_attention_reference(qkv, bias, pad, g, mask), args.iters)
                sdpa = cuda_median_ms(lambda: window_attention_sdpa(qkv, bias, pad, g, mask), args.iters)
                trt_ms, trt_error = None, None
                if trt_dir is not None:
                    try:
                        trt_ms = _trt_ms(g, qkv, bias, pad, args.iters, Path(trt_dir.name))
                    except (SwinedgeError, RuntimeError) as e:  # one geometry's build or run; the others still run
                        trt_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        print(f"  TensorRT, {g} batch {batch}: {trt_error}")
                kernel_ms = aot if aot is not None else fused
                gbs = attention_bytes(g, batch) / (kernel_ms * 1e-3) / 1e9
                row = dict(model=label, geometry=f"{g.height}x{g.width} w{g.window} s{g.shift} h{g.num_heads}", batch=batch,
                           aot_ms=aot, fused_ms=fused, eager_ms=eager, sdpa_ms=sdpa, trt_ms=trt_ms, trt_error=trt_error,
                           speedup_eager=eager / fused, speedup_sdpa=sdpa / fused,
                           speedup_trt=trt_ms / kernel_ms if trt_ms is not None else None,
                           achieved_gbs=gbs, pct_copy=100 * gbs / copy_bw, pct_peak=100 * gbs / peak if peak else None)  # fmt: skip
                rows.append(row)
                aot_text = f"{aot:8.4f}" if aot is not None else f"{'-':>8s}"
                trt_text = f"{trt_ms:8.4f}" if trt_ms is not None else f"{'-':>8s}"
                vs_trt = f"{row['speedup_trt']:6.2f}x" if trt_ms is not None else f"{'-':>7s}"
                print(f"{label:7s} {row['geometry']:24s} {batch:5d} {aot_text} {fused:9.4f} {eager:9.4f} {sdpa:9.4f} {trt_text} "
                      f"{row['speedup_eager']:7.2f}x {row['speedup_sdpa']:7.2f}x {vs_trt} {gbs:7.0f} {row['pct_copy']:5.0f}% "
                      + (f"{row['pct_peak']:5.0f}%" if peak else "    -"))  # fmt: skip
    if trt_dir is not None:
        trt_dir.cleanup()
    whole = {}
    model = create_model("swin_tiny_patch4_window7_224").eval().cuda().half()
    for batch in (32, 64):
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            model.set_attention_impl("reference")
            ref = cuda_median_ms(lambda: model(x), 20)
            model.set_attention_impl("fused")
            fus = cuda_median_ms(lambda: model(x), 20)
        whole[batch] = {"reference_ms": ref, "fused_ms": fus, "speedup": ref / fus}
        print(f"Swin-T fp16 whole forward, batch {batch}: reference {ref:.2f} ms, fused {fus:.2f} ms ({ref / fus:.2f}x)")
    if args.json:
        tensorrt = {"version": trt_version, "skipped": trt_skipped}
        args.json.write_text(json.dumps({"gpu": gpu, "copy_gbs": copy_bw, "peak_gbs": peak, "tensorrt": tensorrt, "rows": rows, "whole_model": whole}, indent=2))


if __name__ == "__main__":
    main()
