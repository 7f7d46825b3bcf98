"""Swin Transformer V2: residual post-norm, scaled cosine attention and a continuous
log-spaced position bias (a small MLP, 16 * sigmoid).

Weight-compatible with timm's ``SwinTransformerV2`` (parameter names and shapes), so timm
checkpoints load as they are; :func:`checkpoint_filter_fn` turns Microsoft's layout into
this one. The attention core is V1's with cosine scores (``WindowGeometry.cosine``), so
the same fused kernel and plugin node serve it, given the per-head logit scale.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinedge.errors import SwinedgeError
from swinedge.models.swin import ClassifierHead, DropPath, Mlp, PatchEmbed, SwinConfig, WindowedTransformer, pad_to_even, pad_to_even_any_size
from swinedge.ops.window_attention import (
    WindowGeometry,
    relative_position_index,
    shift_mask,
    window_attention_any_size,
    window_attention_reference,
)

# The logit scale is clamped at log(1 / 0.01), as the paper and timm do.
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
CPB_HIDDEN = 512


@dataclass(frozen=True)
class SwinV2Config(SwinConfig):
    """A V1 config plus the window size each stage was pretrained at (0: its own)."""

    img_size: int = 256
    window_size: int = 8
    pretrained_window_sizes: tuple[int, ...] = (0, 0, 0, 0)
    family: str = "swinv2"

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = self.pretrained_window_sizes
        if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in sizes):
            raise SwinedgeError(f"model config pretrained_window_sizes must be a list of integers >= 0, got {sizes!r}")
        object.__setattr__(self, "pretrained_window_sizes", tuple(sizes))

    def validate(self) -> None:
        super().validate()
        if len(self.pretrained_window_sizes) != len(self.depths):
            raise SwinedgeError("pretrained_window_sizes needs one entry per stage")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["pretrained_window_sizes"] = list(self.pretrained_window_sizes)
        return d

    def stage_geometries(self, input_size: tuple[int, int] | None = None) -> list[list[WindowGeometry]]:
        """V1's window clamping and shifts, with cosine attention in every block."""
        return [[replace(g, cosine=True) for g in stage] for stage in super().stage_geometries(input_size)]


@dataclass(frozen=True)
class SwinV2Spec:
    name: str
    config: SwinV2Config
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    # timm's eval transform for these weights: ImageNet mean/std, crop 0.9 (none at 384).
    eval_transform: dict[str, Any] = field(default_factory=dict)


def _spec(name: str, desc: str, **kw: Any) -> SwinV2Spec:
    config = SwinV2Config(**kw)
    transform = {} if name.startswith(("swinv2_nano", "swinv2_micro")) else {"crop_pct": 1.0 if config.img_size >= 384 else 0.9}
    return SwinV2Spec(name, config, desc, eval_transform=transform)


_S = dict(depths=(2, 2, 18, 2))
_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_FROM_12 = dict(pretrained_window_sizes=(12, 12, 12, 6))
_IN22K = dict(num_classes=21841)

# Variants by timm's names, at timm's default classes (the *_192 ones are ImageNet-22k).
SWINV2_SPECS: dict[str, SwinV2Spec] = {
    s.name: s
    for s in [
        _spec("swinv2_tiny_window8_256", "Swin-V2-T"),
        _spec("swinv2_tiny_window16_256", "Swin-V2-T, window 16", window_size=16),
        _spec("swinv2_small_window8_256", "Swin-V2-S", **_S),
        _spec("swinv2_small_window16_256", "Swin-V2-S, window 16", window_size=16, **_S),
        _spec("swinv2_base_window8_256", "Swin-V2-B", **_B),
        _spec("swinv2_base_window16_256", "Swin-V2-B, window 16", window_size=16, **_B),
        _spec("swinv2_base_window12_192", "Swin-V2-B 192, ImageNet-22k head", img_size=192, window_size=12, **_B, **_IN22K),
        _spec("swinv2_base_window12to16_192to256", "Swin-V2-B, window 12 -> 16", window_size=16, **_B, **_FROM_12),
        _spec("swinv2_base_window12to24_192to384", "Swin-V2-B 384, window 12 -> 24", img_size=384, window_size=24, **_B, **_FROM_12),
        _spec("swinv2_large_window12_192", "Swin-V2-L 192, ImageNet-22k head", img_size=192, window_size=12, **_L, **_IN22K),
        _spec("swinv2_large_window12to16_192to256", "Swin-V2-L, window 12 -> 16", window_size=16, **_L, **_FROM_12),
        _spec("swinv2_large_window12to24_192to384", "Swin-V2-L 384, window 12 -> 24", img_size=384, window_size=24, **_L, **_FROM_12),
        # Tests: shifted windows in every stage, small enough for a CPU.
        _spec("swinv2_nano_window4_32", "Swin-V2 digits task (32x32)", img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), pretrained_window_sizes=(0, 0), num_classes=10),
        _spec("swinv2_micro_window4_64", "Swin-V2 micro (tests)", img_size=64, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), pretrained_window_sizes=(0, 0)),
    ]
}


