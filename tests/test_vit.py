"""ViT / DeiT / MAE encoders: sizes, math against PyTorch's own transformer layers,
checkpoint layouts, and the flow through the CLI (export, quantize, verify, run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge.cli import app
from swinedge.errors import SwinedgeError
from swinedge.models import VIT_SPECS, build_checkpoint, create_model, list_models, load_model, load_weights
from swinedge.models.vit import ViTConfig, VisionTransformer

MICRO = "vit_micro_patch8_64"
runner = CliRunner()

# Parameter counts at the default classes, as timm reports them (issue #11).
TIMM_PARAMS = {
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_large_patch16_224": 304_326_632,
    "vit_base_patch16_384": 86_859_496,
    "deit_tiny_patch16_224": 5_717_416,
    "deit_small_patch16_224": 22_050_664,
    "deit_base_patch16_224": 86_567_656,
    "deit_base_distilled_patch16_224": 87_338_192,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_counts_equal_timm(name: str) -> None:
    with torch.device("meta"):
        assert VisionTransformer(VIT_SPECS[name].config).num_params() == TIMM_PARAMS[name]


def test_models_lists_both_families() -> None:
    rows = {r["name"]: r for r in list_models()}
    assert rows["vit_base_patch16_224"]["family"] == "vit" and rows["vit_base_patch16_224"]["window_size"] is None
    assert rows["swin_tiny_patch4_window7_224"]["family"] == "swin"
    assert rows["vit_base_patch16_224"]["gflops"] == pytest.approx(17.6, abs=0.1)  # ViT-B/16's published 17.6 GFLOPs


def _reference_forward(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """The same weights run through PyTorch's own pre-norm TransformerEncoderLayer and
    MultiheadAttention: an implementation independent of swinedge's."""
    cfg = model.config
    d = cfg.embed_dim
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    prefix = [model.cls_token.expand(len(x), -1, -1)]
    if model.dist_token is not None:
        prefix.append(model.dist_token.expand(len(x), -1, -1))
    h = torch.cat([*prefix, tokens], dim=1) + model.pos_embed
    for blk in model.blocks:
        layer = nn.TransformerEncoderLayer(
            d, cfg.num_heads, int(d * cfg.mlp_ratio), dropout=0.0, activation="gelu", layer_norm_eps=1e-6, batch_first=True, norm_first=True
        ).eval()
        layer.self_attn.in_proj_weight.data.copy_(blk.attn.qkv.weight)
        layer.self_attn.in_proj_bias.data.copy_(blk.attn.qkv.bias)
        layer.self_attn.out_proj.weight.data.copy_(blk.attn.proj.weight)
        layer.self_attn.out_proj.bias.data.copy_(blk.attn.proj.bias)
        for ours, theirs in ((blk.norm1, layer.norm1), (blk.norm2, layer.norm2), (blk.mlp.fc1, layer.linear1), (blk.mlp.fc2, layer.linear2)):
            theirs.weight.data.copy_(ours.weight)
            theirs.bias.data.copy_(ours.bias)
        h = layer(h)
    if cfg.distilled:
        h = model.norm(h)
        return (model.head(h[:, 0]) + model.head_dist(h[:, 1])) / 2
    if cfg.global_pool == "avg":
        return model.head(model.fc_norm(h[:, cfg.prefix_tokens :].mean(1)))
    return model.head(model.norm(h)[:, 0])


@pytest.mark.parametrize(
    "changes",
    [{}, {"distilled": True}, {"global_pool": "avg", "fc_norm": True}, {"img_size": 96}],
    ids=["vit", "deit-distilled", "mae-finetune", "96px"],
)
def test_forward_equals_pytorch_transformer_layers(changes: dict) -> None:
    torch.manual_seed(0)
    model = create_model(MICRO, num_classes=7, **changes).eval()
    for p in model.parameters():  # no parameter left at an exact zero or one
        p.data.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(3, 3, model.config.img_size, model.config.img_size)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), _reference_forward(model, x).numpy(), rtol=1e-4, atol=1e-5)


