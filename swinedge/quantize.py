"""INT8 / FP8 post-training quantization (explicit Q/DQ) and FP16 mixed precision.

INT8/FP8: nvidia-modelopt's ONNX PTQ places Q/DQ pairs and calibrates them on ONNX
Runtime's CPU provider. FP16: modelopt AutoCast. Both follow TensorRT 11's strongly
typed rules (no builder precision flags), which TensorRT 10.x accepts as well.

Swin-specific defaults (FasterTransformer's INT8 recipe): LayerNorm, Softmax and the
residual Adds stay in high precision; the patch-embedding conv and the classifier head
are not quantized; the attention-internal batched matmuls (q.k^T, P.V) stay in high
precision because that core is what the fused plugin replaces.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from swinedge.data import ImageSet, ImageStream, check_image_source, open_images, report_skipped, preprocess_for_spec, tile_batch
from swinedge.defaults import DEFAULT_KEEP_FP32_FOR_FP16, DEFAULT_KEEP_HIGH_PRECISION
from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.export import load_onnx, onnx_info
from swinedge.io import private_copy, private_workspace, refuse_output_over_input, sha256_file
from swinedge.manifest import artifact_with_manifest, manifest_path

PRECISIONS = ("int8", "fp8", "fp16")
METHODS = ("entropy", "max")
HIGH_PRECISION_DTYPES = ("fp16", "fp32")
FP8_MIN_OPSET = 19  # float8 QuantizeLinear/DequantizeLinear
# Node-name patterns (regex, as modelopt takes them) of layers not to quantize by default.
PATCH_EMBED_PATTERN = r".*/patch_embed/.*"
HEAD_PATTERN = r".*/head/.*"


@dataclass
class QuantizeOptions:
    precision: str = "int8"
    calib: str | None = None  # folder, manifest, "default" (None) or "digits"
    calib_size: int = 64
    method: str = "entropy"
    seed: int = 0
    keep_high_precision: tuple[str, ...] | None = None  # None: the precision's default
    quantize_patch_embed: bool = False
    quantize_head: bool = False
    quantize_attention_matmuls: bool = False
    # The residual Adds quantized too: faster, riskier (swinedge.guard checks it).
    quantize_residual: bool = False
    # Blocks kept wholly in high precision (module paths, e.g. layers.2.blocks.1): what
    # the guard restores.
    keep_blocks: tuple[str, ...] = ()
    # Softmax inputs quantized too (with the residual Adds and attention matmuls: the
    # "aggressive" placement the guard is shown on).
    quantize_softmax: bool = False
    high_precision_dtype: str = "fp16"
    calib_batch: int | None = None  # None: DEFAULT_CALIB_BATCH of the precision

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise SwinedgeError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.method not in METHODS:
            raise SwinedgeError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if self.high_precision_dtype not in HIGH_PRECISION_DTYPES:
            raise SwinedgeError(
                f"--high-precision-dtype must be fp16 (TensorRT graphs) or fp32 (CPU verification), got '{self.high_precision_dtype}'"
            )
        if not 1 <= self.calib_size <= MAX_CALIB_SIZE:
            raise SwinedgeError(
                f"--calib-size must be 1..{MAX_CALIB_SIZE}, got {self.calib_size} (PTQ calibration settles within a few hundred images)"
            )
        if not 1 <= self.batch <= MAX_CALIB_BATCH:
            raise SwinedgeError(f"--calib-batch must be 1..{MAX_CALIB_BATCH}, got {self.batch} (peak memory grows with it)")
        for flag, on, op in (("--quantize-residual", self.quantize_residual, "Add"), ("--aggressive", self.quantize_softmax, "Softmax")):
            if on and self.precision == "fp16":
                raise SwinedgeError(f"{flag} places INT8/FP8 Q/DQ; an fp16 graph has none to place")
            if on and self.keep_high_precision is not None and op in self.keep_high_precision:
                raise SwinedgeError(f"{flag} quantizes the {op} ops that --keep-high-precision keeps: drop one of them")
        for b in self.keep_blocks:
            block_pattern(b)

    @property
    def batch(self) -> int:
        """Images per calibration step."""
        return self.calib_batch if self.calib_batch is not None else DEFAULT_CALIB_BATCH[self.precision]

    @property
    def kept_op_types(self) -> tuple[str, ...]:
        if self.keep_high_precision is not None:
            return self.keep_high_precision
        if self.precision == "fp16":
            return DEFAULT_KEEP_FP32_FOR_FP16
        dropped = {"Add"} if self.quantize_residual else set()
        if self.quantize_softmax:
            dropped.add("Softmax")
        return tuple(t for t in DEFAULT_KEEP_HIGH_PRECISION if t not in dropped)


# Calibration streams its images a batch at a time, so the count bounds time, not memory;
# more than a few thousand is a typo. Peak memory grows with the batch: ONNX Runtime's
# calibration session keeps every activation of one batch.
MAX_CALIB_SIZE = 4096
MAX_CALIB_BATCH = 256
# Measured on Swin-T, CPU (python -m swinedge.benchmarks.quantize_memory): INT8 peaks at
# 1.6 / 2.8 / 7.6 GiB with batches of 2 / 8 / 32; FP16 (AutoCast's reference run keeps
# every activation of its batch) at 1.9 / 3.4 / 6.5 GiB with 1 / 2 / 8 images.
DEFAULT_CALIB_BATCH = {"int8": 8, "fp8": 8, "fp16": 2}


@dataclass
class QuantizeResult:
    onnx_path: Path
    manifest_path: Path
    seconds: float
    calibration: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    peak_memory_mb: float | None = None  # this process's peak resident memory so far


class _ProgressReader:
    """ONNX Runtime calibration reader that decodes one batch at a time (from an
    :class:`ImageStream`, or slices of an in-memory :class:`ImageSet`) and reports each
    batch it hands out: memory holds one batch of images, whatever ``--calib-size``."""

    def __init__(
        self, images: ImageSet | ImageStream, input_name: str, batch: int, on_batch: Callable[[int], None] | None, *, fixed: bool = False
    ):
        self._images, self._input, self._batch, self._fixed = images, input_name, batch, fixed
        self._on_batch = on_batch
        self._first: np.ndarray | None = None
        self.warn: Callable[[str], None] | None = None  # told which files were skipped
        self.rewind()

    def _chunks(self) -> Iterator[np.ndarray]:
        if isinstance(self._images, ImageSet):  # (an ImageStream or SizedStreams otherwise)
            arrays = self._images.images
            chunks: Iterator[np.ndarray] = (arrays[i : i + self._batch] for i in range(0, len(arrays), self._batch))
        else:
            chunks = (b.images for b in self._images.batches(self._batch, warn=self.warn))
        for c in chunks:
            # A graph exported with a fixed batch takes exactly that many images: the
            # last batch is filled up with repeats of its own images.
            yield tile_batch(c, self._batch) if self._fixed else c

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._it, None)
        if b is None:
            return None
        if self._on_batch is not None:
            self._on_batch(len(b))
        return {self._input: b}

    def get_first(self) -> dict[str, np.ndarray]:
        """First batch without advancing (modelopt's test run of the session)."""
        if self._first is None:
            self._first = next(self._chunks())
        return {self._input: self._first}

    def rewind(self) -> None:
        self._it = self._chunks()

    def __len__(self) -> int:
        return -(-len(self._images) // self._batch)


_BLOCK_PATH = re.compile(r"^(layers\.\d+\.)?blocks\.\d+$")


def block_pattern(block: str) -> str:
    """Module path of a block (layers.2.blocks.1, or blocks.3 in a ViT) -> the regex of
    its node names (/layers/layers.2/blocks/blocks.1/...), as modelopt takes them."""
    if not _BLOCK_PATH.match(block):
        raise SwinedgeError(f"'{block}' is not a block path like layers.2.blocks.1 (Swin) or blocks.3 (ViT)")
    parts = block.split(".")
    prefix = "".join(f"/{parts[i]}/{parts[i]}.{parts[i + 1]}" for i in range(0, len(parts), 2))
    return re.escape(prefix) + "/.*"


def fixed_batch(proto: onnx.ModelProto) -> int | None:
    """The batch a graph was exported with, or None when it is dynamic."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def _import_modelopt():
    try:
        with _quiet():
            from modelopt.onnx.autocast import convert_to_mixed_precision
            from modelopt.onnx.quantization import quantize as mo_quantize
    except ImportError as e:
        missing = e.name or (str(e).strip().splitlines() or ["a dependency"])[0]
        raise MissingDependencyError(
            f"quantization needs nvidia-modelopt and its ONNX pieces (missing: {missing}): pip install 'swinedge[quantize]'"
        ) from None
    return mo_quantize, convert_to_mixed_precision


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """modelopt and ONNX Runtime's calibrators log, print and draw tqdm bars; keep the CLI
    readable. Progress is reported through ``on_batch`` instead (bound to the real stream)."""
    levels = {name: logging.getLogger(name).level for name in ("", "modelopt", "onnxruntime")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import io
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def attention_matmul_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of MatMuls whose both inputs are activations (q.k^T and P.V)."""
    consts = {i.name for i in proto.graph.initializer}
    consts |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and not (set(n.input) & consts)]


class SizedStreams:
    """Calibration images of a graph that serves several input sizes (``export --sizes``):
    one stream per size, fit-and-padded to it, handed out size after size. The images are
    shared out, about ``--calib-size / sizes`` each (seeded picks), so calibration costs
    what one size would and every size's activations set the ranges."""

    def __init__(self, streams: list[ImageStream], sizes: list[tuple[int, int]]):
        self.streams, self.sizes = streams, sizes

    def __len__(self) -> int:
        return sum(len(s) for s in self.streams)

    def batches(self, batch: int, *, warn: Callable[[str], None] | None = None):
        for stream in self.streams:  # a batch never mixes sizes
            yield from stream.batches(batch, warn=warn)

    def head(self, count: int) -> np.ndarray:
        return self.streams[0].head(count)

    def describe(self) -> dict:
        parts = [s.describe() for s in self.streams]
        out = {**parts[0], "count": sum(p["count"] for p in parts), "skipped": sum(p["skipped"] for p in parts)}
        out["sizes"] = [{"size": f"{h}x{w}", "count": p["count"]} for (h, w), p in zip(self.sizes, parts)]
        return out


def calibration_set_for(
    onnx_path: str | Path, calib: str | None, size: int, seed: int, warn=None, preprocess_overrides: dict | None = None
) -> ImageStream | SizedStreams:
    """Calibration images preprocessed as the graph's manifest says (plus ``overrides``),
    listed but not read: calibration decodes them a batch at a time. Labels are not
    needed, so class folders need no class list. A graph of several sizes gets a share
    of the images at each (:class:`SizedStreams`)."""
    import dataclasses

    check_image_source(calib, "--calib")
    info = onnx_info(onnx_path)
    refuse_unknown_preprocessing(onnx_path, info, preprocess_overrides)
    shape = info["input"]["shape"]
    spec = {"img_size": int(shape[2]), "in_chans": int(shape[1]), "preprocess": info.get("preprocess")}
    if info.get("task") == "backbone":
        spec["input_size"] = (int(shape[2]), int(shape[3]))
    preprocess = preprocess_for_spec(spec).with_overrides(**(preprocess_overrides or {}))
    listed = info.get("input_sizes") or []
    if info.get("task") != "backbone" or len(listed) < 2:
        return open_images(calib, preprocess, size=size, seed=seed, labelled=False)
    from swinedge.models.backbone import parse_size

    sizes = [parse_size(t) for t in listed]
    # size // n each, the remainder to the first sizes; at least one image per size.
    shares = [max(1, size // len(sizes) + (k < size % len(sizes))) for k in range(len(sizes))]
    streams = [
        open_images(calib, dataclasses.replace(preprocess, height=h, width=w), size=n, seed=seed + k, labelled=False)
        for k, ((h, w), n) in enumerate(zip(sizes, shares))
    ]
    return SizedStreams(streams, sizes)


def refuse_unknown_preprocessing(onnx_path: str | Path, info: dict, overrides: dict | None) -> None:
    """A graph whose manifest does not say how its images are preprocessed (no manifest
    at all: a graph from another tool) is calibrated only with the preprocessing given:
    assuming ImageNet's would calibrate a ViT/DeiT graph (mean = std = 0.5) on wrong inputs."""
    if info.get("preprocess") is not None:
        return
    given = {k for k, v in (overrides or {}).items() if v is not None}
    wanted = ("mean", "std") if info.get("task") == "backbone" else ("mean", "std", "resize")
    missing = [f"--{k}" for k in wanted if k not in given]
    if not missing:
        return
    why = "has a manifest that gives no preprocessing" if manifest_path(onnx_path).exists() else "has no manifest"
    raise SwinedgeError(
        f"{onnx_path} {why} ({manifest_path(onnx_path).name}) saying how its images are preprocessed: give "
        f"{', '.join(missing[:-1]) + ' and ' if len(missing) > 1 else ''}{missing[-1]} (the mean, std and resize its model "
        "was trained with), or quantize the graph swinedge export wrote, with its manifest"
    )


def check_output(onnx_path: str | Path, out: str | Path, opts: QuantizeOptions) -> Path:
    """The output path, checked before any work: an .onnx that is none of the inputs."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise SwinedgeError(f"--out {out}: use a file name ending in .onnx")
    refuse_output_over_input(out, onnx_path, opts.calib)
    return out


def quantize_onnx(
    onnx_path: str | Path,
    out: str | Path,
    options: QuantizeOptions | None = None,
    *,
    images: ImageSet | ImageStream | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize an exported FP32 graph; writes ``out`` and its manifest atomically."""
    opts = options or QuantizeOptions()
    opts.validate()
    out = check_output(onnx_path, out, opts)
    proto = load_onnx(onnx_path)
    info = onnx_info(onnx_path, proto)
    if info.get("precision") not in ("fp32", "unknown"):
        raise SwinedgeError(f"{onnx_path} is already {info.get('precision')}: quantize the FP32 export instead")
    if info.get("attention") == "plugin":
        raise SwinedgeError(
            f"{onnx_path} has plugin attention nodes: quantize the native export (`swinedge export` without "
            "--attention plugin); the plugin is substituted after quantization"
        )
    if opts.keep_high_precision:
        present = {n.op_type for n in proto.graph.node}
        unknown = [t for t in opts.keep_high_precision if t not in present]
        if unknown:
            raise SwinedgeError(
                f"--keep-high-precision: {', '.join(repr(t) for t in unknown)} is not an op type of {onnx_path} "
                f"(its op types: {', '.join(sorted(present))})"
            )
    input_name = proto.graph.input[0].name
    fixed = fixed_batch(proto)
    calib_batch = fixed or opts.batch
    mo_quantize, convert_to_mixed_precision = _import_modelopt()
    if images is None:
        images = calibration_set_for(onnx_path, opts.calib, opts.calib_size, opts.seed, warn)
    start = time.perf_counter()
    # modelopt gets a private copy of the input and writes into the private folder only.
    with artifact_with_manifest("onnx", out) as pending, private_workspace("swinedge-quantize-") as scratch:
        tmp = pending.path
        source = private_copy(onnx_path, scratch)
        if opts.precision == "fp16":
            with _quiet():
                model = convert_to_mixed_precision(
                    str(source),
                    low_precision_type="fp16",
                    op_types_to_exclude=list(opts.kept_op_types) or None,
                    keep_io_types=True,
                    calibration_data=_npz_of(_first_images(images, calib_batch, fixed is not None), input_name, scratch),
                    providers=["cpu"],
                )
            if on_batch is not None:
                on_batch(min(len(images), calib_batch))
            if warn is not None:
                report_skipped(images, warn)
            onnx.save(model, str(tmp))
        else:
            excluded_nodes = []
            if not opts.quantize_patch_embed:
                excluded_nodes.append(PATCH_EMBED_PATTERN)
            if not opts.quantize_head:
                excluded_nodes.append(HEAD_PATTERN)
            excluded_nodes += [block_pattern(b) for b in opts.keep_blocks]
            reader = _ProgressReader(images, input_name, calib_batch, on_batch, fixed=fixed is not None)
            reader.warn = warn
            with _quiet():
                mo_quantize(
                    str(source),
                    quantize_mode=opts.precision,
                    calibration_data_reader=reader,
                    calibration_method=opts.method,
                    calibration_eps=["cpu"],
                    op_types_to_exclude=list(opts.kept_op_types) or None,
                    nodes_to_exclude=excluded_nodes or None,
                    high_precision_dtype=opts.high_precision_dtype,
                    disable_mha_qdq=not opts.quantize_attention_matmuls,
                    output_path=str(scratch / "quantized.onnx"),
                    opset=max(FP8_MIN_OPSET, _opset(proto)) if opts.precision == "fp8" else None,
                    # CPU calibration logs a harmless NVML "error"; real failures raise.
                    log_level="CRITICAL",
                )
            written = scratch / "quantized.onnx"
            if warn is not None:
                report_skipped(images, warn)  # after the quiet block: a warning inside it is swallowed
            if not written.exists() or written.stat().st_size == 0:
                raise SwinedgeError("modelopt wrote no output graph; rerun with a smaller --calib-size to see its log")
            graph = onnx.load(str(written))
            if unshared_quantized_inputs(graph, opts.kept_op_types):
                onnx.save(graph, str(tmp))
            else:
                shutil.move(str(written), str(tmp))
        quantized = onnx.load(str(tmp))
        onnx.checker.check_model(quantized)
        seconds = time.perf_counter() - start
        # Batches never mix sizes: the largest is bounded by the largest size's share.
        largest = max(len(st) for st in images.streams) if isinstance(images, SizedStreams) else len(images)
        calibration = {
            **images.describe(),
            **({"count": min(largest, calib_batch)} if opts.precision == "fp16" else {}),
            "method": opts.method if opts.precision != "fp16" else "autocast",
            "batch": min(calib_batch, largest) if not fixed else calib_batch,
            "seed": opts.seed,
        }
        if opts.precision == "fp16" and isinstance(images, SizedStreams):
            # AutoCast reads one batch: the first size's.
            calibration["count"] = min(len(images.streams[0]), calib_batch)
            calibration["sizes"] = calibration["sizes"][:1]
            calibration["sizes"][0] = {**calibration["sizes"][0], "count": calibration["count"]}
        base = info if isinstance(info, dict) else {}
        pending.fields.update(
            model=base.get("model"),
            config=base.get("config"),
            source={"file": Path(onnx_path).name, "sha256": sha256_file(onnx_path)},
            precision=opts.precision,
            attention="native",
            batch=base.get("batch"),
            opset=base.get("opset"),
            input=base.get("input"),
            output=base.get("output"),
            # a graph without a manifest: the preprocessing it was calibrated with, given on the command line
            preprocess=base.get("preprocess") if base.get("preprocess") is not None else calibration.get("preprocess"),
            **{k: base[k] for k in ("task", "outputs", "input_size", "input_sizes") if k in base},
            quantization={
                "tool": "modelopt.onnx.autocast" if opts.precision == "fp16" else "modelopt.onnx.quantization",
                "keep_high_precision": list(opts.kept_op_types),
                "quantize_patch_embed": opts.quantize_patch_embed,
                "quantize_head": opts.quantize_head,
                "quantize_attention_matmuls": opts.quantize_attention_matmuls,
                "quantize_residual": opts.quantize_residual,
                "quantize_softmax": opts.quantize_softmax,
                "high_precision_blocks": list(opts.keep_blocks),
                "high_precision_dtype": opts.high_precision_dtype if opts.precision != "fp16" else "fp16",
                "calibration": calibration,
                "seconds": round(seconds, 2),
            },
        )
    manifest = pending.manifest
    return QuantizeResult(out, manifest_path(out), seconds, calibration, manifest, peak_memory_mb())


def unshared_quantized_inputs(proto: onnx.ModelProto, kept_op_types: tuple[str, ...]) -> int:
    """Nodes kept in high precision read the unquantized tensor, not a Q/DQ pair shared
    with a quantized consumer. Swin V2 is post-norm: the residual stream feeds the qkv
    and fc1 MatMuls directly, so modelopt's Q/DQ on it also fed the residual Adds, which
    quantized the residual that ``Add`` in the kept types promises to keep. Returns the
    inputs rewired (in place)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    inits = {i.name for i in proto.graph.initializer}
    rewired = 0
    for node in proto.graph.node:
        if node.op_type not in kept_op_types:
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                source = producer.get(q.input[0])
                if source is None or source.op_type != "Constant":
                    node.input[k] = q.input[0]
                    rewired += 1
    return rewired


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process so far (what the machine had to provide)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _first_images(images: ImageSet | ImageStream, count: int, fixed: bool) -> np.ndarray:
    first = images.images[:count] if isinstance(images, ImageSet) else images.head(count)
    return tile_batch(first, count) if fixed else first


def _opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)


def _npz_of(images: np.ndarray, input_name: str, folder: Path) -> str:
    """AutoCast's reference runner reads calibration inputs from an .npz path."""
    path = folder / "calibration.npz"
    np.savez(path, **{input_name: images})
    return str(path)
