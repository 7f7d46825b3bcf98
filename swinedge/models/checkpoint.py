"""Reading, converting and writing checkpoints of every model family.

Layouts understood (ViT/DeiT/MAE layouts: :func:`swinedge.models.vit.checkpoint_filter_fn`):

* timm (``head.fc.*``, downsample at the *start* of stages 1..3);
* official Microsoft Swin (``head.*``, downsample at the *end* of stages 0..2, plus
  ``relative_position_index`` and ``attn_mask`` buffers);
* swinedge's own self-describing checkpoints (timm layout + model config).

Files: ``.pth``/``.pt``/``.bin`` (torch zip or legacy pickle, loaded with
``weights_only=True`` so no pickled code ever runs) and ``.safetensors``. Wrappers
``{"state_dict": ...}`` / ``{"model": ...}`` and a ``module.`` prefix are unwrapped.
"""

from __future__ import annotations

import contextlib

import json
import pickle
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from swinedge.errors import SwinedgeError
from swinedge.io import atomic_path, require_file, sha256_file
from swinedge.manifest import manifest_path, read_manifest
from swinedge.models import swin_v2, vit
from swinedge.models.backbone import BackboneConfig, SwinBackbone, backbone_filter_fn, is_detection_state_dict
from swinedge.models.swin import MODEL_SPECS, SwinConfig, SwinTransformer
from swinedge.models.swin_v2 import SWINV2_SPECS, SwinTransformerV2, SwinV2Config
from swinedge.models.vit import VIT_SPECS, ViTConfig, VisionTransformer

Model = SwinTransformer | SwinTransformerV2 | VisionTransformer | SwinBackbone
Config = SwinConfig | SwinV2Config | ViTConfig | BackboneConfig

CHECKPOINT_FORMAT = 1
_META_KEY = "swinedge"
# Buffers derived from geometry: present in official checkpoints, never loaded.
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


