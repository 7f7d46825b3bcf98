"""TensorRT layer: everything decidable without TensorRT, and the CLI's bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.engine import BuildOptions, TrtVersion, check_engine_fits, decide_plugin, gpu_identity, profile_shapes
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


def test_plugin_decision() -> None:
    orin, dc = TrtVersion.parse("10.3.0"), TrtVersion.parse("11.4.0")
    use, note = decide_plugin("auto", orin, graph_has_plugin=False)
    assert not use and "10.3" in note and "native" in note
    use, note = decide_plugin("auto", dc, graph_has_plugin=False)
    assert use and "plugin" in note
    assert decide_plugin("off", dc, graph_has_plugin=False)[0] is False
    with pytest.raises(SwinedgeError, match="needs >= 10.9"):
        decide_plugin("on", orin, graph_has_plugin=False)
    with pytest.raises(SwinedgeError, match="needs >= 10.9"):
        decide_plugin("auto", orin, graph_has_plugin=True)
    with pytest.raises(SwinedgeError, match="graph has plugin nodes"):
        decide_plugin("off", dc, graph_has_plugin=True)


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
        (BuildOptions(workspace_gib=0), "> 0 GiB"),
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
    assert "--batch takes comma-separated positive integers" in one_line_error(r)


def test_runner_for_engine_without_tensorrt(tmp_path: Path) -> None:
    from swinedge.runtime import open_runner

    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not an engine")
    runner_ = open_runner(plan)
    with pytest.raises(SwinedgeError):
        runner_.load()  # no manifest / no TensorRT / no GPU: each is a one-line error
