"""TensorRT layer: everything decidable without TensorRT, and the CLI's bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.engine import (
    BuildOptions,
    PluginEnvironment,
    TrtVersion,
    attach_timing_cache,
    check_engine_fits,
    decide_plugin,
    gpu_identity,
    plugin_blockers,
    plugin_risks,
    plugin_graph,
    profile_shapes,
)
from swinedge.errors import SwinedgeError
from swinedge.export import export_onnx

runner = CliRunner()


@pytest.mark.parametrize(
    "text,expected,flag,aot",
    [
        ("10.3.0.30", (10, 3, 0), True, False),  # Jetson Orin, JetPack 6
        ("10.8.0", (10, 8, 0), True, False),
        ("10.9.0.34", (10, 9, 0), True, True),
        ("10.13.1", (10, 13, 1), True, True),  # Jetson Thor
        ("11.4.0", (11, 4, 0), False, True),
    ],
)
def test_version_rules(text: str, expected, flag: bool, aot: bool) -> None:
    v = TrtVersion.parse(text)
    assert (v.major, v.minor, v.patch) == expected
    assert v.needs_strongly_typed_flag is flag
    assert v.has_aot_plugins is aot


def test_bad_version_string() -> None:
    with pytest.raises(SwinedgeError, match="cannot read the TensorRT version"):
        TrtVersion.parse("unknown")


def _env(version: str = "11.4.0", cc: int = 90, triton: str | None = "3.9.0", quick_aot: bool | None = None) -> PluginEnvironment:
    v = TrtVersion.parse(version)
    return PluginEnvironment(v, v.has_aot_plugins if quick_aot is None else quick_aot, cc, triton)


def test_tensorrt_10_9_to_10_13_build_native_attention_unless_asked() -> None:
    """Their bindings hand the AOT kernel name back from freed memory (pinned on the real
    modules in tests/test_trt_contract.py): auto builds native attention and says why;
    --plugin on, or a graph exported with plugin nodes, builds the plugin and says the risk."""
    for version, dangles in (("10.8.0", False), ("10.9.0", True), ("10.13.3", True), ("10.14.1", False), ("10.16.1", False), ("11.0.0", False)):
        assert TrtVersion.parse(version).aot_kernel_name_dangles is dangles, version
    thor = _env("10.13.3", cc=90)
    assert plugin_blockers(thor) == []
    risks = plugin_risks(thor)
    assert len(risks) == 1 and "10.13.3" in risks[0] and "freed memory" in risks[0] and "fixed in 10.14" in risks[0]
    use, note = decide_plugin("auto", [], graph_has_plugin=False, risks=risks)
    assert not use and note == f"native attention graph: {risks[0]} (--plugin on builds the plugin anyway)"
    assert decide_plugin("on", [], graph_has_plugin=False, risks=risks) == (True, "fused window-attention plugin (AOT PTX)")
    assert decide_plugin("auto", [], graph_has_plugin=True, risks=risks)[0] is True
    assert plugin_risks(_env("10.16.1")) == [] and plugin_risks(_env("11.4.0")) == []
    assert plugin_risks(_env("10.3.0", cc=87)) == []  # no plugin at all there: a blocker, not a risk


def test_plugin_decision() -> None:
    assert plugin_blockers(_env()) == []
    use, note = decide_plugin("auto", [], graph_has_plugin=False)
    assert use and "plugin" in note
    orin = plugin_blockers(_env("10.3.0", cc=87))
    use, note = decide_plugin("auto", orin, graph_has_plugin=False)
    assert not use and "10.3" in note and "native" in note
    assert decide_plugin("off", [], graph_has_plugin=False)[0] is False
    with pytest.raises(SwinedgeError, match="needs >= 10.9"):
        decide_plugin("on", orin, graph_has_plugin=False)
    with pytest.raises(SwinedgeError, match="graph has plugin nodes, but TensorRT 10.3.0"):
        decide_plugin("auto", orin, graph_has_plugin=True)
    with pytest.raises(SwinedgeError, match="graph has plugin nodes"):
        decide_plugin("off", [], graph_has_plugin=True)


@pytest.mark.parametrize(
    "env,fragment",
    [
        (_env(cc=75), "not built for sm_75"),  # Turing
        (_env(cc=103), "not built for sm_103"),  # B300
        (_env(cc=110), "not built for sm_110"),  # Jetson Thor
        (_env(cc=121), "not built for sm_121"),  # DGX Spark
        (_env(triton=None), "Triton is not installed"),
        (_env(triton="3.3.1"), "Triton 3.3.1 is older than 3.4"),
        (_env(triton="3.2.0"), "Triton 3.2.0 is older than 3.4"),
        (_env("10.8.0"), "TensorRT 10.8.0 has no AOT"),
        (_env("10.9.0", quick_aot=False), "TensorRT 10.9.0 has no AOT"),  # bindings without tensorrt.plugin's AOT path
    ],
)
def test_what_blocks_the_plugin(env: PluginEnvironment, fragment: str) -> None:
    blockers = plugin_blockers(env)
    assert blockers and fragment in blockers[0]
    use, note = decide_plugin("auto", blockers, graph_has_plugin=False)
    assert not use and note == f"native attention graph: {blockers[0]}" and "\n" not in note
    with pytest.raises(SwinedgeError, match=r"^--plugin on, but .*: use --plugin auto or off$"):
        decide_plugin("on", blockers, graph_has_plugin=False)


def test_plugin_graph_needs_a_swinedge_graph(onnx_file: Path) -> None:
    import onnx

    from swinedge.export import onnx_info

    proto = onnx.load(str(onnx_file))
    info = onnx_info(onnx_file, proto)
    graph, count, why_not = plugin_graph(proto, info)
    assert why_not is None and count == 8 and graph is not proto
    assert not any(n.domain == "swinedge" for n in proto.graph.node)  # the native graph is left as it was
    assert plugin_graph(proto, {**info, "config": None})[2] == "the graph has no swinedge manifest (model config), so plugin nodes cannot be placed"
    renamed = type(proto)()
    renamed.CopyFrom(proto)
    for n in renamed.graph.node:
        n.name = n.name.replace("/attn/", "/attention/")
    graph, count, why_not = plugin_graph(renamed, info)
    assert graph is None and "no qkv/proj projections" in why_not
    wide = {**info, "config": {**info["config"], "window_size": 25, "img_size": 100}}  # 625-token windows
    assert "at most 576 tokens" in plugin_graph(proto, wide)[2]


class _Config:
    """Stands in for IBuilderConfig's timing-cache calls only: tests swinedge's handling
    of TensorRT's documented answers (set_timing_cache -> False for a foreign cache)."""

    def __init__(self, accepts: bool = True):
        self.accepts = accepts
        self.attached = None

    def create_timing_cache(self, data: bytes):
        if data.startswith(b"garbage"):
            raise RuntimeError("deserialization failed")
        return ("cache", data)

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        ok = self.accepts or cache[1] == b""
        if ok:
            self.attached = cache
        return ok


