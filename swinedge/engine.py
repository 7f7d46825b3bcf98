"""TensorRT engines: version rules, the plugin decision, and building plans from ONNX.

Strongly typed networks only (TensorRT 11 rules, accepted by 10.x): precision comes
from the graph (Q/DQ for INT8/FP8, AutoCast for FP16), never from builder flags.

Everything that needs no TensorRT (version rules, plugin choice, profile shapes,
manifest checks) is a plain function tested on CPU; the TensorRT calls themselves are
few, and every name they use is checked against the compiled bindings of each version in
:data:`CONTRACT_VERSIONS` (``tests/test_trt_contract.py``). Running plans lives in
:mod:`swinedge.runners.trt_runner`.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.io import check_output_file, refuse_output_over_input, sha256_file, write_bytes_atomic
from swinedge.manifest import manifest_path, write_artifact_with_manifest

ENGINE_SUFFIXES = (".plan", ".engine")
PLUGIN_MODES = ("auto", "on", "off")
MAX_WORKSPACE_GIB = 1024.0  # more than any GPU has
MAX_PROFILE_BATCH = 4096
AOT_PLUGIN_MIN = (10, 9)  # tensorrt.plugin.aot_impl
# [first, fixed): NVIDIA's getKernel trampoline (pyPlugin.cpp) returns the kernel name as
# c_str() of a local string, so libnvinfer reads it from freed memory; 10.14 keeps it in a
# member. Measured on the real 10.9.0.34 and 10.13.3.9 bindings (tests/test_trt_contract.py).
AOT_KERNEL_NAME_DANGLES = ((10, 9), (10, 14))

# The TensorRT versions users have, each checked in CI against NVIDIA's own bindings
# wheel (``tensorrt-cu12-bindings==<wheel>`` on PyPI): the names this module and the
# runner touch exist in its compiled module, and NVIDIA's Python plugin layer accepts
# the plugin (``tests/test_trt_contract.py``). One place; README's TensorRT section
# lists the same.
CONTRACT_VERSIONS: dict[str, str] = {
    "10.3.0": "Jetson Orin, JetPack 6 (no tensorrt.plugin: native attention)",
    "10.9.0.34": "first with AOT quickly deployable plugins",
    "10.13.3.9": "Jetson Thor, JetPack 7",
    "10.16.1.11": "newest 10.x",
    "11.0.0.114": "first 11.x (strong typing only)",
    "11.2.1.2": "first with NVIDIA's scalar-attribute fix",
    "11.4.0.106": "newest on PyPI",
}


@dataclass(frozen=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> "TrtVersion":
        m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        if not m:
            raise SwinedgeError(f"cannot read the TensorRT version from '{text}'")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def needs_strongly_typed_flag(self) -> bool:
        """10.x must ask for strong typing; 11.x networks are always strongly typed."""
        return self.major < 11

    @property
    def has_aot_plugins(self) -> bool:
        return (self.major, self.minor) >= AOT_PLUGIN_MIN

    @property
    def aot_kernel_name_dangles(self) -> bool:
        """The bindings hand an AOT plugin's kernel name back from freed memory."""
        first, fixed = AOT_KERNEL_NAME_DANGLES
        return first <= (self.major, self.minor) < fixed


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(
            "TensorRT is not installed: install it from NVIDIA on a GPU machine (pip install tensorrt, or JetPack on Jetson)"
        ) from None
    return trt


DEFAULT_PROFILE = (1, 32, 64)


