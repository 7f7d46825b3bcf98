"""The TensorRT layer against NVIDIA's real artifacts, for every version users have.

No TensorRT library can be installed here, so these tests run NVIDIA's own code where it
exists: the ``tensorrt-cu12-bindings`` wheel of every version in
``swinedge.engine.CONTRACT_VERSIONS`` (downloaded into ``.cache/trt-bindings``, never
installed): its compiled module ``tensorrt.so``, imported unmodified over three small
libraries of ours that stand where libnvinfer, libnvonnxparser and libnvinfer_plugin
would (``tests/trt_harness/``, built here with gcc; :mod:`trt_bindings` says exactly what
is NVIDIA's and what is ours), and its pure-Python ``tensorrt/plugin`` package.

What they prove: every TensorRT name swinedge touches exists in each version and every call
matches the signature NVIDIA's module gives it; NVIDIA's plugin layer registers
swinedge's plugin, and its compiled C++ trampolines answer the virtual calls the ONNX
parser and the builder make, in their order, on the real substituted Swin graphs (FP32,
FP16, INT8; Swin-T, Swin V2, backbones, any-size), compiling the real kernel for sm_87 and
sm_90. What they cannot prove: anything libnvinfer itself does (parsing, building, PTX
loading and launch, numerics); the ``tensorrt``-marked tests do that on a GPU machine.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import pytest

import trt_bindings
from swinedge.engine import CONTRACT_VERSIONS, PluginEnvironment, TrtVersion, decide_plugin, plugin_blockers
from swinedge.errors import SwinedgeError

REPO = Path(__file__).resolve().parents[1]
VERSIONS = list(CONTRACT_VERSIONS)
PLUGIN_VERSIONS = [v for v in VERSIONS if TrtVersion.parse(v).has_aot_plugins]
SWIN_T = "swin_tiny_patch4_window7_224"
# Swin-T, from its definition (timm / the paper): per stage, token grid side, heads, channels.
SWIN_T_STAGES = [(56, 3, 96), (28, 6, 192), (14, 12, 384), (7, 24, 768)]
SWIN_T_DEPTHS = [2, 2, 6, 2]


@pytest.fixture(scope="session", params=VERSIONS)
def version(request) -> str:
    return require_bindings(request.param)


def require_bindings(version: str) -> str:
    """``version``'s wheel (downloaded) and our libraries for it (built), or a skip that
    says which is missing; CI must run the contract, so there a missing one fails."""
    try:
        trt_bindings.wheel_dir(version)
        trt_bindings.build_harness(trt_bindings.trt_major(version))
    except trt_bindings.HarnessUnavailable as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot import NVIDIA's bindings here: {e}")
    except RuntimeError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"NVIDIA's bindings wheel is not reachable: {e}")
    return version


# -- the wheels are what they claim ---------------------------------------------------------
def test_wheel_is_nvidias_bindings(version: str) -> None:
    names = trt_bindings.bound_names(version)
    assert names.missing(["Builder", "OnnxParser", "Runtime", "ICudaEngine", "IExecutionContext"]) == []
    assert "NoSuchTensorRTName" not in names
    pkg = trt_bindings.wheel_dir(version) / "tensorrt_bindings"
    assert f'__version__ = "{version}"' in (pkg / "__init__.py").read_text()
    # 10.3 (Jetson Orin) has no quickly deployable plugins at all; AOT arrives in 10.9.
    assert trt_bindings.has_plugin_package(version) is (version != "10.3.0")
    if trt_bindings.has_plugin_package(version):
        assert "def aot_impl(" in (pkg / "plugin" / "_lib.py").read_text()
        assert "QuickPluginCreationRequest" in names


# -- names ---------------------------------------------------------------------------------------
# Variables that hold TensorRT objects in swinedge's TensorRT code, with the bound class
# each holds (``self.engine`` / ``self.context`` in the runner, ``engine`` / ``context`` /
# ``runtime`` locals elsewhere). Attributes read on them are TensorRT names; calls on them
# are checked against that class's signatures.
ROOT_CLASS = {
    "trt": "tensorrt", "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser",
    "config": "IBuilderConfig", "profile": "IOptimizationProfile", "cache": "ITimingCache", "runtime": "Runtime",
    "logger": "Logger", "parse_error": "ParserError", "engine": "ICudaEngine", "context": "IExecutionContext",
}  # fmt: skip
TRT_ROOTS = set(ROOT_CLASS)
TRT_SELF = {"engine", "context"}
TRT_FILES = ["swinedge/engine.py", "swinedge/runners/trt_runner.py", "swinedge/doctor.py", "swinedge/plugin/tensorrt_plugin.py",
             "swinedge/benchmarks/gpu_attention.py", "swinedge/error_map.py"]  # fmt: skip
PLUGIN_FILE = "swinedge/plugin/tensorrt_plugin.py"
# A call whose bool/int result is dropped must say why on its line.
IGNORED_RESULT = "# result ignored:"


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def touched_names(path: str) -> tuple[set[str], set[str], set[str]]:
    """(TensorRT names used, names reached only behind hasattr/getattr, tensorrt.plugin names)."""
    tree = ast.parse((REPO / path).read_text())
    used, gated, plugin = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if not chain:
                continue
            if chain[0] in TRT_ROOTS:
                used.update(chain[1:])
            elif chain[0] == "self" and len(chain) > 2 and chain[1] in TRT_SELF:
                used.update(chain[2:])
            elif chain[0] == "trtp":
                plugin.update(chain[1:2])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            target, name = node.args[0], node.args[1] if len(node.args) > 1 else None
            chain = _chain(target)
            roots = chain and (chain[0] in TRT_ROOTS or (chain[0] == "self" and len(chain) > 1 and chain[1] in TRT_SELF))
            if roots and isinstance(name, ast.Constant) and isinstance(name.value, str):
                gated.add(name.value)
    return {n for n in used if not n.startswith("__")}, gated, plugin


def _all_touched() -> tuple[set[str], set[str], set[str], set[str]]:
    used, gated, plugin_used, plugin_api = set(), set(), set(), set()
    for path in TRT_FILES:
        u, g, p = touched_names(path)
        (plugin_used if path == PLUGIN_FILE else used).update(u)
        gated.update(g)
        plugin_api.update(p)
    return used, gated, plugin_used, plugin_api


def test_name_scan_sees_the_tensorrt_code() -> None:
    """The scan is not vacuous: it finds the calls the build and run paths make."""
    used, gated, plugin_used, plugin_api = _all_touched()
    assert {"Builder", "create_network", "OnnxParser", "parse_from_file", "set_timing_cache", "create_timing_cache",
            "serialize", "build_serialized_network", "deserialize_cuda_engine", "create_execution_context",
            "execute_async_v3", "set_input_shape", "set_tensor_address", "STRONGLY_TYPED"} <= used  # fmt: skip
    assert {"PREFER_AOT_PYTHON_PLUGINS", "QuickPluginCreationRequest", "device_memory_size_v2", "node_name"} <= gated
    assert {"float16", "float32", "bfloat16"} <= plugin_used
    assert {"register", "aot_impl", "TensorDesc", "KernelLaunchParams", "SymIntExprs", "from_shape_expr"} <= plugin_api


def test_every_tensorrt_name_exists_in_each_version(version: str) -> None:
    names = trt_bindings.bound_names(version)
    used, gated, plugin_used, plugin_api = _all_touched()
    assert names.missing(used - gated) == [], f"TensorRT {version} binds none of these"
    if trt_bindings.has_plugin_package(version):
        # The plugin module is imported only where the plugin is used (>= 10.9).
        assert names.missing(plugin_used - gated) == [], f"TensorRT {version} binds none of these"
        lib = "".join(p.read_text() for p in (trt_bindings.wheel_dir(version) / "tensorrt_bindings" / "plugin").glob("*.py"))
        defined = set(re.findall(r"^\s*(?:def|class)\s+(\w+)", lib, re.M))
        assert sorted(plugin_api - defined) == [], f"tensorrt.plugin {version} defines none of these"


def attribute_chains(path: str) -> set[tuple[str, tuple[str, ...]]]:
    """(class, names) for every attribute read on a TensorRT root in ``path``:
    ``trt.A.B`` -> ("tensorrt", (A, B)); ``config.x`` / ``self.engine.x`` -> (its class, (x,))."""
    out = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if not chain:
            continue
        if chain[0] == "trt":
            out.add(("tensorrt", tuple(chain[1:])))
        elif chain[0] in ROOT_CLASS:
            out.add((ROOT_CLASS[chain[0]], (chain[1],)))
        elif chain[0] == "self" and len(chain) > 2 and chain[1] in TRT_SELF:
            out.add((ROOT_CLASS[chain[1]], (chain[2],)))
    return out


def resolve_on_real_module(version: str, chains) -> dict[str, bool]:
    cmd = [sys.executable, str(REPO / "tests" / "trt_signatures.py"), version, "--attributes"]
    proc = subprocess.run(cmd, input=json.dumps([[c, list(n)] for c, n in sorted(chains)]), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_tensorrt_attribute_resolves_on_the_real_module(version: str) -> None:
    """Every attribute swinedge reads on a TensorRT object (enum members, properties,
    methods) exists on NVIDIA's imported module of ``version``, looked up on the class the
    variable holds (``getattr``, not the .so's strings, where any tail of a name matches);
    names behind a hasattr/getattr gate are exempt. Planted typos are reported missing."""
    _, gated, _, _ = _all_touched()
    chains = set()
    for path in TRT_FILES:
        if path == PLUGIN_FILE and not trt_bindings.has_plugin_package(version):
            continue  # imported only where the plugin is used (>= 10.9)
        chains |= {c for c in attribute_chains(path) if not set(c[1]) & gated}
    assert ("tensorrt", ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")) in chains and ("IBuilderConfig", ("builder_optimization_level",)) in chains
    planted = {("IBuilderConfig", ("optimization_level",)), ("tensorrt", ("NetworkDefinitionCreationFlag", "ONGLY_TYPED"))}
    found = resolve_on_real_module(version, chains | planted)
    assert [k for k in ("IBuilderConfig.optimization_level", "tensorrt.NetworkDefinitionCreationFlag.ONGLY_TYPED") if found[k]] == []
    missing = sorted(".".join([c, *n]) for c, n in chains if not found[".".join([c, *n])])
    assert missing == [], f"TensorRT {version} has none of these"


def test_gated_names_exist_somewhere_and_gates_decide_correctly() -> None:
    """Names behind hasattr/getattr may be absent, but each exists in some version
    (no typo hides behind a gate), and the gates pick the plugin path where it exists."""
    used, gated, _, _ = _all_touched()
    available = {v: trt_bindings.bound_names(v) for v in VERSIONS}
    for name in gated:
        assert any(name in names for names in available.values()), f"{name} exists in no checked version"
    for v, names in available.items():
        # PluginEnvironment.detect's gate is hasattr(trt, "QuickPluginCreationRequest").
        assert ("QuickPluginCreationRequest" in names) is TrtVersion.parse(v).has_aot_plugins, v


def test_orin_10_3_builds_native_attention() -> None:
    has_aot = "QuickPluginCreationRequest" in trt_bindings.bound_names("10.3.0")
    env = PluginEnvironment(TrtVersion.parse("10.3.0"), has_aot, 87, "3.9.0")
    blockers = plugin_blockers(env)
    assert blockers and "10.3" in blockers[0]
    use, note = decide_plugin("auto", blockers, graph_has_plugin=False)
    assert not use and note.startswith("native attention graph: TensorRT 10.3.0 has no AOT")
    with pytest.raises(SwinedgeError, match="--plugin on, but TensorRT 10.3.0"):
        decide_plugin("on", blockers, graph_has_plugin=False)


# -- signatures, from NVIDIA's compiled module ------------------------------------------------------
@dataclass(frozen=True)
class CallSite:
    path: str
    line: int
    cls: str  # bound class, or "tensorrt" for a module-level function / constructor
    method: str
    positional: int | None  # None: a *starred argument, count unknown
    keywords: tuple[str, ...]
    discarded: bool  # the call is a statement of its own: its result is dropped
    source: str


def call_sites(path: str) -> list[CallSite]:
    """Every call on a TensorRT root in ``path``: ``root.method(...)``, ``self.engine.method(...)``
    and ``trt.Name(...)`` (a constructor or module function)."""
    text = (REPO / path).read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    statements = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        chain = _chain(node.func)
        if not chain or len(chain) < 2:
            continue
        if chain[0] == "self" and len(chain) == 3 and chain[1] in TRT_SELF:
            root, method = chain[1], chain[2]
        elif len(chain) == 2 and chain[0] in ROOT_CLASS:
            root, method = chain
        else:
            continue
        starred = any(isinstance(a, ast.Starred) for a in node.args)
        out.append(CallSite(path, node.lineno, ROOT_CLASS[root], method, None if starred else len(node.args),
                            tuple(k.arg for k in node.keywords if k.arg), id(node) in statements, lines[node.lineno - 1].strip()))  # fmt: skip
    return out


def _all_call_sites() -> list[CallSite]:
    return [c for path in TRT_FILES for c in call_sites(path)]


def signature_problems(site: CallSite, overloads: list[dict] | None) -> list[str]:
    """Why ``site`` matches none of NVIDIA's overloads, or drops a result that signals failure."""
    where = f"{site.path}:{site.line} {site.cls}.{site.method}"
    if overloads is None:
        return [f"{where}: not bound"]
    if not overloads:
        return [f"{where}: no signature in its __doc__"]
    fits = []
    for sig in overloads:
        names = [p["name"] for p in sig["params"]]
        required = [p["name"] for p in sig["params"] if p["default"] is None]
        if any(k not in names for k in site.keywords):
            continue
        if site.positional is not None:
            if site.positional > len(names):
                continue
            given = set(names[: site.positional]) | set(site.keywords)
            if any(r not in given for r in required):
                continue
        fits.append(sig)
    if not fits:
        listed = " | ".join("(" + ", ".join(p["name"] for p in sig["params"]) + ")" for sig in overloads)
        return [f"{where}: {site.positional} positional, keywords {list(site.keywords)} fit none of {listed}"]
    if site.discarded and all(sig["returns"] in ("bool", "int") for sig in fits) and IGNORED_RESULT not in site.source:
        return [f"{where}: its {fits[0]['returns']} result (failure signal) is dropped; check it, or say why on the line ({IGNORED_RESULT} ...)"]
    return []


def nvidia_signatures(version: str, sites: list[CallSite]) -> dict[str, list[dict] | None]:
    wanted = sorted({(c.cls, c.method) for c in sites})
    cmd = [sys.executable, str(REPO / "tests" / "trt_signatures.py"), version]
    proc = subprocess.run(cmd, input=json.dumps(wanted), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_call_scan_sees_the_tensorrt_calls() -> None:
    """The scan is not vacuous: it finds the build and run calls, with their arguments."""
    sites = {(c.cls, c.method) for c in _all_call_sites()}
    assert {("tensorrt", "Builder"), ("tensorrt", "OnnxParser"), ("Builder", "create_network"), ("Builder", "build_serialized_network"),
            ("IBuilderConfig", "set_timing_cache"), ("IOptimizationProfile", "set_shape"), ("IExecutionContext", "set_input_shape"),
            ("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"), ("ICudaEngine", "create_execution_context"),
            ("Runtime", "deserialize_cuda_engine")} <= sites  # fmt: skip
    by_file = {c.path for c in _all_call_sites()}
    assert {"swinedge/engine.py", "swinedge/runners/trt_runner.py", "swinedge/benchmarks/gpu_attention.py"} <= by_file


# Receivers in TRT_FILES whose methods share a name with a TensorRT method but are not TensorRT's.
NOT_TENSORRT = {"TrtVersion", "onnx.shape_inference", "pending.fields", "acc[t]"}


def test_call_scan_misses_no_tensorrt_method_call() -> None:
    """Every call in the scanned files whose method name NVIDIA's newest module binds on a
    class the scan knows (184 names) is a scanned call site, or its receiver is listed as
    not TensorRT's: an alias (``ctx = self.context``) or a new receiver name fails here."""
    version = require_bindings(VERSIONS[-1])
    classes = sorted(set(ROOT_CLASS.values()) - {"tensorrt"})
    cmd = [sys.executable, str(REPO / "tests" / "trt_signatures.py"), version, "--methods"]
    proc = subprocess.run(cmd, input=json.dumps(classes), capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    methods = {m for names in json.loads(proc.stdout.strip().splitlines()[-1]).values() for m in names}
    assert {"set_input_shape", "execute_async_v3", "build_serialized_network"} <= methods
    seen = {(c.path, c.line, c.method) for c in _all_call_sites()}
    unseen = []
    for path in TRT_FILES:
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
                if (path, node.lineno, node.func.attr) not in seen and ast.unparse(node.func.value) not in NOT_TENSORRT:
                    unseen.append(f"{path}:{node.lineno} {ast.unparse(node.func)}")
    assert unseen == [], "calls the signature scan does not see (add the receiver to ROOT_CLASS, or to NOT_TENSORRT)"


def test_signature_check_catches_wrong_calls() -> None:
    """A planted wrong call fails the check: too many arguments, an unknown keyword, a
    dropped bool; the right call and a dropped bool that says why pass."""
    sig = [{"params": [{"name": "name", "type": "str", "default": None}, {"name": "shape", "type": "tuple", "default": None}], "returns": "bool"}]
    site = CallSite("x.py", 1, "IExecutionContext", "set_input_shape", 2, (), False, "ok = context.set_input_shape(n, s)")
    assert signature_problems(site, sig) == []
    assert signature_problems(replace(site, positional=3), sig)
    assert signature_problems(replace(site, positional=1), sig)
    assert signature_problems(replace(site, positional=1, keywords=("shap",)), sig)
    assert signature_problems(replace(site, positional=1, keywords=("shape",)), sig) == []
    assert "dropped" in signature_problems(replace(site, discarded=True, source="context.set_input_shape(n, s)"), sig)[0]
    assert signature_problems(replace(site, discarded=True, source=f"context.set_input_shape(n, s)  {IGNORED_RESULT} probing"), sig) == []
    assert signature_problems(site, None) == ["x.py:1 IExecutionContext.set_input_shape: not bound"]


def test_every_tensorrt_call_matches_nvidias_signature(version: str) -> None:
    """Each call swinedge makes on a TensorRT object fits an overload that NVIDIA's
    compiled module of ``version`` documents (argument count, keyword names), and no
    ``bool``/``int`` result that signals failure is dropped without a reason."""
    sites = _all_call_sites()
    _, gated, _, _ = _all_touched()
    signatures = nvidia_signatures(version, sites)
    problems = []
    for site in sites:
        overloads = signatures[f"{site.cls}.{site.method}"]
        if overloads is None and site.method in gated:
            continue  # reached only behind hasattr/getattr on versions that have it
        if site.path == PLUGIN_FILE and not trt_bindings.has_plugin_package(version):
            continue
        problems += signature_problems(site, overloads)
    assert problems == [], "\n".join(problems)


# -- the plugin contract ---------------------------------------------------------------------------
def _replay(version: str, graphs: list[Path], ccs: list[int], *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # Triton compiles for real
    cmd = [sys.executable, str(REPO / "tests" / "trt_replay.py"), version, *extra]
    for g in graphs:
        cmd += ["--graph", str(g)]
    for cc in ccs:
        cmd += ["--cc", str(cc)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def swin_t_plugin_graphs(tmp_path_factory) -> dict[str, tuple[Path, dict[str, int]]]:
    """The real Swin-T graphs build_engine hands TensorRT: exported, quantized, substituted.
    With each, the element type of every tensor before substitution."""
    from swinedge.engine import plugin_graph
    from swinedge.export import export_onnx, onnx_info
    from swinedge.ops.onnx_plugin import tensor_types
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    d = tmp_path_factory.mktemp("contract")
    fp32 = export_onnx(SWIN_T, d / "t.onnx").onnx_path
    native = {
        "fp32": fp32,
        "fp16": quantize_onnx(fp32, d / "t.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=4)).onnx_path,
        "int8": quantize_onnx(fp32, d / "t.int8.onnx", QuantizeOptions(calib_size=8, method="max")).onnx_path,
    }
    out = {}
    for precision, path in native.items():
        proto = onnx.load(str(path))
        before = tensor_types(proto)
        graph, count, why_not = plugin_graph(proto, onnx_info(path, proto))
        assert why_not is None and count == sum(SWIN_T_DEPTHS)
        target = d / f"t.{precision}.plugin.onnx"
        onnx.save(graph, str(target))
        out[precision] = (target, before)
    return out


EXPECTED_QKV = {"fp32": "DataType.FLOAT", "fp16": "DataType.HALF", "int8": "DataType.HALF"}
ONNX_TO_TRT = {onnx.TensorProto.FLOAT: "DataType.FLOAT", onnx.TensorProto.FLOAT16: "DataType.HALF"}
TARGETS = {87: "sm_87", 90: "sm_90a"}


@pytest.mark.slow
def test_nvidia_python_plugin_layer_on_real_bindings_accepts_swin_t_graphs(version: str, swin_t_plugin_graphs) -> None:
    """NVIDIA's real bindings of ``version`` (compiled trampolines and tensorrt.plugin),
    driven through the plugin's C++ interface by our libnvinfer, answer the parser's and builder's calls on the substituted Swin-T FP32/FP16/INT8
    graphs as TensorRT needs (types, shapes, formats, launch parameters, PTX entry).
    Not proven here: libnvinfer parsing the graph, loading and launching the PTX, numerics."""
    if version not in PLUGIN_VERSIONS:
        # Jetson Orin's 10.3: no tensorrt.plugin at all, and the gate build_engine uses
        # (hasattr QuickPluginCreationRequest) is False there, so it never imports the plugin.
        result = _replay(version, [], [])
        assert result["has_quick_aot"] is False
        assert result["import_error"].startswith("ModuleNotFoundError: No module named 'tensorrt.plugin'")
        return
    graphs = {p: path for p, (path, _) in swin_t_plugin_graphs.items()}
    result = _replay(version, list(graphs.values()), list(TARGETS), "--negative")
    assert "import_error" not in result, result.get("import_error")
    assert result["has_quick_aot"]
    entries: dict[str, str] = {}
    for precision, path in graphs.items():
        per_cc = result["graphs"][str(path)]
        before = swin_t_plugin_graphs[precision][1]
        proto = onnx.load(str(path), load_external_data=False)
        nodes_by_name = {n.name: n for n in proto.graph.node}
        consumers_cast = {n.input[0]: n for n in proto.graph.node if n.op_type == "Cast"}
        assert "table must be float32, got float16" in per_cc.pop("negative")  # aot_impl checks dtypes
        for cc, nodes in per_cc.items():
            cc = int(cc)
            assert len(nodes) == sum(SWIN_T_DEPTHS)
            k = 0
            for stage, (side, heads, channels) in enumerate(SWIN_T_STAGES):
                for block in range(SWIN_T_DEPTHS[stage]):
                    n = nodes[k]
                    k += 1
                    assert "error" not in n, n.get("trace", n.get("error"))
                    assert n["node"] == f"/layers/layers.{stage}/blocks/blocks.{block}/attn/SwinWindowAttention"
                    assert n["aot"] and n["missing_fields"] == [] and n["num_outputs"] == 1 and n["aliased"] == -1
                    # Output dtype: qkv's, and the type the replaced tensor had (or a Cast restores it).
                    assert n["output_types"] == [EXPECTED_QKV[precision]]
                    out_name = nodes_by_name[n["node"]].output[0]
                    if out_name in before:  # the plugin writes the replaced tensor itself
                        assert ONNX_TO_TRT[before[out_name]] == n["output_types"][0]
                    else:  # a Cast after it restores the replaced tensor's type
                        cast = consumers_cast[out_name]
                        assert cast.attribute[0].i == before[cast.output[0]]
                    for b, shape in n["output_shapes"].items():
                        assert shape == [int(b), side * side, channels]
                    qkv = EXPECTED_QKV[precision]
                    assert n["format_combinations"] == [[t, "TensorFormat.LINEAR"] for t in (qkv, "DataType.FLOAT", qkv, qkv)]
                    assert n["tactics"] == [] and n["extra_args"] == 0 and n["launch_arg_types"] == ["PluginArgDataType.INT32"]
                    windows = (-(-side // 7)) ** 2  # 7x7 windows; a 49-token window is one 64-query program
                    for b, (gx, gy, gz, bx, by, bz, smem) in n["launch"].items():
                        assert (gx, gy, gz) == (int(b) * windows * heads, 1, 1)  # head: the fastest launch index
                        assert (bx, by, bz) == (n["kernel"]["reqntid"], 1, 1) and bx == 128
                        assert 0 < smem <= 48 * 1024
                    kern = n["kernel"]
                    assert kern["entry"] == kern["name"] and kern["params"] == 4
                    assert kern["target"] == TARGETS[cc] and kern["isa"] == "8.0"
                    assert kern["name"].startswith("swinedge_window_attention_") and f"_sm{cc}_" in kern["name"]
                    # One entry name never stands for two different kernels.
                    assert entries.setdefault(kern["name"], kern["ptx_sha256"]) == kern["ptx_sha256"]
    # Shifted and unshifted blocks, stages, dtypes and architectures all have their own kernel.
    assert len(entries) == 7 * 2 * 2  # 7 geometries (stage 4 has no shift) x fp32/fp16 x sm_87/sm_90


# -- the contract can fail: it catches the defects it was written for ---------------------------------
@pytest.fixture(scope="session")
def micro_plugin_graph(tmp_path_factory) -> Path:
    from swinedge.engine import plugin_graph
    from swinedge.export import export_onnx, onnx_info

    d = tmp_path_factory.mktemp("contract-micro")
    path = export_onnx("swin_micro_patch4_window4_64", d / "m.onnx").onnx_path
    proto = onnx.load(str(path))
    graph, _, why_not = plugin_graph(proto, onnx_info(path, proto))
    assert why_not is None
    onnx.save(graph, str(d / "m.plugin.onnx"))
    return d / "m.plugin.onnx"


def _variant(tmp_path: Path, transform) -> Path:
    src = (REPO / PLUGIN_FILE).read_text()
    variant = tmp_path / "plugin_variant.py"
    variant.write_text(transform(src))
    return variant


@pytest.mark.slow
@pytest.mark.parametrize(
    "version,expected",
    [("10.9.0.34", "TypeError: issubclass() arg 1 must be a class"), ("11.4.0.106", "ValueError: TensorDescs args should come first")],
)
def test_nvidia_python_plugin_layer_on_real_bindings_rejects_string_annotations(version: str, expected: str, micro_plugin_graph: Path, tmp_path: Path) -> None:
    """With ``from __future__ import annotations`` NVIDIA's validators reject the module."""
    variant = _variant(tmp_path, lambda s: s.replace('"""\n\nfrom typing', '"""\n\nfrom __future__ import annotations\n\nfrom typing', 1))
    result = _replay(version, [micro_plugin_graph], [90], "--plugin-module", str(variant))
    assert result.get("import_error", "").startswith(expected)


@pytest.mark.slow
@pytest.mark.parametrize("version,fails", [("10.9.0.34", True), ("11.0.0.114", True), ("11.2.1.2", False)])
def test_nvidia_python_plugin_layer_on_real_bindings_rejects_int_attributes_where_numpy_refuses(version: str, fails: bool, micro_plugin_graph: Path, tmp_path: Path) -> None:
    """``int``-annotated attributes break 10.9-11.1 on NumPy >= 2.4 (int() of a length-1 array)."""
    variant = _variant(tmp_path, lambda s: s.replace("npt.NDArray[np.int32]", "int"))
    result = _replay(version, [micro_plugin_graph], [90], "--plugin-module", str(variant))
    errors = [n.get("error", "") for n in result["graphs"][str(micro_plugin_graph)]["90"]]
    if fails:
        assert errors and all("only 0-dimensional arrays can be converted to Python scalars" in e for e in errors)
    else:
        assert errors == [""] * len(errors)


# -- what the 10.x bindings get wrong, pinned on the real modules --------------------------------------
@pytest.fixture(scope="session")
def micro_replays(micro_plugin_graph) -> dict[str, dict]:
    """The micro graph's replay (sm_90) and the field probe on every plugin version."""
    out = {}
    for v in PLUGIN_VERSIONS:
        try:
            trt_bindings.wheel_dir(v)
            trt_bindings.build_harness(trt_bindings.trt_major(v))
        except RuntimeError:  # the tests that use it skip, saying why (require_bindings)
            if os.environ.get("CI"):
                raise
            continue
        out[v] = _replay(v, [micro_plugin_graph], [90], "--field-probe")
    return out


def _micro_replay(micro_replays, version: str) -> dict:
    if version not in micro_replays:
        require_bindings(version)  # skips with the reason
    return micro_replays[version]


@pytest.mark.slow
@pytest.mark.parametrize("trt_version", PLUGIN_VERSIONS)
def test_real_bindings_kernel_name_outlives_get_kernel_only_from_10_14(trt_version: str, micro_replays) -> None:
    """NVIDIA's compiled ``getKernel`` trampoline, called through the C++ vtable: the name
    it hands back reads right at the return on every version (here, with glibc's allocator:
    freed memory is not yet reused), but on 10.9 - 10.13 it points into freed memory (release/10.9 ... 10.13 ``pyPlugin.cpp``: ``c_str()`` of a
    local), so 28 small allocations later it reads as something else; from 10.14 the
    trampoline keeps it in a member. A new wheel that changes this fails here, and
    :attr:`TrtVersion.aot_kernel_name_dangles` (what ``--plugin auto`` decides by) must
    follow."""
    result = _micro_replay(micro_replays, trt_version)
    nodes = result["graphs"][next(iter(result["graphs"]))]["90"]
    assert len(nodes) == 8 and all("error" not in n for n in nodes), [n.get("error") for n in nodes]
    for n in nodes:
        assert n["kernel"]["name"] == n["kernel"]["entry"]  # the PTX's entry, read at the return
    intact = [n["kernel"]["name_after_allocations"] == n["kernel"]["name"] for n in nodes]
    measured_dangling = trt_version in ("10.9.0.34", "10.13.3.9")
    assert intact == [not measured_dangling] * len(nodes)
    assert TrtVersion.parse(trt_version).aot_kernel_name_dangles is measured_dangling


# What the field probe hands the plugin through createPlugin (tests/trt_replay.py PROBE_FIELDS).
PROBE_SENT = {"ints": [1, 2, 3], "floats": [0.5, 1.5], "text": "abc", "one": [7]}


@pytest.mark.slow
def test_real_bindings_plugin_fields_read_back(version: str, micro_replays) -> None:
    """A plugin field as NVIDIA's compiled module turns it into ``PluginField.data`` (made
    in Python, every version) and as its plugin layer decodes the fields our libnvinfer
    hands ``createPlugin`` (versions with tensorrt.plugin): a length-1 INT32 field (all
    swinedge's plugin uses) reads back everywhere; lists, floats and strings read back
    from 10.16, but on 10.3 / 10.9 / 10.13 under NumPy >= 2 as their first element repeated."""
    import numpy as np

    result = micro_replays[version] if version in micro_replays else _replay(version, [], [], "--field-probe")
    probe = result["field_probe"]
    garbled = version in ("10.3.0", "10.9.0.34", "10.13.3.9") and int(np.__version__.split(".")[0]) >= 2
    made = probe["constructed"]
    assert made["one"] == PROBE_SENT["one"]
    if garbled:
        assert made["ints"] == [1, 1, 1] and made["floats"] == [0.5, 0.5]
    else:
        assert made["ints"] == PROBE_SENT["ints"] and made["floats"] == PROBE_SENT["floats"]
    if version not in PLUGIN_VERSIONS:
        assert "seen" not in probe  # 10.3: no tensorrt.plugin
        return
    assert probe["rc"] == 0 and [name for name, _ in probe["declared"]] == list(PROBE_SENT)
    seen = probe["seen"]
    assert seen["one"] == PROBE_SENT["one"]
    if garbled:
        assert seen["ints"] == [1, 1, 1] and seen["floats"] == [0.5, 0.5] and seen["text"] == "aaaa"
    else:
        assert seen["ints"] == PROBE_SENT["ints"] and seen["floats"] == PROBE_SENT["floats"]
        assert seen["text"].rstrip("\0") == PROBE_SENT["text"]  # 10.16+ keep the parser's NUL


def test_real_bindings_constructors_raise_on_a_null_object_and_swinedge_says_one_line(version: str) -> None:
    """NVIDIA's ``Builder`` / ``Runtime`` constructors, given null by libnvinfer (ours always
    does), raise pybind11's TypeError rather than returning None; swinedge's
    ``trt_constructing`` turns exactly that into a one-line error."""
    from swinedge.engine import NULL_FACTORY

    found = _replay(version, [], [], "--null-factories")["null_factories"]
    for name in ("Builder", "Runtime"):
        assert found[name] == f"TypeError: pybind11::init(): {NULL_FACTORY}"
        assert found[f"{name} via swinedge"].startswith(f"TensorRT could not create a {name.lower()}: ")


def list_field_problems(node) -> list[str]:
    """Attributes of a plugin node that become fields longer than one element, or of a
    type other than INT32: those read back wrong on 10.3 / 10.9 / 10.13 under NumPy >= 2."""
    A = onnx.AttributeProto
    parser_only = {"plugin_namespace", "plugin_version"}  # read by the parser, never fields
    return [f"{node.name}: attribute {a.name} is {A.AttributeType.Name(a.type)}, not a scalar INT"
            for a in node.attribute if a.name not in parser_only and a.type != A.INT]  # fmt: skip


def test_plugin_attributes_stay_scalar_while_old_bindings_are_supported(micro_plugin_graph, any_size_plugin_graph) -> None:
    """While CONTRACT_VERSIONS holds a version whose PluginField.data repeats the first
    element (10.3, 10.9, 10.13), every plugin node attribute is a scalar INT; a list
    attribute is caught."""
    from swinedge.ops.onnx_plugin import plugin_nodes

    nodes = [n for path in (micro_plugin_graph, any_size_plugin_graph[0]) for n in plugin_nodes(onnx.load(str(path)))]
    assert len(nodes) == 16
    if {"10.3.0", "10.9.0.34", "10.13.3.9"} & set(VERSIONS):
        assert [p for n in nodes for p in list_field_problems(n)] == []
    planted = onnx.helper.make_node("SwinWindowAttention", ["a"], ["b"], name="planted", domain="swinedge", window=[7, 7], height=56)
    assert list_field_problems(planted) == ["planted: attribute window is INTS, not a scalar INT"]


# -- Swin V2's cosine plugin ---------------------------------------------------------------------------
SWINV2_MICRO = "swinv2_micro_window4_64"
# From its definition: per stage, token grid side, heads, channels (window 4, shifts 0/2).
SWINV2_MICRO_STAGES = [(16, 2, 32), (8, 4, 64)]


@pytest.fixture(scope="session")
def swinv2_plugin_graphs(tmp_path_factory) -> dict[str, Path]:
    """The Swin V2 graphs build_engine hands TensorRT: exported, quantized, substituted."""
    from swinedge.engine import plugin_graph
    from swinedge.export import export_onnx, onnx_info
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    d = tmp_path_factory.mktemp("contract-v2")
    fp32 = export_onnx(SWINV2_MICRO, d / "v2.onnx").onnx_path
    native = {
        "fp32": fp32,
        "fp16": quantize_onnx(fp32, d / "v2.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=2)).onnx_path,
        "int8": quantize_onnx(fp32, d / "v2.int8.onnx", QuantizeOptions(calib_size=8, method="max")).onnx_path,
    }
    out = {}
    for precision, path in native.items():
        proto = onnx.load(str(path))
        graph, count, why_not = plugin_graph(proto, onnx_info(path, proto))
        assert why_not is None and count == 4
        out[precision] = d / f"v2.{precision}.plugin.onnx"
        onnx.save(graph, str(out[precision]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("trt_version", PLUGIN_VERSIONS)
def test_nvidia_python_plugin_layer_on_real_bindings_accepts_swin_v2_graphs(trt_version: str, swinv2_plugin_graphs) -> None:
    """NVIDIA's real tensorrt.plugin package and its compiled trampolines, driven through the
    plugin's C++ interface by our libnvinfer, answer the parser's and builder's calls on the
    substituted Swin V2 FP32/FP16/INT8 graphs: the cosine plugin's fourth input (float32
    logit scale), output types and shapes, launch parameters and a 5-parameter PTX entry.
    Not proven here: libnvinfer parsing the graph, loading and launching the PTX, numerics."""
    require_bindings(trt_version)
    result = _replay(trt_version, list(swinv2_plugin_graphs.values()), [87, 90])
    assert "import_error" not in result, result.get("import_error")
    entries: dict[str, str] = {}
    for precision, path in swinv2_plugin_graphs.items():
        for cc, nodes in result["graphs"][str(path)].items():
            assert len(nodes) == 4
            for k, n in enumerate(nodes):
                assert "error" not in n, n.get("trace", n.get("error"))
                stage, block = divmod(k, 2)
                side, heads, channels = SWINV2_MICRO_STAGES[stage]
                assert n["node"] == f"/layers/layers.{stage}/blocks/blocks.{block}/attn/SwinV2WindowAttention"
                assert n["aot"] and n["missing_fields"] == [] and n["num_outputs"] == 1
                qkv = EXPECTED_QKV[precision]
                assert n["output_types"] == [qkv]
                assert n["format_combinations"] == [[t, "TensorFormat.LINEAR"] for t in (qkv, "DataType.FLOAT", qkv, "DataType.FLOAT", qkv)]
                for b, shape in n["output_shapes"].items():
                    assert shape == [int(b), side * side, channels]
                windows = (side // 4) ** 2
                for b, (gx, gy, gz, bx, *_rest) in n["launch"].items():
                    assert (gx, gy, gz) == (int(b) * windows * heads, 1, 1)
                kern = n["kernel"]
                assert kern["entry"] == kern["name"] and kern["params"] == 5
                assert kern["name"].startswith("swinedge_cosine_window_attention_") and f"_sm{cc}_" in kern["name"]
                assert entries.setdefault(kern["name"], kern["ptx_sha256"]) == kern["ptx_sha256"]
    assert len(entries) == 4 * 2 * 2  # 4 geometries x fp32/fp16 x sm_87/sm_90


# -- backbones: rectangular maps, mmdet's padded shifted blocks, four outputs ---------------------------
@pytest.fixture(scope="session")
def backbone_plugin_graph(tmp_path_factory) -> tuple[Path, list]:
    """A micro Swin backbone at 150x222 in mmdet's padding order (shifted blocks run on the
    padded map), exported native and substituted as build_engine does; with the geometry
    of every block."""
    from swinedge.engine import plugin_graph
    from swinedge.export import export_onnx, onnx_info
    from swinedge.models.backbone import BackboneConfig, SwinBackbone
    from swinedge.models.swin import MODEL_SPECS

    d = tmp_path_factory.mktemp("contract-backbone")
    cfg = BackboneConfig(MODEL_SPECS["swin_micro_patch4_window4_64"].config, (150, 222), stage_norms=True, pad_first=True)
    path = export_onnx(SwinBackbone(cfg), d / "bb.onnx", info={"model": "swin_micro_patch4_window4_64", "config": cfg.to_dict(), "source": None}).onnx_path
    proto = onnx.load(str(path))
    graph, count, why_not = plugin_graph(proto, onnx_info(path, proto))
    assert why_not is None and count == 8
    onnx.save(graph, str(d / "bb.plugin.onnx"))
    return d / "bb.plugin.onnx", [g for stage in cfg.stage_geometries() for g in stage]


@pytest.mark.slow
def test_nvidia_python_plugin_layer_on_real_bindings_accepts_a_rectangular_backbone(backbone_plugin_graph) -> None:
    """NVIDIA's real bindings (tensorrt.plugin and the compiled trampolines), driven
    through the plugin's C++ interface by our libnvinfer, take the plugin nodes of a backbone graph: rectangular maps (38x56 ... 5x7),
    shifted blocks on their padded map (40x56, 20x28, 12x16, 8x8), output shapes and
    launch grids from each node's own height and width. Not proven here: libnvinfer
    parsing the four-output graph, loading and launching the PTX, numerics."""
    version = PLUGIN_VERSIONS[-1]
    require_bindings(version)
    path, geoms = backbone_plugin_graph
    assert [(g.height, g.width) for g in geoms] == [(38, 56), (40, 56), (19, 28), (20, 28), (10, 14), (12, 16), (5, 7), (8, 8)]
    result = _replay(version, [path], [87])
    assert "import_error" not in result, result.get("import_error")
    nodes = result["graphs"][str(path)]["87"]
    assert len(nodes) == 8
    for n, g in zip(nodes, geoms):
        assert "error" not in n, n.get("trace", n.get("error"))
        assert n["aot"] and n["missing_fields"] == [] and n["num_outputs"] == 1
        for b, shape in n["output_shapes"].items():
            assert shape == [int(b), g.height * g.width, g.dim]
        windows = (-(-g.height // 4)) * (-(-g.width // 4))
        for b, (gx, gy, gz, *_rest) in n["launch"].items():
            assert (gx, gy, gz) == (int(b) * windows * g.num_heads, 1, 1)
        assert f"_{g.height}x{g.width}_w4_s{g.shift}_" in n["kernel"]["name"]


# -- one graph for several sizes: any-size plugin nodes -------------------------------------------------
@pytest.fixture(scope="session")
def any_size_plugin_graph(tmp_path_factory) -> tuple[Path, list]:
    """A micro Swin backbone exported for 150x222 and 192x176 in one graph (dynamic height
    and width), native, then substituted as build_engine does; with each block's
    (window, shift, heads, head dim)."""
    from swinedge.engine import plugin_graph
    from swinedge.export import export_onnx, onnx_info
    from swinedge.models.backbone import BackboneConfig, SwinBackbone
    from swinedge.models.swin import MODEL_SPECS

    d = tmp_path_factory.mktemp("contract-any-size")
    cfg = BackboneConfig(MODEL_SPECS["swin_micro_patch4_window4_64"].config, (150, 222))
    info = {"model": "swin_micro_patch4_window4_64", "config": cfg.to_dict(), "source": None}
    path = export_onnx(SwinBackbone(cfg), d / "any.onnx", info=info, sizes=[(150, 222), (192, 176)]).onnx_path
    proto = onnx.load(str(path))
    graph, count, why_not = plugin_graph(proto, onnx_info(path, proto))
    assert why_not is None and count == 8
    onnx.save(graph, str(d / "any.plugin.onnx"))
    return d / "any.plugin.onnx", cfg.block_signature()


@pytest.mark.slow
@pytest.mark.parametrize("trt_version", PLUGIN_VERSIONS)
def test_nvidia_python_plugin_layer_on_real_bindings_takes_any_size_nodes(any_size_plugin_graph, trt_version: str) -> None:
    """NVIDIA's real bindings (tensorrt.plugin and the compiled trampolines), driven
    through the plugin's C++ interface by our libnvinfer, take an any-size node: output [B, H, W, C] from qkv's
    symbolic shape, a grid counting the windows of whatever H x W the profile gives, H
    and W handed to the kernel as two int32 extra arguments, and one PTX entry of six
    parameters per block geometry, whatever the size. Not proven here: libnvinfer
    evaluating those expressions per profile, loading and launching the PTX."""
    require_bindings(trt_version)
    path, blocks = any_size_plugin_graph
    result = _replay(trt_version, [path], [87, 90])
    assert "import_error" not in result, result.get("import_error")
    for cc in ("87", "90"):
        nodes = result["graphs"][str(path)][cc]
        assert len(nodes) == len(blocks) == 8
        entries: dict[str, str] = {}
        for n, (window, shift, heads, head_dim) in zip(nodes, blocks):
            assert "error" not in n, n.get("trace", n.get("error"))
            assert n["aot"] and n["missing_fields"] == [] and n["num_outputs"] == 1
            assert len(n["output_shapes"]) == 3 * 3  # 3 batches x 3 map sizes
            for key, shape in n["output_shapes"].items():
                b, hw = key.split("@")
                h, w = map(int, hw.split("x"))
                assert shape == [int(b), h, w, heads * head_dim]
                gx, gy, gz, bx, *_ = n["launch"][key]
                assert (gx, gy, gz) == (int(b) * -(-h // window) * -(-w // window) * heads, 1, 1)  # window 4: one program per window-head
                assert n["extra_values"][key] == [h, w]
            assert n["extra_args"] == 2 and n["extra_arg_types"] == ["PluginArgDataType.INT32"] * 2
            kern = n["kernel"]
            assert kern["params"] == 6 and kern["entry"] == kern["name"]  # qkv, table, pad_qkv, H, W, out
            assert kern["name"].endswith(f"_anysize_w{window}_s{shift}_h{heads}_d{head_dim}")
            assert entries.setdefault(kern["name"], kern["ptx_sha256"]) == kern["ptx_sha256"]
        assert len(entries) == len(set(blocks))  # one kernel per block geometry, none per size