def test_timing_cache_from_another_gpu_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "t.cache"
    assert attach_timing_cache(_Config(), None) == (None, None)
    cache, note = attach_timing_cache(_Config(), path)  # no file yet: fresh, nothing to say
    assert cache == ("cache", b"") and note is None
    path.write_bytes(b"cache-from-this-gpu")
    config = _Config()
    cache, note = attach_timing_cache(config, path)
    assert cache == ("cache", b"cache-from-this-gpu") and note is None and config.attached is cache
    config = _Config(accepts=False)  # TensorRT: made on another device / CUDA / TensorRT
    cache, note = attach_timing_cache(config, path)
    assert cache == ("cache", b"") and config.attached is cache and "does not fit this GPU or TensorRT" in note
    path.write_bytes(b"garbage")
    cache, note = attach_timing_cache(_Config(), path)
    assert cache == ("cache", b"") and "starting a fresh one" in note
    assert path.read_bytes() == b"garbage"  # never rewritten here: only after a successful build


def test_profile_shapes() -> None:
    dyn = ["batch", 3, 224, 224]
    assert profile_shapes(dyn, BuildOptions()) == ((1, 3, 224, 224), (32, 3, 224, 224), (64, 3, 224, 224))
    assert profile_shapes(dyn, BuildOptions(min_batch=2, opt_batch=4, max_batch=8))[2] == (8, 3, 224, 224)
    assert BuildOptions(max_batch=8).batches == (1, 8, 8)
    assert BuildOptions(min_batch=48).batches == (48, 48, 64)
    assert BuildOptions(opt_batch=128).batches == (1, 128, 128)
    fixed = [8, 3, 224, 224]
    assert profile_shapes(fixed, BuildOptions()) == ((8, 3, 224, 224),) * 3
    with pytest.raises(SwinedgeError, match="fixed batch of 8"):
        profile_shapes(fixed, BuildOptions(max_batch=64))