@dataclass(frozen=True)
class BuildOptions:
    # None: the default profile (1 / 32 / 64) for a dynamic-batch graph, or the graph's
    # own batch when it was exported with a fixed one.
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_gib: float = 4.0
    opt_level: int = 3
    timing_cache: Path | None = None
    plugin: str = "auto"
    # Input sizes (height, width) of a graph exported with --sizes: one optimization
    # profile each. None: the sizes its manifest lists (or the graph's one size).
    sizes: tuple[tuple[int, int], ...] | None = None

    @property
    def batches(self) -> tuple[int, int, int]:
        """(min, opt, max); values not given default to 1 / 32 / 64, clamped into the
        range the given ones set (``--max-batch 8`` alone means 1 / 8 / 8)."""
        lo = self.min_batch if self.min_batch is not None else DEFAULT_PROFILE[0]
        hi = self.max_batch if self.max_batch is not None else max(DEFAULT_PROFILE[2], lo, self.opt_batch or 0)
        opt = self.opt_batch if self.opt_batch is not None else min(max(DEFAULT_PROFILE[1], lo), hi)
        return lo, opt, hi

    @property
    def batch_given(self) -> bool:
        return any(b is not None for b in (self.min_batch, self.opt_batch, self.max_batch))

    def validate(self) -> None:
        lo, opt, hi = self.batches
        if min(lo, opt, hi) < 1:
            raise SwinedgeError("batch sizes must be >= 1")
        if not lo <= opt <= hi:
            raise SwinedgeError(f"batch profile must satisfy min <= opt <= max, got {lo} / {opt} / {hi}")
        if not 0 <= self.opt_level <= 5:
            raise SwinedgeError(f"--opt-level must be 0..5, got {self.opt_level}")
        if not 0 < self.workspace_gib <= MAX_WORKSPACE_GIB:  # also false for NaN
            raise SwinedgeError(f"--workspace must be > 0 and <= {MAX_WORKSPACE_GIB} GiB, got {self.workspace_gib}")
        if hi > MAX_PROFILE_BATCH:
            raise SwinedgeError(f"--max-batch must be <= {MAX_PROFILE_BATCH}, got {hi}")
        if self.plugin not in PLUGIN_MODES:
            raise SwinedgeError(f"--plugin must be one of {', '.join(PLUGIN_MODES)}, got '{self.plugin}'")


# A detector's backbone at 800x1333 holds ~60 MB of stage maps per image in FP16: its
# default profile is small batches (detectors run 1-2 images per step).
BACKBONE_PROFILE = (1, 2, 8)


def engine_profiles(manifest: dict[str, Any]) -> list[dict[str, list[int]]]:
    """The plan's optimization profiles ({min, opt, max} shapes), in TensorRT's order."""
    profiles = manifest.get("profiles")
    if isinstance(profiles, list) and profiles:
        return profiles
    return [manifest["profile"]] if manifest.get("profile") else []


def check_input_covered(manifest: dict[str, Any], shape: tuple[int, ...]) -> int:
    """The index of the plan's profile that takes a batch of ``shape`` [N, C, H, W], or a
    one-line error naming what the plan takes and how to get one for this input."""
    profiles = [p for p in engine_profiles(manifest) if p.get("min") and p.get("max")]
    if not profiles:
        return 0
    same_size = [i for i, p in enumerate(profiles) if tuple(shape[1:]) == tuple(p["min"][1:]) == tuple(p["max"][1:])]
    if not same_size:
        lo = profiles[0]["min"]
        want = " or ".join("x".join(str(d) for d in p["min"][2:]) for p in profiles)
        got = "x".join(str(d) for d in shape[2:])
        if manifest.get("input_sizes") and shape[1] == lo[1]:  # an any-size graph: maybe a new profile, no new export
            how = _new_profile_hint(manifest, (int(shape[2]), int(shape[3])))
        elif manifest.get("task") == "backbone":
            how = f"`swinedge export BACKBONE --input-size {got}` (or --sizes for several), then build-engine"
        else:
            how = "export the model at that size, then build-engine"
        what = "its profiles" if len(profiles) > 1 else "its profile"
        raise SwinedgeError(f"the engine takes {lo[1]}x{want} inputs ({what}), got {shape[1]}x{got}: build one for that size ({how})")
    for i in same_size:
        if profiles[i]["min"][0] <= shape[0] <= profiles[i]["max"][0]:
            return i
    p = profiles[same_size[0]]
    raise SwinedgeError(f"batch {shape[0]} is outside the engine's profile {p['min'][0]}..{p['max'][0]}: rebuild with --min-batch/--max-batch")