# -- checkpoints ----------------------------------------------------------------------------------------
def _micro_state(**changes) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create_model(MICRO, **changes).state_dict()


def test_deit_file_layout_loads_and_round_trips(tmp_path: Path) -> None:
    """Facebook's DeiT releases: {'model': state_dict} in timm's key names."""
    state = _micro_state(num_classes=10)
    torch.save({"model": state, "epoch": 300}, tmp_path / "deit.pth")
    r = build_checkpoint(MICRO, tmp_path / "m.pt", weights=tmp_path / "deit.pth", num_classes=10)
    assert r["config"]["family"] == "vit" and r["config"]["num_classes"] == 10
    model, info = load_model(tmp_path / "m.pt")
    assert isinstance(model, VisionTransformer) and info["model"] == MICRO
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mae_pretraining_file_needs_a_new_head(tmp_path: Path) -> None:
    """MAE pretraining: encoder + decoder + mask token, no head."""
    state = {k: v for k, v in _micro_state().items() if not k.startswith("head.")}
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64), "decoder_pred.bias": torch.zeros(192)})
    torch.save({"model": state}, tmp_path / "mae.pth")
    with pytest.raises(SwinedgeError, match="no classifier head .*--adapt and --num-classes"):
        build_checkpoint(MICRO, tmp_path / "x.pt", weights=tmp_path / "mae.pth", num_classes=5)
    r = build_checkpoint(MICRO, tmp_path / "m.pt", weights=tmp_path / "mae.pth", num_classes=5, adapt=True)
    model, _ = load_model(tmp_path / "m.pt")
    assert r["config"]["num_classes"] == 5 and model.head.weight.shape == (5, 64)
    assert torch.equal(model.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])


def test_mae_finetuned_layout_pools_by_average_with_fc_norm(tmp_path: Path) -> None:
    state = _micro_state(global_pool="avg", fc_norm=True)
    assert "fc_norm.weight" in state and "norm.weight" not in state
    torch.save({"model": state}, tmp_path / "mae_ft.pth")
    model = create_model(MICRO, global_pool="avg", fc_norm=True)
    load_weights(model, tmp_path / "mae_ft.pth")
    with pytest.raises(SwinedgeError, match="unexpected .*fc_norm"):
        load_weights(create_model(MICRO), tmp_path / "mae_ft.pth")  # a token-pooling model is not this layout


def test_position_embedding_resampled_only_with_adapt(tmp_path: Path) -> None:
    torch.save(_micro_state(), tmp_path / "w64.pth")
    with pytest.raises(SwinedgeError, match="pos_embed.*pass --adapt"):
        build_checkpoint(MICRO, tmp_path / "x.pt", weights=tmp_path / "w64.pth", img_size=96)
    r = build_checkpoint(MICRO, tmp_path / "m96.pt", weights=tmp_path / "w64.pth", img_size=96, adapt=True)
    model, _ = load_model(tmp_path / "m96.pt")
    assert r["config"]["img_size"] == 96 and model.pos_embed.shape == (1, 1 + 12 * 12, 64)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 96, 96))).all()


def test_another_familys_weights_are_one_line_errors(tmp_path: Path) -> None:
    torch.save(create_model("swin_micro_patch4_window4_64").state_dict(), tmp_path / "swin.pth")
    torch.save(_micro_state(), tmp_path / "vit.pth")
    r = runner.invoke(app, ["build", MICRO, "--weights", str(tmp_path / "swin.pth"), "--out", str(tmp_path / "a.pt")])
    assert "holds Swin weights, not ViT" in one_line_error(r)
    r = runner.invoke(app, ["build", "swin_micro_patch4_window4_64", "--weights", str(tmp_path / "vit.pth"), "--out", str(tmp_path / "b.pt")])
    assert "holds ViT weights, not Swin" in one_line_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swin.pth", "vit.pth"]