@pytest.mark.parametrize(
    "opts,fragment",
    [
        (BuildOptions(min_batch=8, opt_batch=4), "min <= opt <= max"),
        (BuildOptions(opt_batch=128, max_batch=64), "min <= opt <= max"),
        (BuildOptions(min_batch=0), ">= 1"),
        (BuildOptions(opt_level=7), "0..5"),
        (BuildOptions(workspace_gib=0), "> 0 and <= 1024.0 GiB"),
        (BuildOptions(plugin="maybe"), "--plugin must be one of"),
    ],
)
def test_build_options_validation(opts: BuildOptions, fragment: str) -> None:
    with pytest.raises(SwinedgeError, match=fragment):
        opts.validate()


MANIFEST = {
    "kind": "tensorrt-engine",
    "onnx": {"file": "swin_t.int8.onnx"},
    "tensorrt": {"version": "11.4.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": 90},
}


def test_engine_for_another_gpu_says_how_to_rebuild() -> None:
    with pytest.raises(SwinedgeError) as e:
        check_engine_fits(MANIFEST, gpu="Orin", compute_capability=87, trt_version="11.4.0", plan="engines/t.plan")
    msg = str(e.value)
    assert "built for NVIDIA H100 80GB HBM3 (sm_90)" in msg and "this GPU is Orin (sm_87)" in msg
    assert "swinedge build-engine swin_t.int8.onnx --out engines/t.plan" in msg


def test_engine_for_another_tensorrt() -> None:
    with pytest.raises(SwinedgeError, match="built with TensorRT 11.4.0; this machine has 10.13.1"):
        check_engine_fits(MANIFEST, gpu="H100", compute_capability=90, trt_version="10.13.1", plan="t.plan")
    check_engine_fits(MANIFEST, gpu="H100", compute_capability=90, trt_version="11.4.0.11", plan="t.plan")  # fits


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_no_gpu_is_a_clear_error() -> None:
    with pytest.raises(SwinedgeError, match="needs an NVIDIA GPU"):
        gpu_identity()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return export_onnx("swin_micro_patch4_window4_64", tmp_path_factory.mktemp("e") / "m.onnx").onnx_path


def test_build_engine_cli_bad_input(onnx_file: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    plan = engines / "m.plan"
    r = runner.invoke(app, ["build-engine", str(onnx_file), "--out", str(plan), "--min-batch", "8", "--opt-batch", "4"])
    assert "min <= opt <= max" in one_line_error(r)
    not_onnx = tmp_path / "weights.onnx"
    not_onnx.write_bytes(b"\x08\x07garbage")
    r = runner.invoke(app, ["build-engine", str(not_onnx), "--out", str(plan)])
    assert "not a valid ONNX model" in one_line_error(r)
    r = runner.invoke(app, ["build-engine", str(onnx_file), "--out", str(engines / "m.onnx")])
    assert "ending in .plan or .engine" in one_line_error(r)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        r = runner.invoke(app, ["build-engine", str(onnx_file), "--out", str(plan)])
        assert "TensorRT is not installed" in one_line_error(r)
    assert not engines.exists() or not any(engines.iterdir())


def test_benchmark_missing_artifact(tmp_path: Path) -> None:
    r = runner.invoke(app, ["benchmark", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "b")])
    assert "artifact not found" in one_line_error(r)
    assert not (tmp_path / "b").exists()
    r = runner.invoke(app, ["benchmark", "swin_micro_patch4_window4_64", "--batch", "1,x", "--out", str(tmp_path / "b")])
    assert "--batch takes comma-separated integers 1..4096" in one_line_error(r)


