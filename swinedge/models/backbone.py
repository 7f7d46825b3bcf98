"""Swin V1 and V2 as detection and segmentation backbones.

A backbone is the classifier's patch embedding and stages, built for one (height,
width) input, returning the outputs of the selected stages as NCHW maps. With
``stage_norms`` each returned stage has its own LayerNorm ``norm{i}``, as mmdet,
mmseg and Microsoft's detection code apply; without, the stage outputs are returned
as they are, as timm's ``features_only`` models do.

The input is zero-padded at the bottom/right to the patch multiple, each stage to the
window multiple inside attention and odd maps before merging (mmdet's corner padding
and timm's, which agree). The geometry of every block follows from the input size. A
graph exported at one size has it fixed; one exported for several sizes
(``export --sizes``, :meth:`WindowedTransformer.set_any_size`) reads every map size
from its input and serves every size whose windows and shifts are the built ones.

Checkpoints (:func:`backbone_filter_fn`): mmdet/mmseg detectors and segmentors (a
``backbone.`` prefix, mmdet's own names, ``nn.Unfold`` channel order in patch merging),
Microsoft's detection code (official names under ``backbone.``), timm ``features_only``
state dicts (``layers_0.``), and classifiers of timm or official layout. Keys of the
neck and heads, the classifier head and final norm, and stages past the last selected
one are dropped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from swinedge.errors import SwinedgeError
from swinedge.models.swin import (
    MAX_IMG_SIZE,
    SwinConfig,
    SwinTransformer,
    WindowedTransformer,
    attention_geometry,
    count_macs,
    min_backbone_side,
)
from swinedge.models.swin_v2 import SwinTransformerV2, SwinV2Config

# A detector's input of 1333 px is common; 8K x 8K is not a backbone input but a typo.
MAX_BACKBONE_SIDE = 2 * MAX_IMG_SIZE
BACKBONE_FAMILY = "backbone"


def parse_size(text: str, flag: str = "--input-size") -> tuple[int, int]:
    """``"800x1333"`` (height x width) or ``"640"`` (square) -> (height, width)."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SwinedgeError(f"{flag} '{text}' is not a size: use HEIGHTxWIDTH, e.g. 800x1333, or one number for a square")
    h, w = int(parts[0]), int(parts[1])
    if not (1 <= h <= MAX_BACKBONE_SIDE and 1 <= w <= MAX_BACKBONE_SIDE):
        raise SwinedgeError(f"{flag} {h}x{w}: each side must be 1..{MAX_BACKBONE_SIDE} px")
    return h, w


