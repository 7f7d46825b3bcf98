"""End to end on TensorRT: Swin-T and digits engines, with and without the plugin.

Run where TensorRT and a GPU exist:  python -m pytest -q -m tensorrt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from swinedge.data import Preprocess, load_image_set
from swinedge.engine import BuildOptions, build_engine
from swinedge.export import export_onnx
from swinedge.quantize import QuantizeOptions, quantize_onnx
from swinedge.runners.torch_runner import TorchRunner
from swinedge.runners.trt_runner import TensorRTRunner
from swinedge.verify import compare_logits, run_batches

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.slow]
SWIN_T = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def swin_t_graphs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("trt")
    fp32 = export_onnx(SWIN_T, d / "t.onnx").onnx_path
    return {
        "fp16": quantize_onnx(fp32, d / "t.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=8)).onnx_path,
        "int8": quantize_onnx(fp32, d / "t.int8.onnx", QuantizeOptions(calib_size=32, method="max")).onnx_path,
    }


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("plugin", ["off", "on"])
def test_swin_t_engine_builds_and_runs(swin_t_graphs, precision: str, plugin: str, tmp_path: Path) -> None:
    r = build_engine(swin_t_graphs[precision], tmp_path / "t.plan", BuildOptions(max_batch=8, opt_batch=8, plugin=plugin))
    assert r.plugin_used is (plugin == "on")
    assert r.manifest["tensorrt"]["compute_capability"] > 0
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    with TorchRunner(SWIN_T, device="cuda") as ref, TensorRTRunner(r.plan) as eng:
        c = compare_logits(ref.infer(x), eng.infer(x))
    assert c.cosine_min > (0.9999 if precision == "fp16" else 0.99)


@pytest.fixture(scope="module")
def digits(digits_cache, tmp_path_factory):
    _, ckpt, _ = digits_cache
    d = tmp_path_factory.mktemp("trt-digits")
    fp32 = export_onnx(ckpt, d / "d.onnx").onnx_path
    calib = load_image_set("digits-train", Preprocess(32), size=128)
    test = load_image_set("digits", Preprocess(32))
    fp16 = quantize_onnx(fp32, d / "d.fp16.onnx", QuantizeOptions(precision="fp16", calib_size=8), images=calib).onnx_path
    int8 = quantize_onnx(fp32, d / "d.int8.onnx", QuantizeOptions(calib_size=128), images=calib).onnx_path
    with TorchRunner(ckpt, device="cuda") as ref:
        reference = run_batches(ref, test.images, 64)
    return {"fp16": fp16, "int8": int8, "test": test, "reference": reference}


@pytest.mark.parametrize("plugin", ["off", "on"])
def test_digits_int8_engine_agrees(digits, plugin: str, tmp_path: Path) -> None:
    r = build_engine(digits["int8"], tmp_path / "d.plan", BuildOptions(max_batch=64, opt_batch=64, plugin=plugin))
    with TensorRTRunner(r.plan) as eng:
        c = compare_logits(digits["reference"], run_batches(eng, digits["test"].images, 64), digits["test"].labels)
    assert c.top1_agreement >= 99.0


@pytest.mark.parametrize("plugin", ["off", "on"])
def test_digits_fp16_engine_cosine(digits, plugin: str, tmp_path: Path) -> None:
    r = build_engine(digits["fp16"], tmp_path / "d.plan", BuildOptions(max_batch=64, opt_batch=64, plugin=plugin))
    with TensorRTRunner(r.plan) as eng:
        c = compare_logits(digits["reference"], run_batches(eng, digits["test"].images, 64))
    assert c.cosine_mean >= 0.9999


def test_plugin_plan_loads_without_the_plugin_module(swin_t_graphs, tmp_path: Path) -> None:
    """An AOT plugin plan carries its PTX: a fresh process runs it without ever importing
    swinedge.plugin (nor tensorrt.plugin)."""
    import json
    import subprocess
    import sys

    r = build_engine(swin_t_graphs["fp16"], tmp_path / "t.plan", BuildOptions(max_batch=2, opt_batch=2, plugin="on"))
    assert r.plugin_used
    code = (
        "import sys, json, numpy as np\n"
        "from swinedge.runners.trt_runner import TensorRTRunner\n"
        f"with TensorRTRunner({str(r.plan)!r}) as eng:\n"
        "    y = eng.infer(np.zeros((2, 3, 224, 224), np.float32))\n"
        "print(json.dumps({'shape': list(y.shape), 'finite': bool(np.isfinite(y).all()),\n"
        "  'plugin_modules': sorted(m for m in sys.modules if m.startswith(('swinedge.plugin', 'tensorrt.plugin')))}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"shape": [2, 1000], "finite": True, "plugin_modules": []}


def test_runner_owns_a_stream(swin_t_graphs, tmp_path: Path) -> None:
    import torch

    r = build_engine(swin_t_graphs["fp16"], tmp_path / "t.plan", BuildOptions(max_batch=2, opt_batch=2, plugin="off"))
    with TensorRTRunner(r.plan) as eng:
        assert eng.stream is not None and eng.stream.cuda_stream != torch.cuda.default_stream().cuda_stream
        eng.infer(np.zeros((2, 3, 224, 224), np.float32))


@pytest.mark.parametrize("plugin", ["off", "on"])
def test_one_backbone_engine_serves_every_profile_size(plugin: str, tmp_path: Path) -> None:
    """Swin-T backbone exported for 640x640 and 800x1333 in one graph, built into one
    engine of two profiles (plugin: the any-size kernel, H and W as run-time arguments);
    each size's stage maps against ONNX Runtime's, switching sizes back and forth."""
    from swinedge.export import run_onnx_cpu
    from swinedge.models.backbone import BackboneConfig, SwinBackbone
    from swinedge.models.swin import MODEL_SPECS

    cfg = BackboneConfig(MODEL_SPECS[SWIN_T].config, (640, 640), stage_norms=True)
    info = {"model": SWIN_T, "config": cfg.to_dict(), "source": None}
    graph = export_onnx(SwinBackbone(cfg).eval(), tmp_path / "bb.onnx", info=info, sizes=[(640, 640), (800, 1333)]).onnx_path
    r = build_engine(graph, tmp_path / "bb.plan", BuildOptions(max_batch=2, opt_batch=1, plugin=plugin))
    assert r.plugin_used is (plugin == "on")
    assert [p["min"][2:] for p in r.manifest["profiles"]] == [[640, 640], [800, 1333]]
    with TensorRTRunner(r.plan) as eng:
        for i, size in enumerate([(800, 1333), (640, 640), (800, 1333)]):
            x = np.random.default_rng(i).standard_normal((2, 3, *size)).astype(np.float32)
            got = eng.infer_outputs(x)
            for name, want in zip(cfg.output_names(), run_onnx_cpu(graph, x, all_outputs=True)):
                a, b = got[name].astype(np.float64).ravel(), want.astype(np.float64).ravel()
                assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.9999, (size, name)
