"""The embedded accuracy task: scikit-learn's handwritten digits.

1,797 real 8x8 scans of handwritten digits (UCI), split 70/30 with a fixed seed and
stratified by class, upscaled (bilinear) to the model's input size, replicated to three
channels and normalized like ImageNet input. ``swin_nano_patch2_window4_32`` (shifted
windows in both stages) trains on it on a CPU in about a minute. FP32 / FP16 / INT8
top-1 on the held-out split is a real accuracy table without ImageNet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from swinedge.errors import MissingDependencyError
from swinedge.models import create_model, save_checkpoint

DIGITS_MODEL = "swin_nano_patch2_window4_32"
SPLIT_SEED = 0
TEST_FRACTION = 0.3


@dataclass
class DigitsSplit:
    train_x: np.ndarray  # [N, 3, S, S] float32, normalized
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingDependencyError("the digits task needs scikit-learn: pip install 'swinedge[data]'") from None
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split: the same test images on every machine."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * TEST_FRACTION))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def held_out_scans() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split's raw 8x8 scans (values 0..1) and labels."""
    images, labels = _load_raw()
    _, te = _split_indices(labels)
    return images[te], labels[te]


def _to_input(images01: np.ndarray, size: int, mean, std, channels: int = 3) -> np.ndarray:
    x = torch.from_numpy(images01)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.repeat(1, channels, 1, 1)
    m = torch.tensor(mean[:channels]).view(1, -1, 1, 1)
    s = torch.tensor(std[:channels]).view(1, -1, 1, 1)
    return ((x - m) / s).numpy().astype(np.float32)


def digits_split(img_size: int = 32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> DigitsSplit:
    images, labels = _load_raw()
    tr, te = _split_indices(labels)
    return DigitsSplit(
        _to_input(images[tr], img_size, mean, std), labels[tr], _to_input(images[te], img_size, mean, std), labels[te]
    )


class _DigitsReader:
    """The digits split's 8x8 scans, resized and normalised one at a time."""

    def __init__(self, images01: np.ndarray, preprocess, name: str):
        self.images01, self.preprocess, self.prefix = images01, preprocess, name

    def __len__(self) -> int:
        return len(self.images01)

    def name(self, i: int) -> str:
        return f"{self.prefix}:{i}"

    def read(self, i: int) -> np.ndarray:
        p = self.preprocess
        return _to_input(self.images01[i : i + 1], p.img_size, p.mean, p.std, p.channels)[0]


def digits_stream(preprocess, *, size: int | None = None, seed: int = 0, train: bool = False):
    """The held-out split (or, for calibration, the training split) as a labelled
    :class:`~swinedge.data.ImageStream`."""
    from swinedge.data import ImageStream

    images, labels = _load_raw()
    tr, te = _split_indices(labels)
    idx = tr if train else te
    order = list(range(len(idx)))
    if size is not None and size < len(idx):
        order = np.sort(np.random.default_rng(seed).choice(len(idx), size, replace=False)).tolist()
    name = "digits-train" if train else "digits"
    if size is not None and size > len(idx):
        from swinedge.errors import SwinedgeError

        raise SwinedgeError(f"asked for {size} images but {name} has {len(idx)}: lower the image count")
    reader = _DigitsReader(images[idx], preprocess, name)
    return ImageStream(name, name, reader, order, [], labels[idx].tolist(), [str(i) for i in range(10)], preprocess, None if size is None else len(order))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to 3 px (zero-filled at the background level)."""
    pad = 3
    b, _, h, w = x.shape
    bg = x.amin(dim=(2, 3), keepdim=True)
    padded = F.pad(x - bg, (pad, pad, pad, pad)) + bg
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).clamp(max=h + 2 * pad - 1)
    cols = (dx[:, None] + torch.arange(w)[None]).clamp(max=w + 2 * pad - 1)
    bidx = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_digits_model(
    model_name: str = DIGITS_MODEL,
    *,
    epochs: int = 50,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 2e-3,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train a digits model (Swin by default, or a ViT) on CPU; returns (model in eval
    mode, training summary)."""
    torch.manual_seed(seed)
    split = digits_split()
    model = create_model(model_name, drop_path_rate=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    x = torch.from_numpy(split.train_x)
    y = torch.from_numpy(split.train_y)
    steps_per_epoch = -(-len(x) // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    loss_val = float("nan")
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            xb = _augment(x[idx], gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_val = float(loss.detach())
        if progress is not None:
            progress(epoch + 1, epochs, loss_val)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(split.test_x)).argmax(1).numpy()
    top1 = float((pred == split.test_y).mean() * 100)
    summary = {
        "model": model_name,
        "epochs": epochs,
        "seed": seed,
        "train_images": int(len(x)),
        "test_images": int(len(split.test_y)),
        "test_top1": top1,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return model, summary


def check_cache_dir(cache_dir: str | Path) -> Path:
    """The cache folder, checked before any training: a folder (or one that can be
    created) that this user can write; otherwise a one-line error naming SWINEDGE_CACHE."""
    import os

    from swinedge.errors import SwinedgeError

    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise SwinedgeError(f"the cache {cache_dir} is a file, not a folder: remove it or set SWINEDGE_CACHE to a folder")
    parent = cache_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SwinedgeError(f"the cache {cache_dir} cannot be created: {parent} is a file (set SWINEDGE_CACHE to a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SwinedgeError(f"the cache {cache_dir} is not writable (check {parent}'s permissions or set SWINEDGE_CACHE)")
    return cache_dir


def digits_checkpoint(
    cache_dir: str | Path, *, model: str = DIGITS_MODEL, epochs: int = 50, seed: int = 0, progress=None
) -> tuple[Path, dict]:
    """Train ``model`` once and cache the checkpoint under ``cache_dir``; later calls reuse it."""
    import json

    cache_dir = Path(cache_dir)
    path = cache_dir / f"digits-{model}-e{epochs}-s{seed}.pt"
    info_path = path.with_name(path.name + ".train.json")
    if path.exists() and info_path.exists():
        return path, json.loads(info_path.read_text())
    check_cache_dir(cache_dir)  # before the minute of training, not after it
    net, summary = train_digits_model(model, epochs=epochs, seed=seed, progress=progress)
    save_checkpoint(net, path, name=model, source={"file": "sklearn.datasets.load_digits", "train": summary})
    from swinedge.io import write_json_atomic

    write_json_atomic(info_path, summary)
    return path, summary
