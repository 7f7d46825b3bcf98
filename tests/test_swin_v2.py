"""Swin V2: sizes, the attention against a per-token brute force, checkpoint layouts, and
the flow through the CLI (export, quantize, verify, run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.errors import SwinedgeError
from swinedge.models import SWINV2_SPECS, SwinTransformerV2, build_checkpoint, create_model, list_models, load_model
from swinedge.models.swin_v2 import WindowAttentionV2
from swinedge.ops.window_attention import WindowGeometry

MICRO = "swinv2_micro_window4_64"
runner = CliRunner()

# Parameter counts at timm's default classes (issue #11).
TIMM_PARAMS = {
    "swinv2_tiny_window8_256": 28_347_154,
    "swinv2_tiny_window16_256": 28_347_154,
    "swinv2_small_window8_256": 49_728_418,
    "swinv2_small_window16_256": 49_728_418,
    "swinv2_base_window8_256": 87_918_816,
    "swinv2_base_window16_256": 87_918_816,
    "swinv2_base_window12to16_192to256": 87_918_816,
    "swinv2_base_window12to24_192to384": 87_918_816,
    "swinv2_base_window12_192": 109_280_841,
    "swinv2_large_window12_192": 228_772_549,
    "swinv2_large_window12to16_192to256": 196_739_932,
    "swinv2_large_window12to24_192to384": 196_739_932,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_counts_equal_timm(name: str) -> None:
    with torch.device("meta"):
        assert SwinTransformerV2(SWINV2_SPECS[name].config).num_params() == TIMM_PARAMS[name]


def test_models_lists_swin_v2() -> None:
    rows = {r["name"]: r for r in list_models()}
    assert rows["swinv2_base_window12to24_192to384"]["family"] == "swinv2"
    assert rows["swinv2_base_window12to24_192to384"]["window_size"] == 24


def _brute_force(attn: WindowAttentionV2, x: torch.Tensor, pretrained_window: int) -> torch.Tensor:
    """One image ``[H*W, C]`` through the block's attention, pair by pair, from token
    coordinates: cyclic shift, zero padding, windows, shift-region mask (-100), cosine
    logits times the clamped scale, 16 * sigmoid of the MLP at log-spaced offsets."""
    g = attn.geometry
    h, w, c, heads, hd, win, s = g.height, g.width, g.dim, g.num_heads, g.head_dim, g.window, g.shift
    hp, wp = g.padded_height, g.padded_width
    grid = torch.zeros(hp, wp, c, dtype=torch.float64)
    grid[:h, :w] = torch.roll(x.double().reshape(h, w, c), shifts=(-s, -s), dims=(0, 1))
    qkv_bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias]).double()
    qkv = grid @ attn.qkv.weight.double().T + qkv_bias
    q, k, v = qkv.split(c, dim=-1)
    scale = torch.clamp(attn.logit_scale.double(), max=math.log(100)).exp().reshape(heads)
    span = (pretrained_window or win) - 1

    def log_coord(d: int) -> float:
        t = d / span * 8
        return math.copysign(math.log2(abs(t) + 1) / 3, t) if t else 0.0

    def region(i: int, size: int) -> int:
        return 0 if i < size - win else (1 if i < size - s else 2) if s else 0

    out = torch.zeros(hp, wp, c, dtype=torch.float64)
    for y in range(hp):
        for xx in range(wp):
            wy, wx = y // win * win, xx // win * win
            keys = [(ky, kx) for ky in range(wy, wy + win) for kx in range(wx, wx + win)]
            for head in range(heads):
                sl = slice(head * hd, (head + 1) * hd)
                qv = q[y, xx, sl] / q[y, xx, sl].norm().clamp_min(1e-12)
                logits = []
                for ky, kx in keys:
                    kv = k[ky, kx, sl] / k[ky, kx, sl].norm().clamp_min(1e-12)
                    coords = torch.tensor([[log_coord(y - ky), log_coord(xx - kx)]], dtype=torch.float32)
                    bias = 16 * torch.sigmoid(attn.cpb_mlp(coords)[0, head].double())
                    same = (region(y, hp), region(xx, wp)) == (region(ky, hp), region(kx, wp))
                    logits.append(float(qv @ kv) * scale[head] + bias + (0.0 if same or not s else -100.0))
                p = torch.softmax(torch.stack([torch.as_tensor(t, dtype=torch.float64) for t in logits]), 0)
                out[y, xx, sl] = sum(pi * v[ky, kx, sl] for pi, (ky, kx) in zip(p, keys))
    out = torch.roll(out[:h, :w], shifts=(s, s), dims=(0, 1)).reshape(h * w, c)
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


@pytest.mark.parametrize(
    "geometry,pretrained",
    [((8, 8, 4, 2, 2, 8), 0), ((6, 6, 4, 0, 2, 8), 0), ((6, 6, 4, 2, 2, 8), 3)],
    ids=["shifted", "padded", "padded-shifted-pretrained-window-3"],
)
def test_attention_equals_a_per_token_brute_force(geometry: tuple, pretrained: int) -> None:
    torch.manual_seed(0)
    attn = WindowAttentionV2(WindowGeometry(*geometry), pretrained).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        x = torch.randn(1, geometry[0] * geometry[1], geometry[4] * geometry[5])
        np.testing.assert_allclose(attn(x)[0].double().numpy(), _brute_force(attn, x[0], pretrained).numpy(), rtol=1e-4, atol=1e-5)


def test_logit_scale_is_clamped_at_100() -> None:
    attn = WindowAttentionV2(WindowGeometry(4, 4, 4, 0, 2, 4), 0).eval()
    x = torch.randn(1, 16, 8)
    with torch.no_grad():
        attn.logit_scale.fill_(math.log(100))
        at_cap = attn(x)
        attn.logit_scale.fill_(math.log(1e6))
        assert torch.allclose(attn(x), at_cap, atol=1e-6)


# -- checkpoints ----------------------------------------------------------------------------------------
def _to_microsoft(state: dict[str, torch.Tensor], model: SwinTransformerV2) -> dict[str, torch.Tensor]:
    """timm layout -> Microsoft's: downsample at the end of the previous stage, ``head.*``,
    and the geometry buffers Microsoft stores."""
    out = {}
    for k, v in state.items():
        if k.startswith("layers.") and ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.downsample", f"layers.{i - 1}.downsample")
        out[k.replace("head.fc.", "head.")] = v
    for name, buf in model.named_buffers():
        out[name] = buf  # relative_coords_table, relative_position_index, attn_mask, k_bias
    return out


def test_microsoft_layout_loads_and_equals_timm_layout(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = create_model(MICRO, num_classes=10).eval()
    torch.save({"model": _to_microsoft(source.state_dict(), source)}, tmp_path / "ms.pth")
    r = build_checkpoint(MICRO, tmp_path / "m.pt", weights=tmp_path / "ms.pth", num_classes=10)
    assert r["source"]["layout"] == "official" and r["config"]["family"] == "swinv2"
    model, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_another_window_needs_no_resizing(tmp_path: Path) -> None:
    """The continuous bias: window-4 weights load into a window-8 model as they are, and
    its bias is the same MLP evaluated at the new offsets."""
    torch.manual_seed(3)
    torch.save(create_model(MICRO).state_dict(), tmp_path / "w4.pth")
    r = build_checkpoint(MICRO, tmp_path / "w8.pt", weights=tmp_path / "w4.pth", img_size=128)  # stage 1: 32x32, window 4
    assert r["config"]["img_size"] == 128


def test_another_familys_weights_are_one_line_errors(tmp_path: Path) -> None:
    torch.save(create_model("swin_micro_patch4_window4_64").state_dict(), tmp_path / "v1.pth")
    torch.save(create_model(MICRO).state_dict(), tmp_path / "v2.pth")
    r = runner.invoke(app, ["build", MICRO, "--weights", str(tmp_path / "v1.pth"), "--out", str(tmp_path / "a.pt")])
    assert "holds Swin weights, not Swin V2" in one_line_error(r)
    r = runner.invoke(app, ["build", "swin_micro_patch4_window4_64", "--weights", str(tmp_path / "v2.pth"), "--out", str(tmp_path / "b.pt")])
    assert "holds Swin V2 weights, not Swin" in one_line_error(r)
    with pytest.raises(SwinedgeError, match="pretrained_window_sizes needs one entry per stage"):
        create_model(MICRO, pretrained_window_sizes=(0, 0, 0))


# -- the flow -------------------------------------------------------------------------------------------
def test_export_quantize_verify_through_the_cli(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", MICRO, "--out", str(tmp_path / "v2.onnx")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "v2.onnx.json").read_text())
    assert manifest["config"]["family"] == "swinv2" and manifest["parity"]["max_abs_err"] < 1e-4
    import onnx

    names = [n.name for n in onnx.load(str(tmp_path / "v2.onnx")).graph.node]
    # The position-bias MLP and the logit scale are weights-only: constants in the graph, never quantized.
    assert not [n for n in names if "cpb_mlp" in n or "logit_scale" in n]
    r = runner.invoke(app, ["quantize", str(tmp_path / "v2.onnx"), "--calib-size", "8", "--high-precision-dtype", "fp32", "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", MICRO, str(tmp_path / "q.onnx"), "--size", "16", "--json"])
    report = json.loads(r.stdout)
    assert report["passed"] and report["cosine_mean"] > 0.999
    # Post-norm: the residual stream feeds the qkv and fc1 MatMuls directly. Their Q/DQ
    # must not feed the residual Adds too (the recipe keeps the residual unquantized).
    q = onnx.load(str(tmp_path / "q.onnx"))
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    nodes = {n.name: n for n in q.graph.node}
    for i, depth in enumerate((2, 2)):
        for j in range(depth):
            block = f"/layers/layers.{i}/blocks/blocks.{j}/"
            for add in ("Add", "Add_1"):
                assert "DequantizeLinear" not in [producer.get(x) for x in nodes[block + add].input]
            assert "DequantizeLinear" in [producer.get(x) for x in nodes[block + "attn/qkv/MatMul"].input]


def test_plugin_export_and_substitution_run_on_onnx_runtime(tmp_path: Path) -> None:
    """One SwinV2WindowAttention node per block, exported directly or put in place of the
    native core of an INT8 graph (what build-engine hands TensorRT), run on ONNX Runtime
    through the CPU custom op: equal to the graphs they come from."""
    import onnx

    from swinedge.engine import plugin_graph
    from swinedge.export import onnx_info, run_onnx_cpu

    torch.manual_seed(0)
    model = create_model(MICRO).eval()
    with torch.no_grad():
        for m in model.attention_modules():  # weights away from their init, so every term counts
            m.logit_scale.uniform_(0.0, 4.6)
            m.q_bias.normal_()
            m.v_bias.normal_()
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    r = runner.invoke(app, ["build", MICRO, "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--attention", "plugin", "--out", str(tmp_path / "p.onnx")])
    assert r.exit_code == 0, r.output
    proto = onnx.load(str(tmp_path / "p.onnx"))
    nodes = [n for n in proto.graph.node if n.domain == "swinedge"]
    assert [n.op_type for n in nodes] == ["SwinV2WindowAttention"] * 4 and all(len(n.input) == 4 for n in nodes)
    r = runner.invoke(app, ["verify", str(tmp_path / "m.pt"), str(tmp_path / "p.onnx"), "--size", "8", "--json"])
    report = json.loads(r.stdout)
    assert report["passed"] and report["max_abs_err"] < 1e-4, report

    r = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "--out", str(tmp_path / "n.onnx")])
    assert r.exit_code == 0, r.output
    # FP32 around the INT8 GEMMs: the CPU custom op takes float32.
    r = runner.invoke(app, ["quantize", str(tmp_path / "n.onnx"), "--calib-size", "8", "--high-precision-dtype", "fp32", "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    native = onnx.load(str(tmp_path / "q.onnx"))
    graph, count, why_not = plugin_graph(native, onnx_info(tmp_path / "q.onnx", native))
    assert why_not is None and count == 4
    onnx.save(graph, str(tmp_path / "qp.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    want = run_onnx_cpu(tmp_path / "q.onnx", x)
    got = run_onnx_cpu(tmp_path / "qp.onnx", x, with_plugin=True)
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max(), rtol=0)


@pytest.mark.slow
def test_run_with_a_swin_v2_name(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", MICRO, "--calib-size", "8", "--iters", "1", "--batch", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "report.json").read_text())
    assert summary["model"] == MICRO and all(a["passed"] for a in summary["accuracy"])


@pytest.mark.timm
@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swinv2_base_window12to16_192to256"])
def test_logits_equal_timm(name: str) -> None:
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    size = ours.config.img_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-3, atol=1e-3)


def test_torch_runner_runs_swin_v2_with_the_fused_op() -> None:
    """The fused op (CPU: its reference math) serves V2 in the torch runner too; a ViT has none."""
    from swinedge.runners.torch_runner import TorchRunner

    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with TorchRunner(MICRO) as ref, TorchRunner(MICRO, attention="fused") as fused:
        np.testing.assert_allclose(fused.infer(x), ref.infer(x), atol=1e-5)
    with pytest.raises(SwinedgeError, match="has no fused attention kernel"):
        TorchRunner("vit_micro_patch8_64", attention="fused").load()