def test_runner_for_engine_without_tensorrt(tmp_path: Path) -> None:
    from swinedge.runners import open_runner

    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not an engine")
    runner_ = open_runner(plan)
    with pytest.raises(SwinedgeError):
        runner_.load()  # no manifest / no TensorRT / no GPU: each is a one-line error


def test_plan_and_manifest_are_written_together(tmp_path: Path, monkeypatch) -> None:
    import hashlib
    import os

    from swinedge.manifest import manifest_path, read_manifest, write_artifact_with_manifest

    plan = tmp_path / "engines" / "m.plan"
    m = write_artifact_with_manifest("tensorrt-engine", plan, b"PLAN", profile={"min": [1]})
    assert plan.read_bytes() == b"PLAN" and read_manifest(plan) == m
    assert m["file"] == "m.plan" and m["sha256"] == hashlib.sha256(b"PLAN").hexdigest()
    # The second rename fails: the first (the manifest) is taken back, no temp is left.
    real = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).suffix == ".plan":
            raise OSError(28, "No space left on device")
        return real(src, dst)

    other = tmp_path / "engines" / "n.plan"
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SwinedgeError, match="cannot write .*n.plan: no space left on the device: free some space or write elsewhere"):
        write_artifact_with_manifest("tensorrt-engine", other, b"PLAN")
    monkeypatch.setattr(os, "replace", real)
    assert calls == ["n.plan.json", "n.plan"]  # manifest first: never a plan nobody describes
    assert not other.exists() and not manifest_path(other).exists()
    assert sorted(p.name for p in plan.parent.iterdir()) == ["m.plan", "m.plan.json"]


def test_runner_refuses_a_plan_that_is_not_the_one_its_manifest_describes(tmp_path: Path) -> None:
    from swinedge.manifest import write_artifact_with_manifest
    from swinedge.runners.trt_runner import TensorRTRunner

    plan = tmp_path / "m.plan"
    write_artifact_with_manifest("tensorrt-engine", plan, b"PLAN")
    plan.write_bytes(b"PLAN, half copied")
    with pytest.raises(SwinedgeError, match="does not match its manifest m.plan.json .*rebuild it with swinedge build-engine"):
        TensorRTRunner(plan).load()


def test_runner_module_does_not_import_the_plugin() -> None:
    """AOT plans carry their kernel: loading one needs none of swinedge.plugin (checked
    here on the source; the tensorrt-marked test loads a real plugin plan in a fresh process)."""
    import ast

    import swinedge.runners.trt_runner as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not any(name and name.startswith("swinedge.plugin") for name in imported)


# -- swinedge's handling of TensorRT's answers, on recording fakes of ours (tests/fake_tensorrt.py) --
@pytest.fixture(scope="module")
def fp8_file(onnx_file: Path) -> Path:
    from swinedge.quantize import QuantizeOptions, quantize_onnx

    opts = QuantizeOptions(precision="fp8", calib_size=8, high_precision_dtype="fp32", method="max")
    return quantize_onnx(onnx_file, onnx_file.parent / "m.fp8.onnx", opts).onnx_path


