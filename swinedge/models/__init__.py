"""Model zoo (Swin V1 in swin.py, Swin V2 in swin_v2.py; ViT, DeiT and MAE encoders in
vit.py) and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from swinedge.errors import SwinedgeError
from swinedge.io import refuse_output_over_input
from swinedge.manifest import artifact_with_manifest, manifest_path
from swinedge.models import swin_v2, vit
from swinedge.models.backbone import BackboneConfig, SwinBackbone, detect_layout, format_size, parse_size
from swinedge.models.checkpoint import (
    checkpoint_filter_fn,
    config_from_dict,
    get_spec,
    is_official_layout,
    load_model,
    load_weights,
    model_from_config,
    read_checkpoint,
    save_checkpoint,
)
from swinedge.models.swin import MODEL_SPECS, SwinConfig, SwinTransformer, count_macs
from swinedge.models.swin import create_model as create_swin
from swinedge.models.swin_v2 import SWINV2_SPECS, SwinTransformerV2, SwinV2Config
from swinedge.models.vit import VIT_SPECS, ViTConfig, VisionTransformer

__all__ = [
    "BackboneConfig",
    "SwinBackbone",
    "build_backbone_checkpoint",
    "MODEL_SPECS",
    "SWINV2_SPECS",
    "SwinConfig",
    "SwinTransformer",
    "SwinTransformerV2",
    "SwinV2Config",
    "VIT_SPECS",
    "ViTConfig",
    "VisionTransformer",
    "build_checkpoint",
    "checkpoint_filter_fn",
    "config_from_dict",
    "count_macs",
    "create_model",
    "get_spec",
    "list_models",
    "load_model",
    "load_weights",
    "model_from_config",
    "read_checkpoint",
    "save_checkpoint",
]


def create_model(name: str, *, num_classes: int | None = None, img_size: int | None = None, in_chans: int | None = None, **overrides: Any) -> Any:
    """Build a variant of any family by name, with optional config overrides (random init)."""
    if name in VIT_SPECS:
        return vit.create_vit(name, num_classes=num_classes, img_size=img_size, in_chans=in_chans, **overrides)
    if name in SWINV2_SPECS:
        return swin_v2.create_swinv2(name, num_classes=num_classes, img_size=img_size, in_chans=in_chans, **overrides)
    return create_swin(name, num_classes=num_classes, img_size=img_size, in_chans=in_chans, **overrides)


def list_models() -> list[dict[str, Any]]:
    """One row per variant: family, name, params, GFLOPs (MACs / 1e9) at its own resolution."""
    rows = []
    for spec in [*MODEL_SPECS.values(), *SWINV2_SPECS.values(), *VIT_SPECS.values()]:
        cfg = spec.config
        is_vit = isinstance(cfg, ViTConfig)
        family = "vit" if is_vit else "swinv2" if isinstance(cfg, SwinV2Config) else "swin"
        with torch.device("meta"):
            params = model_from_config(cfg).num_params()
        rows.append(
            {
                "family": family,
                "name": spec.name,
                "description": spec.description,
                "params": params,
                "gflops": (vit.count_macs(cfg) if is_vit else count_macs(cfg)) / 1e9,
                "img_size": cfg.img_size,
                "patch_size": cfg.patch_size,
                "window_size": None if is_vit else cfg.window_size,
                "num_classes": cfg.num_classes,
            }
        )
    return rows


def _check_build_args(out: str | Path, weights: str | Path | None, seed: int) -> Path:
    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".safetensors"):
        raise SwinedgeError(f"--out {out}: use a .pt, .pth or .safetensors file name")
    refuse_output_over_input(out, weights)
    if not 0 <= seed < 2**63:
        raise SwinedgeError(f"--seed must be 0..2^63-1, got {seed}")
    return out


def build_checkpoint(
    model: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    adapt: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Build a variant, load weights if given, write a checkpoint + manifest; return a summary."""
    out = _check_build_args(out, weights, seed)
    spec = get_spec(model)
    torch.manual_seed(seed)
    net = create_model(spec.name, num_classes=num_classes, img_size=img_size)
    source = None
    if weights is not None:
        raw = load_weights(net, weights, adapt=adapt)
        source = {"file": raw.path.name, "sha256": raw.sha256, "layout": "official" if is_official_layout(raw.state_dict) else "timm"}
    with artifact_with_manifest("checkpoint", out) as pending:
        save_checkpoint(net, out, name=spec.name, source=source, into=pending.path)
        pending.fields.update(model=spec.name, config=net.config.to_dict(), source=source, params=net.num_params())
    manifest = pending.manifest
    return {
        "checkpoint": str(out),
        "manifest": str(manifest_path(out)),
        "model": spec.name,
        "params": manifest["params"],
        "config": manifest["config"],
        "source": source,
    }



def _stage_indices(text: str | None, stages: int) -> tuple[int, ...]:
    if text is None or str(text).strip().lower() == "all":
        return tuple(range(stages))
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() for p in parts):
        raise SwinedgeError(f"--stages '{text}': give stage numbers 0..{stages - 1}, comma-separated, e.g. 0,1,2,3")
    idx = sorted(set(int(p) for p in parts))
    if idx[-1] >= stages:
        raise SwinedgeError(f"--stages '{text}': the model has stages 0..{stages - 1}")
    return tuple(idx)


def build_backbone_checkpoint(
    model: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    size: str | tuple[int, int] = (800, 1333),
    stages: str | None = None,
    stage_norms: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """A Swin V1/V2 variant as a backbone (stage maps at ``size``), weights from a
    detector/segmentor, a timm ``features_only`` model or a classifier; checkpoint +
    manifest. ``stage_norms`` None: on when the weights carry per-stage norms."""
    out = _check_build_args(out, weights, seed)
    spec = get_spec(model)
    if not isinstance(spec.config, SwinConfig):
        raise SwinedgeError(f"{spec.name} is a ViT: --features builds Swin V1/V2 backbones only (multi-scale stages)")
    input_size = parse_size(size) if isinstance(size, str) else tuple(size)
    out_indices = _stage_indices(stages, len(spec.config.depths))
    detection = False  # weights trained in mmdet / Microsoft's detection code
    if weights is not None:
        raw_state = read_checkpoint(weights)
        inner = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in raw_state.state_dict.items()}
        detection = detect_layout(inner) in ("mmdet", "official-detection")
        if stage_norms is None:
            stage_norms = detection
    pad_first = detection and not isinstance(spec.config, SwinV2Config)
    cfg = BackboneConfig(spec.config, input_size, out_indices, bool(stage_norms), pad_first)
    torch.manual_seed(seed)
    net = SwinBackbone(cfg)
    source = None
    if weights is not None:
        raw = load_weights(net, weights)
        source = {
            "file": raw.path.name,
            "sha256": raw.sha256,
            "layout": raw.meta["layout"],
            "dropped": raw.meta["dropped"],
            "resized_tables": raw.meta["resized_tables"],
        }
    with artifact_with_manifest("checkpoint", out) as pending:
        save_checkpoint(net, out, name=spec.name, source=source, into=pending.path)
        pending.fields.update(model=spec.name, task="backbone", config=cfg.to_dict(), source=source, params=net.num_params())
    manifest = pending.manifest
    return {
        "checkpoint": str(out),
        "manifest": str(manifest_path(out)),
        "model": spec.name,
        "task": "backbone",
        "params": manifest["params"],
        "config": manifest["config"],
        "stages": [{"name": n, "channels": c, "height": h, "width": w} for n, (c, h, w) in zip(cfg.output_names(), cfg.stage_shapes())],
        "source": source,
        "input_size": format_size(input_size),
    }