@dataclass
class RawCheckpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] | None  # swinedge metadata when the file describes itself
    path: Path
    sha256: str


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read a checkpoint file into a flat state dict without running pickled code."""
    path = require_file(path, "checkpoint")
    meta = None
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                state = _unwrap({k: f.get_tensor(k) for k in f.keys()})
            if _META_KEY in header:
                meta = json.loads(header[_META_KEY])
        else:
            with open(path, "rb") as f:
                head = f.read(4)
            # torch.save writes a zip archive; older files are a pickle (protocol 2+ opens
            # with 0x80). Anything else is not a torch checkpoint at all.
            if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
                kind = "empty" if not head else "an ONNX graph" if path.suffix == ".onnx" else "not a zip archive or a pickle"
                raise SwinedgeError(f"{path} is not a readable checkpoint ({kind}); expected a torch .pth/.pt or .safetensors file")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protocol notes from the safe unpickler
                obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and isinstance(obj.get(_META_KEY), dict):
                meta = obj[_META_KEY]
            state = _unwrap(obj)
    except SwinedgeError:
        raise
    except Exception as e:  # noqa: BLE001 - unknown bytes make the unpickler raise anything
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e) and "Unsupported global" in str(e):
            e = pickle.UnpicklingError("it holds pickled objects other than tensors, refused for safety")
        else:  # what a damaged file makes the unpickler say means nothing to a user
            e = pickle.UnpicklingError("damaged or truncated")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SwinedgeError(
            f"{path} is not a readable checkpoint ({first[:160]}); expected a torch .pth/.pt or .safetensors file"
        ) from None
    if meta is not None and manifest_path(path).exists():
        # A swinedge checkpoint: the manifest written beside it must describe these bytes.
        read_manifest(path, kind="checkpoint")
    refuse_non_finite(state, path)
    return RawCheckpoint(state, meta, path, sha256_file(path))


def refuse_non_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """A one-line error naming the first floating-point tensor (in file order) that holds
    NaN or Inf: a model built from it computes NaN, and every later step would pass it on.
    Derived buffers (never loaded) are not looked at."""
    for key, t in state.items():
        if not t.is_floating_point() or any(key.endswith(b) for b in _DERIVED_BUFFERS):
            continue
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(t).sum())
        inf = int(t.numel() - int(finite.sum()) - nan)
        what = " and ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (inf, "Inf")) if n)
        holds = "NaN" if nan else "Inf"
        raise SwinedgeError(
            f"{path}: tensor '{key}' holds {holds} ({what} of {t.numel()} values): these weights are damaged "
            "(a diverged training run or a bad conversion); give a checkpoint with finite weights"
        )


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise SwinedgeError("checkpoint holds no state dict (expected a mapping of parameter names to tensors)")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    if not out:
        raise SwinedgeError("checkpoint holds no tensors")
    return out


def is_official_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """Official checkpoints have ``head.weight`` and a downsample in stage 0."""
    return "head.weight" in state_dict or any(k.startswith("layers.0.downsample.") for k in state_dict)


def checkpoint_filter_fn(
    state_dict: dict[str, torch.Tensor],
    model: SwinTransformer,
    *,
    adapt: bool = False,
) -> dict[str, torch.Tensor]:
    """Turn a timm or official state dict into this model's layout.

    With ``adapt``: relative-position bias tables of another window size are resized
    (bicubic), and a classifier head with another class count is dropped so the
    model keeps its freshly initialized head.
    """
    official = is_official_layout(state_dict)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if any(k.endswith(b) for b in _DERIVED_BUFFERS):
            continue
        if official:
            k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
            if k.startswith("head.") and not k.startswith("head.fc."):
                k = "head.fc." + k[len("head.") :]
        if adapt and k in target and v.shape != target[k].shape:
            if k.endswith("relative_position_bias_table"):
                v = resize_rel_pos_bias_table(v, target[k].shape[0])
            elif k.startswith("head.fc."):
                v = target[k]  # new class count: keep the model's freshly initialized head
        out[k] = v
    return out


def resize_rel_pos_bias_table(table: torch.Tensor, new_len: int) -> torch.Tensor:
    """Bicubic resize of a ``[(2w-1)^2, heads]`` table to ``new_len`` rows."""
    old_side = int(round(table.shape[0] ** 0.5))
    new_side = int(round(new_len**0.5))
    if old_side * old_side != table.shape[0] or new_side * new_side != new_len:
        raise SwinedgeError(f"relative_position_bias_table of {table.shape[0]} rows is not a square window table")
    grid = table.T.reshape(1, -1, old_side, old_side).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(-1, new_len).T.contiguous().to(table.dtype)


def load_state_dict_strict(model: Model, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load, or raise one line naming the first missing, unexpected and mis-shaped keys."""
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    shaped = [k for k in state_dict if k in target and state_dict[k].shape != target[k].shape]
    if missing or unexpected or shaped:
        matched = len(target) - len(missing)
        parts = [f"{source} does not fit {_describe(model.config)} ({matched}/{len(target)} keys match)"]
        if missing:
            parts.append(f"missing {len(missing)} e.g. '{missing[0]}'")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} e.g. '{unexpected[0]}'")
        if shaped:
            k = shaped[0]
            parts.append(
                f"mis-shaped {len(shaped)} e.g. '{k}' {tuple(state_dict[k].shape)} vs {tuple(target[k].shape)}"
            )
        hint = "check the model name"
        resizable = ("head.", "head_dist.", "pos_embed")
        if shaped and all(k.startswith(resizable) or k.endswith("relative_position_bias_table") for k in shaped):
            hint = "pass --adapt to resize window tables / position embeddings or replace the head"
        elif missing and not shaped and not unexpected and all(k.startswith(("head.", "head_dist.")) for k in missing):
            hint = "the file has no classifier head (MAE pretraining?): pass --adapt and --num-classes for a new one"
        raise SwinedgeError("; ".join(parts) + f"; {hint}")
    model.load_state_dict(state_dict, strict=True)