def _new_profile_hint(manifest: dict[str, Any], size: tuple[int, int]) -> str:
    """How to get an engine of an any-size graph that takes ``size``, or why none can."""
    from swinedge.export import MAX_EXPORT_SIZES
    from swinedge.models.backbone import BackboneConfig, format_size
    from swinedge.models.checkpoint import config_from_dict

    listed = list(manifest["input_sizes"])
    try:
        cfg = config_from_dict(manifest["config"]) if manifest.get("config") else None
    except SwinedgeError:
        cfg = None
    problem = cfg.any_size_problem([size]) if isinstance(cfg, BackboneConfig) else None
    if problem:
        return f"no engine of this graph can: {problem}"
    if len(listed) >= MAX_EXPORT_SIZES:
        return f"the engine already has {len(listed)} profiles, the most build-engine makes: build a second engine with `--sizes {format_size(size)}`"
    return f"`swinedge build-engine ONNX --sizes {','.join([*listed, format_size(size)])}` from its graph"


def profile_sizes(info: dict[str, Any], requested: tuple[tuple[int, int], ...] | None) -> list[tuple[int, int]] | None:
    """The (height, width) of each optimization profile: ``requested`` or the sizes an
    any-size graph's manifest lists; None for a graph of one size (its own). A requested
    size must be one the graph's windows serve (checked with its config), so a new
    resolution needs a new engine, not a new export."""
    listed = info.get("input_sizes")
    if requested is None:
        if not listed:
            return None
        from swinedge.models.backbone import parse_size

        return [parse_size(t) for t in listed]
    if not listed:
        shape = info["input"]["shape"]
        raise SwinedgeError(
            f"--sizes: this graph is exported for {shape[2]}x{shape[3]} only; export the backbone with "
            "`swinedge export ... --sizes ...` for one engine of several sizes"
        )
    from swinedge.models.backbone import BackboneConfig
    from swinedge.models.checkpoint import config_from_dict

    cfg = config_from_dict(info["config"]) if info.get("config") else None
    if isinstance(cfg, BackboneConfig):
        problem = cfg.any_size_problem(list(requested))
        if problem:
            raise SwinedgeError(f"--sizes: {problem}")
    return list(requested)


