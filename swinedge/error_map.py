"""Per-layer error map: where a candidate graph (FP16, INT8, FP8, plugin) departs from
the FP32 graph it came from, on real images.

The points are read from the FP32 graph's node names (swinedge exports name every node
after its module): each block's output, and inside it the attention output (after the
proj Linear) and the MLP output (after fc2); each patch-merging output. Both graphs run
on ONNX Runtime with those tensors made outputs of in-memory copies, a batch at a time;
per point the map keeps the mean per-image cosine, the relative error
``||cand - ref|| / ||ref||`` over all images and the max abs error. A point the candidate
graph no longer has (renamed by a tool) is reported as absent.

With ``runtime="tensorrt"`` the candidate runs as a TensorRT engine instead: a private copy
of it with the points made graph outputs is built (plugin where it can be placed) and run;
TensorRT keeps marked tensors materialised, so fusions across them are not made and the
figures are those of that engine. Needs TensorRT and a GPU (``tensorrt`` tests).

``added`` is a block's relative error minus that of the block-level point before it (the
previous block or merge, or 0): the error the block itself adds, which is what
:mod:`swinedge.guard` ranks blocks by.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import check_image_source, open_images, preprocess_for_spec
from swinedge.errors import SwinedgeError
from swinedge.io import private_workspace

_BLOCK = re.compile(r"^(/layers/layers\.\d+/blocks/blocks\.\d+|/blocks/blocks\.\d+)/")
_MERGE = re.compile(r"^(/layers/layers\.\d+/downsample)/")
MAX_POINT_IMAGES = 4096
RUNTIMES = ("onnxruntime", "tensorrt")


@dataclass
class Point:
    """One tensor the map compares: ``kind`` block | attn | mlp | merge."""

    name: str  # module path, e.g. layers.1.blocks.0 or layers.1.blocks.0.attn
    kind: str
    tensor: str
    depth: int  # order in the graph


@dataclass
class PointError:
    point: Point
    cosine_mean: float | None = None
    rel_err: float | None = None
    max_abs_err: float | None = None
    added: float | None = None  # block points: rel_err minus the previous block-level point's

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.point), **{k: v for k, v in asdict(self).items() if k != "point"}}


@dataclass
class ErrorMap:
    reference: str
    candidate: str
    data: dict[str, Any]
    points: list[PointError] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def worst(self, kinds: tuple[str, ...] = ("block", "attn", "mlp", "merge")) -> list[PointError]:
        """Present points of ``kinds``, largest relative error first."""
        return sorted((p for p in self.points if p.point.kind in kinds and p.rel_err is not None), key=lambda p: -p.rel_err)

    def block_ranking(self) -> list[str]:
        """Blocks by the error they add, largest first (module paths)."""
        blocks = [p for p in self.points if p.point.kind == "block" and p.added is not None]
        return [p.point.name for p in sorted(blocks, key=lambda p: -p.added)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "data": self.data,
            "points": [p.to_dict() for p in self.points],
            "absent": self.absent,
            "block_ranking": self.block_ranking(),
        }


def _module_path(prefix: str) -> str:
    """Node-name prefix -> module path: /layers/layers.1/blocks/blocks.0 -> layers.1.blocks.0."""
    if prefix.endswith("/downsample"):
        return _module_path(prefix[: -len("/downsample")]) + ".downsample"
    parts = prefix.strip("/").split("/")
    return ".".join(parts[1::2])


def map_points(proto) -> list[Point]:
    """The points of an FP32 swinedge graph, in graph order."""
    nodes = list(proto.graph.node)
    group_of: dict[str, str] = {}
    for n in nodes:
        m = _BLOCK.match(n.name) or _MERGE.match(n.name)
        if m:
            group_of[n.name] = m.group(1)
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    graph_outputs = {o.name for o in proto.graph.output}
    points: list[Point] = []
    last_out: dict[str, tuple[int, str]] = {}
    for k, n in enumerate(nodes):
        group = group_of.get(n.name)
        if group is None:
            continue
        for o in n.output:
            outside = [c for c in consumers.get(o, []) if group_of.get(c) != group]
            if outside or o in graph_outputs:
                last_out[group] = (k, o)
        for sub, kind in (("attn/proj/", "attn"), ("mlp/fc2/", "mlp")):
            if n.name in (f"{group}/{sub}Add", f"{group}/{sub}MatMul"):
                points = [p for p in points if not (p.kind == kind and p.name == f"{_module_path(group)}.{kind}")]
                points.append(Point(f"{_module_path(group)}.{kind}", kind, n.output[0], k))
    for group, (k, tensor) in last_out.items():
        kind = "merge" if _MERGE.match(group + "/") else "block"
        points.append(Point(_module_path(group), kind, tensor, k))
    points.sort(key=lambda p: (p.depth, p.kind != "attn"))
    for d, p in enumerate(points):
        p.depth = d
    if not points:
        raise SwinedgeError("no blocks found in the reference graph: give the FP32 graph written by swinedge export")
    return points


class _Accumulator:
    def __init__(self) -> None:
        self.images = 0
        self.cos_sum = 0.0
        self.diff_sq = 0.0
        self.ref_sq = 0.0
        self.max_abs = 0.0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = ref.reshape(ref.shape[0], -1).astype(np.float64)
        c = cand.reshape(cand.shape[0], -1).astype(np.float64)
        dot = (r * c).sum(1)
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
        self.cos_sum += float(np.where(norms > 0, dot / np.maximum(norms, 1e-30), 1.0).sum())
        self.diff_sq += float(((r - c) ** 2).sum())
        self.ref_sq += float((r**2).sum())
        self.max_abs = max(self.max_abs, float(np.abs(r - c).max()) if r.size else 0.0)
        self.images += r.shape[0]


def error_map(
    reference: str | Path,
    candidate: str | Path,
    *,
    data: str | None = None,
    size: int | None = 16,
    batch: int = 4,
    seed: int = 0,
    runtime: str = "onnxruntime",
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> ErrorMap:
    """Compare ``candidate`` with the FP32 ``reference`` graph at every point (see module)."""
    from swinedge.export import load_onnx, onnx_info
    from swinedge.runners.ort_runner import OnnxRuntimeRunner
    from swinedge.verify import check_same_model

    if size is not None and not 1 <= size <= MAX_POINT_IMAGES:
        raise SwinedgeError(f"--size must be 1..{MAX_POINT_IMAGES}, got {size}")
    if not 1 <= batch <= 256:
        raise SwinedgeError(f"--batch must be 1..256, got {batch} (every point's tensors of a batch are held at once)")
    if runtime not in RUNTIMES:
        raise SwinedgeError(f"--runtime must be one of {', '.join(RUNTIMES)}, got '{runtime}'")
    check_image_source(data, "--data")
    for path, flag in ((reference, "REFERENCE"), (candidate, "CANDIDATE")):
        if Path(path).suffix != ".onnx":
            raise SwinedgeError(f"{flag} {path}: the error map compares ONNX graphs (the FP32 export and a graph made from it)")
    ref_proto = load_onnx(reference)
    ref_info = onnx_info(reference, ref_proto)
    if ref_info.get("precision") not in ("fp32", None, "unknown") or ref_info.get("attention") == "plugin":
        raise SwinedgeError(f"REFERENCE {reference} is {ref_info.get('precision')} / {ref_info.get('attention')}: give the FP32 native export")
    points = map_points(ref_proto)
    cand_proto = load_onnx(candidate)
    cand_config = onnx_info(candidate, cand_proto).get("config")
    if ref_info.get("config") and cand_config and cand_config != ref_info["config"]:
        raise SwinedgeError(f"{candidate} is another model than {reference} (their manifests' configs differ): compare a graph with the export it came from")
    cand_tensors = {o for n in cand_proto.graph.node for o in n.output}
    present = [p for p in points if p.tensor in cand_tensors]
    absent = [p.name + f" ({p.kind})" for p in points if p.tensor not in cand_tensors]
    if not present:
        raise SwinedgeError(f"{candidate} shares no layer outputs with {reference}: give a graph quantized or converted from it")
    del ref_proto
    names = tuple(p.tensor for p in present)
    acc = {p.tensor: _Accumulator() for p in present}
    with contextlib.ExitStack() as stack:
        ref_runner = OnnxRuntimeRunner(reference, tensors=names)
        if runtime == "tensorrt":
            scratch = stack.enter_context(private_workspace("swinedge-errmap-"))
            cand_runner = _marked_engine(candidate, cand_proto, names, scratch, batch)
        else:
            cand_runner = OnnxRuntimeRunner(candidate, tensors=names)
        del cand_proto
        stack.enter_context(ref_runner)
        stack.enter_context(cand_runner)
        check_same_model(ref_runner.input_spec, cand_runner.input_spec, str(candidate))
        spec = ref_runner.input_spec
        preprocess = preprocess_for_spec(spec)
        images = open_images(data, preprocess, size=size, seed=seed, labelled=False)
        if on_start is not None:
            on_start(len(images))
        fixed = ref_runner.batch_range
        step = fixed[0] if fixed else batch
        for chunk in images.batches(step, warn=warn):
            x = chunk.images
            n = len(x)
            if fixed and n < step:
                from swinedge.data import tile_batch

                x = tile_batch(x, step)
            ref_out = ref_runner.infer_tensors(x)
            cand_out = cand_runner.infer_tensors(x)
            for t in names:
                acc[t].update(ref_out[t][:n], cand_out[t][:n])
            if on_batch is not None:
                on_batch(n)
    result = ErrorMap(str(reference), f"{candidate}" + (" (tensorrt)" if runtime == "tensorrt" else ""), images.describe(), absent=absent)
    previous = 0.0
    for p in points:
        a = acc.get(p.tensor)
        if a is None:
            result.points.append(PointError(p))
            continue
        rel = (a.diff_sq**0.5) / max(a.ref_sq**0.5, 1e-30)
        e = PointError(p, cosine_mean=a.cos_sum / max(a.images, 1), rel_err=rel, max_abs_err=a.max_abs)
        if p.kind in ("block", "merge"):
            if p.kind == "block":
                e.added = rel - previous
            previous = rel
        result.points.append(e)
    return result


def mark_outputs(proto, names: tuple[str, ...]):
    """``proto`` with the tensors ``names`` appended as graph outputs (in place; returned).

    Each marked output carries the element type and, where known, the shape that ONNX
    shape inference gives its tensor: a graph output without a type fails
    ``onnx.checker`` and TensorRT's ONNX parser alike. A tensor whose type cannot be
    inferred is a one-line error."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto).graph
    known = {vi.name: vi for vi in [*inferred.value_info, *inferred.output]}
    present = {o.name for o in proto.graph.output}
    for t in names:
        if t in present:
            continue
        vi = known.get(t)
        if vi is None or not vi.type.tensor_type.elem_type:
            raise SwinedgeError(
                f"cannot make {t} an output of the TensorRT engine: ONNX shape inference gives no type for it; "
                "use --runtime onnxruntime, or give a graph made from swinedge's export"
            )
        out = onnx.ValueInfoProto()
        out.CopyFrom(vi)
        proto.graph.output.append(out)
        present.add(t)
    return proto