def relative_coords_table(window: int, pretrained_window: int) -> torch.Tensor:
    """``[(2w-1)^2, 2]`` log-spaced relative coordinates, the position-bias MLP's input:
    offsets scaled to [-8, 8] by the (pretrained) window, then sign * log2(1 + |x|) / 3."""
    span = (pretrained_window if pretrained_window > 0 else window) - 1
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)
    if span > 0:
        table = table / span
    table = table * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.reshape(-1, 2)


class WindowAttentionV2(nn.Module):
    """qkv (q and v biases) -> cosine window attention with a clamped per-head logit
    scale and the MLP's 16 * sigmoid bias -> proj, in natural token order."""

    def __init__(self, geometry: WindowGeometry, pretrained_window: int) -> None:
        super().__init__()
        g = replace(geometry, cosine=True)
        self.geometry = g
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(g.num_heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, CPB_HIDDEN, bias=True), nn.ReLU(inplace=True), nn.Linear(CPB_HIDDEN, g.num_heads, bias=False))
        self.qkv = nn.Linear(g.dim, 3 * g.dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(g.dim))
        self.v_bias = nn.Parameter(torch.zeros(g.dim))
        self.proj = nn.Linear(g.dim, g.dim)
        mask = shift_mask(g)
        # Derived from geometry: not persistent (as in timm), so never in checkpoints.
        self.register_buffer("k_bias", torch.zeros(g.dim), persistent=False)
        self.register_buffer("relative_coords_table", relative_coords_table(g.window, pretrained_window), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(g.window).reshape(-1), persistent=False)
        self.register_buffer("attn_mask", mask if mask is not None else torch.zeros(0), persistent=False)
        self.impl = "reference"
        self._cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def constants(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-head logit scale ``[heads]``, bias ``[heads, N, N]``, the fused kernel's
        score table): functions of the weights alone. In eval they are computed once per
        weights and device, so an export (which warms them first) writes them as
        constants: no position-bias MLP or logit-scale op is left in the graph for a
        quantizer to touch. The table is None in training."""
        from swinedge.ops.attention_table import attention_table

        params = (self.logit_scale, *self.cpb_mlp.parameters())
        key = tuple((p.device, p.data_ptr(), p._version) for p in params)
        if self.training or self._cache is None or self._cache[0] != key:
            scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp().reshape(-1)
            bias = self.bias()
            if self.training:  # the fused op has no gradient: no table to train through
                return scale, bias, None
            with torch.no_grad():
                self._cache = (key, (scale.detach(), bias.detach(), attention_table(bias.detach(), self.geometry)))
        return self._cache[1]

    def score_table(self) -> torch.Tensor:
        """The fused kernel's table (bias and shift mask per window-edge pattern)."""
        return self.constants()[2]

    def bias(self) -> torch.Tensor:
        """``[heads, N, N]``: the position-bias MLP at every offset, 16 * sigmoid."""
        g = self.geometry
        n = g.tokens_per_window
        table = self.cpb_mlp(self.relative_coords_table)  # [(2w-1)^2, heads]
        bias = table[self.relative_position_index].reshape(n, n, g.num_heads).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        qkv_bias = torch.cat([self.q_bias, self.k_bias, self.v_bias])
        # Through the Linear module (bias added after), so module-level quantizers (QAT)
        # see the projection as they see every other Linear.
        qkv = self.qkv(x) + qkv_bias
        scale, bias, table = self.constants()
        # Padded tokens get the qkv bias, as timm pads x with zeros before the projection.
        if x.dim() == 4:  # [B, H, W, C] at any size (graphs serving several sizes)
            if self.impl == "fused":
                from swinedge.ops.fused import window_attention_fused_any_size

                out = window_attention_fused_any_size(qkv, table, qkv_bias, g, logit_scale=scale)
            else:
                from swinedge.ops.attention_table import pattern_scores

                out = window_attention_any_size(
                    qkv, pattern_scores(bias, g), qkv_bias, g.window, g.shift, g.num_heads, cosine=True, logit_scale=scale
                )
            return self.proj(out)
        if self.impl == "fused":
            from swinedge.ops.fused import window_attention_fused

            out = window_attention_fused(qkv, table, qkv_bias, g, logit_scale=scale)
        else:
            mask = self.attn_mask if g.shift else None
            out = window_attention_reference(qkv, bias, qkv_bias, g, mask, logit_scale=scale)
        return self.proj(out)


