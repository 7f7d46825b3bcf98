"""One backbone graph, and one engine, for several input sizes (``export --sizes``).

The any-size model reads every map size from its tensors; a traced export therefore
computes padding, window counts and window-edge patterns from the input's shape, and
its plugin nodes (height = width = 0) read their size from qkv. Every check here holds
the any-size path against the fixed-geometry path built at each size on its own (the
one-size export's code, itself checked against timm and an mmdet forward elsewhere).

Not proven here: TensorRT parsing the dynamic graph, its profiles, and the PTX at run
time (``test_tensorrt_e2e.py``, marked ``tensorrt``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.errors import SwinedgeError
from swinedge.models.backbone import BackboneConfig, SwinBackbone
from swinedge.models.swin import MODEL_SPECS
from swinedge.models.swin_v2 import SWINV2_SPECS
from swinedge.ops.attention_table import pattern_scores
from swinedge.ops.window_attention import WindowGeometry, window_attention_any_size, window_attention_reference

runner = CliRunner()
MICRO = "swin_micro_patch4_window4_64"  # window 4: sizes from 129 px keep every window
SIZES = [(150, 222), (192, 176)]
UNLISTED = (161, 133)  # not exported for: the graph serves it all the same


def _maps_at(model: SwinBackbone, size: tuple[int, int], x: torch.Tensor) -> list[torch.Tensor]:
    """The fixed-geometry backbone built at ``size`` with ``model``'s weights, on x."""
    fixed = SwinBackbone(model.config.at_size(size)).eval()
    fixed.load_state_dict(model.state_dict())
    with torch.no_grad():
        return list(fixed(x))


# -- the core ------------------------------------------------------------------------------------
@pytest.mark.parametrize("height,width,shift,cosine", [(14, 14, 3, False), (15, 22, 3, False), (21, 9, 0, False), (10, 17, 3, True)])
def test_any_size_core_equals_the_fixed_geometry_reference(height: int, width: int, shift: int, cosine: bool) -> None:
    g = WindowGeometry(height, width, 7, shift, 2, 16, cosine)
    gen = torch.Generator().manual_seed(height * width)
    qkv = torch.randn(2, height * width, 3 * g.dim, generator=gen)
    bias = torch.randn(g.num_heads, 49, 49, generator=gen)
    pad = torch.randn(3 * g.dim, generator=gen)
    scale = torch.rand(g.num_heads, generator=gen) * 10 + 1 if cosine else None
    want = window_attention_reference(qkv, bias, pad, g, logit_scale=scale)
    got = window_attention_any_size(
        qkv.reshape(2, height, width, -1), pattern_scores(bias, g), pad, 7, shift, 2, cosine=cosine, logit_scale=scale
    )
    torch.testing.assert_close(got.reshape(2, height * width, -1), want, rtol=1e-5, atol=1e-5)


