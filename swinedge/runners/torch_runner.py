"""PyTorch backend: the float reference, also fp16 autocast and the fused attention op."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinedge.errors import SwinedgeError
from swinedge.runners.base import Runner


class TorchRunner(Runner):
    """The PyTorch model: fp32 or fp16 autocast, reference or fused attention, CPU or CUDA."""

    def __init__(
        self,
        source: str | Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        attention: str = "reference",
        input_size: tuple[int, int] | None = None,
    ):
        """``input_size``: a backbone checkpoint at another (height, width) than it was built for."""
        if precision not in ("fp32", "fp16"):
            raise SwinedgeError(f"torch runner precision must be fp32 or fp16, got '{precision}'")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SwinedgeError("torch runner asked for CUDA but no GPU is visible: use --device cpu")
        if precision == "fp16" and not device.startswith("cuda"):
            raise SwinedgeError("fp16 autocast of the torch runner needs a CUDA device")
        self.source = source
        self.device = device
        self.precision = precision
        self.attention = attention
        self.input_size = input_size
        self.name = f"torch-{precision}" + ("-fused" if attention == "fused" else "")
        self.model: torch.nn.Module | None = None
        self.info: dict[str, Any] = {}

    def load(self) -> "TorchRunner":
        from swinedge.models import SwinBackbone, SwinTransformer, SwinTransformerV2, VisionTransformer, load_model

        if isinstance(self.source, (SwinTransformer, SwinTransformerV2, VisionTransformer)):
            model, self.info = self.source, {"model": "custom", "config": self.source.config.to_dict()}
        else:
            model, self.info = load_model(self.source, input_size=self.input_size)
        if isinstance(model, (SwinTransformer, SwinTransformerV2, SwinBackbone)):  # both have the fused kernel
            model.set_attention_impl(self.attention)
        elif self.attention != "reference":
            raise SwinedgeError(f"{self.info.get('model')} has no fused attention kernel (use --torch-attention reference)")
        self.model = model.eval().to(self.device)
        return self

    @torch.no_grad()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        assert self.model is not None, "call load() first"
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            y = self.model(x)
        if isinstance(y, tuple):
            raise SwinedgeError("the model is a backbone: it returns stage maps, not logits (use infer_outputs)")
        return y.float().cpu().numpy()

    @torch.no_grad()
    def infer_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        assert self.model is not None, "call load() first"
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            y = self.model(x)
        if not isinstance(y, tuple):
            return {"logits": y.float().cpu().numpy()}
        return {name: t.float().cpu().numpy() for name, t in zip(self.model.config.output_names(), y)}

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @property
    def input_spec(self) -> dict[str, Any]:
        cfg = self.model.config if self.model is not None else None
        if cfg is None:
            return {}
        from swinedge.export import preprocess_spec
        from swinedge.models import BackboneConfig

        if isinstance(cfg, BackboneConfig):
            from swinedge.data import FitPadPreprocess

            h, w = cfg.input_size
            return {
                "task": "backbone",
                "img_size": cfg.img_size,
                "in_chans": cfg.in_chans,
                "num_classes": None,
                "input_size": (h, w),
                "outputs": cfg.output_names(),
                "preprocess": FitPadPreprocess(h, w).spec(),
            }

        return {"img_size": cfg.img_size, "in_chans": cfg.in_chans, "num_classes": cfg.num_classes, "preprocess": preprocess_spec(cfg.img_size, self.info.get("model"))}

    def close(self) -> None:
        self.model = None