class SwinV2Block(nn.Module):
    """Residual post-norm: x + norm(attn(x)), then x + norm(mlp(x))."""

    def __init__(self, geometry: WindowGeometry, pretrained_window: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        dim = geometry.dim
        self.attn = WindowAttentionV2(geometry, pretrained_window)
        self.any_size = False  # True: [B, H, W, C] at any size (graphs serving several sizes)
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path1 = DropPath(drop_path)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.any_size:  # [B, H, W, C] throughout: attention reads the size from x
            x = x + self.drop_path1(self.norm1(self.attn(x)))
            return x + self.drop_path2(self.norm2(self.mlp(x)))
        g = self.attn.geometry
        x = x.reshape(-1, g.height * g.width, g.dim)
        x = x + self.drop_path1(self.norm1(self.attn(x)))
        x = x + self.drop_path2(self.norm2(self.mlp(x)))
        return x.reshape(-1, g.height, g.width, g.dim)


class PatchMergingV2(nn.Module):
    """2x2 neighbour concat -> Linear -> LayerNorm (V2 normalizes after reducing)."""

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.dim, self.resolution = dim, resolution
        self.any_size = False  # True: the size is read from x (graphs serving several sizes)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = pad_to_even_any_size(x) if self.any_size else pad_to_even(x, *self.resolution)
        x = x.reshape(-1, h // 2, 2, w // 2, 2, self.dim).permute(0, 1, 3, 4, 2, 5).reshape(-1, h // 2, w // 2, 4 * self.dim)
        return self.norm(self.reduction(x))


class SwinV2Stage(nn.Module):
    def __init__(self, in_dim: int, in_res: tuple[int, int], geometries: list[WindowGeometry], downsample: bool, pretrained_window: int, mlp_ratio: float, drop_paths: list[float]) -> None:
        super().__init__()
        self.downsample = PatchMergingV2(in_dim, geometries[0].dim, in_res) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[SwinV2Block(g, pretrained_window, mlp_ratio, dp) for g, dp in zip(geometries, drop_paths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformerV2(WindowedTransformer):
    attention_module = WindowAttentionV2

    def __init__(self, config: SwinV2Config, input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        geoms = config.stage_geometries(input_size)
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        in_dim, in_res = config.embed_dim, (geoms[0][0].height, geoms[0][0].width)
        for i, stage_geoms in enumerate(geoms):
            depth = len(stage_geoms)
            stages.append(SwinV2Stage(in_dim, in_res, stage_geoms, i > 0, config.pretrained_window_sizes[i], config.mlp_ratio, rates[start : start + depth]))
            start += depth
            in_dim, in_res = stage_geoms[0].dim, (stage_geoms[0].height, stage_geoms[0].width)
        self.layers = nn.Sequential(*stages)
        self.num_features = in_dim
        self.norm = nn.LayerNorm(in_dim)
        self.head = ClassifierHead(in_dim, config.num_classes, config.drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def create_swinv2(name: str, **changes: Any) -> SwinTransformerV2:
    return SwinTransformerV2(replace(SWINV2_SPECS[name].config, **{k: v for k, v in changes.items() if v is not None}))


# -- checkpoints --------------------------------------------------------------------------------------

# Buffers Microsoft's checkpoints carry that are derived from geometry.
_DERIVED = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


def is_swinv2_state_dict(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith("attn.logit_scale") for k in state)


def checkpoint_filter_fn(state: dict[str, torch.Tensor], model: SwinTransformerV2, *, adapt: bool = False) -> dict[str, torch.Tensor]:
    """timm or Microsoft layout -> this model's. Microsoft's puts each stage's downsample
    at its end (timm: at the start of the next) and names the classifier ``head``; its
    derived buffers are dropped. The position bias is a function of the offset, so a
    model of another window needs no resizing: its MLP is evaluated at the new offsets.
    With ``adapt``, a head of another class count is replaced by the model's own."""
    microsoft = "head.weight" in state or any(re.match(r"layers\.0\.downsample\.", k) for k in state)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.rsplit(".", 1)[-1] in _DERIVED:
            continue
        if microsoft:
            k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
            if k.startswith("head.") and not k.startswith("head.fc."):
                k = "head.fc." + k[len("head.") :]
        if adapt and k.startswith("head.fc.") and k in target and v.shape != target[k].shape:
            v = target[k]
        out[k] = v
    return out