# -- the model -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["v1", "v1-mmdet-order", "v2"])
def test_any_size_model_equals_the_model_built_at_each_size(family: str) -> None:
    if family == "v2":
        trunk = replace(next(s.config for n, s in SWINV2_SPECS.items() if "tiny" in n), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
        built, sizes = (260, 270), [(260, 270), (300, 290)]
    else:
        trunk, built, sizes = MODEL_SPECS[MICRO].config, SIZES[0], [*SIZES, UNLISTED]
    torch.manual_seed(0)
    model = SwinBackbone(BackboneConfig(trunk, built, pad_first=family == "v1-mmdet-order", stage_norms=True)).eval()
    model.set_any_size(True)
    for size in sizes:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            got = model(x)
        for a, b in zip(got, _maps_at(model, size, x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # A size whose stages clamp the window is another model: refused, not silently wrong.
    with pytest.raises(SwinedgeError, match="needs a graph of its own|need at least 129 px"):
        model(torch.randn(1, 3, 100, 100))


# -- through the CLI ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def any_size_flow(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("any-size")
    sizes = ",".join(f"{h}x{w}" for h, w in SIZES)
    steps = [
        ["build", MICRO, "--features", "--input-size", "150x222", "--out", str(d / "bb.pt")],
        ["export", str(d / "bb.pt"), "--sizes", sizes, "--out", str(d / "native.onnx")],
        ["export", str(d / "bb.pt"), "--sizes", sizes, "--attention", "plugin", "--out", str(d / "plugin.onnx")],
        ["quantize", str(d / "native.onnx"), "--calib-size", "8", "--high-precision-dtype", "fp32", "--out", str(d / "int8.onnx")],
    ]
    for args in steps:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    return d


@pytest.mark.slow
def test_one_graph_serves_every_size(any_size_flow: Path) -> None:
    """Native and plugin graphs on ONNX Runtime, at both exported sizes and at one never
    named, equal the backbone built at that size on its own."""
    from swinedge.export import run_onnx_cpu
    from swinedge.models import load_model

    model, _ = load_model(any_size_flow / "bb.pt")
    for name in ("native", "plugin"):
        m = json.loads((any_size_flow / f"{name}.onnx.json").read_text())
        assert m["input_sizes"] == ["150x222", "192x176"] and m["input"]["shape"] == ["batch", 3, 150, 222]
        assert m["parity"]["max_abs_err"] < 1e-4
        dims = onnx.load(str(any_size_flow / f"{name}.onnx")).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
        for i, size in enumerate([*SIZES, UNLISTED]):
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(i))
            got = run_onnx_cpu(any_size_flow / f"{name}.onnx", x.numpy(), name == "plugin", all_outputs=True)
            for a, b in zip(got, _maps_at(model, size, x)):
                np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)
    # A size whose last stage is no wider than the window is another model (timm clamps
    # it): both graphs answer NaN from that stage on, never a plausible wrong map.
    small = np.random.default_rng(0).standard_normal((1, 3, 100, 100)).astype(np.float32)
    for name in ("native", "plugin"):
        maps = run_onnx_cpu(any_size_flow / f"{name}.onnx", small, name == "plugin", all_outputs=True)
        assert np.isfinite(maps[2]).all() and np.isnan(maps[3]).all(), name
    nodes = [n for n in onnx.load(str(any_size_flow / "plugin.onnx")).graph.node if n.domain == "swinedge"]
    assert len(nodes) == 8
    for n in nodes:
        attrs = {a.name: a.i for a in n.attribute if a.name in ("height", "width")}
        assert attrs == {"height": 0, "width": 0}  # the size comes from qkv at run time


@pytest.mark.slow
def test_int8_calibrates_and_verifies_at_every_size(any_size_flow: Path) -> None:
    m = json.loads((any_size_flow / "int8.onnx.json").read_text())
    calib = m["quantization"]["calibration"]
    assert [s["size"] for s in calib["sizes"]] == ["150x222", "192x176"] and sum(s["count"] for s in calib["sizes"]) == calib["count"] == 8
    assert m["input_sizes"] == ["150x222", "192x176"]
    r = runner.invoke(app, ["verify", str(any_size_flow / "bb.pt"), str(any_size_flow / "int8.onnx"), "--size", "4", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [(s["stage"], s["size"]) for s in report["stages"]] == [
        (f"stage{i} @ {h}x{w}", f"{h}x{w}") for h, w in SIZES for i in range(4)
    ]
    for s, (h, w) in zip(report["stages"], [sz for sz in SIZES for _ in range(4)]):
        mh, mw = -(-h // 4), -(-w // 4)  # patch 4, then each merge halves (odd maps padded)
        for _ in range(int(s["stage"][5])):
            mh, mw = -(-mh // 2), -(-mw // 2)
        assert s["shape"][1:] == [mh, mw]
        assert 0.99 < s["cosine_mean"] < 1.0 and 0 < s["rel_err_mean"] < 0.15  # INT8 moved it, not by much
    assert report["data"]["sizes"] == ["150x222", "192x176"]


@pytest.mark.slow
def test_plugin_substitution_into_the_any_size_int8_graph(any_size_flow: Path) -> None:
    from swinedge.engine import plugin_graph
    from swinedge.export import onnx_info, run_onnx_cpu

    proto = onnx.load(str(any_size_flow / "int8.onnx"))
    graph, count, why = plugin_graph(proto, onnx_info(any_size_flow / "int8.onnx"))
    assert why is None and count == 8
    assert all({a.name: a.i for a in n.attribute}["height"] == 0 for n in graph.graph.node if n.domain == "swinedge")
    onnx.save(graph, str(any_size_flow / "int8_plugin.onnx"))
    for i, size in enumerate(SIZES):
        x = np.random.default_rng(i).standard_normal((2, 3, *size)).astype(np.float32)
        native = run_onnx_cpu(any_size_flow / "int8.onnx", x, all_outputs=True)
        fused = run_onnx_cpu(any_size_flow / "int8_plugin.onnx", x, True, all_outputs=True)
        fp32 = run_onnx_cpu(any_size_flow / "native.onnx", x, all_outputs=True)
        for a, b, f in zip(native, fused, fp32):
            # As in test_backbone: rounding flips across INT8 steps are allowed; the
            # substitution must move the maps far less than INT8 moved them from FP32.
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            assert a64 @ b64 / np.sqrt((a64 @ a64) * (b64 @ b64)) > 0.9999
            assert np.linalg.norm(b64 - a64) < 0.5 * np.linalg.norm(a64 - f.astype(np.float64).ravel())


def test_bad_sizes_are_one_line_errors(any_size_flow: Path, tmp_path: Path) -> None:
    bb, native = str(any_size_flow / "bb.pt"), str(any_size_flow / "native.onnx")
    one_size = tmp_path / "one-size.onnx"
    refused = tmp_path / "refused"
    refused.mkdir()
    out = str(refused / "x.onnx")
    cases = [
        (["export", bb, "--sizes", "150x222,100x100", "--out", out], "input 100x100: stage 3 is no wider than the window"),
        (["export", bb, "--sizes", "100x100,256x256", "--out", out], "input 100x100: stage 3 is no wider than the window"),
        (["export", bb, "--sizes", "150x222,150x222", "--out", out], "more than once"),
        (["export", bb, "--sizes", ",", "--out", out], "--sizes is empty"),
        (["export", bb, "--sizes", "150x222,abc", "--out", out], "is not a size"),
        (["export", bb, "--sizes", ",".join(f"{140 + i}x200" for i in range(9)), "--out", out], "more than 8"),
        (["export", bb, "--sizes", "150x222", "--input-size", "150x222", "--out", out], "exclude each other"),
        (["export", MICRO, "--sizes", "150x222", "--out", out], "is a classifier"),
        (["build-engine", native, "--sizes", "150x222,90x300", "--out", str(refused / "e.plan")], "--sizes"),
        (["build-engine", native, "--sizes", "0x10", "--out", str(refused / "e.plan")], "each side must be"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in one_line_error(r), (args, r.output)
    assert not list(refused.iterdir())
    r = runner.invoke(app, ["export", bb, "--out", str(one_size)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["build-engine", str(one_size), "--sizes", "150x222,192x176", "--out", str(refused / "e.plan")])
    # Refused before TensorRT is needed: a one-size graph has its sizes as constants.
    assert r.exit_code == 2 and "exported for 150x222 only" in one_line_error(r), r.output


# -- engine profiles (no TensorRT: the logic that chooses them) -----------------------------------
def test_one_profile_per_size_and_the_runner_picks_by_size() -> None:
    from swinedge.engine import BuildOptions, check_input_covered, profile_sizes, size_profiles

    cfg = BackboneConfig(MODEL_SPECS[MICRO].config, SIZES[0])
    info = {"task": "backbone", "input": {"shape": ["batch", 3, 150, 222]}, "input_sizes": ["150x222", "192x176"], "config": cfg.to_dict()}
    opts = BuildOptions(min_batch=1, opt_batch=2, max_batch=8)
    assert profile_sizes(info, None) == SIZES
    assert profile_sizes(info, (UNLISTED,)) == [UNLISTED]  # a new resolution: a new engine, no new export
    with pytest.raises(SwinedgeError, match="needs a graph of its own"):
        profile_sizes(info, ((100, 100),))
    shapes = size_profiles(info["input"]["shape"], SIZES, opts)
    assert shapes == [((1, 3, 150, 222), (2, 3, 150, 222), (8, 3, 150, 222)), ((1, 3, 192, 176), (2, 3, 192, 176), (8, 3, 192, 176))]
    manifest = {
        "task": "backbone",
        "input_sizes": ["150x222", "192x176"],
        "profiles": [{"min": list(a), "opt": list(b), "max": list(c)} for a, b, c in shapes],
    }
    assert check_input_covered(manifest, (8, 3, 150, 222)) == 0
    assert check_input_covered(manifest, (1, 3, 192, 176)) == 1
    with pytest.raises(SwinedgeError, match=r"takes 3x150x222 or 192x176 inputs \(its profiles\), got 3x161x133.*--sizes 150x222,192x176,161x133"):
        check_input_covered(manifest, (1, 3, 161, 133))
    with pytest.raises(SwinedgeError, match="outside the engine's profile 1..8"):
        check_input_covered(manifest, (9, 3, 192, 176))
    with pytest.raises(SwinedgeError, match="no engine of this graph can: input 100x100: stage 3 is no wider"):
        check_input_covered({**manifest, "config": cfg.to_dict()}, (1, 3, 100, 100))


def test_an_engine_manifest_describes_its_first_profile_size() -> None:
    from swinedge.engine import at_first_size

    cfg = BackboneConfig(MODEL_SPECS[MICRO].config, SIZES[0])
    info = {
        "task": "backbone", "config": cfg.to_dict(), "input": {"name": "input", "shape": ["batch", 3, 150, 222]},
        "input_size": "150x222", "preprocess": {"mode": "fit-pad", "size": [150, 222], "mean": [0.5] * 3},
        "outputs": [{"name": f"stage{i}", "shape": []} for i in range(4)],
    }  # fmt: skip
    got = at_first_size(info, (192, 176))
    assert got["input"]["shape"] == ["batch", 3, 192, 176] and got["input_size"] == "192x176"
    assert got["preprocess"] == {"mode": "fit-pad", "size": [192, 176], "mean": [0.5] * 3}
    # 192x176 / patch 4 = 48x44, then halved per merge: 24x22, 12x11, 6x6 (odd 11 padded).
    assert [o["shape"] for o in got["outputs"]] == [["batch", 32, 48, 44], ["batch", 64, 24, 22], ["batch", 128, 12, 11], ["batch", 256, 6, 6]]


def test_calibration_images_are_shared_out_across_the_sizes(any_size_flow: Path) -> None:
    from swinedge.quantize import calibration_set_for

    images = calibration_set_for(any_size_flow / "native.onnx", None, 5, 0)
    assert [len(s) for s in images.streams] == [3, 2] and len(images) == 5
    assert [s.preprocess.spec()["size"] for s in images.streams] == [[150, 222], [192, 176]]
    first = next(images.batches(8))
    assert first.images.shape == (3, 3, 150, 222)  # a batch never mixes sizes


def test_runner_switches_profiles_with_the_size_stand_in_context(tmp_path: Path, monkeypatch) -> None:
    """swinedge's own profile switching in TensorRTRunner, on recording stand-ins of ours
    for TensorRT's engine and execution context and torch's CUDA (tests/fake_tensorrt.py,
    not TensorRT): a size change selects its profile and sets the input shape again; a
    repeated shape sets nothing, through infer and infer_tensors alike."""
    from fake_tensorrt import FakeContext, FakeEngine, FakeStream, FakeTensorRT, fake_cuda, use_fake_runtime, write_plan
    from swinedge.runners.trt_runner import TensorRTRunner

    context = FakeContext()
    r = TensorRTRunner("x.plan")
    r.context, r.stream = context, FakeStream()
    r._shape = (1, 3, 150, 222)
    r._select_profile(0)
    assert context.calls == [] and r._shape == (1, 3, 150, 222)
    r._select_profile(1)
    assert context.calls == [("profile", 1)] and r._shape is None  # the next infer sets the shape
    r._select_profile(1)
    assert context.calls == [("profile", 1)]

    allocated = fake_cuda(monkeypatch)
    shapes = [((1, 3, h, w), (2, 3, h, w), (8, 3, h, w)) for h, w in SIZES]
    profiles = [{"min": list(a), "opt": list(b), "max": list(c)} for a, b, c in shapes]
    plan = write_plan(tmp_path / "b.plan", task="backbone", profile=profiles[0], profiles=profiles, input_sizes=["150x222", "192x176"])
    outputs = {f"stage{i}": (lambda s, i=i: (s[0], 32 << i, s[2] // (4 << i), s[3] // (4 << i))) for i in range(4)}
    context = FakeContext(outputs, memory=allocated)
    use_fake_runtime(monkeypatch, FakeTensorRT(engine=FakeEngine(outputs, context=context)))
    r = TensorRTRunner(plan).load()
    a, b = (np.zeros((2, 3, h, w), np.float32) for h, w in SIZES)
    for x, call in ((a, r.infer_tensors), (a, r.infer), (b, r.infer_tensors), (b, r.infer_tensors), (a, r.infer), (b, r.infer)):
        call(x)
    assert [c[:2] if c[0] == "profile" else c[2] for c in context.calls if c[0] in ("profile", "set_input_shape")] == [
        a.shape, ("profile", 1), b.shape, ("profile", 0), a.shape, ("profile", 1), b.shape
    ]
    assert len(allocated) == 8  # four stages per size, each allocated once