def test_precisions_each_gpu_takes() -> None:
    from swinedge.engine import check_precision_supported, supported_precisions

    assert supported_precisions(80) == supported_precisions(87) == ("fp32", "fp16", "int8")
    assert supported_precisions(89) == supported_precisions(90) == ("fp32", "fp16", "int8", "fp8")
    for cc, gpu in ((80, "NVIDIA A100-SXM4-80GB"), (86, "NVIDIA GeForce RTX 3090"), (87, "Orin")):
        with pytest.raises(SwinedgeError) as e:
            check_precision_supported("fp8", gpu, cc)
        msg = str(e.value)
        assert "\n" not in msg and f"{gpu} (sm_{cc})" in msg and "takes fp32, fp16, int8" in msg and "8.9" in msg
    for precision in ("fp32", "fp16", "int8", "unknown", None):
        check_precision_supported(precision, "Orin", 87)
    check_precision_supported("fp8", "NVIDIA L4", 89)
    check_precision_supported("fp8", "NVIDIA H100 80GB HBM3", 90)


def test_fp8_graph_on_sm80_is_refused_before_any_tensorrt_call(fp8_file: Path, onnx_file: Path, tmp_path: Path, monkeypatch) -> None:
    """build_engine on a real FP8 (Q/DQ) graph, an A100 and a fake TensorRT of ours that
    fails the test on any call: the precision check comes first, and nothing is written."""
    from fake_tensorrt import FakeTensorRT, use_fake_builder
    from swinedge.engine import build_engine

    use_fake_builder(monkeypatch, FakeTensorRT(forbid=True), gpu=("NVIDIA A100-SXM4-80GB", 80))
    with pytest.raises(SwinedgeError) as e:
        build_engine(fp8_file, tmp_path / "e.plan", BuildOptions(plugin="off"))
    msg = str(e.value)
    assert "\n" not in msg and "FP8" in msg and "NVIDIA A100-SXM4-80GB (sm_80)" in msg and "fp32, fp16, int8" in msg
    assert not (tmp_path / "e.plan").exists()
    # The same graph on an L4 (sm_89), and an FP32 graph on the A100, reach the builder.
    for graph, gpu in ((fp8_file, ("NVIDIA L4", 89)), (onnx_file, ("NVIDIA A100-SXM4-80GB", 80))):
        trt = FakeTensorRT(fail={"build_serialized_network"})
        use_fake_builder(monkeypatch, trt, gpu=gpu)
        with pytest.raises(SwinedgeError, match="TensorRT failed to build the engine"):
            build_engine(graph, tmp_path / "e.plan", BuildOptions(plugin="off"))
        assert "Builder" in trt.names()


def test_runner_names_the_precision_an_fp8_plan_needs(tmp_path: Path, monkeypatch) -> None:
    """An FP8 plan on an sm_86 GPU: the error says FP8 needs 8.9, not "rebuild it here"."""
    from fake_tensorrt import FakeTensorRT, use_fake_runtime, write_plan
    from swinedge.runners.trt_runner import TensorRTRunner

    plan = write_plan(tmp_path / "m.plan", precision="fp8",
                      tensorrt={"version": "11.4.0", "gpu": "NVIDIA L4", "compute_capability": 89})  # fmt: skip
    use_fake_runtime(monkeypatch, FakeTensorRT(forbid=True), gpu=("NVIDIA RTX A6000", 86))
    with pytest.raises(SwinedgeError, match=r"FP8 .*NVIDIA RTX A6000 \(sm_86\).*takes fp32, fp16, int8"):
        TensorRTRunner(plan).load()