def _describe(cfg: Config) -> str:
    if isinstance(cfg, BackboneConfig):
        t = cfg.trunk
        return f"the backbone (embed_dim {t.embed_dim}, depths {list(t.depths)}, stages {list(cfg.out_indices)}, stage norms {'on' if cfg.stage_norms else 'off'})"
    if isinstance(cfg, ViTConfig):
        return f"the model (ViT, embed_dim {cfg.embed_dim}, depth {cfg.depth}, {cfg.num_classes} classes)"
    return f"the model (embed_dim {cfg.embed_dim}, depths {list(cfg.depths)}, {cfg.num_classes} classes)"


def get_spec(name: str) -> Any:
    """The variant called ``name``, of any family (Swin V1 and V2, ViT/DeiT)."""
    spec = MODEL_SPECS.get(name) or SWINV2_SPECS.get(name) or VIT_SPECS.get(name)
    if spec is None:
        names = [*MODEL_SPECS, *SWINV2_SPECS, *VIT_SPECS]
        close = [n for n in names if name.lower() in n] or names
        raise SwinedgeError(f"unknown model '{name}': choose one of {', '.join(close)} (see `swinedge models`)")
    return spec


def find_spec(name: str) -> Any | None:
    """The variant called ``name`` of any family, or None."""
    return MODEL_SPECS.get(name) or SWINV2_SPECS.get(name) or VIT_SPECS.get(name)


def config_from_dict(d: dict[str, Any]) -> Config:
    """A saved model config of either family (Swin configs carry no family key)."""
    family = d.get("family") if isinstance(d, dict) else None
    if family == "backbone":
        return BackboneConfig.from_dict(d)
    if family == "vit":
        return ViTConfig.from_dict(d)
    if family == "swinv2":
        return SwinV2Config.from_dict(d)
    return SwinConfig.from_dict(d)


def model_from_config(cfg: Config) -> Model:
    if isinstance(cfg, BackboneConfig):
        return SwinBackbone(cfg)
    if isinstance(cfg, ViTConfig):
        return VisionTransformer(cfg)
    if isinstance(cfg, SwinV2Config):  # before SwinConfig: a V2 config is one
        return SwinTransformerV2(cfg)
    return SwinTransformer(cfg)


def _family_of_state(state: dict[str, torch.Tensor]) -> str | None:
    if vit.is_vit_state_dict(state):
        return "ViT"
    if swin_v2.is_swinv2_state_dict(state):
        return "Swin V2"
    if any(k.startswith("layers.0.blocks.") for k in state):
        return "Swin"
    return None


def _family_of_model(model: Model) -> str:
    if isinstance(model, SwinBackbone):
        return "Swin V2" if isinstance(model.config.trunk, SwinV2Config) else "Swin"
    return "ViT" if isinstance(model, VisionTransformer) else "Swin V2" if isinstance(model, SwinTransformerV2) else "Swin"


def load_weights(model: Model, path: str | Path, *, adapt: bool = False) -> RawCheckpoint:
    """Load ``path`` into ``model`` (strict, after layout conversion). A backbone's
    conversion keeps what it dropped, by reason, in ``raw.meta["dropped"]``."""
    raw = read_checkpoint(path)
    if isinstance(model, SwinBackbone):
        weights = backbone_filter_fn(raw.state_dict, model)
        family, wanted = _family_of_state(weights.state_dict), _family_of_model(model)
        if family is not None and family != wanted:
            raise SwinedgeError(f"{raw.path} holds {family} weights, not {wanted}: choose a {family} model name (see `swinedge models`)")
        load_state_dict_strict(model, weights.state_dict, str(raw.path))
        raw.meta = {**(raw.meta or {}), "layout": weights.layout, "dropped": weights.dropped, "resized_tables": weights.resized_tables}
        return raw
    if is_detection_state_dict(raw.state_dict) and not isinstance(model, VisionTransformer):
        raise SwinedgeError(
            f"{raw.path} holds a detection/segmentation backbone (no classifier head 'head.fc.weight'): "
            "build it with --features, or give a classifier checkpoint"
        )
    family = _family_of_state(raw.state_dict)
    wanted = _family_of_model(model)
    if family is not None and family != wanted:
        raise SwinedgeError(f"{raw.path} holds {family} weights, not {wanted}: choose a {family} model name (see `swinedge models`)")
    if isinstance(model, VisionTransformer):
        state, _ = vit.checkpoint_filter_fn(raw.state_dict, model, adapt=adapt)
        if adapt:  # a head of another class count, or none (MAE pretraining): the model's fresh head
            target = model.state_dict()
            for k in [k for k in target if k.startswith(("head.", "head_dist."))]:
                if k not in state or state[k].shape != target[k].shape:
                    state[k] = target[k]
    elif isinstance(model, SwinTransformerV2):
        state = swin_v2.checkpoint_filter_fn(raw.state_dict, model, adapt=adapt)
    else:
        state = checkpoint_filter_fn(raw.state_dict, model, adapt=adapt)
    load_state_dict_strict(model, state, str(raw.path))
    return raw


