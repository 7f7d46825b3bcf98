"""Quantization-aware training: fine-tune a model under INT8 fake quantization
(nvidia-modelopt's torch API) and export a Q/DQ ONNX graph that ``build-engine`` takes
as it takes a PTQ graph.

The placement is the PTQ recipe's: every ``nn.Linear`` (qkv, proj, fc1, fc2, patch
merging) INT8, weights per output channel and activations per tensor; the patch
embedding, the classifier, LayerNorm, softmax, the residual Adds and the attention
matmuls stay float. Calibration (max) sets the ranges, which stay fixed while the weights
train (straight-through estimator). With ``distill`` the loss adds a KL term towards the
float model's logits (temperature 2). Runs on CPU for small models.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from swinedge.data import Preprocess, check_image_source, open_images
from swinedge.errors import MissingDependencyError, SwinedgeError
from swinedge.io import refuse_output_over_input
from swinedge.manifest import artifact_with_manifest, manifest_path

# Linear-only INT8 (modelopt 0.47's list form: later entries override earlier ones).
INT8_LINEAR_CFG: dict[str, Any] = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "parent_class": "nn.Linear", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "parent_class": "nn.Linear", "cfg": {"num_bits": 8, "axis": None}},
        {"quantizer_name": "head.*", "enable": False},
        {"quantizer_name": "patch_embed.*", "enable": False},
    ],
    "algorithm": "max",
}
MAX_EPOCHS = 1000
MAX_QAT_BATCH = 1024
TEMPERATURE = 2.0


@dataclass
class QatOptions:
    data: str  # labelled training images: class folders, a manifest, or 'digits-train'
    epochs: int = 1
    batch: int = 32
    lr: float = 1e-5
    calib_size: int = 128
    distill: bool = False
    seed: int = 0
    size: int | None = None  # training images per epoch (None: all)

    def validate(self) -> None:
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise SwinedgeError(f"--epochs must be 1..{MAX_EPOCHS}, got {self.epochs}")
        if not 1 <= self.batch <= MAX_QAT_BATCH:
            raise SwinedgeError(f"--batch must be 1..{MAX_QAT_BATCH}, got {self.batch}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise SwinedgeError(f"--lr must be in (0, 1], got {self.lr}")
        if not 1 <= self.calib_size <= 4096:
            raise SwinedgeError(f"--calib-size must be 1..4096, got {self.calib_size}")
        if self.size is not None and not 1 <= self.size <= 10_000_000:
            raise SwinedgeError(f"--size must be 1..10000000, got {self.size}")
        if self.data in (None, "default"):
            raise SwinedgeError("QAT trains on labelled images: give --data a folder of class folders, a manifest, or 'digits-train'")
        check_image_source(self.data, "--data")


@dataclass
class QatResult:
    onnx_path: Path
    manifest_path: Path
    seconds: float
    losses: list[float]  # mean loss per epoch
    manifest: dict[str, Any]


def _import_modelopt_torch():
    # modelopt warns, on first use of its export helpers, that transformers is absent.
    warnings.filterwarnings("ignore", message="Cannot find transformers package")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.quantization as mtq
    except ImportError as e:
        missing = e.name or "a dependency"
        raise MissingDependencyError(f"QAT needs nvidia-modelopt's torch quantization (missing: {missing}): pip install 'swinedge[quantize]'") from None
    return mtq


def qat(
    checkpoint: str | Path,
    out: str | Path,
    options: QatOptions,
    *,
    on_step: Callable[[str, int | None], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> QatResult:
    """Fine-tune ``checkpoint`` under INT8 fake quantization and write ``out`` (ONNX with
    Q/DQ) and its manifest atomically."""
    import torch
    import torch.nn.functional as F

    from swinedge.export import INPUT_NAME, OUTPUT_NAME, preprocess_spec
    from swinedge.models import load_model
    from swinedge.quantize import peak_memory_mb

    options.validate()
    out = Path(out)
    if out.suffix != ".onnx":
        raise SwinedgeError(f"--out {out}: use a file name ending in .onnx")
    refuse_output_over_input(out, checkpoint, options.data)
    step = on_step or (lambda _m, _t: None)
    mtq = _import_modelopt_torch()
    model, info = load_model(checkpoint)
    cfg = model.config
    spec = preprocess_spec(cfg.img_size, info.get("model"))
    preprocess = Preprocess.from_spec(cfg.img_size, cfg.in_chans, spec)
    train = open_images(options.data, preprocess, size=options.size, seed=options.seed, num_classes=cfg.num_classes)
    if not train.describe().get("labelled"):
        raise SwinedgeError(f"--data {options.data}: QAT needs labelled images (class folders, or 'digits-train')")
    calib = open_images(options.data, preprocess, size=options.calib_size, seed=options.seed + 1, labelled=False)
    torch.manual_seed(options.seed)
    start = time.perf_counter()
    model.eval()
    teacher = copy.deepcopy(model).eval() if options.distill else None  # quantize converts in place
    if teacher is not None:
        teacher.requires_grad_(False)

    def forward_loop(m) -> None:
        with torch.no_grad():
            for chunk in calib.batches(options.batch, warn=warn):
                m(torch.from_numpy(chunk.images))
                if on_batch is not None:
                    on_batch(len(chunk))

    step("QAT: calibrating INT8 ranges", len(calib))
    with _quiet():
        model = mtq.quantize(model, INT8_LINEAR_CFG, forward_loop)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=options.lr, weight_decay=0.0)
    losses = []
    for epoch in range(options.epochs):
        step(f"QAT: epoch {epoch + 1}/{options.epochs}", len(train))
        model.train()
        total, count = 0.0, 0
        for chunk in train.batches(options.batch, warn=warn):
            x = torch.from_numpy(chunk.images)
            y = torch.from_numpy(np.asarray(chunk.labels, dtype=np.int64))
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    target = F.log_softmax(teacher(x) / TEMPERATURE, -1)
                loss = loss + F.kl_div(F.log_softmax(logits / TEMPERATURE, -1), target, log_target=True, reduction="batchmean") * TEMPERATURE**2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                raise SwinedgeError(f"QAT loss became {loss.item()} in epoch {epoch + 1}: lower --lr")
            total += loss.item() * len(x)
            count += len(x)
            if on_batch is not None:
                on_batch(len(x))
        losses.append(total / max(count, 1))
    model.eval()
    seconds = time.perf_counter() - start
    step("QAT: exporting the Q/DQ graph", None)
    with artifact_with_manifest("onnx", out) as pending:
        dummy = torch.zeros(2, cfg.in_chans, cfg.img_size, cfg.img_size)
        with torch.no_grad(), warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")  # tracer notes from the quantizers' range checks
            model(dummy[:1])  # weight-only caches (Swin V2's bias tables) become constants
            torch.onnx.export(
                model, (dummy,), str(pending.path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17,
                do_constant_folding=True, dynamo=False,
            )  # fmt: skip
        import onnx

        from swinedge.export import remove_identity_nodes

        proto = remove_identity_nodes(onnx.load(str(pending.path)))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(pending.path))
        q_nodes = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
        if not q_nodes:
            raise SwinedgeError("the QAT export has no Q/DQ nodes; this is a swinedge bug, please report it")
        pending.fields.update(
            model=info["model"],
            config=cfg.to_dict(),
            source=info.get("source"),
            precision="int8",
            attention="native",
            batch="dynamic",
            opset=17,
            input={"name": INPUT_NAME, "shape": ["batch", cfg.in_chans, cfg.img_size, cfg.img_size]},
            output={"name": OUTPUT_NAME, "classes": cfg.num_classes},
            preprocess=spec,
            quantization={
                "tool": "modelopt.torch.quantization (QAT)",
                "placement": "nn.Linear INT8 (weights per channel, activations per tensor); patch embedding, head, "
                "LayerNorm, softmax, residual Adds and attention matmuls float",
                "quantize_nodes": q_nodes,
                "high_precision_dtype": "fp32",
                "calibration": {**calib.describe(), "method": "max", "seed": options.seed + 1},
                "training": {
                    **train.describe(),
                    "epochs": options.epochs,
                    "batch": options.batch,
                    "lr": options.lr,
                    "distill": options.distill,
                    "loss_per_epoch": [round(v, 5) for v in losses],
                    "seed": options.seed,
                },
                "seconds": round(seconds, 2),
                "peak_memory_mb": peak_memory_mb(),
            },
        )
    return QatResult(out, manifest_path(out), seconds, losses, pending.manifest)


@contextlib.contextmanager
def _quiet():
    """modelopt prints on quantize and export; progress goes through ``on_step``."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
