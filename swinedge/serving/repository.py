"""A Triton Inference Server model repository from swinedge artifacts.

For each artifact (``.plan``/``.engine`` with its manifest, or ``.onnx``)::

    NAME/config.pbtxt            platform tensorrt_plan | onnxruntime_onnx (or the
                                 python backend running ONNX Runtime, --onnx-backend python)
    NAME/1/model.plan|model.onnx the artifact, copied
    NAME/README.md               what it is; for a plan, the TensorRT version and GPU it fits
    NAME/swinedge-manifest.json  the artifact's manifest

and for a classifier the ensemble ``NAME_image``: ``NAME_preprocess`` (Python backend:
image bytes -> input, with swinedge's own transform module) -> ``NAME`` ->
``NAME_postprocess`` (top-k labels, scores, class ids). A client sends encoded images
and gets labels.

Every config is built as Triton's ``inference.ModelConfig`` protobuf (from
``tritonclient``), so a field or enum Triton does not know is an error here, then
written as text, parsed back and checked across the repository (names, dims, ensemble
wiring). The folder is written atomically: a failed or interrupted run leaves none.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from swinedge.engine import ENGINE_SUFFIXES
from swinedge.errors import MissingDependencyError, SwinedgeError

SERVED_SUFFIXES = (*ENGINE_SUFFIXES, ".onnx")
ONNX_BACKENDS = ("onnxruntime", "python")
DEVICES = ("gpu", "cpu")
REPOSITORY_RECORD = "repository.json"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
IMAGE_INPUT = "image"
TOP_K_OUTPUTS = ("labels", "scores", "class_ids")
MAX_INSTANCES = 64
MAX_BATCH = 4096
MAX_QUEUE_DELAY_US = 10_000_000
MAX_IMAGE_MB = 1024.0
PYTHON_MODELS = Path(__file__).parent / "python_models"
_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 9: "TYPE_BOOL"}
_TRITON_TO_NUMPY = {"TYPE_FP32": "float32", "TYPE_FP16": "float16"}


@dataclass(frozen=True)
class RepositoryOptions:
    names: tuple[str, ...] = ()  # one per artifact; default: the file name without suffixes
    labels: tuple[str, ...] | None = None  # class names for the top-k step
    top_k: int = 5
    ensemble: bool = True
    onnx_backend: str = "onnxruntime"
    onnx_device: str = "gpu"
    instances: int = 1
    max_batch: int = 8  # ONNX graphs with a dynamic batch (engines take their profile's)
    queue_delay_us: int = 100
    max_image_mb: float = 16.0

    def validate(self, count: int) -> None:
        if self.names and len(self.names) != count:
            raise SwinedgeError(f"--name was given {len(self.names)} time(s) for {count} artifact(s): give one name per artifact, in order")
        for name in self.names:
            if not MODEL_NAME.match(name):
                raise SwinedgeError(f"--name '{name}': use letters, digits, '_' and '-' (at most 128, starting with a letter or digit)")
        if self.onnx_backend not in ONNX_BACKENDS:
            raise SwinedgeError(f"--onnx-backend must be one of {', '.join(ONNX_BACKENDS)}, got '{self.onnx_backend}'")
        if self.onnx_device not in DEVICES:
            raise SwinedgeError(f"--onnx-device must be one of {', '.join(DEVICES)}, got '{self.onnx_device}'")
        if self.onnx_backend == "python" and self.onnx_device != "cpu":
            raise SwinedgeError("--onnx-backend python runs ONNX Runtime on the CPU: use --onnx-device cpu (or the onnxruntime backend for GPUs)")
        checks = (
            ("--top-k", self.top_k, 1, 1000),
            ("--instances", self.instances, 1, MAX_INSTANCES),
            ("--max-batch", self.max_batch, 1, MAX_BATCH),
            ("--queue-delay-us", self.queue_delay_us, 0, MAX_QUEUE_DELAY_US),
        )
        for flag, value, low, high in checks:
            if not isinstance(value, int) or not low <= value <= high:
                raise SwinedgeError(f"{flag} must be an integer {low}..{high}, got {value}")
        if not (isinstance(self.max_image_mb, (int, float)) and math.isfinite(self.max_image_mb) and 0 < self.max_image_mb <= MAX_IMAGE_MB):
            raise SwinedgeError(f"--max-image-mb must be > 0 and <= {MAX_IMAGE_MB:g}, got {self.max_image_mb}")


@dataclass
class ServedModel:
    """One artifact as Triton will see it."""

    name: str
    artifact: Path
    kind: str  # "plan" | "onnx"
    manifest: dict[str, Any] | None
    input: dict[str, Any]  # name, data_type, dims (without the batch dim when batched)
    outputs: list[dict[str, Any]]
    max_batch: int  # 0: the graph has a fixed batch, dims are the full shape
    preferred: list[int] = field(default_factory=list)
    task: str = "classifier"
    classes: int | None = None
    plugin: bool = False
    qdq: bool = False  # ONNX with Q/DQ nodes: ONNX Runtime runs it at basic optimizations

    @property
    def file_name(self) -> str:
        return "model.plan" if self.kind == "plan" else "model.onnx"


def _tensor(name: str, data_type: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": data_type, "dims": [int(d) for d in dims]}


def default_name(path: Path) -> str:
    stem = path.name
    for suffix in SERVED_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_-") or "model"
    return name[:100]


def describe_artifact(path: str | Path, name: str, options: RepositoryOptions) -> ServedModel:
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise SwinedgeError(f"artifact not found: {path}")
    if suffix in ENGINE_SUFFIXES:
        return _describe_plan(path, name)
    if suffix == ".onnx":
        return _describe_onnx(path, name, options)
    raise SwinedgeError(f"{path}: Triton serves TensorRT plans (.plan/.engine) and ONNX graphs (.onnx), not '{suffix or path.name}'")


def _any_size(manifest: dict[str, Any] | None) -> bool:
    """An artifact exported (or built) for several input sizes: its height and width are
    dynamic, so Triton gets -1 for them (the ensemble's preprocessing serves the first)."""
    return bool((manifest or {}).get("input_sizes"))


def _any_size_dims(tensor: dict[str, Any]) -> dict[str, Any]:
    """[C, H, W] (batched) or [N, C, H, W] with -1 for H and W."""
    return {**tensor, "dims": [*tensor["dims"][:-2], -1, -1]}


def _batched(shape: list, what: Path, any_size: bool = False) -> bool:
    sizes = shape[1:2] if any_size and isinstance(shape, list) else (shape[1:] if isinstance(shape, list) else None)
    if not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in sizes):
        raise SwinedgeError(f"{what}: its input shape {shape!r} is not an image batch [N, C, H, W]: re-create it with swinedge")
    return not isinstance(shape[0], int)