def _marked_engine(candidate: str | Path, proto, names: tuple[str, ...], scratch: Path, batch: int):
    """A TensorRT runner of ``candidate`` built with ``names`` as extra network outputs."""
    import onnx

    from swinedge.engine import BuildOptions, build_engine
    from swinedge.manifest import artifact_with_manifest, read_manifest
    from swinedge.runners.trt_runner import TensorRTRunner

    mark_outputs(proto, names)
    fields = {k: v for k, v in (read_manifest(candidate) or {}).items() if k not in ("format", "kind", "file", "sha256", "created", "versions")}
    marked = scratch / "marked.onnx"
    with artifact_with_manifest("onnx", marked) as pending:
        onnx.save(proto, str(pending.path))
        pending.fields.update(fields)
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    fixed = dim.HasField("dim_value") and dim.dim_value > 0
    options = BuildOptions() if fixed else BuildOptions(min_batch=1, opt_batch=batch, max_batch=batch)
    plan = build_engine(marked, scratch / "marked.plan", options).plan
    return TensorRTRunner(plan)


def write_chart(emap: ErrorMap, out: str | Path) -> Path:
    """PNG: relative error against depth, one line per kind of point (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SwinedgeError("the chart needs matplotlib: pip install 'swinedge[report]'") from None
    import io

    from swinedge.io import write_bytes_atomic

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for kind, marker in (("block", "o"), ("attn", "^"), ("mlp", "s"), ("merge", "D")):
        pts = [p for p in emap.points if p.point.kind == kind and p.rel_err is not None]
        if pts:
            ax.plot([p.point.depth for p in pts], [max(p.rel_err, 1e-9) for p in pts], marker=marker, label=kind, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("depth (graph order)")
    ax.set_ylabel("relative error vs FP32")
    ax.set_title(f"{Path(emap.candidate).name} vs {Path(emap.reference).name} ({emap.data.get('count', '?')} images)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes_atomic(out, buf.getvalue())
