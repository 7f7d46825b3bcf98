"""Swin as a backbone: stage maps at any (height, width), detection/segmentation
checkpoints, export (native and plugin), quantization and per-stage verification.

The mmdet reference below is written from mmdet's Swin semantics (corner padding of the
patch embedding, window padding after norm1, shifted windows masked with -100 on the
padded grid, patch merging through ``F.unfold``, per-stage LayerNorm) and reads mmdet's
own key names: it shares no code with swinedge's model or its checkpoint conversion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from swinedge.cli import app
from swinedge.errors import SwinedgeError
from swinedge.models import build_backbone_checkpoint, load_model
from swinedge.models.backbone import BackboneConfig, SwinBackbone, parse_size
from swinedge.models.swin import MODEL_SPECS, SwinConfig
from typer.testing import CliRunner

from cli_helpers import one_line_error

runner = CliRunner()

MICRO = "swin_micro_patch4_window4_64"  # 4 stages, window 4, dims 32..256
SIZE = (150, 222)  # not a patch multiple; odd maps before two merges; window padding


# -- geometry ---------------------------------------------------------------------------------------
def test_swin_t_stage_shapes_at_detection_sizes() -> None:
    tiny = MODEL_SPECS["swin_tiny_patch4_window7_224"].config
    # 1333 px: padded to 1336 (patch 4) -> 334 -> 167 -> 84 (odd 167 padded) -> 42.
    assert BackboneConfig(tiny, (800, 1333)).stage_shapes() == [(96, 200, 334), (192, 100, 167), (384, 50, 84), (768, 25, 42)]
    assert BackboneConfig(tiny, (640, 640)).stage_shapes() == [(96, 160, 160), (192, 80, 80), (384, 40, 40), (768, 20, 20)]
    geoms = BackboneConfig(tiny, (800, 1333)).stage_geometries()
    assert [(g.window, g.shift) for g in geoms[3]] == [(7, 0), (7, 3)]  # the last stage still shifts


def test_sizes_the_windows_cannot_tile_are_one_line_errors() -> None:
    tiny = MODEL_SPECS["swin_tiny_patch4_window7_224"].config
    with pytest.raises(SwinedgeError, match=r"stage 3 is 7x20 tokens.*at least 225 px on each side"):
        SwinBackbone(BackboneConfig(tiny, (224, 640)))
    for text in ("800x", "0x10", "800x1333x3", "a", "99999x10"):
        with pytest.raises(SwinedgeError, match="--input-size"):
            parse_size(text)
    with pytest.raises(SwinedgeError, match="out indices"):
        SwinBackbone(BackboneConfig(tiny, (640, 640), out_indices=(2, 1)))


def test_square_backbone_returns_the_classifier_stages() -> None:
    """At the classifier's own size and weights, stage i is the classifier's layers[i]
    output (hooks on the classifier), NCHW."""
    classifier, _ = load_model(MICRO)
    cfg = BackboneConfig(classifier.config, (64, 64))
    backbone = SwinBackbone(cfg).eval()
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "norm."))}
    backbone.load_state_dict(state, strict=True)
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(o)) for m in classifier.layers]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        classifier(x)
        maps = backbone(x)
    for h in hooks:
        h.remove()
    for want, got in zip(seen, maps):
        torch.testing.assert_close(got, want.permute(0, 3, 1, 2), rtol=0, atol=0)


# -- mmdet reference ----------------------------------------------------------------------------------
def _rel_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    b, h, w, c = x.shape
    return x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def _mmdet_block(x, hw, sd, p, heads, ws, shift):
    h, w = hw
    b, _, c = x.shape
    shortcut = x
    x = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"]).view(b, h, w, c)
    pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = h + pad_b, w + pad_r
    mask = None
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        img = torch.zeros(1, hp, wp, 1)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img[:, hs, wsl, :] = cnt
                cnt += 1
        mw = _partition(img, ws).squeeze(-1)
        mask = (mw[:, None, :] - mw[:, :, None]).ne(0).float() * -100.0
    win = _partition(x, ws)
    n = ws * ws
    qkv = F.linear(win, sd[p + "attn.w_msa.qkv.weight"], sd[p + "attn.w_msa.qkv.bias"]).reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[p + "attn.w_msa.relative_position_bias_table"]
    attn = attn + table[_rel_index(ws).reshape(-1)].view(n, n, heads).permute(2, 0, 1)[None]
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
    out = F.linear(out, sd[p + "attn.w_msa.proj.weight"], sd[p + "attn.w_msa.proj.bias"])
    out = out.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = shortcut + out[:, :h, :w, :].reshape(b, h * w, c)
    y = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
    y = F.linear(F.gelu(F.linear(y, sd[p + "ffn.layers.0.0.weight"], sd[p + "ffn.layers.0.0.bias"])), sd[p + "ffn.layers.1.weight"], sd[p + "ffn.layers.1.bias"])
    return x + y


def mmdet_swin_forward(img: torch.Tensor, sd: dict, cfg: SwinConfig) -> list[torch.Tensor]:
    sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    ps = cfg.patch_size
    h, w = img.shape[-2:]
    img = F.pad(img, (0, -w % ps, 0, -h % ps))  # corner padding
    x = F.conv2d(img, sd["patch_embed.projection.weight"], sd["patch_embed.projection.bias"], stride=ps)
    hw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = F.layer_norm(x, (cfg.embed_dim,), sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    outs = []
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        c = cfg.embed_dim * 2**i
        for j in range(depth):
            shift = cfg.window_size // 2 if j % 2 else 0
            x = _mmdet_block(x, hw, sd, f"stages.{i}.blocks.{j}.", heads, cfg.window_size, shift)
        y = F.layer_norm(x, (c,), sd[f"norm{i}.weight"], sd[f"norm{i}.bias"])
        outs.append(y.view(-1, *hw, c).permute(0, 3, 1, 2))
        if i < len(cfg.depths) - 1:
            m = x.view(-1, *hw, c).permute(0, 3, 1, 2)
            m = F.pad(m, (0, hw[1] % 2, 0, hw[0] % 2))
            hw = (m.shape[-2] // 2, m.shape[-1] // 2)
            m = F.unfold(m, 2, stride=2).transpose(1, 2)
            m = F.layer_norm(m, (4 * c,), sd[f"stages.{i}.downsample.norm.weight"], sd[f"stages.{i}.downsample.norm.bias"])
            x = F.linear(m, sd[f"stages.{i}.downsample.reduction.weight"])
    return outs


def mmdet_detector_state(cfg: SwinConfig, seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """A random detector checkpoint in mmdet's layout: backbone, neck and heads. Weights
    of std ``scale`` (0.02 is the training init; larger makes the reference test see more)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    d, ws = cfg.embed_dim, cfg.window_size
    sd = {
        "patch_embed.projection.weight": t(d, 3, cfg.patch_size, cfg.patch_size),
        "patch_embed.projection.bias": t(d),
        "patch_embed.norm.weight": 1 + t(d),
        "patch_embed.norm.bias": t(d),
    }
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        c = d * 2**i
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}."
            sd.update({
                p + "norm1.weight": 1 + t(c), p + "norm1.bias": t(c),
                p + "attn.w_msa.relative_position_bias_table": t((2 * ws - 1) ** 2, heads),
                p + "attn.w_msa.relative_position_index": _rel_index(ws),
                p + "attn.w_msa.qkv.weight": t(3 * c, c), p + "attn.w_msa.qkv.bias": t(3 * c),
                p + "attn.w_msa.proj.weight": t(c, c), p + "attn.w_msa.proj.bias": t(c),
                p + "norm2.weight": 1 + t(c), p + "norm2.bias": t(c),
                p + "ffn.layers.0.0.weight": t(4 * c, c), p + "ffn.layers.0.0.bias": t(4 * c),
                p + "ffn.layers.1.weight": t(c, 4 * c), p + "ffn.layers.1.bias": t(c),
            })  # fmt: skip
        if i < len(cfg.depths) - 1:
            sd[f"stages.{i}.downsample.norm.weight"] = 1 + t(4 * c)
            sd[f"stages.{i}.downsample.norm.bias"] = t(4 * c)
            sd[f"stages.{i}.downsample.reduction.weight"] = t(2 * c, 4 * c)
        sd[f"norm{i}.weight"], sd[f"norm{i}.bias"] = 1 + t(c), t(c)
    full = {f"backbone.{k}": v for k, v in sd.items()}
    full.update({"neck.lateral_convs.0.conv.weight": t(8, d, 1, 1), "rpn_head.rpn_conv.weight": t(8, 8, 3, 3), "roi_head.bbox_head.fc_cls.weight": t(81, 8)})
    return full