def test_context_that_cannot_be_created_names_memory_and_max_batch(tmp_path: Path, monkeypatch) -> None:
    """create_execution_context() answers None when the context's activation memory cannot
    be allocated: load() says so at once (not the first infer), with the memory and the
    profile's max batch. The engine is a fake of ours."""
    from fake_tensorrt import FakeEngine, FakeTensorRT, fake_cuda, use_fake_runtime, write_plan
    from swinedge.runners.trt_runner import TensorRTRunner

    fake_cuda(monkeypatch)
    profile = {"min": [1, 3, 64, 64], "opt": [32, 3, 64, 64], "max": [256, 3, 64, 64]}
    plan = write_plan(tmp_path / "m.plan", profile=profile)
    engine = FakeEngine({"logits": lambda s: (s[0], 10)}, context=None, device_memory=int(6.5 * (1 << 30)))
    use_fake_runtime(monkeypatch, FakeTensorRT(engine=engine))
    with pytest.raises(SwinedgeError) as e:
        TensorRTRunner(plan).load()
    msg = str(e.value)
    assert "\n" not in msg and "6.5 GiB" in msg and "device memory" in msg and "max batch 256" in msg and "smaller --max-batch" in msg
    # Several profiles (an engine of several sizes): the largest max batch; memory in MiB.
    profiles = [profile, {"min": [1, 3, 96, 96], "opt": [2, 3, 96, 96], "max": [8, 3, 96, 96]}]
    plan = write_plan(tmp_path / "n.plan", profile=profile, profiles=profiles, input_sizes=["64x64", "96x96"])
    engine.device_memory_size_v2 = 300 << 20
    with pytest.raises(SwinedgeError, match=r"300 MiB of device memory .*max batch 256"):
        TensorRTRunner(plan).load()


def _loaded(tmp_path: Path, monkeypatch, context, **manifest) -> tuple:
    from fake_tensorrt import FakeEngine, FakeTensorRT, use_fake_runtime, write_plan
    from swinedge.runners.trt_runner import TensorRTRunner

    outputs = context.output_shapes
    manifest.setdefault("profile", {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]})
    plan = write_plan(tmp_path / "m.plan", **manifest)
    use_fake_runtime(monkeypatch, FakeTensorRT(engine=FakeEngine(outputs, context=context)))
    return TensorRTRunner(plan).load()


def test_infer_tensors_sets_a_shape_only_when_it_changes_and_reuses_outputs(tmp_path: Path, monkeypatch) -> None:
    """infer_tensors (every backbone engine, the error map) like infer: one set_input_shape
    per shape change and one output buffer per shape and output, whichever of the two is
    called (NVIDIA/TensorRT#4849). Context and CUDA are recording fakes of ours."""
    import numpy as np

    from fake_tensorrt import FakeContext, fake_cuda

    allocated = fake_cuda(monkeypatch)
    outputs = {"logits": lambda s: (s[0], 10), "stage0": lambda s: (s[0], 16, 16, 32)}
    context = FakeContext(outputs, memory=allocated)
    r = _loaded(tmp_path, monkeypatch, context)
    a, b = np.zeros((2, 3, 64, 64), np.float32), np.zeros((4, 3, 64, 64), np.float32)
    for run in range(1, 4):
        got = r.infer_tensors(a)
        assert sorted(got) == ["logits", "stage0"] and got["stage0"].shape == (2, 16, 16, 32)
        assert float(got["logits"][0, 0]) == run  # the buffers this run was bound to
    assert context.count("set_input_shape") == 1 and len(allocated) == 2
    assert float(r.infer(a)[0, 0]) == 4  # infer after infer_tensors: same shape, same buffers
    assert context.count("set_input_shape") == 1 and len(allocated) == 2
    r.infer_tensors(b)
    r.infer(b)
    assert context.count("set_input_shape") == 2 and len(allocated) == 4
    r.infer_tensors(a)  # back to the first shape: its shape is set again, its buffers kept
    r.infer(a)
    assert context.count("set_input_shape") == 3 and len(allocated) == 4
    assert [c[2] for c in context.calls if c[0] == "set_input_shape"] == [(2, 3, 64, 64), (4, 3, 64, 64), (2, 3, 64, 64)]


