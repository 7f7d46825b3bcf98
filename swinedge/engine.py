"""TensorRT engines: build from ONNX, check manifests, run.

Strongly typed networks only (TensorRT 11 rules, accepted by 10.x): precision comes
from the graph (Q/DQ for INT8/FP8, AutoCast for FP16), never from builder flags.

Everything that needs no TensorRT (version rules, plugin choice, profile shapes,
manifest checks) is a plain function tested on CPU; the TensorRT calls themselves are
kept few and exactly on the documented API.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.errors import SwinedgeError
from swinedge.io import require_file, sha256_file, write_bytes_atomic
from swinedge.manifest import manifest_path, read_manifest, write_manifest
from swinedge.runtime import ENGINE_SUFFIXES, Runner, require_tensorrt

PLUGIN_MODES = ("auto", "on", "off")
AOT_PLUGIN_MIN = (10, 9)  # tensorrt.plugin.aot_impl


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
        if self.workspace_gib <= 0:
            raise SwinedgeError(f"--workspace must be > 0 GiB, got {self.workspace_gib}")
        if self.plugin not in PLUGIN_MODES:
            raise SwinedgeError(f"--plugin must be one of {', '.join(PLUGIN_MODES)}, got '{self.plugin}'")


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


def decide_plugin(mode: str, version: TrtVersion, graph_has_plugin: bool) -> tuple[bool, str]:
    """Whether to build with the fused plugin, and a note saying why."""
    if mode == "off":
        if graph_has_plugin:
            raise SwinedgeError("--plugin off, but the graph has plugin nodes: build from the native export")
        return False, "plugin off: native attention graph"
    if not version.has_aot_plugins:
        if mode == "on" or graph_has_plugin:
            raise SwinedgeError(
                f"TensorRT {version} has no AOT quickly deployable plugins (needs >= 10.9): use --plugin off with the native export"
            )
        return False, f"TensorRT {version} < 10.9 (e.g. Jetson Orin): native attention graph, no fused plugin"
    return True, f"fused window-attention plugin (AOT PTX) on TensorRT {version}"


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


@dataclass
class BuildResult:
    plan: Path
    manifest_path: Path
    seconds: float
    plugin_used: bool
    note: str
    manifest: dict[str, Any]


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
    """Compile an ONNX graph (FP32, FP16 or Q/DQ INT8/FP8) to a TensorRT plan + manifest."""
    from swinedge.export import load_onnx, onnx_info
    from swinedge.models import SwinConfig
    from swinedge.ops.onnx_plugin import plugin_nodes, substitute_plugin_nodes

    opts = options or BuildOptions()
    opts.validate()
    out = Path(out)
    if out.suffix not in ENGINE_SUFFIXES:
        raise SwinedgeError(f"--out {out}: use a file name ending in .plan or .engine")
    proto = load_onnx(onnx_path)
    info = onnx_info(onnx_path, proto)
    trt = require_tensorrt()
    gpu, cc = gpu_identity()
    version = TrtVersion.parse(trt.__version__)
    say = status or (lambda _m: None)
    use_plugin, note = decide_plugin(opts.plugin, version, bool(plugin_nodes(proto)))
    shapes = profile_shapes(info["input"]["shape"], opts)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="swinedge-build-") as scratch:
        graph_path = Path(onnx_path)
        if use_plugin and not plugin_nodes(proto):
            if not info.get("config"):
                raise SwinedgeError(f"{onnx_path} has no swinedge manifest: cannot place plugin nodes; use --plugin off")
            proto, count = substitute_plugin_nodes(proto, SwinConfig.from_dict(info["config"]))
            graph_path = Path(scratch) / "with_plugin.onnx"
            import onnx

            onnx.save(proto, str(graph_path))
            say(f"substituted {count} plugin nodes")
        if use_plugin:
            import swinedge.plugin.tensorrt_plugin  # noqa: F401 - registers the plugin with TensorRT

        logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if version.needs_strongly_typed_flag:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if use_plugin and hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(graph_path)):
            errors = [parser.get_error(i) for i in range(parser.num_errors)]
            first = errors[0] if errors else None
            where = f" at node {first.node_name()}" if first is not None and hasattr(first, "node_name") else ""
            desc = first.desc() if first is not None else "unknown error"
            raise SwinedgeError(f"TensorRT cannot parse {onnx_path}{where}: {desc} ({len(errors)} error(s))")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gib * (1 << 30)))
        config.builder_optimization_level = opts.opt_level
        cache_bytes = opts.timing_cache.read_bytes() if opts.timing_cache and opts.timing_cache.exists() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, *shapes)
        config.add_optimization_profile(profile)
        say("building (TensorRT is timing kernels; minutes for large models)")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise SwinedgeError("TensorRT failed to build the engine: rerun with --verbose for its log")
        write_bytes_atomic(out, bytes(plan))
        if opts.timing_cache:
            write_bytes_atomic(opts.timing_cache, bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    manifest = write_manifest(
        "tensorrt-engine",
        out,
        model=info.get("model"),
        config=info.get("config"),
        precision=info.get("precision"),
        onnx={"file": Path(onnx_path).name, "sha256": sha256_file(onnx_path)},
        input=info.get("input"),
        preprocess=info.get("preprocess"),
        tensorrt={"version": str(version), "gpu": gpu, "compute_capability": cc, "strongly_typed": True},
        profile={"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
        plugin={"used": use_plugin, "note": note},
        build={**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}, "seconds": round(seconds, 1)},
    )
    return BuildResult(out, manifest_path(out), seconds, use_plugin, note, manifest)


class TensorRTRunner(Runner):
    """A TensorRT plan; buffers and stream from torch (no pycuda)."""

    def __init__(self, plan: str | Path):
        self.plan = Path(plan)
        self.device = "cuda"
        self.name = "tensorrt"
        self.manifest: dict[str, Any] = {}
        self.engine = None
        self.context = None

    def load(self) -> "TensorRTRunner":
        require_file(self.plan, "engine")
        self.manifest = read_manifest(self.plan, required=True) or {}
        trt = require_tensorrt()
        gpu, cc = gpu_identity()
        check_engine_fits(self.manifest, gpu=gpu, compute_capability=cc, trt_version=trt.__version__, plan=str(self.plan))
        if self.manifest.get("plugin", {}).get("used"):
            import swinedge.plugin.tensorrt_plugin  # noqa: F401 - AOT engines need no Python, but registering is harmless
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(self.plan.read_bytes())
        if self.engine is None:
            raise SwinedgeError(f"TensorRT could not deserialize {self.plan}: rebuild it with swinedge build-engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        precision = self.manifest.get("precision", "")
        self.name = f"tensorrt-{precision}" + ("-plugin" if self.manifest.get("plugin", {}).get("used") else "")
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        assert self.context is not None, "call load() first"
        lo, hi = self.manifest["profile"]["min"][0], self.manifest["profile"]["max"][0]
        if not lo <= len(batch) <= hi:
            raise SwinedgeError(f"batch {len(batch)} is outside the engine's profile {lo}..{hi}: rebuild with --min-batch/--max-batch")
        dtype = {self._trt.float32: torch.float32, self._trt.float16: torch.float16}
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda().to(dtype[self.engine.get_tensor_dtype(self.input_name)])
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = torch.empty(out_shape, device="cuda", dtype=dtype[self.engine.get_tensor_dtype(self.output_name)])
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SwinedgeError("TensorRT execution failed")
        stream.synchronize()
        return y.float().cpu().numpy()

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory TensorRT allocates for the context (outside torch's allocator)."""
        if self.engine is None:
            return 0
        size = getattr(self.engine, "device_memory_size_v2", None)  # 10.x and 11.x
        return int(size if size is not None else getattr(self.engine, "device_memory_size", 0))

    @property
    def input_spec(self) -> dict[str, Any]:
        shape = self.manifest.get("input", {}).get("shape") or [None, 3, None, None]
        cfg = self.manifest.get("config") or {}
        return {"img_size": shape[2], "in_chans": shape[1], "num_classes": cfg.get("num_classes"), "preprocess": self.manifest.get("preprocess")}

    def close(self) -> None:
        self.context = None
        self.engine = None
