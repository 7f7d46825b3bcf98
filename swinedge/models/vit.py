"""Vision Transformer encoders: ViT, DeiT (plain and distilled) and MAE-pretrained ViT.

Weight-compatible with timm's ``VisionTransformer`` (same parameter names and shapes),
so timm checkpoints load as they are; :func:`checkpoint_filter_fn` turns Facebook's DeiT
and MAE files into this layout. Attention is global (every token sees every token), so
there is no windowed plugin: TensorRT runs its own attention path on the exported graph.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinedge.errors import SwinedgeError
from swinedge.models.swin import Mlp, check_config_numbers

MAX_IMG_SIZE = 4096
MAX_CLASSES = 100_000
GLOBAL_POOLS = ("token", "avg")


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of one ViT variant. Plain data: it is saved in checkpoints."""

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    global_pool: str = "token"  # "token": the class token; "avg": mean of the patch tokens (MAE fine-tuning)
    fc_norm: bool = False  # a LayerNorm after pooling instead of before it (MAE fine-tuning)
    distilled: bool = False  # DeiT's distillation token and second head, averaged at inference
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    family: str = "vit"

    def validate(self) -> None:
        check_config_numbers(self, ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads"))
        if min(self.patch_size, self.in_chans, self.embed_dim, self.depth, self.num_heads) < 1 or self.mlp_ratio <= 0:
            raise SwinedgeError("model config patch_size, in_chans, embed_dim, depth, num_heads and mlp_ratio must be positive")
        if self.img_size > MAX_IMG_SIZE:
            raise SwinedgeError(f"img_size {self.img_size} is larger than {MAX_IMG_SIZE}: ViT classifiers run at 224 or 384")
        if self.img_size < self.patch_size or self.img_size % self.patch_size:
            raise SwinedgeError(f"unsupported img_size {self.img_size}: use a multiple of the patch size {self.patch_size}")
        if not 0 <= self.num_classes <= MAX_CLASSES:
            raise SwinedgeError(f"num_classes must be 0..{MAX_CLASSES:,}, got {self.num_classes}")
        if self.embed_dim % self.num_heads:
            raise SwinedgeError(f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        if self.embed_dim > 16_384 or self.depth > 256:
            raise SwinedgeError(f"model config is absurdly large (embed_dim {self.embed_dim}, depth {self.depth})")
        if self.global_pool not in GLOBAL_POOLS:
            raise SwinedgeError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {self.global_pool!r}")
        if self.distilled and self.global_pool != "token":
            raise SwinedgeError("a distilled (DeiT) model pools its class and distillation tokens: global_pool must be 'token'")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViTConfig":
        if not isinstance(d, dict):
            raise SwinedgeError(f"model config must be a mapping, got {type(d).__name__}: the file was written by another tool")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SwinedgeError(f"unknown model config keys {sorted(unknown)}: the file was written by another tool")
        return cls(**d)


@dataclass(frozen=True)
class ViTSpec:
    name: str
    config: ViTConfig
    description: str = ""
    # The eval transform of the weights timm serves under this name, where it differs
    # from ImageNet's mean/std with a 0.875 crop (see swinedge.export.preprocess_spec).
    eval_transform: dict[str, Any] = field(default_factory=dict)


def _spec(name: str, desc: str, transform: dict[str, Any] | None = None, **kw: Any) -> ViTSpec:
    return ViTSpec(name, ViTConfig(**kw), desc, dict(transform or {}))


# timm's default tags: AugReg ViTs were trained on [-1, 1] inputs (mean = std = 0.5);
# DeiT and MAE use ImageNet's mean/std; all crop 0.9 at 224 and nothing at 384.
_AUGREG = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 0.9}
_AUGREG_384 = {**_AUGREG, "crop_pct": 1.0}
_IMAGENET_09 = {"crop_pct": 0.9}


_TINY = dict(embed_dim=192, num_heads=3)
_SMALL = dict(embed_dim=384, num_heads=6)
_LARGE = dict(embed_dim=1024, depth=24, num_heads=16)

# Variants by timm's names (its default pretrained tags: ViT augreg, DeiT, MAE fine-tuned).
VIT_SPECS: dict[str, ViTSpec] = {
    s.name: s
    for s in [
        _spec("vit_tiny_patch16_224", "ViT-Ti/16", _AUGREG, **_TINY),
        _spec("vit_small_patch16_224", "ViT-S/16", _AUGREG, **_SMALL),
        _spec("vit_base_patch16_224", "ViT-B/16", _AUGREG),
        _spec("vit_large_patch16_224", "ViT-L/16", _AUGREG, **_LARGE),
        _spec("vit_base_patch16_384", "ViT-B/16 384", _AUGREG_384, img_size=384),
        _spec("deit_tiny_patch16_224", "DeiT-Ti", _IMAGENET_09, **_TINY),
        _spec("deit_small_patch16_224", "DeiT-S", _IMAGENET_09, **_SMALL),
        _spec("deit_base_patch16_224", "DeiT-B", _IMAGENET_09),
        _spec("deit_base_distilled_patch16_224", "DeiT-B distilled (heads averaged)", _IMAGENET_09, distilled=True),
        _spec("vit_base_patch16_224_mae", "ViT-B/16, MAE fine-tuning layout (average pool + fc_norm)", _IMAGENET_09, global_pool="avg", fc_norm=True),
        # Tests and the digits task: two of each block, small enough for a CPU.
        _spec("vit_micro_patch8_64", "ViT micro (tests)", img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2),
        _spec("vit_nano_patch4_32", "ViT nano (digits)", img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, num_classes=10),
    ]
}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool, tokens: int) -> None:
        super().__init__()
        self.heads, self.tokens, self.dim = heads, tokens, dim
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes from the config (batch as -1): the exported graph has no Shape ops.
        n, c, hd = self.tokens, self.dim, self.dim // self.heads
        q, k, v = self.qkv(x).reshape(-1, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        # Written out (not SDPA) so the ONNX graph holds MatMul-Softmax-MatMul, the pattern
        # TensorRT fuses into its own MHA kernel and modelopt recognizes.
        attn = (q * hd**-0.5) @ k.transpose(-2, -1)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, n, c))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.prefix_tokens + cfg.grid**2)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.shape = (-1, cfg.embed_dim, cfg.grid**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).reshape(self.shape).transpose(1, 2)  # [B, N, D]


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer`` (and ``VisionTransformerDistilled``) at inference."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if config.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, config.prefix_tokens + config.grid**2, d))
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.depth)])
        use_fc_norm = config.fc_norm
        self.norm = nn.LayerNorm(d, eps=1e-6) if not use_fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(d, eps=1e-6) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(d, config.num_classes) if config.num_classes > 0 else nn.Identity()
        if config.distilled:
            self.head_dist = nn.Linear(d, config.num_classes) if config.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # cat([cls, dist, patches]) + pos, written as zero rows for the prefix tokens plus
        # an embedding whose prefix rows hold the tokens: the same sum, and no batch-sized
        # Expand (so no Shape ops) in the exported graph.
        x = F.pad(self.patch_embed(x), (0, 0, self.config.prefix_tokens, 0))
        tokens = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        added = self.pos_embed + F.pad(torch.cat(tokens, dim=1), (0, 0, 0, self.config.grid**2))
        return self.norm(self.blocks(x + added))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.distilled:  # timm at inference: the mean of the two heads
            return (self.head(self.head_drop(x[:, 0])) + self.head_dist(self.head_drop(x[:, 1]))) / 2
        pooled = x[:, self.config.prefix_tokens :].mean(dim=1) if self.config.global_pool == "avg" else x[:, 0]
        return self.head(self.head_drop(self.fc_norm(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self) -> int:
        return count_macs(self.config)


def count_macs(cfg: ViTConfig) -> int:
    """Analytic multiply-accumulates of one image's forward pass."""
    n = cfg.prefix_tokens + cfg.grid**2
    d = cfg.embed_dim
    hidden = int(d * cfg.mlp_ratio)
    macs = cfg.grid**2 * d * cfg.in_chans * cfg.patch_size**2  # patch embedding
    per_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * hidden + 2 * n * d  # qkv, attention, proj, mlp, norms
    macs += cfg.depth * per_block + n * d  # final norm
    macs += d * cfg.num_classes * (2 if cfg.distilled else 1)
    return macs


def get_vit_spec(name: str) -> ViTSpec | None:
    return VIT_SPECS.get(name)


def create_vit(name: str, **changes: Any) -> VisionTransformer:
    spec = VIT_SPECS[name]
    return VisionTransformer(replace(spec.config, **{k: v for k, v in changes.items() if v is not None}))


# -- checkpoints --------------------------------------------------------------------------------------

# MAE pretraining checkpoints carry the decoder that reconstructs masked patches.
_MAE_DECODER_PREFIXES = ("decoder_", "mask_token")


def is_vit_state_dict(state: dict[str, torch.Tensor]) -> bool:
    return "cls_token" in state and any(k.startswith("blocks.0.attn.qkv") for k in state)


def checkpoint_filter_fn(state: dict[str, torch.Tensor], model: VisionTransformer, *, adapt: bool = False) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Facebook's DeiT / MAE layouts (and timm's) -> this model's state dict, and notes on
    what was dropped or changed. timm and DeiT share the layout; MAE pretraining files add
    a decoder and a mask token (dropped, counted) and have no head; MAE fine-tuned files
    pool by average with ``fc_norm``. With ``adapt``, the position embedding is resampled
    to this model's grid (bicubic, as timm does)."""
    notes: list[str] = []
    dropped = [k for k in state if k.startswith(_MAE_DECODER_PREFIXES)]
    out = {k: v for k, v in state.items() if k not in dropped}
    if dropped:
        notes.append(f"dropped the MAE decoder ({len(dropped)} tensors)")
    pos = out.get("pos_embed")
    want = model.pos_embed.shape
    if pos is not None and pos.shape != want and adapt:
        out["pos_embed"] = resample_pos_embed(pos, model.config.grid, model.config.prefix_tokens)
        notes.append(f"resampled the position embedding from {tuple(pos.shape)} to {tuple(want)}")
    return out, notes


def resample_pos_embed(pos: torch.Tensor, grid: int, prefix: int) -> torch.Tensor:
    """A ``[1, prefix + g*g, D]`` position embedding resampled to ``grid`` x ``grid``
    patches (the prefix tokens' rows kept as they are)."""
    n_old = pos.shape[1] - prefix
    g_old = int(round(math.sqrt(n_old)))
    if g_old * g_old != n_old:
        raise SwinedgeError(f"position embedding of {pos.shape[1]} tokens is not {prefix} prefix tokens + a square grid")
    d = pos.shape[2]
    patches = pos[:, prefix:].reshape(1, g_old, g_old, d).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)
    return torch.cat([pos[:, :prefix], patches], dim=1)
