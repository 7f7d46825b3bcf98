"""ONNX export of a Swin model (FP32, dynamic or fixed batch; static spatial shapes, or
dynamic height and width for a backbone exported for several sizes)."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from swinedge.errors import SwinedgeError
from swinedge.io import refuse_output_over_input, require_file
from swinedge.manifest import artifact_with_manifest, manifest_path, read_manifest
from swinedge.models import SwinBackbone, SwinTransformer, SwinTransformerV2, VisionTransformer, load_model
from swinedge.models.backbone import format_size, parse_size

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17  # LayerNormalization is native from 17; TensorRT 10.3 (Jetson Orin) parses it
ATTENTION_MODES = ("native", "plugin")
_SHAPE_OPS = ("Shape", "Gather", "Concat")


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    max_abs_err: float
    seconds: float
    manifest: dict[str, Any]


MAX_EXPORT_BATCH = 4096  # a fixed batch is also the export check's batch: bound it


def parse_batch(batch: str | int) -> int | None:
    """``"dynamic"`` -> None; a positive integer (or its string) -> int."""
    if isinstance(batch, int) or str(batch).isdigit():
        n = int(batch)
        if not 1 <= n <= MAX_EXPORT_BATCH:
            raise SwinedgeError(f"--batch must be 'dynamic' or an integer 1..{MAX_EXPORT_BATCH}, got {batch}")
        return n
    if str(batch).lower() == "dynamic":
        return None
    raise SwinedgeError(f"--batch must be 'dynamic' or an integer 1..{MAX_EXPORT_BATCH}, got '{batch}'")


def export_onnx(
    source: str | Path | SwinTransformer | SwinTransformerV2 | VisionTransformer,
    out: str | Path,
    *,
    batch: str | int = "dynamic",
    opset: int = DEFAULT_OPSET,
    attention: str = "native",
    info: dict[str, Any] | None = None,
    check_batch: int = 2,
    size: str | tuple[int, int] | None = None,
    sizes: str | list[tuple[int, int]] | None = None,
) -> ExportResult:
    """Export ``source`` (variant name, self-describing checkpoint or model) to ONNX.

    The graph is constant-folded and checked: it must pass ``onnx.checker`` and match the
    torch model on ONNX Runtime CPU; the measured max abs error is kept in the manifest.

    A backbone (``swinedge build --features``) exports one output per selected stage,
    ``stage{i}`` NCHW, at the size it was built for or at ``size`` (``"HxW"``), where
    every map size is a constant of the graph; or, with ``sizes`` (``"640x640,800x1333"``),
    one graph whose height and width are dynamic and which serves each of those sizes
    (any size with the same windows and shifts, in fact): it is checked against the
    model built at each size on its own, and its manifest lists them as ``input_sizes``
    (``build-engine`` makes one optimization profile per size).
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise SwinedgeError(f"--out {out}: use a file name ending in .onnx")
    given_model = isinstance(source, (SwinTransformer, SwinTransformerV2, VisionTransformer, SwinBackbone))
    if not given_model:
        refuse_output_over_input(out, source)
    if attention not in ATTENTION_MODES:
        raise SwinedgeError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, got '{attention}'")
    if not 14 <= opset <= 21:
        raise SwinedgeError(f"--opset {opset} is outside the supported range 14..21 (17 is the default)")
    static_batch = parse_batch(batch)
    input_size = parse_size(size) if isinstance(size, str) else size
    if sizes is not None and not isinstance(sizes, str):  # (height, width) pairs: the same checks as the text
        sizes = ",".join(format_size(sz) for sz in sizes)
    input_sizes = parse_sizes(sizes) if sizes is not None else None
    if input_sizes is not None and input_size is not None:
        raise SwinedgeError("--input-size and --sizes exclude each other: --sizes exports one graph for several sizes")
    if input_sizes is not None:
        input_size = input_sizes[0]
    if given_model:
        if input_size is not None and input_sizes is None:
            raise SwinedgeError("size is given by the model object itself; pass a checkpoint to export at another size")
        model = source.eval()
        info = info or {"model": "custom", "config": model.config.to_dict(), "source": None}
    else:
        model, info = load_model(source, input_size=input_size)
    cfg = model.config
    backbone = isinstance(model, SwinBackbone)
    if input_sizes is not None:
        if not backbone:
            raise SwinedgeError(f"{info['model']} is a classifier: --sizes is for backbones (build one with `swinedge build MODEL --features`)")
        if given_model and tuple(cfg.input_size) != tuple(input_sizes[0]):
            raise SwinedgeError(f"the model is built for {format_size(cfg.input_size)}: list that size first in sizes")
        problem = cfg.any_size_problem(input_sizes)
        if problem:
            raise SwinedgeError(f"--sizes: {problem}")
    height, width = cfg.input_size if backbone else (cfg.img_size, cfg.img_size)
    output_names = cfg.output_names() if backbone else [OUTPUT_NAME]
    if attention == "plugin" and isinstance(model, VisionTransformer):
        raise SwinedgeError(
            f"{info['model']} is a ViT: its attention is global, not windowed, so there is no plugin for it; "
            "export without --attention plugin (TensorRT runs its own attention)"
        )
    if attention == "plugin":
        from swinedge.ops.onnx_plugin import plugin_export_context

        context = plugin_export_context(model, opset)
    else:
        context = contextlib.nullcontext()
    n = static_batch or check_batch
    dummy = torch.randn(n, cfg.in_chans, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # warm weight-only caches (Swin V2's bias tables): exported as constants
        model(dummy[:1])
    dynamic_axes = None if static_batch else {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    if input_sizes is not None:
        dynamic_axes = dynamic_axes or {name: {} for name in (INPUT_NAME, *output_names)}
        dynamic_axes[INPUT_NAME].update({2: "height", 3: "width"})
        for name in output_names:
            dynamic_axes[name].update({2: f"{name}_height", 3: f"{name}_width"})
    any_size = model_any_size(model, input_sizes is not None)
    start = time.perf_counter()
    with artifact_with_manifest("onnx", out) as pending:
        tmp = pending.path
        with any_size, context, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about Python ints
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
                custom_opsets={"swinedge": 1} if attention == "plugin" else None,
            )
        proto = remove_identity_nodes(onnx.load(str(tmp)))
        if attention == "plugin":
            from swinedge.ops.onnx_plugin import plugin_inputs_as_initializers

            proto = plugin_inputs_as_initializers(proto)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(proto)
        leftover = [node.op_type for node in proto.graph.node if node.op_type == "Shape"]
        if leftover and input_sizes is None:  # an any-size graph computes its sizes
            raise SwinedgeError(f"export left {len(leftover)} Shape ops in the graph; this is a swinedge bug, please report it")
        seconds = time.perf_counter() - start
        if input_sizes is None:
            with torch.no_grad():
                expected = model(dummy)
            expected = [t.numpy() for t in expected] if backbone else [expected.numpy()]
            got = run_onnx_cpu(tmp, dummy.numpy(), attention == "plugin", all_outputs=True)
            max_abs = _max_abs_err(got, expected, output_names, source)
        else:
            max_abs = any_size_parity(tmp, model, input_sizes, n, attention == "plugin", source)
        batch_dim = "batch" if static_batch is None else static_batch
        if backbone:
            from swinedge.data import FitPadPreprocess

            task_fields: dict[str, Any] = {
                "task": "backbone",
                "outputs": [
                    {"name": name, "shape": [batch_dim, c, h, w]} for name, (c, h, w) in zip(output_names, cfg.stage_shapes())
                ],
                "preprocess": FitPadPreprocess(height, width).spec(),
                "input_size": format_size(cfg.input_size),
            }
            if input_sizes is not None:
                task_fields["input_sizes"] = [format_size(sz) for sz in input_sizes]
        else:
            task_fields = {"output": {"name": OUTPUT_NAME, "classes": cfg.num_classes}, "preprocess": preprocess_spec(cfg.img_size, info.get("model"))}
        pending.fields.update(
            model=info["model"],
            config=cfg.to_dict(),
            source=info.get("source"),
            precision="fp32",
            attention=attention,
            batch="dynamic" if static_batch is None else static_batch,
            opset=opset,
            input={"name": INPUT_NAME, "shape": [batch_dim, cfg.in_chans, height, width]},
            **task_fields,
            parity={"runtime": "onnxruntime-cpu", "batch": n, "max_abs_err": max_abs},
        )
    manifest = pending.manifest
    return ExportResult(out, manifest_path(out), max_abs, seconds, manifest)


MAX_EXPORT_SIZES = 8  # an engine gets one optimization profile per size


def parse_sizes(text: str, flag: str = "--sizes") -> list[tuple[int, int]]:
    """``"640x640,800x1333"`` -> [(640, 640), (800, 1333)]: distinct sizes, in order."""
    items = [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise SwinedgeError(f"{flag} is empty: give sizes as HEIGHTxWIDTH,... e.g. 640x640,800x1333")
    sizes = [parse_size(t, flag) for t in items]
    repeated = sorted({format_size(sz) for sz in sizes if sizes.count(sz) > 1})
    if repeated:
        raise SwinedgeError(f"{flag} lists {', '.join(repeated)} more than once: give each size once")
    if len(sizes) > MAX_EXPORT_SIZES:
        raise SwinedgeError(f"{flag} gives {len(sizes)} sizes, more than {MAX_EXPORT_SIZES}: an engine holds one optimization profile per size")
    return sizes


@contextlib.contextmanager
def model_any_size(model: Any, on: bool):
    """Within: the model reads its map sizes from the tensors (a traced export computes
    them from the input's shape); restored on every exit."""
    if not on:
        yield
        return
    model.set_any_size(True)
    try:
        yield
    finally:
        model.set_any_size(False)


def _max_abs_err(got: list[np.ndarray], expected: list[np.ndarray], names: list[str], source: Any, at: str = "") -> float:
    """The largest abs difference over the outputs; one that is not finite (NaN or Inf in
    the model's own output or in the graph's) is a failure, never a parity: the export
    writes nothing."""
    worst = 0.0
    for name, g, e in zip(names, got, expected):
        err = float(np.abs(g - e).max()) if g.size else 0.0
        if not math.isfinite(err):
            whose = "the torch model's" if not np.isfinite(e).all() else "the graph's"
            what = source if isinstance(source, (str, Path)) else "the model"
            raise SwinedgeError(
                f"export of {what} failed: {whose} output '{name}'{at} is not finite (max abs err vs torch on onnxruntime: {err}), "
                "so the graph cannot be checked: its weights overflow float32 or hold NaN/Inf; nothing was written"
            )
        worst = max(worst, err)
    return worst


def any_size_parity(path: Path, model: Any, sizes: list[tuple[int, int]], batch: int, with_plugin: bool, source: Any = None) -> float:
    """Max abs difference, over ``sizes``, between the any-size graph run at each size on
    ONNX Runtime and the model built at that size on its own (fixed geometry, the code
    path of a one-size export): the graph must serve every size it claims."""
    from swinedge.models.backbone import SwinBackbone as Backbone

    worst = 0.0
    state = model.state_dict()
    for i, (h, w) in enumerate(sizes):
        reference = Backbone(model.config.at_size((h, w))).eval()
        reference.load_state_dict(state)
        x = torch.randn(batch, model.config.in_chans, h, w, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            expected = [t.numpy() for t in reference(x)]
        got = run_onnx_cpu(path, x.numpy(), with_plugin, all_outputs=True)
        names = model.config.output_names()
        worst = max(worst, _max_abs_err(got, expected, names, source, at=f" at {format_size((h, w))}"))
    return worst


def remove_identity_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop Identity nodes (the exporter emits them for shared parameters) by rewiring."""
    graph_outputs = {o.name for o in proto.graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.output[0] not in graph_outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return proto


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_spec(img_size: int, model: str | None = None) -> dict[str, Any]:
    """The eval transform of ``model``'s weights: bicubic resize of the short side, center
    crop, normalise. Swin V1: Microsoft's (ImageNet mean/std, crop 0.875); Swin V2, ViT,
    DeiT and MAE: what timm serves under the name (AugReg ViTs take mean = std = 0.5;
    crop 0.9, none at 384). Unknown names (custom models) get Swin V1's."""
    from swinedge.models.checkpoint import find_spec

    spec = find_spec(model) if model else None
    transform = getattr(spec, "eval_transform", None) or {}
    crop_pct = float(transform.get("crop_pct", 0.875))
    return {
        "resize": img_size if crop_pct >= 1.0 else math.floor(img_size / crop_pct),
        "crop": img_size,
        "interpolation": "bicubic",
        "mean": list(transform.get("mean", IMAGENET_MEAN)),
        "std": list(transform.get("std", IMAGENET_STD)),
    }


def run_onnx_cpu(path: str | Path, x: np.ndarray, with_plugin: bool = False, all_outputs: bool = False) -> Any:
    """The first output of the graph at ``path`` for ``x`` (every output, in graph order,
    with ``all_outputs``), on ONNX Runtime CPU."""
    import onnxruntime as ort

    from swinedge.runners.ort_runner import has_qdq

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if has_qdq(onnx.load(str(path), load_external_data=False)):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # see OnnxRuntimeRunner
    if with_plugin:
        from swinedge.ops.onnx_plugin import register_ort_custom_ops

        register_ort_custom_ops(opts)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return outs if all_outputs else outs[0]


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file; a truncated or foreign file is a one-line error."""
    path = require_file(path, "ONNX file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SwinedgeError(f"{path} is not a valid ONNX model ({first[:160]}): re-export it with `swinedge export`") from None
    if not proto.graph.node:
        raise SwinedgeError(f"{path} is an empty ONNX graph: re-export it with `swinedge export`")
    return proto


def onnx_info(path: str | Path, proto: onnx.ModelProto | None = None) -> dict[str, Any]:
    """The manifest of an exported graph, or a minimal description read from the graph
    (``proto``, when the caller has already loaded it). Either way its input is an image
    batch ``[N, C, H, W]`` with a square spatial size, or this is a one-line error."""
    manifest = read_manifest(path, kind="onnx")
    if manifest is not None:
        _check_onnx_manifest(manifest, path, described=f"its manifest {Path(path).name}.json gives an input of")
        if proto is not None:
            check_manifest_against_graph(manifest, proto, path)
        return manifest
    if proto is None:
        proto = load_onnx(path)
    if not proto.graph.input:
        raise SwinedgeError(f"{path} has no graph input: swinedge takes graphs of image classifiers")
    inp = proto.graph.input[0]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    info = {"kind": "onnx", "input": {"name": inp.name, "shape": dims}, "config": None, "precision": "unknown"}
    _check_onnx_manifest(info, path, described="its graph input is")
    return info


def _check_onnx_manifest(info: dict[str, Any], path: str | Path, described: str) -> None:
    inp = info.get("input")
    shape = inp.get("shape") if isinstance(inp, dict) else None
    square = info.get("task") == "backbone" or (isinstance(shape, list) and len(shape) == 4 and shape[2] == shape[3])
    if not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]) or not square:
        raise SwinedgeError(
            f"{path}: {described} {shape if shape is not None else inp!r}, not an image batch [N, C, H, W] with a square size: "
            "swinedge takes graphs of image classifiers (re-create it with swinedge export)"
        )
    if "preprocess" in info and info["preprocess"] is not None and not isinstance(info["preprocess"], dict):
        raise SwinedgeError(
            f"{path}: its manifest {Path(path).name}.json gives 'preprocess' as {info['preprocess']!r}, not a mapping: re-create it with swinedge export"
        )


def _dims(value_info: Any) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_info.type.tensor_type.shape.dim]


def check_manifest_against_graph(manifest: dict[str, Any], proto: onnx.ModelProto, path: str | Path) -> None:
    """The names (and fixed sizes) a graph's manifest gives are the graph's own: its input,
    its output(s). A manifest copied beside another graph, or edited, is a one-line error."""
    where = f"{path}: its manifest {Path(path).name}.json"
    redo = "the manifest belongs to another graph or was edited: re-create it with swinedge export (or swinedge quantize)"
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    inp = manifest.get("input") if isinstance(manifest.get("input"), dict) else {}
    if inputs and inp.get("name") is not None and inp["name"] != inputs[0].name:
        raise SwinedgeError(f"{where} gives input '{inp['name']}', but the graph's input is '{inputs[0].name}': {redo}")
    shape = inp.get("shape")
    if inputs and isinstance(shape, list):
        dims = _dims(inputs[0])
        clash = len(dims) != len(shape) or any(isinstance(a, int) and isinstance(b, int) and a > 0 and a != b for a, b in zip(shape, dims))
        if clash:
            shown = [d if d is not None else "?" for d in dims]
            raise SwinedgeError(f"{where} gives input shape {shape}, but the graph's is {shown}: {redo}")
    graph_outputs = [o.name for o in proto.graph.output]
    named = []
    if isinstance(manifest.get("output"), dict) and manifest["output"].get("name") is not None:
        named.append(manifest["output"]["name"])
    named += [o["name"] for o in manifest.get("outputs") or [] if isinstance(o, dict) and o.get("name") is not None]
    for name in named:
        if name not in graph_outputs:
            listed = ", ".join(f"'{n}'" for n in graph_outputs)
            raise SwinedgeError(f"{where} gives output '{name}', but the graph's outputs are {listed}: {redo}")