def format_size(size: tuple[int, int] | list[int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass(frozen=True)
class BackboneConfig:
    """A Swin V1/V2 trunk, the input it is built for, the stages it returns. Plain data:
    saved in checkpoints and manifests."""

    trunk: SwinConfig
    input_size: tuple[int, int]
    out_indices: tuple[int, ...] = (0, 1, 2, 3)
    stage_norms: bool = False
    # Window padding before the shift, as mmdet and Microsoft's detection code do (their
    # checkpoints); timm's order (shift, then pad) otherwise. Swin V1 only.
    pad_first: bool = False
    family: str = BACKBONE_FAMILY

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        object.__setattr__(self, "out_indices", tuple(self.out_indices))

    @property
    def in_chans(self) -> int:
        return self.trunk.in_chans

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def img_size(self) -> int:
        """The square size a classifier-shaped caller would use: the larger side."""
        return max(self.input_size)

    @property
    def patch_size(self) -> int:
        return self.trunk.patch_size

    def validate(self) -> None:
        self.trunk.validate()
        h, w = self.input_size
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)) or not (
            1 <= h <= MAX_BACKBONE_SIDE and 1 <= w <= MAX_BACKBONE_SIDE
        ):
            raise SwinedgeError(f"backbone input size {h}x{w}: each side must be 1..{MAX_BACKBONE_SIDE} px")
        stages = len(self.trunk.depths)
        if not self.out_indices or sorted(set(self.out_indices)) != list(self.out_indices) or not all(
            isinstance(i, int) and 0 <= i < stages for i in self.out_indices
        ):
            raise SwinedgeError(
                f"out indices {list(self.out_indices)}: give increasing stage numbers 0..{stages - 1}, e.g. 0,1,2,3"
            )
        self.trunk.stage_geometries(self.input_size)  # raises for a size the windows cannot tile
        if self.pad_first and isinstance(self.trunk, SwinV2Config):
            raise SwinedgeError("pad-first window padding (mmdet's order) is a Swin V1 detection convention; Swin V2 backbones pad as timm")
        if self.pad_first:
            # mmdet and Microsoft's detection code never clamp the window nor drop the shift
            # on a small map (timm and swinedge do): such a size would silently differ.
            geoms = self.trunk.stage_geometries(self.input_size)
            small = [i for i, stage in enumerate(geoms) if min(stage[0].height, stage[0].width) <= self.trunk.window_size]
            if small and small[0] <= max(self.out_indices):
                g = geoms[small[0]][0]
                raise SwinedgeError(
                    f"input {h}x{w}: stage {small[0]} is {g.height}x{g.width} tokens, not wider than the window "
                    f"({self.trunk.window_size}); detection-trained weights (mmdet order) need at least "
                    f"{min_backbone_side(self.trunk)} px on each side"
                )

    def stage_geometries(self) -> list[list[Any]]:
        """Attention geometry of every block of the stages built (as a classifier's
        config gives them): what plugin substitution and the AOT kernels take."""
        geoms = self.trunk.stage_geometries(self.input_size)[: max(self.out_indices) + 1]
        return [[attention_geometry(g, self.pad_first) for g in stage] for stage in geoms]

    def block_signature(self) -> list[tuple[int, int, int, int]]:
        """(window, shift, heads, head dim) of every block built: what a graph serving
        several sizes fixes, where each size brings its own map sizes."""
        return [(g.window, g.shift, g.num_heads, g.head_dim) for stage in self.stage_geometries() for g in stage]

    def any_size_problem(self, sizes: list[tuple[int, int]]) -> str | None:
        """Why one graph built for this config cannot serve every size of ``sizes``, or
        None. A size must itself be valid, and its blocks must have this config's windows
        and shifts: timm clamps the window of a stage no larger than it, which would be
        another graph."""
        mine = self.block_signature()
        for size in [self.input_size, *sizes]:
            other = self.at_size(tuple(size))
            try:
                other.validate()
            except SwinedgeError as e:
                return str(e)
            # Every stage wider than the window: no clamping, so every such size has the
            # same windows and shifts (the graph checks it too, see window_attention_any_size).
            geoms = other.stage_geometries()
            small = [i for i, stage in enumerate(geoms) if min(stage[0].height, stage[0].width) <= self.trunk.window_size]
            if small or other.block_signature() != mine:
                return (
                    f"input {format_size(size)}: stage {small[0] if small else '?'} is no wider than the window "
                    f"({self.trunk.window_size}), where timm clamps the window: that size needs a graph of its own; "
                    f"one graph serves sizes of at least {min_backbone_side(self.trunk)} px on each side"
                )
        return None

    def stage_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each returned stage."""
        geoms = self.trunk.stage_geometries(self.input_size)  # the maps' own sizes
        return [(geoms[i][0].dim, geoms[i][0].height, geoms[i][0].width) for i in self.out_indices]

    def output_names(self) -> list[str]:
        return [f"stage{i}" for i in self.out_indices]

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": BACKBONE_FAMILY,
            "trunk": self.trunk.to_dict(),
            "input_size": list(self.input_size),
            "out_indices": list(self.out_indices),
            "stage_norms": self.stage_norms,
            "pad_first": self.pad_first,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneConfig":
        known = {"family", "trunk", "input_size", "out_indices", "stage_norms", "pad_first"}
        if not isinstance(d, dict) or set(d) - known or not isinstance(d.get("trunk"), dict):
            raise SwinedgeError("backbone config is not one swinedge wrote (expected trunk, input_size, out_indices, stage_norms)")
        trunk_d = d["trunk"]
        trunk = SwinV2Config.from_dict(trunk_d) if trunk_d.get("family") == "swinv2" else SwinConfig.from_dict(trunk_d)
        size = d.get("input_size")
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise SwinedgeError(f"backbone config input_size must be [height, width], got {size!r}")
        return cls(trunk, tuple(size), tuple(d.get("out_indices", (0, 1, 2, 3))), bool(d.get("stage_norms", False)), bool(d.get("pad_first", False)))

    def at_size(self, size: tuple[int, int]) -> "BackboneConfig":
        return replace(self, input_size=tuple(size))


class StageSequence(nn.Sequential):
    """The stages, run in order, returning every stage's output. Called as one module so
    exported node names (``/layers/layers.{i}/...``) are the classifier's: plugin
    substitution and the error map find the blocks by them."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        outs = []
        for stage in self:
            x = stage(x)
            outs.append(x)
        return outs