def save_checkpoint(
    model: Model, path: str | Path, *, name: str, source: dict[str, Any] | None, into: Path | None = None
) -> Path:
    """Write a self-describing checkpoint (timm layout + config), in the format of
    ``path``'s suffix: atomically at ``path``, or into ``into`` (a temporary file the
    caller renames, with the manifest)."""
    path = Path(path)
    meta = {"format": CHECKPOINT_FORMAT, "model": name, "config": model.config.to_dict(), "source": source}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with contextlib.nullcontext(into) if into is not None else atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={_META_KEY: json.dumps(meta)})
        else:
            torch.save({_META_KEY: meta, "state_dict": state}, tmp)
    return path


NAME_INIT_SEED = 0


def load_model(
    model_or_checkpoint: str | Path, *, map_location: str = "cpu", input_size: tuple[int, int] | None = None
) -> tuple[Model, dict[str, Any]]:
    """A variant name or a self-describing checkpoint -> (model in eval, info).

    A bare variant name means random weights drawn with a fixed seed, so the same name
    is the same model in every command (export, verify, benchmark agree with each other).
    ``info`` has ``model`` (variant name), ``config``, and ``source`` (file and hash).
    ``input_size``: a backbone checkpoint built for another (height, width).
    """
    s = str(model_or_checkpoint)
    path = Path(s)
    if not path.exists() and not any(sep in s for sep in ("/", "\\")) and path.suffix == "":
        spec = get_spec(s)
        if input_size is not None:
            raise SwinedgeError(f"{s} is a classifier: --input-size and --sizes are for backbones (build one with `swinedge build {s} --features`)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NAME_INIT_SEED)
            model = model_from_config(spec.config).eval()
        source = {"file": None, "init": f"random, seed {NAME_INIT_SEED}"}
        return model, {"model": spec.name, "config": spec.config.to_dict(), "source": source}
    raw = read_checkpoint(path)
    if raw.meta is None or "config" not in raw.meta:
        raise SwinedgeError(
            f"{path} does not describe its architecture: run `swinedge build MODEL --weights {path} --out FILE` first"
        )
    cfg = config_from_dict(raw.meta["config"])
    if isinstance(cfg, BackboneConfig):
        if input_size is not None:
            cfg = cfg.at_size(input_size)
        model = model_from_config(replace(cfg, trunk=replace(cfg.trunk, drop_path_rate=0.0)))
    elif input_size is not None:
        raise SwinedgeError(f"{path} is a classifier: --input-size and --sizes are for backbones (build one with `swinedge build MODEL --features`)")
    else:
        model = model_from_config(replace(cfg, drop_path_rate=0.0))
    load_state_dict_strict(model, raw.state_dict, str(path))
    model.eval().to(map_location)
    info = {
        "model": raw.meta.get("model", "custom"),
        "config": cfg.to_dict(),
        "source": {"file": path.name, "sha256": raw.sha256},
    }
    return model, info