def test_runner_stand_in_context_refusing_a_shape_or_an_address(tmp_path: Path, monkeypatch) -> None:
    """set_input_shape -> False (outside the active profile) and set_tensor_address -> False
    are one-line errors, in infer and infer_tensors alike (fakes of ours)."""
    import numpy as np

    from fake_tensorrt import FakeContext, fake_cuda

    fake_cuda(monkeypatch)
    outputs = {"logits": lambda s: (s[0], 10)}
    x = np.zeros((2, 3, 64, 64), np.float32)
    r = _loaded(tmp_path, monkeypatch, FakeContext(outputs, accepts=lambda shape: False))
    for call in (r.infer, r.infer_tensors):
        with pytest.raises(SwinedgeError) as e:
            call(x)
        msg = str(e.value)
        assert "\n" not in msg and "refused input shape [2, 3, 64, 64]" in msg and "rebuild" in msg
    for bad in ("input", "logits"):
        r = _loaded(tmp_path, monkeypatch, FakeContext(outputs, bad_addresses=(bad,)))
        for call in (r.infer, r.infer_tensors):
            with pytest.raises(SwinedgeError, match=f"TensorRT refused the address of tensor {bad}"):
                call(x)


@pytest.mark.parametrize(
    "fail,fragment",
    [
        ("Builder", "could not create a builder"),
        ("create_network", "could not create the network definition"),
        ("OnnxParser", "could not create the ONNX parser"),
        ("create_builder_config", "could not create the builder config"),
        ("create_optimization_profile", "could not create an optimization profile"),
        ("add_optimization_profile", "rejected optimization profile 0 (1x3x64x64 / 32x3x64x64 / 64x3x64x64) of input input"),
    ],
)
def test_build_failures_tensorrt_answers_are_one_line_errors(onnx_file: Path, tmp_path: Path, monkeypatch, fail: str, fragment: str) -> None:
    from fake_tensorrt import FakeTensorRT, use_fake_builder
    from swinedge.engine import build_engine

    trt = FakeTensorRT(fail={fail})
    use_fake_builder(monkeypatch, trt)
    with pytest.raises(SwinedgeError) as e:
        build_engine(onnx_file, tmp_path / "e.plan", BuildOptions(plugin="off"))
    msg = str(e.value)
    assert "\n" not in msg and fragment in msg, msg
    assert "build_serialized_network" not in trt.names() and not (tmp_path / "e.plan").exists()


@pytest.mark.parametrize("fail", ["Builder", "create_network", "OnnxParser", "create_builder_config", "create_optimization_profile", "add_optimization_profile"])
def test_attention_benchmark_build_checks_tensorrt_answers(tmp_path: Path, monkeypatch, fail: str) -> None:
    import onnx

    from fake_tensorrt import FakeTensorRT
    from swinedge.benchmarks.gpu_attention import build_attention_engine

    graph = tmp_path / "attn.onnx"  # what the fake parser reads: any ONNX file
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(graph))
    trt = FakeTensorRT(fail={fail})
    monkeypatch.setattr("swinedge.engine.require_tensorrt", lambda: trt)
    with pytest.raises(SwinedgeError) as e:
        build_attention_engine(graph, (1, 64, 96))
    assert "\n" not in str(e.value) and "TensorRT" in str(e.value)
    assert "build_serialized_network" not in trt.names()


@pytest.mark.parametrize("context", ["none", "shape", "address"])
def test_attention_benchmark_run_checks_tensorrt_answers(tmp_path: Path, monkeypatch, context: str) -> None:
    from fake_tensorrt import FakeContext, FakeEngine, FakeTensorRT, fake_cuda
    from swinedge.benchmarks import gpu_attention as bench
    from swinedge.ops.window_attention import WindowGeometry

    fake_cuda(monkeypatch)
    g = WindowGeometry(height=8, width=8, window=4, shift=0, num_heads=2, head_dim=16)
    outputs = {bench.ATTENTION_OUTPUT: lambda s: (s[0], 64, 32)}
    ctx = None if context == "none" else FakeContext(
        outputs, accepts=lambda s: context != "shape", bad_addresses=(bench.ATTENTION_INPUT,) if context == "address" else ())  # fmt: skip
    trt = FakeTensorRT(engine=FakeEngine(outputs, context=ctx, input_name=bench.ATTENTION_INPUT))
    monkeypatch.setattr("swinedge.engine.require_tensorrt", lambda: trt)
    monkeypatch.setattr(bench, "build_attention_engine", lambda *a, **k: b"FAKE PLAN")
    monkeypatch.setattr(bench, "write_attention_onnx", lambda *a, **k: tmp_path / "attn.onnx")
    qkv = torch.zeros(1, 64, 96)
    with pytest.raises(SwinedgeError) as e:
        bench._trt_ms(g, qkv, None, None, 1, tmp_path)
    msg = str(e.value)
    fragment = {"none": "could not create an execution context", "shape": "refused input shape", "address": "refused the address"}[context]
    assert "\n" not in msg and fragment in msg, msg