class SwinBackbone(WindowedTransformer):
    """Patch embedding and stages of a Swin V1/V2 classifier -> ``stage{i}`` NCHW maps."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.any_size = False  # True: any size the blocks' windows serve (set_any_size)
        h, w = config.input_size
        p = config.trunk.patch_size
        self.pad_hw = (-h % p, -w % p)  # bottom, right: to the patch multiple
        padded = (h + self.pad_hw[0], w + self.pad_hw[1])
        trunk_cls = SwinTransformerV2 if isinstance(config.trunk, SwinV2Config) else SwinTransformer
        self.attention_module = trunk_cls.attention_module
        extra = {"pad_first": True} if config.pad_first else {}
        trunk = trunk_cls(replace(config.trunk, num_classes=0), input_size=padded, **extra)
        self.patch_embed = trunk.patch_embed
        self.layers = StageSequence(*list(trunk.layers)[: max(config.out_indices) + 1])
        dims = [stage.blocks[0].attn.geometry.dim for stage in self.layers]  # type: ignore[union-attr]
        for i in config.out_indices:
            if config.stage_norms:
                self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        if self.any_size:
            return self._stage_outputs(self._pad_any_size(x))
        h, w = self.config.input_size
        if tuple(x.shape[-2:]) != (h, w):
            raise SwinedgeError(
                f"the backbone is built for {h}x{w} inputs, got {x.shape[-2]}x{x.shape[-1]}: "
                f"export it at that size (`swinedge export ... --input-size {x.shape[-2]}x{x.shape[-1]}`, or --sizes for several)"
            )
        if any(self.pad_hw):
            x = F.pad(x, (0, self.pad_hw[1], 0, self.pad_hw[0]))
        return self._stage_outputs(x)

    def _pad_any_size(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to the patch multiple by amounts computed from x (traced exports)."""
        h, w = x.shape[-2], x.shape[-1]
        if not torch.jit.is_tracing():
            problem = self.config.any_size_problem([(int(h), int(w))])
            if problem:
                raise SwinedgeError(problem)
        p = self.config.trunk.patch_size
        return F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))

    def _stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, x in enumerate(self.layers(self.patch_embed(x))):
            if i in self.config.out_indices:
                y = getattr(self, f"norm{i}")(x) if self.config.stage_norms else x
                outs.append(y.permute(0, 3, 1, 2).contiguous())  # NHWC -> NCHW
        return tuple(outs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise SwinedgeError("a backbone returns stage maps, not pooled features")

    def flops(self) -> int:
        cfg = self.config
        side = max(cfg.input_size)  # analytic count at the square of the larger side: an upper bound
        return count_macs(replace(cfg.trunk, img_size=side - side % cfg.trunk.patch_size, num_classes=0))


# -- checkpoints ------------------------------------------------------------------------------------

# Buffers derived from geometry in official / mmdet checkpoints: never loaded.
_DERIVED = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")
_CLASSIFIER_KEYS = re.compile(r"^(head\.|head_dist\.|norm\.|fc\.|classifier\.)")


def _unfold_to_official(weight: torch.Tensor, *, norm: bool) -> torch.Tensor:
    """mmdet's patch merging gathers the 2x2 neighbours with ``nn.Unfold``: its 4C
    channels are channel-major with the kernel position (h0w0, h0w1, h1w0, h1w1) inner;
    the official/timm concat is position-major in the order (h0w0, h1w0, h0w1, h1w1).
    Reorder the columns of the reduction (or the entries of the norm) from the former
    to the latter."""
    if norm:
        c = weight.shape[0] // 4
        return weight.reshape(c, 4).T[[0, 2, 1, 3]].reshape(4 * c)
    out, in4 = weight.shape
    c = in4 // 4
    return weight.reshape(out, c, 4).transpose(1, 2)[:, [0, 2, 1, 3]].reshape(out, 4 * c)


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """``mmdet`` | ``official-detection`` | ``timm-features`` | ``classifier`` (timm or
    official) of a state dict (``backbone.`` prefix already removed)."""
    if any(k.startswith("stages.") for k in state) or any(k.startswith("patch_embed.projection.") for k in state):
        return "mmdet"
    if any(k.startswith("layers_0.") for k in state):
        return "timm-features"
    if any(re.match(r"norm\d+\.", k) for k in state):
        return "official-detection"
    return "classifier"


def is_detection_state_dict(state: dict[str, torch.Tensor]) -> bool:
    """A detector's/segmentor's weights, or a bare backbone's: no classifier head."""
    if any(k.startswith("backbone.") for k in state):
        return True
    return detect_layout(state) in ("mmdet", "official-detection")


def _mmdet_key(k: str) -> str:
    k = k.replace("patch_embed.projection.", "patch_embed.proj.")
    k = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
    k = re.sub(r"^stages\.", "layers.", k)
    k = k.replace(".attn.w_msa.", ".attn.")
    k = k.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
    return k


@dataclass
class BackboneWeights:
    state_dict: dict[str, torch.Tensor]
    layout: str
    dropped: dict[str, int]  # what was left out, by reason -> key count
    resized_tables: int = 0  # window tables resized to the backbone's full windows


def backbone_filter_fn(state: dict[str, torch.Tensor], model: SwinBackbone) -> BackboneWeights:
    """Any understood layout -> this backbone's keys (timm trunk names + ``norm{i}``)."""
    dropped: dict[str, int] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    if any(k.startswith("backbone.") for k in state):
        inner = {}
        for k, v in state.items():
            if k.startswith("backbone."):
                inner[k[len("backbone.") :]] = v
            else:
                drop("neck and heads")
        state = inner
    layout = detect_layout(state)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    resized = 0
    for k, v in state.items():
        if k.rsplit(".", 1)[-1] in _DERIVED:
            continue
        if layout == "mmdet":
            k = _mmdet_key(k)
            if re.match(r"layers\.\d+\.downsample\.(reduction|norm)\.", k):
                v = _unfold_to_official(v, norm=".norm." in k)
        elif layout == "timm-features":
            k = re.sub(r"^layers_(\d+)\.", r"layers.\1.", k)
        elif layout in ("official-detection", "classifier") and (
            any(s.startswith("layers.0.downsample.") for s in state) or "head.weight" in state
        ):  # official names: each stage's downsample at its end (timm: next stage's start)
            k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
        if _CLASSIFIER_KEYS.match(k):
            drop("classifier head and final norm")
            continue
        stage = re.match(r"layers\.(\d+)\.", k)
        if stage and int(stage.group(1)) >= len(model.layers):
            drop("stages past the last selected one")
            continue
        norm = re.match(r"norm(\d+)\.", k)
        if norm and k not in target:
            drop("stage norms not selected")
            continue
        if k.endswith("relative_position_bias_table") and k in target and v.shape != target[k].shape:
            # A classifier built where a stage's map was smaller than the window has a
            # clamped window there; the backbone's larger maps take the full window (timm
            # resizes the table the same way).
            from swinedge.models.checkpoint import resize_rel_pos_bias_table

            v = resize_rel_pos_bias_table(v, target[k].shape[0])
            resized += 1
        out[k] = v
    return BackboneWeights(out, layout, dropped, resized)
