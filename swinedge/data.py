"""Image sets for calibration, verification and benchmarks.

Sources:

* a folder, searched recursively for jpg/jpeg/png/webp/bmp; when images sit in
  subfolders, the sorted subfolder names are the class labels (ImageNet's layout);
* a manifest file: ``.txt``/``.csv`` lines ``path[,label]`` (``#`` comments), or
  ``.json`` ``[{"path": ..., "label": ...}, ...]``; relative paths are resolved against
  the manifest's folder;
* ``default``: the real colour photographs bundled in scikit-image (no download). It has
  9 photos; asking for more draws seeded random crops of them (calibration needs
  activation statistics, and crops of real photos give real ones);
* ``digits``: the held-out split of scikit-learn's handwritten digits (labelled), and
  ``digits-train`` its training split (to calibrate on images the test never sees).

Preprocessing equals timm's eval transform: shorter side to ``floor(img_size / 0.875)``
(bicubic), center crop, ImageNet mean/std; every step can be overridden.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swinedge.errors import MissingDependencyError, SwinedgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)


@dataclass(frozen=True)
class Preprocess:
    """timm's eval transform; the defaults are those of ImageNet-trained Swin."""

    img_size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    resize: int | None = None  # shorter side before the crop; default floor(img_size / crop_pct)

    @property
    def resize_size(self) -> int:
        return self.resize if self.resize is not None else math.floor(self.img_size / self.crop_pct)

    @classmethod
    def from_spec(cls, img_size: int, channels: int, spec: dict | None) -> "Preprocess":
        """From an artifact manifest's ``preprocess`` entry (``swinedge.export.preprocess_spec``)."""
        spec = spec or {}
        return cls(
            int(img_size),
            resize=int(spec["resize"]) if spec.get("resize") else None,
            interpolation=spec.get("interpolation", "bicubic"),
            mean=tuple(spec.get("mean", IMAGENET_MEAN)),
            std=tuple(spec.get("std", IMAGENET_STD)),
            channels=int(channels),
        )

    def with_overrides(
        self,
        *,
        resize: int | None = None,
        interpolation: str | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> "Preprocess":
        """A copy with the given steps replaced (None keeps the current one), validated."""
        import dataclasses

        if resize is not None and resize < self.img_size:
            raise SwinedgeError(f"--resize {resize} is smaller than the {self.img_size}px crop")
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise SwinedgeError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) not in (1, self.channels):
                raise SwinedgeError(f"--{name} needs {self.channels} comma-separated values, got {len(values)}")
        if std is not None and min(std) <= 0:
            raise SwinedgeError("--std values must be > 0")
        changes = {k: v for k, v in dict(resize=resize, interpolation=interpolation, mean=mean, std=std).items() if v is not None}
        for key in ("mean", "std"):
            if key in changes and len(changes[key]) == 1:
                changes[key] = changes[key] * self.channels
        return dataclasses.replace(self, **changes)

    def __call__(self, image: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
        from PIL import Image

        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[self.interpolation]
        image = image.convert("L" if self.channels == 1 else "RGB")
        scale = self.resize_size
        w, h = image.size
        if w <= h:
            size = (scale, max(1, int(scale * h / w)))
        else:
            size = (max(1, int(scale * w / h)), scale)
        image = image.resize(size, resample)
        w, h = image.size
        top = int(round((h - self.img_size) / 2.0))
        left = int(round((w - self.img_size) / 2.0))
        image = image.crop((left, top, left + self.img_size, top + self.img_size))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.channels > arr.shape[2]:
            arr = np.repeat(arr, self.channels, axis=2)
        mean = np.asarray(self.mean[: self.channels], dtype=np.float32)
        std = np.asarray(self.std[: self.channels], dtype=np.float32)
        return ((arr - mean) / std).transpose(2, 0, 1).copy()


@dataclass
class ImageSet:
    """Preprocessed images ``[N, C, H, W]`` float32, optional labels, and provenance."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    paths: list[str] = field(default_factory=list)
    skipped: int = 0
    class_names: list[str] | None = None
    preprocess: Preprocess | None = None

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> dict:
        out = {
            "source": self.source,
            "count": len(self),
            "labelled": self.labels is not None,
            "skipped": self.skipped,
        }
        if self.preprocess is not None:
            p = self.preprocess
            out["preprocess"] = {
                "resize": p.resize_size,
                "crop": p.img_size,
                "interpolation": p.interpolation,
                "mean": list(p.mean),
                "std": list(p.std),
            }
        return out


def _list_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    subdirs = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    if subdirs and all(len(p.relative_to(root).parts) > 1 for p in files):
        index = {name: i for i, name in enumerate(subdirs)}
        return files, [index[p.relative_to(root).parts[0]] for p in files], subdirs
    return files, None, None


def _read_manifest(path: Path) -> tuple[list[Path], list[int] | None]:
    entries: list[tuple[str, str | None]] = []
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, list):
                raise SwinedgeError(f"manifest {path}: expected a JSON list of {{'path': ..., 'label': ...}}")
            for item in data:
                if isinstance(item, str):
                    entries.append((item, None))
                elif isinstance(item, dict) and "path" in item:
                    entries.append((str(item["path"]), None if item.get("label") is None else str(item["label"])))
                else:
                    raise SwinedgeError(f"manifest {path}: entries need a 'path'")
        else:
            with open(path, newline="") as f:
                for row in csv.reader(line for line in f if line.strip() and not line.lstrip().startswith("#")):
                    if row:
                        entries.append((row[0].strip(), row[1].strip() if len(row) > 1 and row[1].strip() else None))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SwinedgeError(f"cannot read manifest {path}: {e}") from None
    paths = [(path.parent / p) if not os.path.isabs(p) else Path(p) for p, _ in entries]
    raw = [lab for _, lab in entries]
    if any(lab is not None for lab in raw):
        if any(lab is None for lab in raw):
            raise SwinedgeError(f"manifest {path}: either every line has a label or none does")
        try:
            return paths, [int(lab) for lab in raw]  # type: ignore[arg-type]
        except ValueError:
            raise SwinedgeError(f"manifest {path}: labels must be integer class indices") from None
    return paths, None


def default_photo_paths() -> list[Path]:
    try:
        import skimage
    except ImportError:
        raise MissingDependencyError("the default calibration set needs scikit-image: pip install 'swinedge[data]'") from None
    root = Path(skimage.__file__).parent / "data"
    paths = [root / name for name in DEFAULT_PHOTOS if (root / name).exists()]
    if not paths:
        raise SwinedgeError(f"scikit-image's bundled photos are missing from {root}: reinstall scikit-image")
    return paths


def _random_crops(images: list["PIL.Image.Image"], count: int, seed: int) -> list["PIL.Image.Image"]:  # noqa: F821
    """Seeded crops covering 35-100% of each photo's area, cycling through the photos."""
    rng = random.Random(seed)
    out = list(images)
    i = 0
    while len(out) < count:
        img = images[i % len(images)]
        w, h = img.size
        frac = math.sqrt(rng.uniform(0.35, 1.0))
        cw, ch = max(8, int(w * frac)), max(8, int(h * frac))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        out.append(crop.transpose(0) if rng.random() < 0.5 else crop)  # 0: horizontal flip
        i += 1
    return out[:count]


def load_image_set(
    source: str | Path | None,
    preprocess: Preprocess,
    *,
    size: int | None = None,
    seed: int = 0,
    warn=None,
) -> ImageSet:
    """Load ``source`` (folder, manifest, ``default``/None or ``digits``) preprocessed.

    ``size`` takes a seeded random subset; fewer images than ``size`` is an error (the
    default photo set instead adds seeded crops). ``warn`` receives a one-line message
    when unreadable files were skipped.
    """
    if size is not None and size < 1:
        raise SwinedgeError(f"--calib-size must be >= 1, got {size}")
    src = "default" if source is None else str(source)
    if src in ("digits", "digits-train"):
        from swinedge.digits import digits_image_set

        return digits_image_set(preprocess, size=size, seed=seed, train=src == "digits-train")
    from PIL import Image, UnidentifiedImageError

    labels: list[int] | None
    class_names = None
    if src == "default":
        paths, labels = default_photo_paths(), None
        where = "scikit-image's bundled photographs"
    else:
        root = Path(src)
        if not root.exists():
            raise SwinedgeError(f"image source not found: {root} (give a folder, a manifest file, 'default', 'digits' or 'digits-train')")
        if root.is_dir():
            paths, labels, class_names = _list_folder(root)
            where = f"{root} (recursive; {', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
        else:
            paths, labels = _read_manifest(root)
            where = f"manifest {root}"
    order = list(range(len(paths)))
    if size is not None and size < len(paths):
        order = sorted(random.Random(seed).sample(order, size))
    images: list[Image.Image] = []
    kept_labels: list[int] = []
    kept_paths: list[str] = []
    skipped = 0
    for i in order:
        try:
            with Image.open(paths[i]) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError):
            skipped += 1
            continue
        kept_paths.append(str(paths[i]))
        if labels is not None:
            kept_labels.append(labels[i])
    if skipped and warn is not None:
        warn(f"skipped {skipped} unreadable or non-image file(s) in {where}")
    if not images:
        raise SwinedgeError(f"no readable images found in {where}")
    if size is not None and len(images) < size:
        if src == "default":
            images = _random_crops(images, size, seed)
            kept_paths = kept_paths + [f"crop:{i}" for i in range(len(kept_paths), size)]
        else:
            raise SwinedgeError(f"asked for {size} images but found {len(images)} readable in {where}: lower --calib-size or add images")
    arrays = np.stack([preprocess(im) for im in images]).astype(np.float32)
    return ImageSet(
        arrays,
        np.asarray(kept_labels, dtype=np.int64) if labels is not None else None,
        src,
        kept_paths,
        skipped,
        class_names,
        preprocess,
    )


def tile_batch(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images, cycling through ``images`` when there are fewer."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch])
