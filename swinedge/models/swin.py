"""Swin Transformer V1, deployment-first.

Weight-compatible with timm (``swin_*_patch4_window*``) and the official Microsoft
checkpoints. Layout and semantics follow timm: NHWC activations, downsampling at the
start of stages 1..3, windows clamped to the feature map when it is smaller than the
window (and then no shift), zero padding to a window multiple inside attention and
padding of odd sizes in patch merging.

The shifted-window attention *core* is one swappable op (see
:mod:`swinedge.ops.window_attention`): the block computes the qkv projection in
natural token order, hands it to the core, and projects the result. Backends
(reference torch, fused Triton kernel, TensorRT plugin) replace the core only.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinedge.errors import SwinedgeError
from swinedge.ops.window_attention import (
    WindowGeometry,
    relative_position_bias,
    relative_position_index,
    shift_mask,
    window_attention_any_size,
    window_attention_reference,
)

ATTENTION_IMPLS = ("reference", "fused")
# A square input larger than this is a typo, not a model: 4096^2 tokens at patch 4 is
# already 1M tokens per image in stage 1.
MAX_IMG_SIZE = 4096
MAX_CLASSES = 100_000
MAX_WIDTH = 16_384  # channels of the last stage (Swin-L: 1536)
MAX_DEPTH = 256  # blocks (Swin-L: 24)


def check_config_numbers(cfg: Any, ints: tuple[str, ...], floats: tuple[str, ...] = ("mlp_ratio", "drop_rate", "drop_path_rate")) -> None:
    """A saved config's numbers are numbers: integers where counted, finite floats."""
    for name in ints:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SwinedgeError(f"model config {name} must be an integer, got {value!r}")
    for name in floats:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SwinedgeError(f"model config {name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class SwinConfig:
    """Architecture of one Swin variant. Plain data: it is saved in checkpoints."""

    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("depths", "num_heads"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise SwinedgeError(f"model config {name} must be a list of integers, got {values!r}")
            object.__setattr__(self, name, tuple(values))

    def validate(self) -> None:
        """Raise :class:`SwinedgeError` for a configuration the model cannot build."""
        check_config_numbers(self, ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "window_size"))
        if self.embed_dim < 1 or self.patch_size < 1 or self.mlp_ratio <= 0 or min(self.depths, default=0) < 1 or min(self.num_heads, default=0) < 1:
            raise SwinedgeError("model config embed_dim, patch_size, mlp_ratio, depths and num_heads must be positive")
        if self.embed_dim * 2 ** (len(self.depths) - 1) > MAX_WIDTH or sum(self.depths) > MAX_DEPTH:
            raise SwinedgeError(f"model config is absurdly large (embed_dim {self.embed_dim}, depths {list(self.depths)})")
        if self.num_classes > MAX_CLASSES:
            raise SwinedgeError(f"num_classes {self.num_classes} is larger than {MAX_CLASSES:,}: ImageNet-22k has 21,841")
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise SwinedgeError("depths and num_heads must have the same, non-zero length")
        min_size = self.patch_size * 2 ** (len(self.depths) - 1)
        if self.img_size > MAX_IMG_SIZE:
            raise SwinedgeError(f"img_size {self.img_size} is larger than {MAX_IMG_SIZE}: Swin classifiers run at 224 or 384")
        if self.img_size < min_size or self.img_size % self.patch_size:
            raise SwinedgeError(
                f"unsupported img_size {self.img_size}: use a multiple of {self.patch_size} "
                f"(patch size) of at least {min_size}; multiples of 32 need no padding"
            )
        if self.num_classes < 0:
            raise SwinedgeError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.in_chans < 1:
            raise SwinedgeError(f"in_chans must be >= 1, got {self.in_chans}")
        if self.window_size < 1:
            raise SwinedgeError(f"window_size must be >= 1, got {self.window_size}")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise SwinedgeError(f"stage {i}: dim {self.embed_dim * 2**i} is not divisible by {heads} heads")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depths"] = list(self.depths)
        d["num_heads"] = list(self.num_heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SwinConfig":
        if not isinstance(d, dict):
            raise SwinedgeError(f"model config must be a mapping, got {type(d).__name__}: the file was written by another tool")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise SwinedgeError(f"unknown model config keys {sorted(unknown)}: the file was written by another tool")
        return cls(**d)

    def stage_geometries(self, input_size: tuple[int, int] | None = None) -> list[list[WindowGeometry]]:
        """Attention geometry of every block, stage by stage (timm's window clamping).

        ``input_size`` (height, width) is a backbone's input, padded at the bottom/right to
        the patch multiple; default the square ``img_size``. A stage whose feature map is
        no larger than the window in both directions and square gets one clamped window
        and no shift (timm, official); one smaller than the window in one direction only
        would need a per-axis window, which the fused kernel does not take: refused.
        """
        height, width = input_size or (self.img_size, self.img_size)
        res_h, res_w = -(-height // self.patch_size), -(-width // self.patch_size)
        out = []
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            if i > 0:
                res_h, res_w = (res_h + 1) // 2, (res_w + 1) // 2
            dim = self.embed_dim * 2**i
            shifted = min(res_h, res_w) > self.window_size
            if not shifted and res_h != res_w:
                raise SwinedgeError(
                    f"input {height}x{width}: stage {i} is {res_h}x{res_w} tokens, smaller than the window "
                    f"({self.window_size}) on one side only; use at least {min_backbone_side(self)} px on each side, or a square input"
                )
            window = min(self.window_size, res_h, res_w)
            stage = []
            for j in range(depth):
                shift = self.window_size // 2 if (j % 2 == 1 and shifted) else 0
                stage.append(WindowGeometry(res_h, res_w, window, shift, heads, dim // heads))
            out.append(stage)
        return out


def min_backbone_side(cfg: "SwinConfig") -> int:
    """The smallest input side (px) whose last stage is wider than the window."""
    side = 1
    while True:
        res = -(-side // cfg.patch_size)  # the input is padded to the patch multiple
        for _ in range(len(cfg.depths) - 1):
            res = (res + 1) // 2  # odd maps are padded before merging
        if res > cfg.window_size:
            return side
        side += 1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: SwinConfig
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def _spec(name: str, desc: str, **kw: Any) -> ModelSpec:
    return ModelSpec(name, SwinConfig(**kw), desc)


# Variants by timm's names. drop_path_rate is timm's training default; eval ignores it.
MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _spec("swin_tiny_patch4_window7_224", "Swin-T", drop_path_rate=0.2),
        _spec("swin_small_patch4_window7_224", "Swin-S", depths=(2, 2, 18, 2), drop_path_rate=0.3),
        _spec(
            "swin_base_patch4_window7_224",
            "Swin-B",
            embed_dim=128,
            depths=(2, 2, 18, 2),
            num_heads=(4, 8, 16, 32),
            drop_path_rate=0.5,
        ),
        _spec(
            "swin_base_patch4_window12_384",
            "Swin-B 384",
            img_size=384,
            window_size=12,
            embed_dim=128,
            depths=(2, 2, 18, 2),
            num_heads=(4, 8, 16, 32),
            drop_path_rate=0.5,
        ),
        _spec(
            "swin_large_patch4_window7_224",
            "Swin-L",
            embed_dim=192,
            depths=(2, 2, 18, 2),
            num_heads=(6, 12, 24, 48),
            drop_path_rate=0.2,
        ),
        _spec(
            "swin_large_patch4_window12_384",
            "Swin-L 384",
            img_size=384,
            window_size=12,
            embed_dim=192,
            depths=(2, 2, 18, 2),
            num_heads=(6, 12, 24, 48),
            drop_path_rate=0.2,
        ),
        # Small configs for tests and the embedded digits task. Every stage has a
        # window smaller than its feature map, so every stage has shifted blocks.
        _spec(
            "swin_micro_patch4_window4_64",
            "test-size, shifted windows in every stage",
            img_size=64,
            embed_dim=32,
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 4, 8),
            window_size=4,
        ),
        _spec(
            "swin_nano_patch2_window4_32",
            "digits task (32x32), shifted windows in every stage",
            img_size=32,
            patch_size=2,
            embed_dim=32,
            depths=(2, 2),
            num_heads=(2, 4),
            window_size=4,
            num_classes=10,
        ),
    ]
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        close = [n for n in MODEL_SPECS if name.lower() in n] or list(MODEL_SPECS)
        raise SwinedgeError(f"unknown model '{name}': choose one of {', '.join(close)} (see `swinedge models`)") from None


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # NCHW -> NHWC


class PatchMerging(nn.Module):
    """2x2 neighbour concat + LayerNorm + Linear; odd sizes are zero-padded first."""

    def __init__(self, dim: int, out_dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.dim = dim
        self.resolution = resolution  # (h, w), static: exported graphs get no Shape chains
        self.any_size = False  # True: the size is read from x (graphs serving several sizes)
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.any_size:
            x, h, w = pad_to_even_any_size(x)
        else:
            x, h, w = pad_to_even(x, *self.resolution)
        # Channel order (h0w0, h1w0, h0w1, h1w1) is the official x0, x1, x2, x3 concat.
        x = x.reshape(-1, h // 2, 2, w // 2, 2, self.dim).permute(0, 1, 3, 4, 2, 5)
        x = x.reshape(-1, h // 2, w // 2, 4 * self.dim)
        return self.reduction(self.norm(x))


def pad_to_even(x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, int, int]:
    """Zero-pad an NHWC map of odd height or width at the bottom/right (timm, mmdet)."""
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, h + pad_h, w + pad_w


def pad_to_even_any_size(x: torch.Tensor) -> tuple[torch.Tensor, Any, Any]:
    """:func:`pad_to_even` with the size read from ``x`` and no branch on it: a traced
    export pads by ``h % 2`` (0 or 1) at whatever size the graph runs."""
    h, w = x.shape[1], x.shape[2]
    pad_h, pad_w = h % 2, w % 2
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), h + pad_h, w + pad_w


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class WindowAttention(nn.Module):
    """qkv Linear -> shifted-window attention core -> proj Linear, in natural token order."""

    def __init__(self, geometry: WindowGeometry, qkv_bias: bool = True) -> None:
        super().__init__()
        g = geometry
        self.geometry = g
        self.impl = "reference"
        self.qkv = nn.Linear(g.dim, 3 * g.dim, bias=qkv_bias)
        self.proj = nn.Linear(g.dim, g.dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * g.window - 1) ** 2, g.num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        mask = shift_mask(g)
        # Not persistent: derived from geometry, never stored in checkpoints. As buffers
        # they follow the module to its device: no host copy in forward.
        self.register_buffer("attn_mask", mask if mask is not None else torch.zeros(0), persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(g.window).reshape(-1), persistent=False)
        self._table_cache: tuple[tuple, torch.Tensor] | None = None

    def bias(self) -> torch.Tensor:
        """``[heads, N, N]`` relative-position bias."""
        return relative_position_bias(self.relative_position_bias_table, self.geometry.window, self.relative_position_index)

    def score_table(self) -> torch.Tensor:
        """The fused kernel's table; in eval, built once per weights and device."""
        from swinedge.ops.attention_table import attention_table

        param = self.relative_position_bias_table
        key = (param.device, param.data_ptr(), param._version)
        if self.training or self._table_cache is None or self._table_cache[0] != key:
            table = attention_table(self.bias(), self.geometry)
            if self.training:
                return table
            self._table_cache = (key, table.detach())
        return self._table_cache[1]

    def pattern_scores(self) -> torch.Tensor:
        """``[P, heads, N, N]`` bias plus shift mask per window-edge pattern: the native
        any-size core's constant (:func:`swinedge.ops.attention_table.pattern_scores`)."""
        from swinedge.ops.attention_table import pattern_scores

        return pattern_scores(self.bias(), self.geometry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, H*W, C]`` normalized tokens -> ``[B, H*W, C]``; or ``[B, H, W, C]``
        at any H and W (graphs that serve several sizes) -> ``[B, H, W, C]``."""
        qkv = self.qkv(x)
        pad_qkv = self.qkv.bias
        g = self.geometry
        if x.dim() == 4:
            if self.impl == "fused":
                from swinedge.ops.fused import window_attention_fused_any_size

                out = window_attention_fused_any_size(qkv, self.score_table(), pad_qkv, g)
            else:
                out = window_attention_any_size(qkv, self.pattern_scores(), pad_qkv, g.window, g.shift, g.num_heads)
            return self.proj(out)
        if self.impl == "fused":
            from swinedge.ops.fused import window_attention_fused

            out = window_attention_fused(qkv, self.score_table(), pad_qkv, self.geometry)
        else:
            mask = self.attn_mask if self.geometry.shift else None
            out = window_attention_reference(qkv, self.bias(), pad_qkv, self.geometry, mask)
        return self.proj(out)


def attention_geometry(g: WindowGeometry, pad_first: bool) -> WindowGeometry:
    """The geometry a block's attention runs at. timm shifts the map, then pads it to the
    window multiple; mmdet and Microsoft's detection code pad first and shift the padded
    map, which differs when a shifted block needs padding. With ``pad_first`` such a block
    zero-pads its normalized input to the window multiple itself (its padded tokens' qkv
    is then the qkv bias, as there) and its attention runs on the padded map, where the
    two orders agree: the fused kernel and the plugin need no second order."""
    if pad_first and g.shift and (g.padded_height != g.height or g.padded_width != g.width):
        return replace(g, height=g.padded_height, width=g.padded_width)
    return g


class SwinBlock(nn.Module):
    def __init__(self, geometry: WindowGeometry, mlp_ratio: float, qkv_bias: bool, drop_path: float, pad_first: bool = False) -> None:
        super().__init__()
        dim = geometry.dim
        self.resolution = (geometry.height, geometry.width)
        self.any_size = False  # True: [B, H, W, C] at any size (graphs serving several sizes)
        # mmdet's order in a shifted block: pad to the window multiple, then shift.
        self.pads_first = pad_first and geometry.shift > 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(attention_geometry(geometry, pad_first), qkv_bias)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        g = self.attn.geometry
        h, w = self.resolution
        if (g.height, g.width) == (h, w):
            return self.attn(x)
        padded = F.pad(x.reshape(-1, h, w, g.dim), (0, 0, 0, g.width - w, 0, g.height - h))
        out = self.attn(padded.reshape(-1, g.height * g.width, g.dim))
        return out.reshape(-1, g.height, g.width, g.dim)[:, :h, :w].reshape(-1, h * w, g.dim)

    def _attention_any_size(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pads_first:
            return self.attn(x)
        ws = self.attn.geometry.window
        h, w = x.shape[1], x.shape[2]
        padded = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        return self.attn(padded)[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.any_size:  # [B, H, W, C] throughout: attention reads the size from x
            x = x + self.drop_path1(self._attention_any_size(self.norm1(x)))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        h, w = self.resolution
        dim = self.attn.geometry.dim
        x = x.reshape(-1, h * w, dim)
        x = x + self.drop_path1(self._attention(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(-1, h, w, dim)


class SwinStage(nn.Module):
    def __init__(
        self,
        in_dim: int,
        in_resolution: tuple[int, int],
        geometries: list[WindowGeometry],
        downsample: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_paths: list[float],
        pad_first: bool = False,
    ) -> None:
        super().__init__()
        out_dim = geometries[0].dim
        self.downsample = PatchMerging(in_dim, out_dim, in_resolution) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[SwinBlock(g, mlp_ratio, qkv_bias, dp, pad_first) for g, dp in zip(geometries, drop_paths)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ClassifierHead(nn.Module):
    def __init__(self, dim: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(1, 2))))  # NHWC average pool


class WindowedTransformer(nn.Module):
    """What Swin V1 and V2 share around their stages: the attention backend switch, the
    forward pass (patch_embed -> layers -> norm -> head) and the accounting. A subclass
    names its attention module class in ``attention_module``."""

    attention_module: type[nn.Module]

    # -- attention backend ---------------------------------------------------------
    def set_attention_impl(self, impl: str) -> "WindowedTransformer":
        if impl not in ATTENTION_IMPLS:
            raise SwinedgeError(f"unknown attention implementation '{impl}': choose one of {', '.join(ATTENTION_IMPLS)}")
        for m in self.attention_modules():
            m.impl = impl
        return self

    def set_any_size(self, any_size: bool = True) -> "WindowedTransformer":
        """Read every feature-map size from the tensors instead of the built geometry, so
        that one traced export serves several input sizes (their windows and shifts must
        be the built ones: see ``BackboneConfig.any_size_problem``)."""
        for m in self.modules():
            if hasattr(m, "any_size"):
                m.any_size = any_size
        return self

    def attention_modules(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, self.attention_module)]

    # -- forward -------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    # -- accounting ----------------------------------------------------------------
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self) -> int:
        """Multiply-accumulates of one image's forward pass (the "FLOPs" Swin papers report)."""
        return count_macs(self.config)


class SwinTransformer(WindowedTransformer):
    attention_module = WindowAttention

    def __init__(self, config: SwinConfig, input_size: tuple[int, int] | None = None, pad_first: bool = False) -> None:
        """``input_size``: build the stages for a (height, width) input (backbones),
        instead of the square ``img_size``. ``pad_first``: mmdet's window padding order
        (:func:`attention_geometry`)."""
        super().__init__()
        config.validate()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        geoms = config.stage_geometries(input_size)
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages = []
        start = 0
        in_dim = config.embed_dim
        in_res = (geoms[0][0].height, geoms[0][0].width)
        for i, stage_geoms in enumerate(geoms):
            depth = len(stage_geoms)
            stages.append(
                SwinStage(
                    in_dim, in_res, stage_geoms, i > 0, config.mlp_ratio, config.qkv_bias, rates[start : start + depth], pad_first
                )
            )
            start += depth
            in_dim, in_res = stage_geoms[0].dim, (stage_geoms[0].height, stage_geoms[0].width)
        self.layers = nn.Sequential(*stages)
        self.num_features = in_dim
        self.norm = nn.LayerNorm(in_dim)
        self.head = ClassifierHead(in_dim, config.num_classes, config.drop_rate)
        self.apply(_init_weights)


def count_macs(cfg: SwinConfig) -> int:
    """Analytic MAC count, counting the same terms as the official implementation."""
    res = cfg.img_size // cfg.patch_size
    macs = res * res * cfg.embed_dim * cfg.in_chans * cfg.patch_size**2  # patch embed conv
    macs += res * res * cfg.embed_dim  # its LayerNorm
    in_dim = cfg.embed_dim
    for i, stage in enumerate(cfg.stage_geometries()):
        g0 = stage[0]
        if i > 0:
            macs += g0.height * g0.width * 4 * in_dim * (1 + g0.dim)  # merge norm + reduction
        for g in stage:
            tokens = g.height * g.width
            n = g.tokens_per_window
            windows_tokens = g.padded_height * g.padded_width
            hidden = int(g.dim * cfg.mlp_ratio)
            macs += tokens * g.dim * 2  # two LayerNorms
            macs += windows_tokens * g.dim * 3 * g.dim  # qkv
            macs += windows_tokens * n * g.dim * 2  # q.k^T and attn.v
            macs += windows_tokens * g.dim * g.dim  # proj
            macs += tokens * g.dim * hidden * 2  # mlp
        in_dim = g0.dim
    last = cfg.stage_geometries()[-1][0]
    macs += last.height * last.width * in_dim  # final norm
    macs += in_dim * cfg.num_classes
    return macs


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    in_chans: int | None = None,
    **overrides: Any,
) -> SwinTransformer:
    """Build a variant by name, with optional overrides of its config (random init)."""
    cfg = get_spec(name).config
    changes = {k: v for k, v in dict(num_classes=num_classes, img_size=img_size, in_chans=in_chans).items() if v is not None}
    changes.update(overrides)
    cfg = replace(cfg, **changes)
    return SwinTransformer(cfg)