@pytest.fixture(scope="module")
def mmdet_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    cfg = MODEL_SPECS[MICRO].config
    state = mmdet_detector_state(cfg)
    path = tmp_path_factory.mktemp("mmdet") / "mask_rcnn_swin_micro.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": state}, path)
    return path, state


def test_mmdet_detector_checkpoint_matches_an_mmdet_forward(mmdet_checkpoint, tmp_path: Path) -> None:
    path, state = mmdet_checkpoint
    before = path.read_bytes()
    r = runner.invoke(app, ["build", MICRO, "--features", "--weights", str(path), "--input-size", "150x222", "--out", str(tmp_path / "bb.pt")])
    assert r.exit_code == 0, r.output
    assert "3 neck and heads" in r.output and "150x222" in r.output
    assert path.read_bytes() == before
    manifest = json.loads((tmp_path / "bb.pt.json").read_text())
    assert manifest["task"] == "backbone" and manifest["source"]["layout"] == "mmdet"
    assert manifest["config"]["stage_norms"] is True  # the detector carries norm0..norm3
    model, _ = load_model(tmp_path / "bb.pt")
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = mmdet_swin_forward(x, state, MODEL_SPECS[MICRO].config)
        got = model(x)
    assert [tuple(t.shape[1:]) for t in got] == [(32, 38, 56), (64, 19, 28), (128, 10, 14), (256, 5, 7)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_microsoft_detection_and_timm_features_layouts_load_the_same_weights(mmdet_checkpoint, tmp_path: Path) -> None:
    """The same weights in Microsoft's detection layout (official names under backbone.,
    downsample at the end of a stage) and timm's features_only layout (layers_0., no
    stage norms) give the same maps."""
    mm_path, _ = mmdet_checkpoint
    ref = build_backbone_checkpoint(MICRO, tmp_path / "ref.pt", weights=mm_path, size=SIZE)
    ours = torch.load(tmp_path / "ref.pt", weights_only=True)["state_dict"]
    official = {}
    for k, v in ours.items():
        k2 = k
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k2 = k.replace(f"layers.{i}.downsample", f"layers.{i - 1}.downsample")
        official["backbone." + k2] = v
    official["backbone.layers.0.blocks.0.attn.relative_position_index"] = _rel_index(4).reshape(-1)
    official["neck.fpn_convs.0.conv.weight"] = torch.zeros(1)
    torch.save({"state_dict": official}, tmp_path / "ms_det.pth")
    timm_feat = {k.replace("layers.", "layers_", 1): v for k, v in ours.items() if not k.startswith("norm")}
    torch.save(timm_feat, tmp_path / "timm_features.pth")
    ms = build_backbone_checkpoint(MICRO, tmp_path / "ms.pt", weights=tmp_path / "ms_det.pth", size=SIZE)
    tf = build_backbone_checkpoint(MICRO, tmp_path / "tf.pt", weights=tmp_path / "timm_features.pth", size=SIZE)
    assert ms["source"]["layout"] == "official-detection" and ms["source"]["dropped"] == {"neck and heads": 1}
    assert tf["source"]["layout"] == "timm-features" and tf["config"]["stage_norms"] is False
    x = torch.randn(1, 3, *SIZE)
    models = [load_model(tmp_path / n)[0] for n in ("ref.pt", "ms.pt", "tf.pt")]
    with torch.no_grad():
        outs = [m(x) for m in models]
    for a, b in zip(outs[0], outs[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # timm's features_only weights run in timm's padding order and return the raw stage
    # outputs: the same weights in that order, with the stage norms applied after.
    timm_order = SwinBackbone(BackboneConfig(MODEL_SPECS[MICRO].config, SIZE, stage_norms=True, pad_first=False)).eval()
    timm_order.load_state_dict(ours)
    with torch.no_grad():
        normed = timm_order(x)
    for i, (raw, want) in enumerate(zip(outs[2], normed)):
        w, b = ours[f"norm{i}.weight"], ours[f"norm{i}.bias"]
        renormed = F.layer_norm(raw.permute(0, 2, 3, 1), (raw.shape[1],), w, b).permute(0, 3, 1, 2)
        torch.testing.assert_close(renormed, want, rtol=1e-5, atol=1e-5)
    # The two orders differ where a shifted block pads by other than its shift (stage 1:
    # 19x28 padded by 1 row, shifted by 2); at stage 0 (padded by 2 = the shift) they agree.
    torch.testing.assert_close(normed[0], outs[0][0], rtol=0, atol=0)
    assert (normed[1] - outs[0][1]).abs().max() > 1e-2


def test_classifier_weights_make_a_backbone_and_detector_weights_no_classifier(mmdet_checkpoint, tmp_path: Path) -> None:
    r = runner.invoke(app, ["build", MICRO, "--out", str(tmp_path / "cls.pt")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["build", MICRO, "--features", "--weights", str(tmp_path / "cls.pt"), "--input-size", "150x222", "--out", str(tmp_path / "bb.pt")])
    assert r.exit_code == 0, r.output
    assert "classifier head and final norm" in r.output
    manifest = json.loads((tmp_path / "bb.pt.json").read_text())
    assert manifest["config"]["stage_norms"] is False and manifest["source"]["dropped"]["classifier head and final norm"] == 4
    mm_path, _ = mmdet_checkpoint
    r = runner.invoke(app, ["build", MICRO, "--weights", str(mm_path), "--out", str(tmp_path / "c2.pt")])
    line = one_line_error(r)
    assert r.exit_code == 2 and "no classifier head 'head.fc.weight'" in line and "--features" in line
    assert not (tmp_path / "c2.pt").exists()
    r = runner.invoke(app, ["build", MICRO, "--features", "--weights", str(mm_path), "--input-size", "96x160", "--out", str(tmp_path / "c3.pt")])
    assert r.exit_code == 2 and "smaller than the window" in r.output and not (tmp_path / "c3.pt").exists()
    r = runner.invoke(app, ["build", MICRO, "--input-size", "96x160", "--out", str(tmp_path / "c4.pt")])
    assert r.exit_code == 2 and "add --features" in r.output


# -- the flow through the CLI -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Path:
    """A detector's backbone (mmdet layout, weights at the training init's scale) built,
    exported native and plugin, quantized INT8 and FP16."""
    d = tmp_path_factory.mktemp("flow")
    mm_path = d / "detector.pth"
    torch.save({"state_dict": mmdet_detector_state(MODEL_SPECS[MICRO].config, seed=1, scale=0.02)}, mm_path)
    steps = [
        ["build", MICRO, "--features", "--weights", str(mm_path), "--input-size", "150x222", "--out", str(d / "bb.pt")],
        ["export", str(d / "bb.pt"), "--out", str(d / "native.onnx")],
        ["export", str(d / "bb.pt"), "--attention", "plugin", "--out", str(d / "plugin.onnx")],
        ["export", str(d / "bb.pt"), "--input-size", "160x160", "--out", str(d / "native160.onnx")],
        ["quantize", str(d / "native.onnx"), "--calib-size", "8", "--high-precision-dtype", "fp32", "--out", str(d / "int8.onnx")],
        ["quantize", str(d / "native.onnx"), "-p", "fp16", "--calib-size", "2", "--out", str(d / "fp16.onnx")],
    ]
    for args in steps:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    return d


@pytest.mark.slow
def test_exports_have_one_output_per_stage_and_equal_torch(flow: Path) -> None:
    import onnx

    for name, size in (("native", SIZE), ("plugin", SIZE), ("native160", (160, 160))):
        m = json.loads((flow / f"{name}.onnx.json").read_text())
        assert m["task"] == "backbone" and m["input"]["shape"] == ["batch", 3, *size]
        assert [o["name"] for o in m["outputs"]] == ["stage0", "stage1", "stage2", "stage3"]
        assert m["parity"]["max_abs_err"] < 1e-4
        graph = onnx.load(str(flow / f"{name}.onnx")).graph
        assert [o.name for o in graph.output] == ["stage0", "stage1", "stage2", "stage3"]
    plugin_nodes = [n for n in onnx.load(str(flow / "plugin.onnx")).graph.node if n.domain == "swinedge"]
    assert len(plugin_nodes) == 8
    attrs = {a.name: a.i for a in plugin_nodes[0].attribute if a.name in ("height", "width")}
    assert attrs == {"height": 38, "width": 56}  # the plugin geometry is the input size's


@pytest.mark.slow
def test_verify_reports_every_stage_on_photographs(flow: Path) -> None:
    for cand, floor in (("native", 0.999999), ("plugin", 0.999999), ("fp16", 0.9999), ("int8", 0.99)):
        r = runner.invoke(app, ["verify", str(flow / "bb.pt"), str(flow / f"{cand}.onnx"), "--size", "6", "--json"])
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
        assert report["task"] == "backbone" and report["data"]["source"] == "default"
        assert [s["stage"] for s in report["stages"]] == ["stage0", "stage1", "stage2", "stage3"]
        for s in report["stages"]:
            assert s["images"] == 6 and s["cosine_mean"] >= floor, (cand, s)
    int8 = json.loads(runner.invoke(app, ["verify", str(flow / "bb.pt"), str(flow / "int8.onnx"), "--size", "6", "--json"]).stdout)
    assert int8["stages"][-1]["rel_err_mean"] > 1e-3  # INT8 is not the float graph: the measure sees it
    r = runner.invoke(app, ["verify", str(flow / "bb.pt"), str(flow / "int8.onnx"), "--size", "4", "--min-cosine", "0.999999"])
    assert r.exit_code == 1 and "FAILED: stage" in r.output
    # The checkpoint is re-built at the candidate's size: 160x160 against its own export.
    r = runner.invoke(app, ["verify", str(flow / "bb.pt"), str(flow / "native160.onnx"), "--size", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["stages"][0]["shape"] == [32, 40, 40]


@pytest.mark.slow
def test_stage_errors_are_independent_numpy_figures(flow: Path) -> None:
    """The report's cosine and relative error equal numpy's on the same images."""
    import onnxruntime as ort

    from swinedge.data import FitPadPreprocess, open_images
    from swinedge.features import verify_features

    report = verify_features(flow / "bb.pt", flow / "int8.onnx", size=3).to_dict()
    images = open_images(None, FitPadPreprocess(*SIZE), size=3, labelled=False).load().images
    model, _ = load_model(flow / "bb.pt")
    with torch.no_grad():
        ref = [t.numpy().astype(np.float64) for t in model(torch.from_numpy(images))]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # Q/DQ as written, as the runner
    sess = ort.InferenceSession(str(flow / "int8.onnx"), opts, providers=["CPUExecutionProvider"])
    cand = [o.astype(np.float64) for o in sess.run(None, {"input": images})]
    for s, r, c in zip(report["stages"], ref, cand):
        r, c = r.reshape(3, -1), c.reshape(3, -1)
        cos = [float(a @ b / math.sqrt((a @ a) * (b @ b))) for a, b in zip(r, c)]
        rel = [float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(r, c)]
        assert s["cosine_mean"] == pytest.approx(np.mean(cos), abs=1e-9)
        assert s["rel_err_mean"] == pytest.approx(np.mean(rel), rel=1e-6)


@pytest.mark.slow
def test_plugin_substitution_into_the_int8_backbone_equals_it_on_onnxruntime(flow: Path) -> None:
    import onnx

    from swinedge.engine import plugin_graph
    from swinedge.export import onnx_info, run_onnx_cpu

    proto = onnx.load(str(flow / "int8.onnx"))
    graph, count, why = plugin_graph(proto, onnx_info(flow / "int8.onnx"))
    assert why is None and count == 8
    onnx.save(graph, str(flow / "int8_plugin.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, *SIZE)).astype(np.float32)
    native = run_onnx_cpu(flow / "int8.onnx", x, all_outputs=True)
    fused = run_onnx_cpu(flow / "int8_plugin.onnx", x, True, all_outputs=True)
    fp32 = run_onnx_cpu(flow / "native.onnx", x, all_outputs=True)
    for a, b, f in zip(native, fused, fp32):
        # The fused core equals the native one to float rounding; that can move a value
        # of the proj input across an INT8 rounding step (one step apart, downstream).
        # A wrong substitution (geometry, order, table) moves whole maps.
        # Such flips compound over blocks, so the maps are compared as wholes: the
        # substitution must move them far less than INT8 itself moved them from FP32.
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        assert a64 @ b64 / np.sqrt((a64 @ a64) * (b64 @ b64)) > 0.9999
        assert np.linalg.norm(b64 - a64) < 0.5 * np.linalg.norm(a64 - f.astype(np.float64).ravel())


@pytest.mark.slow
def test_error_map_works_on_a_backbone(flow: Path) -> None:
    r = runner.invoke(app, ["inspect", str(flow / "native.onnx"), str(flow / "int8.onnx"), "--size", "2", "--json"])
    assert r.exit_code == 0, r.output
    emap = json.loads(r.stdout)
    names = {p["name"] for p in emap["points"]}
    assert {"layers.0.blocks.0", "layers.3.blocks.1", "layers.1.downsample"} <= names


def test_bad_backbone_input_is_one_line(flow: Path, tmp_path: Path) -> None:
    cases = [
        (["verify", str(flow / "bb.pt"), str(flow / "int8.onnx"), "--labels", str(tmp_path / "x.txt")], "for classifiers"),
        (["verify", MICRO, str(flow / "int8.onnx"), "--size", "2"], "is a classifier"),
        (["verify", MICRO, MICRO, "--max-rel-err", "0.1"], "--max-rel-err is for backbones"),
        (["quantize", str(flow / "native.onnx"), "--aggressive", "--out", str(tmp_path / "q.onnx")], "stage by stage"),
        (["export", MICRO, "--input-size", "128x128", "--out", str(tmp_path / "e.onnx")], "is a classifier"),
        (["export", str(flow / "bb.pt"), "--input-size", "64x200", "--out", str(tmp_path / "e.onnx")], "smaller than the window"),
        (["verify", str(flow / "bb.pt"), str(flow / "int8.onnx"), "--max-rel-err", "nan"], "--max-rel-err"),
        (["benchmark", str(flow / "int8.onnx"), "--out", str(tmp_path / "bench")], "is a backbone"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in one_line_error(r), (args, r.output)
    assert not list(tmp_path.iterdir())


def test_engine_profile_refuses_a_size_it_does_not_cover() -> None:
    from swinedge.engine import check_input_covered

    manifest = {"task": "backbone", "profile": {"min": [1, 3, 800, 1333], "opt": [2, 3, 800, 1333], "max": [8, 3, 800, 1333]}}
    check_input_covered(manifest, (8, 3, 800, 1333))
    with pytest.raises(SwinedgeError, match=r"takes 3x800x1333 inputs .* got 3x640x640.*--input-size 640x640"):
        check_input_covered(manifest, (1, 3, 640, 640))
    with pytest.raises(SwinedgeError, match="outside the engine's profile 1..8"):
        check_input_covered(manifest, (9, 3, 800, 1333))


@pytest.mark.slow
def test_swin_v2_backbone_exports_native_and_plugin_at_a_rectangular_size(tmp_path: Path) -> None:
    """Swin V2 (timm's padding order, cosine attention): stage maps at 70x100, both
    exports equal torch on ONNX Runtime, and the plugin graph equals the native one."""
    from swinedge.export import export_onnx, run_onnx_cpu

    r = build_backbone_checkpoint("swinv2_micro_window4_64", tmp_path / "v2.pt", size="70x100")
    assert [(s["height"], s["width"]) for s in r["stages"]] == [(18, 25), (9, 13)]
    assert r["config"]["pad_first"] is False and r["config"]["trunk"]["family"] == "swinv2"
    native = export_onnx(tmp_path / "v2.pt", tmp_path / "n.onnx")
    plugin = export_onnx(tmp_path / "v2.pt", tmp_path / "p.onnx", attention="plugin")
    assert native.max_abs_err < 1e-4 and plugin.max_abs_err < 1e-4
    x = np.random.default_rng(0).standard_normal((2, 3, 70, 100)).astype(np.float32)
    for a, b in zip(run_onnx_cpu(tmp_path / "n.onnx", x, all_outputs=True), run_onnx_cpu(tmp_path / "p.onnx", x, True, all_outputs=True)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