def at_first_size(info: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """An any-size backbone graph's manifest fields (input, outputs, size, preprocessing)
    at ``size``, the engine's first profile, which need not be the graph's first size."""
    from swinedge.models.checkpoint import config_from_dict

    h, w = size
    cfg = config_from_dict(info["config"]).at_size((h, w))
    batch = info["input"]["shape"][0]
    out = dict(info)
    out["input"] = {**info["input"], "shape": [batch, info["input"]["shape"][1], h, w]}
    out["outputs"] = [{"name": n, "shape": [batch, c, sh, sw]} for n, (c, sh, sw) in zip(cfg.output_names(), cfg.stage_shapes())]
    out["input_size"] = f"{h}x{w}"
    if isinstance(info.get("preprocess"), dict):
        out["preprocess"] = {**info["preprocess"], "size": [h, w]}
    return out


def size_profiles(input_shape: list, sizes: list[tuple[int, int]] | None, opts: BuildOptions) -> list[tuple[tuple[int, ...], ...]]:
    """One (min, opt, max) per size (the batch range of ``opts`` in each), or the graph's
    own size's profile."""
    if sizes is None:
        return [profile_shapes(input_shape, opts)]
    return [profile_shapes([input_shape[0], input_shape[1], h, w], opts) for h, w in sizes]


def profile_shapes(input_shape: list, opts: BuildOptions) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes. A graph exported with a fixed batch admits only it."""
    rest = tuple(int(d) for d in input_shape[1:])
    batch = input_shape[0]
    if isinstance(batch, int) and batch > 0:
        if opts.batch_given and opts.batches != (batch,) * 3:
            raise SwinedgeError(f"the ONNX has a fixed batch of {batch}: export with --batch dynamic for a batch range")
        return (batch, *rest), (batch, *rest), (batch, *rest)
    lo, opt, hi = opts.batches
    return (lo, *rest), (opt, *rest), (hi, *rest)


@dataclass(frozen=True)
class PluginEnvironment:
    """What decides whether the fused plugin can be built here (no graph involved)."""

    trt_version: TrtVersion
    has_quick_aot: bool  # the bindings have tensorrt.plugin's AOT path (QuickPluginCreationRequest)
    compute_capability: int
    triton_version: str | None  # None: Triton not importable

    @classmethod
    def detect(cls, trt, compute_capability: int) -> "PluginEnvironment":
        try:
            import triton

            triton_version: str | None = triton.__version__
        except ImportError:
            triton_version = None
        return cls(TrtVersion.parse(trt.__version__), hasattr(trt, "QuickPluginCreationRequest"), compute_capability, triton_version)


def plugin_blockers(env: PluginEnvironment) -> list[str]:
    """Why the fused plugin cannot be built in this environment; empty when it can."""
    from swinedge.ops.aot import MIN_TRITON, SUPPORTED_CC, triton_version_ok

    reasons = []
    if not env.trt_version.has_aot_plugins or not env.has_quick_aot:
        reasons.append(f"TensorRT {env.trt_version} has no AOT quickly deployable plugins (needs >= 10.9; Jetson Orin has 10.3)")
    if env.compute_capability not in SUPPORTED_CC:
        listed = ", ".join(f"sm_{c}" for c in SUPPORTED_CC)
        reasons.append(f"the fused kernel is not built for sm_{env.compute_capability} (supported: {listed})")
    need = ".".join(map(str, MIN_TRITON))
    if env.triton_version is None:
        reasons.append(f"Triton is not installed (the plugin kernel is compiled with Triton >= {need}: pip install 'swinedge[kernel]')")
    elif not triton_version_ok(env.triton_version):
        reasons.append(f"Triton {env.triton_version} is older than {need}, which the plugin kernel needs: pip install 'triton>={need}'")
    return reasons


def plugin_risks(env: PluginEnvironment) -> list[str]:
    """What may go wrong with a plugin that can be built here: ``--plugin auto`` builds
    native attention instead, ``--plugin on`` builds the plugin and warns."""
    if env.trt_version.has_aot_plugins and env.trt_version.aot_kernel_name_dangles:
        first, fixed = AOT_KERNEL_NAME_DANGLES
        return [
            f"TensorRT {env.trt_version}'s Python plugin layer hands the kernel name back from freed memory "
            f"({first[0]}.{first[1]} to {fixed[0]}.{fixed[1] - 1}; fixed in {fixed[0]}.{fixed[1]}), so the engine may name a garbled kernel"
        ]
    return []


def plugin_graph(proto, info: dict[str, Any]) -> tuple[Any, int, str | None]:
    """A copy of a native graph with one plugin node per block: ``(graph, nodes, None)``,
    or ``(None, 0, why not)`` when the nodes cannot be placed. ``proto`` is left as it is."""
    from swinedge.models.checkpoint import config_from_dict
    from swinedge.ops.onnx_plugin import substitute_plugin_nodes
    from swinedge.ops.triton_kernel import check_geometry

    if not info.get("config"):
        return None, 0, "the graph has no swinedge manifest (model config), so plugin nodes cannot be placed"
    if info["config"].get("family") == "vit":
        return None, 0, "a ViT's attention is global, not windowed: TensorRT runs its own attention"
    try:
        swin_config = config_from_dict(info["config"])
        for stage in swin_config.stage_geometries():
            for g in stage:
                check_geometry(g)
        copy = type(proto)()
        copy.CopyFrom(proto)
        graph, count = substitute_plugin_nodes(copy, swin_config)
    except SwinedgeError as e:
        return None, 0, str(e)
    return graph, count, None


def decide_plugin(mode: str, blockers: list[str], graph_has_plugin: bool, risks: list[str] | None = None) -> tuple[bool, str]:
    """Whether to build with the fused plugin, and a one-line note saying why.

    ``off`` builds native attention; ``on`` refuses, before any build, when something
    blocks the plugin; ``auto`` builds native attention and names the first blocker. A
    graph exported with plugin nodes cannot become native here: that is an error.
    ``risks`` (:func:`plugin_risks`) make ``auto`` build native attention; ``on``, or a
    graph that already has plugin nodes, builds the plugin (the caller warns of the risk)."""
    if mode == "off":
        if graph_has_plugin:
            raise SwinedgeError("--plugin off, but the graph has plugin nodes: build from the native export (swinedge export --attention native)")
        return False, "plugin off: native attention graph"
    if blockers:
        if mode == "on":
            raise SwinedgeError(f"--plugin on, but {blockers[0]}: use --plugin auto or off")
        if graph_has_plugin:
            raise SwinedgeError(f"the graph has plugin nodes, but {blockers[0]}: build from the native export (swinedge export --attention native)")
        return False, f"native attention graph: {blockers[0]}"
    if risks:
        if mode == "auto" and not graph_has_plugin:
            return False, f"native attention graph: {risks[0]} (--plugin on builds the plugin anyway)"
    return True, "fused window-attention plugin (AOT PTX)"


def check_engine_fits(manifest: dict[str, Any], *, gpu: str, compute_capability: int, trt_version: str, plan: str) -> None:
    """Raise with what to do when a plan was built for another GPU or TensorRT."""
    built = manifest.get("tensorrt", {})
    onnx_src = manifest.get("onnx", {}).get("file", "MODEL.onnx")
    rebuild = f"rebuild it here: swinedge build-engine {onnx_src} --out {plan}"
    if built.get("compute_capability") != compute_capability:
        raise SwinedgeError(
            f"{plan} was built for {built.get('gpu')} (sm_{built.get('compute_capability')}); this GPU is {gpu} (sm_{compute_capability}): {rebuild}"
        )
    if built.get("version") and TrtVersion.parse(built["version"]) != TrtVersion.parse(trt_version):
        raise SwinedgeError(f"{plan} was built with TensorRT {built['version']}; this machine has {trt_version}: {rebuild}")


FP8_MIN_CC = 89  # FP8 Q/DQ: Ada, Hopper, Blackwell


def supported_precisions(compute_capability: int) -> tuple[str, ...]:
    """The graph precisions TensorRT builds on a GPU of ``compute_capability`` (sm_XX as XX)."""
    return ("fp32", "fp16", "int8") + (("fp8",) if compute_capability >= FP8_MIN_CC else ())


def graph_precision(proto, info: dict[str, Any]) -> str | None:
    """What a graph computes in: ``fp8`` where it holds float8 Q/DQ (whatever its manifest
    says), else its manifest's precision (None or ``unknown`` without one)."""
    from swinedge.runners.ort_runner import has_float8

    return "fp8" if has_float8(proto) else info.get("precision")


def check_precision_supported(precision: str | None, gpu: str, compute_capability: int) -> None:
    """A one-line error, before any TensorRT call, when ``gpu`` cannot run ``precision``
    (FP8 needs compute capability 8.9: not A100, RTX 30xx or Jetson Orin)."""
    takes = supported_precisions(compute_capability)
    if precision == "fp8" and precision not in takes:
        raise SwinedgeError(
            f"FP8 needs compute capability {FP8_MIN_CC // 10}.{FP8_MIN_CC % 10} or higher, and this GPU is {gpu} (sm_{compute_capability}), "
            f"which takes {', '.join(takes)}: quantize with --precision int8 or fp16, or build on an Ada, Hopper or Blackwell GPU"
        )


TRT_HINT = "rerun with --verbose for TensorRT's log, and check the GPU and TensorRT with `swinedge doctor`"
# What NVIDIA's bindings raise when libnvinfer hands a constructor (Builder, Runtime,
# OnnxParser) a null object: pybind11's TypeError, not None (measured on the real modules).
NULL_FACTORY = "factory function returned nullptr"


@contextlib.contextmanager
def trt_constructing(what: str, hint: str = TRT_HINT):
    """Around a TensorRT constructor: its null-object TypeError becomes a one-line error."""
    try:
        yield
    except TypeError as e:
        if NULL_FACTORY not in str(e):
            raise
        raise SwinedgeError(f"TensorRT could not create {what}: {hint}") from None


def trt_made(obj, what: str, hint: str = TRT_HINT):
    """``obj``, or a one-line error: TensorRT's factories answer None on failure, no exception."""
    if obj is None:
        raise SwinedgeError(f"TensorRT could not create {what}: {hint}")
    return obj


def add_profiles(builder, config, input_name: str, all_shapes: list) -> None:
    """One optimization profile per (min, opt, max) of ``all_shapes``, in that order;
    TensorRT's -1 (a profile it finds invalid) is a one-line error."""
    for index, profile_shape in enumerate(all_shapes):
        profile = trt_made(builder.create_optimization_profile(), "an optimization profile")
        profile.set_shape(input_name, *profile_shape)
        added = config.add_optimization_profile(profile)
        if added != index:
            shown = " / ".join("x".join(str(d) for d in s) for s in profile_shape)
            raise SwinedgeError(
                f"TensorRT rejected optimization profile {index} ({shown}) of input {input_name} (answered {added}): "
                "check --min-batch/--opt-batch/--max-batch and --sizes against the graph, or rerun with --verbose for TensorRT's log"
            )


@dataclass
class BuildResult:
    plan: Path
    manifest_path: Path
    seconds: float
    plugin_used: bool
    note: str  # why the plugin is or is not in the plan
    manifest: dict[str, Any]
    warnings: tuple[str, ...] = ()  # what the user should know (a timing cache that was not used or not saved)


def _require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise SwinedgeError("building or running a TensorRT engine needs an NVIDIA GPU, and torch sees none here")
    return torch


def gpu_identity() -> tuple[str, int]:
    torch = _require_cuda()
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), major * 10 + minor


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    options: BuildOptions | None = None,
    *,
    verbose: bool = False,
    status: Callable[[str], None] | None = None,
) -> BuildResult:
    """Compile an ONNX graph (FP32, FP16 or Q/DQ INT8/FP8) to a TensorRT plan + manifest.

    The plan and its manifest are written together or not at all."""
    from swinedge.export import load_onnx, onnx_info
    from swinedge.ops.onnx_plugin import plugin_nodes

    opts = options or BuildOptions()
    opts.validate()
    out = Path(out)
    if out.suffix not in ENGINE_SUFFIXES:
        raise SwinedgeError(f"--out {out}: use a file name ending in .plan or .engine")
    refuse_output_over_input(out, onnx_path, opts.timing_cache)
    check_output_file(out)
    if opts.timing_cache is not None:
        refuse_output_over_input(opts.timing_cache, onnx_path, flag="--timing-cache")
        check_output_file(opts.timing_cache, "--timing-cache")
        if Path(opts.timing_cache).resolve() == out.resolve():
            raise SwinedgeError(f"--timing-cache {opts.timing_cache} is the --out plan: give the cache its own file")
    proto = load_onnx(onnx_path)
    info = onnx_info(onnx_path, proto)
    sizes = profile_sizes(info, opts.sizes)  # checked before TensorRT is needed
    trt = require_tensorrt()
    gpu, cc = gpu_identity()
    precision = graph_precision(proto, info)
    check_precision_supported(precision, gpu, cc)  # before any TensorRT call
    version = TrtVersion.parse(trt.__version__)
    say = status or (lambda _m: None)
    if info.get("task") == "backbone" and not opts.batch_given:
        opts = replace(opts, min_batch=BACKBONE_PROFILE[0], opt_batch=BACKBONE_PROFILE[1], max_batch=BACKBONE_PROFILE[2])
    all_shapes = size_profiles(info["input"]["shape"], sizes, opts)
    shapes = all_shapes[0]
    has_plugin = bool(plugin_nodes(proto))
    env = PluginEnvironment.detect(trt, cc) if opts.plugin != "off" else None
    blockers = plugin_blockers(env) if env else []
    risks = plugin_risks(env) if env else []
    graph = None
    if env and not blockers and not has_plugin and not (risks and opts.plugin == "auto"):
        graph, count, why_not = plugin_graph(proto, info)
        if why_not:
            blockers.append(why_not)
        else:
            say(f"substituted {count} plugin nodes")
    use_plugin, note = decide_plugin(opts.plugin, blockers, has_plugin, risks)
    say(note)
    warnings: list[str] = [risks[0]] if use_plugin and risks else []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swinedge-build-") as scratch:
        graph_path = Path(onnx_path)
        if use_plugin and graph is not None:
            import onnx

            graph_path = Path(scratch) / "with_plugin.onnx"
            onnx.save(graph, str(graph_path))
        if use_plugin:
            # Registers the plugin with TensorRT for this build; loading the plan later
            # needs none of it (the PTX is in the plan).
            from swinedge.plugin import tensorrt_plugin

            tensorrt_plugin.set_compute_capability(cc)
        logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        with trt_constructing("a builder"):
            builder = trt.Builder(logger)
        flags = 0
        if version.needs_strongly_typed_flag:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if use_plugin and hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
        network = trt_made(builder.create_network(flags), "the network definition")
        with trt_constructing("the ONNX parser"):
            parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(graph_path)):
            count = parser.num_errors
            parse_error = parser.get_error(0) if count else None
            where = f" at node {parse_error.node_name()}" if parse_error is not None and hasattr(parse_error, "node_name") else ""
            desc = parse_error.desc() if parse_error is not None else "unknown error"
            raise SwinedgeError(f"TensorRT cannot parse {onnx_path}{where}: {desc} ({count} error(s))")
        config = trt_made(builder.create_builder_config(), "the builder config")
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
        config.builder_optimization_level = opts.opt_level
        cache, cache_note = attach_timing_cache(config, opts.timing_cache)
        if cache_note:
            warnings.append(cache_note)
        add_profiles(builder, config, network.get_input(0).name, all_shapes)  # one per input size, numbered in this order
        say("building (TensorRT is timing kernels; minutes for large models)")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise SwinedgeError("TensorRT failed to build the engine: rerun with --verbose for its log")
        seconds = time.perf_counter() - start
        if sizes is not None and info.get("task") == "backbone":
            info = at_first_size(info, sizes[0])  # the manifest describes what the engine takes
        manifest = write_artifact_with_manifest(
            "tensorrt-engine",
            out,
            bytes(plan),
            model=info.get("model"),
            config=info.get("config"),
            precision=precision,  # float8 Q/DQ is fp8 whatever the graph's manifest says
            onnx={"file": Path(onnx_path).name, "sha256": sha256_file(onnx_path)},
            input=info.get("input"),
            preprocess=info.get("preprocess"),
            **{k: info[k] for k in ("task", "outputs", "input_size", "output") if k in info},
            tensorrt={"version": str(version), "gpu": gpu, "compute_capability": cc, "strongly_typed": True},
            profile={"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
            **(
                {"profiles": [{"min": list(a), "opt": list(b), "max": list(c)} for a, b, c in all_shapes],
                 "input_sizes": [f"{h}x{w}" for h, w in sizes]}
                if sizes is not None else {}
            ),  # fmt: skip
            plugin={"used": use_plugin, "note": note, **({"risk": risks[0]} if use_plugin and risks else {})},
            build={**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}, "seconds": round(seconds, 1)},
        )
        if opts.timing_cache and cache is not None:
            save_timing_cache(cache, opts.timing_cache, warnings.append)
    return BuildResult(out, manifest_path(out), seconds, use_plugin, note, manifest, tuple(warnings))


def attach_timing_cache(config, path: Path | None) -> tuple[Any, str | None]:
    """Attach the timing cache at ``path`` (or a fresh one) to a builder config.

    Returns the cache object to serialize after the build, and a note when the file could
    not be used: TensorRT refuses a cache made on another GPU, CUDA or TensorRT
    (``set_timing_cache`` returns False), and the build then starts a fresh one."""
    if path is None:
        return None, None
    data = path.read_bytes() if path.exists() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return cache, None
        except Exception:  # noqa: BLE001 - TensorRT's error types for a damaged cache are undocumented
            pass
    note = f"timing cache {path} does not fit this GPU or TensorRT (or is damaged): starting a fresh one" if data else None
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        return None, f"TensorRT refused a fresh timing cache: building without one, {path} is left as it is"
    return cache, note


def save_timing_cache(cache, path: Path, warn: Callable[[str], None]) -> None:
    """Write the cache object the build used (NVIDIA's guide: serialize the one you hold).

    The plan and manifest are already written: a cache that cannot be written is a note."""
    try:
        write_bytes_atomic(path, bytes(cache.serialize()))
    except SwinedgeError as e:
        warn(f"timing cache not saved: {e}")