def test_build_engine_on_tensorrt_10_13_builds_native_unless_plugin_on(onnx_file: Path, tmp_path: Path, monkeypatch) -> None:
    """build_engine with a recording fake of ours (not TensorRT) reporting 10.13.3: auto
    hands the parser the native graph and says why; --plugin on hands it the plugin graph
    and returns the risk as a warning."""
    from fake_tensorrt import FakeTensorRT, use_fake_builder
    from swinedge.engine import build_engine
    from swinedge.ops.onnx_plugin import plugin_nodes

    trt = FakeTensorRT("10.13.3.9")
    use_fake_builder(monkeypatch, trt, gpu=("NVIDIA Jetson AGX Thor", 90))
    auto = build_engine(onnx_file, tmp_path / "auto.plan", BuildOptions())
    assert not auto.plugin_used and "freed memory" in auto.note and auto.warnings == ()
    assert plugin_nodes(trt.parsed[-1]) == []
    on = build_engine(onnx_file, tmp_path / "on.plan", BuildOptions(plugin="on"))
    assert on.plugin_used and len(plugin_nodes(trt.parsed[-1])) == 8
    assert len(on.warnings) == 1 and "freed memory" in on.warnings[0] and "fixed in 10.14" in on.warnings[0]
    assert on.manifest["plugin"]["risk"] == on.warnings[0] and "freed memory" not in on.note  # said once, as a warning
    assert "risk" not in auto.manifest["plugin"]


def test_runtime_that_cannot_be_created_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    """trt.Runtime raises pybind11's null-factory TypeError when libnvinfer gives it null
    (pinned on NVIDIA's real modules in tests/test_trt_contract.py); the fake of ours
    raises the same, and load() turns it into one line."""
    from fake_tensorrt import FakeEngine, FakeTensorRT, fake_cuda, use_fake_runtime, write_plan
    from swinedge.runners.trt_runner import TensorRTRunner

    fake_cuda(monkeypatch)
    plan = write_plan(tmp_path / "m.plan", profile={"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [1, 3, 64, 64]})
    use_fake_runtime(monkeypatch, FakeTensorRT(fail={"Runtime"}, engine=FakeEngine({"logits": lambda s: (s[0], 10)})))
    with pytest.raises(SwinedgeError) as e:
        TensorRTRunner(plan).load()
    assert str(e.value).startswith("TensorRT could not create a runtime: ") and "\n" not in str(e.value)


def test_engine_manifest_records_fp8_from_the_graph(fp8_file: Path, tmp_path: Path, monkeypatch) -> None:
    """An engine of a float8 Q/DQ graph records precision fp8 even when the graph's own
    manifest is gone, so the runner's compute-capability check at load can fire. The
    builder is a recording fake of ours."""
    import shutil

    from fake_tensorrt import FakeTensorRT, use_fake_builder
    from swinedge.engine import build_engine

    bare = tmp_path / "bare.onnx"
    shutil.copyfile(fp8_file, bare)  # no manifest beside it
    use_fake_builder(monkeypatch, FakeTensorRT(), gpu=("NVIDIA L4", 89))
    result = build_engine(bare, tmp_path / "e.plan", BuildOptions(plugin="off"))
    assert result.manifest["precision"] == "fp8"