def _task_outputs(manifest: dict[str, Any], path: Path, batched: bool) -> tuple[list[dict[str, Any]], str, int | None]:
    """The outputs a manifest describes, with the batch dim in the dims only when it is fixed."""
    first = 1 if batched else 0
    if manifest.get("task") == "backbone":
        outs = [_tensor(o["name"], "TYPE_FP32", o["shape"][first:]) for o in manifest.get("outputs", [])]
        if not outs:
            raise SwinedgeError(f"{path}: its manifest lists no stage outputs: re-create it with swinedge export --input-size")
        return outs, "backbone", None
    output = manifest.get("output") or {}
    classes = output.get("classes") or (manifest.get("config") or {}).get("num_classes")
    if not output.get("name") or not isinstance(classes, int):
        raise SwinedgeError(f"{path}: its manifest does not describe the output (name and classes): rebuild it from a graph made by swinedge export")
    batch = [] if batched else [manifest["input"]["shape"][0]]
    return [_tensor(output["name"], "TYPE_FP32", [*batch, classes])], "classifier", classes


def _describe_plan(path: Path, name: str) -> ServedModel:
    from swinedge.manifest import read_manifest

    manifest = read_manifest(path, required=True, kind="tensorrt-engine")
    inp = manifest.get("input") or {}
    shape = inp.get("shape")
    batched = _batched(shape, path)
    outputs, task, classes = _task_outputs(manifest, path, batched)
    profile = manifest.get("profile") or {}
    try:
        opt, top = int(profile["opt"][0]), int(profile["max"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        raise SwinedgeError(f"{path}: its manifest has no optimization profile: rebuild it with swinedge build-engine") from None
    # swinedge's graphs keep float32 inputs and outputs at every precision (FP16 is
    # converted with keep_io_types, INT8/FP8 are Q/DQ inside), so the plan's are too.
    model_input = _tensor(inp["name"], "TYPE_FP32", shape[1:] if batched else shape)
    if _any_size(manifest):  # one profile per size: Triton picks the request's
        model_input, outputs = _any_size_dims(model_input), [_any_size_dims(o) for o in outputs]
    return ServedModel(
        name, path, "plan", manifest, model_input,
        outputs, top if batched else 0, sorted({opt, top}) if batched else [], task, classes,
        bool((manifest.get("plugin") or {}).get("used")),
    )  # fmt: skip


def _describe_onnx(path: Path, name: str, options: RepositoryOptions) -> ServedModel:
    import onnx

    from swinedge.export import check_manifest_against_graph, load_onnx
    from swinedge.manifest import read_manifest
    from swinedge.ops.onnx_plugin import plugin_nodes
    from swinedge.runners.ort_runner import has_qdq

    manifest = read_manifest(path, kind="onnx")  # checked against the schema
    proto = load_onnx(path)
    if manifest is not None:
        check_manifest_against_graph(manifest, proto, path)  # ... and against the graph
    if plugin_nodes(proto):
        raise SwinedgeError(
            f"{path} has swinedge plugin nodes, which only TensorRT runs: serve the engine built from it (swinedge build-engine), "
            "or a graph exported with native attention"
        )

    def dims(value_info) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]

    def data_type(value_info) -> str:
        elem = value_info.type.tensor_type.elem_type
        if elem not in _ONNX_TO_TRITON:
            raise SwinedgeError(f"{path}: tensor {value_info.name} has ONNX type {onnx.TensorProto.DataType.Name(elem)}, which this repository writer does not map")
        return _ONNX_TO_TRITON[elem]

    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise SwinedgeError(f"{path} has {len(graph_inputs)} inputs: swinedge serves image models with one input")
    inp = graph_inputs[0]
    shape = dims(inp)
    batched = _batched(shape, path, _any_size(manifest))
    task, classes = "classifier", None
    if manifest is not None and manifest.get("task") == "backbone":
        # the exporter leaves the stage maps' sizes symbolic; the manifest has them
        outs, task, _ = _task_outputs(manifest, path, batched)
        if _any_size(manifest):
            outs = [_any_size_dims(o) for o in outs]
    else:
        outs = []
        for o in proto.graph.output:
            d = dims(o)
            if batched and (len(d) < 1 or isinstance(d[0], int)) or not all(isinstance(x, int) and x > 0 for x in d[1:]):
                raise SwinedgeError(f"{path}: output {o.name} has shape {d}, not [batch, ...] with fixed sizes: re-export it with swinedge export")
            outs.append(_tensor(o.name, data_type(o), d[1:] if batched else d))
        if len(outs) == 1 and len(outs[0]["dims"]) == (1 if batched else 2):
            classes = outs[0]["dims"][-1]
    max_batch = options.max_batch if batched else 0
    model_input = _tensor(inp.name, data_type(inp), [(d if isinstance(d, int) else -1) for d in (shape[1:] if batched else shape)])
    return ServedModel(
        name, path, "onnx", manifest, model_input, outs,
        max_batch, sorted({1, max_batch} - {0}) if batched else [], task, classes, qdq=has_qdq(proto),
    )  # fmt: skip


# -- configs, as Triton's own protobuf ------------------------------------------------------------


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise MissingDependencyError(f"writing a Triton repository needs tritonclient ({e}): pip install 'swinedge[serve]'") from None
    return model_config_pb2


def _config(**fields: Any):
    """A ``ModelConfig`` message; an unknown field or enum name raises here (Triton's schema)."""
    from google.protobuf import json_format

    pb2 = _model_config_pb2()
    try:
        return json_format.ParseDict(fields, pb2.ModelConfig())
    except json_format.ParseError as e:
        raise SwinedgeError(f"internal: a config Triton's schema refuses ({e}); this is a swinedge bug, please report it") from None


def _io(tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": t["name"], "dataType": t["data_type"], "dims": [str(d) for d in t["dims"]]} for t in tensors]


def _dynamic(m: ServedModel, options: RepositoryOptions) -> dict[str, Any]:
    if not m.max_batch:
        return {}
    return {"dynamicBatching": {"preferredBatchSize": m.preferred, "maxQueueDelayMicroseconds": str(options.queue_delay_us)}}


def model_config(m: ServedModel, options: RepositoryOptions):
    common = {"name": m.name, "maxBatchSize": m.max_batch, "input": _io([m.input]), "output": _io(m.outputs), **_dynamic(m, options)}
    if m.kind == "plan":
        group: dict[str, Any] = {"kind": "KIND_GPU", "count": options.instances}
        profiles = (m.manifest or {}).get("profiles") or []
        if len(profiles) > 1:  # an engine of several sizes: every profile serves requests
            group["profile"] = [str(i) for i in range(len(profiles))]
        return _config(platform="tensorrt_plan", instanceGroup=[group], **common)
    if options.onnx_backend == "python":
        return _config(backend="python", instanceGroup=[{"kind": "KIND_CPU", "count": options.instances}], **common)
    kind = "KIND_GPU" if options.onnx_device == "gpu" else "KIND_CPU"
    return _config(platform="onnxruntime_onnx", instanceGroup=[{"kind": kind, "count": options.instances}], **common)


def _python_step(name: str, max_batch: int, inputs: list, outputs: list, options: RepositoryOptions):
    return _config(
        name=name, backend="python", maxBatchSize=max_batch, input=_io(inputs), output=_io(outputs),
        instanceGroup=[{"kind": "KIND_CPU", "count": options.instances}],
    )  # fmt: skip


def _top_k_outputs(k: int) -> list[dict[str, Any]]:
    return [_tensor("labels", "TYPE_STRING", [k]), _tensor("scores", "TYPE_FP32", [k]), _tensor("class_ids", "TYPE_INT64", [k])]


def ensemble_names(name: str) -> tuple[str, str, str]:
    """The preprocess, postprocess and ensemble models of classifier ``name``."""
    return f"{name}_preprocess", f"{name}_postprocess", f"{name}_image"


def ensemble_configs(m: ServedModel, k: int, options: RepositoryOptions) -> dict[str, Any]:
    """The preprocess, postprocess and ensemble configs of classifier ``m``."""
    image = _tensor(IMAGE_INPUT, "TYPE_STRING", [1])
    pre, post, ens = ensemble_names(m.name)
    logits = m.outputs[0]
    steps = [
        {"modelName": pre, "modelVersion": "-1", "inputMap": {IMAGE_INPUT: IMAGE_INPUT}, "outputMap": {m.input["name"]: "preprocessed"}},
        {"modelName": m.name, "modelVersion": "-1", "inputMap": {m.input["name"]: "preprocessed"}, "outputMap": {logits["name"]: "logits"}},
        {"modelName": post, "modelVersion": "-1", "inputMap": {"logits": "logits"}, "outputMap": {n: n for n in TOP_K_OUTPUTS}},
    ]
    return {
        pre: _python_step(pre, m.max_batch, [image], [m.input], options),
        post: _python_step(post, m.max_batch, [_tensor("logits", logits["data_type"], logits["dims"])], _top_k_outputs(k), options),
        ens: _config(
            name=ens, platform="ensemble", maxBatchSize=m.max_batch, input=_io([image]), output=_io(_top_k_outputs(k)),
            ensembleScheduling={"step": steps},
        ),  # fmt: skip
    }


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


# -- checking a written repository ---------------------------------------------------------------


def read_config(path: Path):
    """Parse a ``config.pbtxt`` with Triton's schema; a field Triton does not know is an error."""
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    try:
        return text_format.Parse(path.read_text(), pb2.ModelConfig())
    except text_format.ParseError as e:
        raise SwinedgeError(f"{path}: not a valid Triton model config ({e})") from None


def check_repository(folder: str | Path) -> dict[str, Any]:
    """Every model folder's config parsed with Triton's schema and checked: the name is
    the folder's, a platform or backend is set, dims are positive (or -1), the model file
    a platform loads is there, and every ensemble step names a model of the repository
    and tensors it has. Returns the configs by name."""
    folder = Path(folder)
    configs = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        cfg_path = sub / "config.pbtxt"
        if not cfg_path.is_file():
            raise SwinedgeError(f"{sub}: a model folder without config.pbtxt")
        configs[sub.name] = read_config(cfg_path)
    files = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}
    for name, cfg in configs.items():
        where = folder / name / "config.pbtxt"
        if cfg.name != name:
            raise SwinedgeError(f"{where}: name '{cfg.name}' is not its folder's '{name}'")
        if not cfg.platform and not cfg.backend:
            raise SwinedgeError(f"{where}: neither platform nor backend is set")
        for t in [*cfg.input, *cfg.output]:
            if not t.dims or any(d == 0 or d < -1 for d in t.dims):
                raise SwinedgeError(f"{where}: tensor {t.name} has dims {list(t.dims)}")
        if cfg.platform in files and not (folder / name / "1" / files[cfg.platform]).is_file():
            raise SwinedgeError(f"{where}: {cfg.platform} needs 1/{files[cfg.platform]}")
        if cfg.backend == "python" and not (folder / name / "1" / "model.py").is_file():
            raise SwinedgeError(f"{where}: the python backend needs 1/model.py")
        if cfg.platform == "ensemble":
            _check_ensemble(where, cfg, configs)
    return configs


def _check_ensemble(where: Path, cfg, configs: dict[str, Any]) -> None:
    produced = {t.name for t in cfg.input}
    for step in cfg.ensemble_scheduling.step:
        target = configs.get(step.model_name)
        if target is None:
            raise SwinedgeError(f"{where}: step model '{step.model_name}' is not in the repository")
        if target.max_batch_size < cfg.max_batch_size:
            raise SwinedgeError(f"{where}: step '{step.model_name}' batches up to {target.max_batch_size}, under the ensemble's {cfg.max_batch_size}")
        for key, value in step.input_map.items():
            if key not in {t.name for t in target.input} or value not in produced:
                raise SwinedgeError(f"{where}: step '{step.model_name}' maps {value} -> {key}, which does not exist")
        for key, value in step.output_map.items():
            if key not in {t.name for t in target.output}:
                raise SwinedgeError(f"{where}: step '{step.model_name}' has no output {key}")
            produced.add(value)
    missing = [t.name for t in cfg.output if t.name not in produced]
    if missing:
        raise SwinedgeError(f"{where}: no step produces {', '.join(missing)}")


# -- writing ---------------------------------------------------------------------------------------


def _model_readme(m: ServedModel) -> str:
    man = m.manifest or {}
    lines = [f"# {m.name}", "", f"Served from `{m.artifact.name}` (swinedge {man.get('versions', {}).get('swinedge', '?')}); "
             f"model {man.get('model') or 'unknown'}, precision {man.get('precision') or 'unknown'}.", ""]  # fmt: skip
    if m.kind == "plan":
        trt = man.get("tensorrt") or {}
        lines += [
            f"- TensorRT plan built with TensorRT {trt.get('version', '?')} for {trt.get('gpu', '?')} (compute capability "
            f"{trt.get('compute_capability', '?')}). A plan runs only under that TensorRT version, on GPUs of that compute "
            "capability: use a Triton release that ships this TensorRT version, or rebuild the plan on the serving GPU "
            "(swinedge build-engine).",
            "- No plugin library is needed: "
            + ("the fused window-attention plugin is compiled into the plan as AOT PTX, so the server loads it with the plan "
               "(no LD_PRELOAD, no --backend-config plugin path)." if m.plugin else "the plan uses TensorRT's own layers only.")
        ]  # fmt: skip
    else:
        lines.append("- ONNX graph; the onnxruntime backend runs it (or ONNX Runtime inside the Python backend, on the CPU).")
    lines.append(f"- Batch: up to {m.max_batch} per request, dynamic batching {m.preferred}." if m.max_batch else "- Fixed batch (no batching).")
    return "\n".join(lines) + "\n"


def _write_python_model(folder: Path, source: str, config, records: dict[str, Any], extra: dict[str, Path] | None = None) -> None:
    (folder / "1").mkdir(parents=True)
    shutil.copyfile(PYTHON_MODELS / source, folder / "1" / "model.py")
    for name, record in records.items():
        (folder / "1" / name).write_text(json.dumps(record, indent=2) + "\n")
    for name, src in (extra or {}).items():
        shutil.copyfile(src, folder / "1" / name)
    (folder / "config.pbtxt").write_text(config_text(config))


def _transform_record(m: ServedModel) -> dict[str, Any]:
    from swinedge.data import preprocess_for_spec

    man = m.manifest or {}
    c, h, w = man["input"]["shape"][1:]
    spec = {"img_size": int(h), "in_chans": int(c), "preprocess": man.get("preprocess")}
    return preprocess_for_spec(spec).serving_record()


def _labels(m: ServedModel, options: RepositoryOptions) -> list[str] | None:
    from swinedge.data import imagenet1k_classes

    if options.labels is not None:
        if len(options.labels) != m.classes:
            raise SwinedgeError(f"--labels lists {len(options.labels)} classes but {m.artifact.name} has {m.classes}: give the model's own class list")
        return list(options.labels)
    return imagenet1k_classes() if m.classes == 1000 else None


def plan_models(artifacts: list[str | Path], options: RepositoryOptions) -> list[ServedModel]:
    """Describe every artifact and check the whole set before anything is written."""
    options.validate(len(artifacts))
    if not artifacts:
        raise SwinedgeError("give at least one artifact (.plan, .engine or .onnx)")
    names = list(options.names) or [default_name(Path(a)) for a in artifacts]
    models = [describe_artifact(a, n, options) for a, n in zip(artifacts, names)]
    taken: dict[str, str] = {}
    for m in models:
        wanted = [m.name, *(ensemble_names(m.name) if _has_ensemble(m, options) else ())]
        for n in wanted:
            if n in taken:
                raise SwinedgeError(f"two models would be named '{n}' ({taken[n]} and {m.artifact.name}): give each artifact its own --name")
            taken[n] = m.artifact.name
        if _has_ensemble(m, options):
            if not m.max_batch:
                raise SwinedgeError(f"{m.artifact}: the image ensemble needs a graph with a dynamic batch (re-export with --batch dynamic), or pass --no-ensemble")
            if m.manifest is None or not (m.manifest.get("input") or {}).get("shape"):
                raise SwinedgeError(f"{m.artifact} has no manifest, so its preprocessing is unknown: re-create it with swinedge, or pass --no-ensemble")
            if options.top_k > (m.classes or 0):
                raise SwinedgeError(f"--top-k {options.top_k} is more than the {m.classes} classes of {m.artifact.name}")
            _labels(m, options)
    return models


def _has_ensemble(m: ServedModel, options: RepositoryOptions) -> bool:
    return options.ensemble and m.task == "classifier" and m.classes is not None


def write_model_repository(
    artifacts: list[str | Path],
    out: str | Path,
    options: RepositoryOptions | None = None,
    *,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the Triton model repository ``out`` (replaced whole when it is an earlier
    one); returns what was written (also saved as ``out/repository.json``)."""
    from swinedge.io import atomic_folder, check_output_folder, sha256_file

    options = options or RepositoryOptions()
    out = check_output_folder(out, *artifacts, replaces=REPOSITORY_RECORD)
    models = plan_models(list(artifacts), options)
    say = status or (lambda _m: None)
    written: list[dict[str, Any]] = []
    with atomic_folder(out) as work:
        for m in models:
            say(f"writing {m.name} ({m.artifact.name})")
            folder = work / m.name
            if m.kind == "onnx" and options.onnx_backend == "python":
                record = {"input": m.input["name"], "outputs": [o["name"] for o in m.outputs], "basic_optimizations": m.qdq, "threads": 0}
                _write_python_model(folder, "onnxruntime_model.py", model_config(m, options), {"onnxruntime.json": record}, {"model.onnx": m.artifact})
            else:
                (folder / "1").mkdir(parents=True)
                shutil.copyfile(m.artifact, folder / "1" / m.file_name)
                (folder / "config.pbtxt").write_text(config_text(model_config(m, options)))
            (folder / "README.md").write_text(_model_readme(m))
            if m.manifest is not None:
                (folder / "swinedge-manifest.json").write_text(json.dumps(m.manifest, indent=2) + "\n")
            entry = {"name": m.name, "artifact": str(m.artifact), "sha256": sha256_file(folder / "1" / m.file_name), "kind": m.kind,
                     "task": m.task, "max_batch_size": m.max_batch, "input": m.input, "outputs": m.outputs}  # fmt: skip
            if _has_ensemble(m, options):
                k = options.top_k
                configs = ensemble_configs(m, k, options)
                pre, post, ens = ensemble_names(m.name)
                record = {"input": IMAGE_INPUT, "output": m.input["name"], "transform": _transform_record(m), "dtype": _TRITON_TO_NUMPY[m.input["data_type"]],
                          "max_image_bytes": int(options.max_image_mb * (1 << 20)), "max_pixels": 89_478_485}  # fmt: skip
                _write_python_model(work / pre, "preprocess.py", configs[pre], {"preprocess.json": record},
                                    {"swinedge_transforms.py": Path(__file__).parent.parent / "transforms.py"})  # fmt: skip
                labels = _labels(m, options)
                _write_python_model(work / post, "postprocess.py", configs[post], {"postprocess.json": {"input": "logits", "top_k": k, "classes": m.classes, "labels": labels}})
                work.joinpath(ens, "1").mkdir(parents=True)
                (work / ens / "config.pbtxt").write_text(config_text(configs[ens]))
                entry["ensemble"] = {"name": ens, "input": IMAGE_INPUT, "outputs": list(TOP_K_OUTPUTS), "top_k": k, "labels": "given" if options.labels else ("imagenet-1k synsets" if labels else "class index")}
            written.append(entry)
        say("checking every config with Triton's schema")
        check_repository(work)
        result = {"repository": str(out), "models": written, "onnx_backend": options.onnx_backend}
        (work / REPOSITORY_RECORD).write_text(json.dumps(result, indent=2) + "\n")
        (work / "README.md").write_text(_repository_readme(written))
    return result


def _repository_readme(models: list[dict[str, Any]]) -> str:
    lines = ["# Triton model repository (written by swinedge serve-repo)", "", "| model | kind | max batch | image ensemble |", "|---|---|---:|---|"]
    for m in models:
        lines.append(f"| {m['name']} | {m['kind']} | {m['max_batch_size']} | {m.get('ensemble', {}).get('name', '-')} |")
    lines += ["", "Start: `tritonserver --model-repository=$PWD`. Image ensembles need NumPy and Pillow in the server's Python "
              "(`pip install numpy pillow` in the Triton container). Each model's README.md says what it needs."]  # fmt: skip
    return "\n".join(lines) + "\n"