def test_config_of_a_vit_checkpoint_is_validated(tmp_path: Path) -> None:
    with pytest.raises(SwinedgeError, match="global_pool must be one of"):
        ViTConfig(global_pool="max").validate()
    with pytest.raises(SwinedgeError, match="not divisible by 5 heads"):
        ViTConfig(embed_dim=64, num_heads=5).validate()


# -- the flow -------------------------------------------------------------------------------------------
def test_export_quantize_verify_through_the_cli(tmp_path: Path) -> None:
    r = runner.invoke(app, ["export", MICRO, "--out", str(tmp_path / "v.onnx")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "v.onnx.json").read_text())
    assert manifest["config"]["family"] == "vit" and manifest["parity"]["max_abs_err"] < 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "v.onnx")).graph.node}
    assert "Shape" not in ops and {"MatMul", "Softmax"} <= ops  # TensorRT's MHA pattern, static shapes
    r = runner.invoke(app, ["export", MICRO, "--attention", "plugin", "--out", str(tmp_path / "p.onnx")])
    assert "its attention is global, not windowed" in one_line_error(r)
    r = runner.invoke(app, ["quantize", str(tmp_path / "v.onnx"), "--calib-size", "8", "--high-precision-dtype", "fp32", "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["verify", MICRO, str(tmp_path / "q.onnx"), "--size", "16", "--json"])
    report = json.loads(r.stdout)
    assert report["passed"] and report["cosine_mean"] > 0.999


def test_engine_build_keeps_vit_attention_native() -> None:
    from swinedge.engine import plugin_graph

    graph, count, why = plugin_graph(None, {"config": create_model(MICRO).config.to_dict()})
    assert graph is None and count == 0 and "global, not windowed" in why


@pytest.mark.slow
def test_run_with_a_vit_name(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", MICRO, "--calib-size", "8", "--iters", "1", "--batch", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "report.json").read_text())
    assert summary["model"] == MICRO and all(a["passed"] for a in summary["accuracy"])


@pytest.mark.timm
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_base_distilled_patch16_224"])
def test_logits_equal_timm(name: str) -> None:
    import timm

    torch.manual_seed(0)
    theirs = timm.create_model(name.replace("_mae", ""), pretrained=False).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name,resize,mean,std",
    [
        # timm 1.0.31's default tags: AugReg ViT (mean = std = 0.5, crop 0.9; 384: no crop),
        # DeiT and MAE (ImageNet statistics, crop 0.9), Swin V2 (crop 0.9; 384: none);
        # Swin V1 keeps Microsoft's eval transform (256 for 224, crop 0.875).
        ("vit_tiny_patch16_224", 248, [0.5] * 3, [0.5] * 3),
        ("vit_base_patch16_384", 384, [0.5] * 3, [0.5] * 3),
        ("deit_base_distilled_patch16_224", 248, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ("vit_base_patch16_224_mae", 248, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ("swinv2_tiny_window8_256", 284, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ("swinv2_base_window12to24_192to384", 384, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ("swin_tiny_patch4_window7_224", 256, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ],
)
def test_each_variant_carries_the_preprocessing_of_its_weights(name: str, resize: int, mean: list, std: list) -> None:
    from swinedge.export import preprocess_spec
    from swinedge.models.checkpoint import get_spec
    from swinedge.runners.torch_runner import TorchRunner

    img = get_spec(name).config.img_size
    spec = preprocess_spec(img, name)
    assert (spec["resize"], spec["crop"], spec["mean"], spec["std"]) == (resize, img, mean, std)
    if img <= 224 and "base" not in name:  # the runner reports it too (what verify reads images with)
        with TorchRunner(name) as runner:
            assert runner.input_spec["preprocess"] == spec


def test_augreg_vit_export_records_its_preprocessing(tmp_path) -> None:
    r = runner.invoke(app, ["export", "vit_tiny_patch16_224", "--out", str(tmp_path / "v.onnx")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "v.onnx.json").read_text())
    assert manifest["preprocess"]["mean"] == [0.5, 0.5, 0.5] and manifest["preprocess"]["resize"] == 248
