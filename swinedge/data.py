"""Image sets for calibration, verification and benchmarks.

Sources:

* a folder, searched recursively for jpg/jpeg/png/webp/bmp; when every image sits in a
  subfolder, the subfolder is its class (ImageNet's layout), numbered by the model's
  class list (``--labels``), by folder names that are class indices, or by the
  ImageNet-1k synset ids for 1000-class models, never by the folders present;
* a manifest file: ``.txt``/``.csv`` lines ``path[,label]`` (``#`` comments), or
  ``.json`` ``[{"path": ..., "label": ...}, ...]``; relative paths are resolved against
  the manifest's folder;
* ``default``: the real colour photographs bundled in scikit-image (no download). It has
  9 photos; asking for more draws seeded random crops of them (calibration needs
  activation statistics, and crops of real photos give real ones);
* ``digits``: the held-out split of scikit-learn's handwritten digits (labelled), and
  ``digits-train`` its training split (to calibrate on images the test never sees).

Sets are streamed (:class:`ImageStream`): memory holds one batch, whatever the set's
size; only calibration sets, whose size is bounded, are read whole.

Preprocessing equals timm's eval transform: shorter side to ``floor(img_size / 0.875)``
(bicubic), center crop, ImageNet mean/std; every step can be overridden.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import os
import random
import re
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from swinedge.errors import MissingDependencyError, SwinedgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_IMAGES = 100_000_000  # a typo, not a data set (ImageNet-21k has 14 million)
MAX_CROPS = 100_000
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


_REBUILD = "the manifest was edited or is damaged; export the graph (or build the checkpoint) again to rewrite it"


def _spec_dict(spec: Any) -> dict:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise SwinedgeError(f"the manifest's preprocess entry must be an object, got {type(spec).__name__}: {_REBUILD}")
    return spec


def _positive_int(value: Any, name: str) -> int:
    """A manifest's size field: a positive integer (not a string, a bool or a float)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SwinedgeError(f"the manifest's {name} must be a positive integer, got {value!r}: {_REBUILD}")
    if value > 1_000_000:
        raise SwinedgeError(f"the manifest's {name} must be at most 1,000,000, got {value}: {_REBUILD}")
    return int(value)


def _interpolation(value: Any) -> str:
    if not isinstance(value, str) or value not in INTERPOLATIONS:
        raise SwinedgeError(f"the manifest's preprocess.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {value!r}: {_REBUILD}")
    return value


def _channel_values(value: Any, name: str, channels: int, *, positive: bool = False) -> tuple[float, ...]:
    """mean/std from a manifest: one finite number per channel (std > 0); export writes
    three for any model, of which a one-channel model uses the first."""
    ok = (
        isinstance(value, (list, tuple))
        and len(value) in (channels, 3)
        and len(value) >= channels
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not ok:
        raise SwinedgeError(f"the manifest's {name} must be {max(channels, 3)} finite numbers (one per channel), got {value!r}: {_REBUILD}")
    if positive and min(value) <= 0:
        raise SwinedgeError(f"the manifest's {name} must be {channels} numbers > 0 (it divides every pixel), got {list(value)!r}: {_REBUILD}")
    return tuple(float(v) for v in value)


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
        spec = _spec_dict(spec)
        img_size, channels = _positive_int(img_size, "img_size"), _positive_int(channels, "in_chans")
        resize = spec.get("resize")
        return cls(
            img_size,
            resize=None if resize is None else _positive_int(resize, "preprocess.resize"),
            interpolation=_interpolation(spec.get("interpolation", "bicubic")),
            mean=_channel_values(spec.get("mean", IMAGENET_MEAN), "preprocess.mean", channels),
            std=_channel_values(spec.get("std", IMAGENET_STD), "preprocess.std", channels, positive=True),
            channels=channels,
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

        if resize is not None and not self.img_size <= resize <= 4 * self.img_size:
            raise SwinedgeError(f"--resize must be {self.img_size}..{4 * self.img_size} (the crop is {self.img_size}px), got {resize}")
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise SwinedgeError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) not in (1, self.channels):
                raise SwinedgeError(f"--{name} needs {self.channels} comma-separated values, got {len(values)}")
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and not all(math.isfinite(v) for v in values):
                raise SwinedgeError(f"--{name} takes finite numbers, got {','.join(str(v) for v in values)}")
        if std is not None and min(std) <= 0:
            raise SwinedgeError("--std values must be > 0")
        changes = {k: v for k, v in dict(resize=resize, interpolation=interpolation, mean=mean, std=std).items() if v is not None}
        for key in ("mean", "std"):
            if key in changes and len(changes[key]) == 1:
                changes[key] = changes[key] * self.channels
        return dataclasses.replace(self, **changes)

    def budget_error(self, width: int, height: int) -> str | None:
        """Why an image of this header size is refused (its resized size would exceed
        :data:`swinedge.transforms.MAX_RESIZED_PIXELS`), or None."""
        from swinedge.transforms import resize_budget_error

        return resize_budget_error(width, height, self.resize_size)

    def serving_record(self) -> dict:
        """Everything :func:`swinedge.transforms.transform_from_record` needs (JSON)."""
        return {"mode": "center-crop", "img_size": self.img_size, "resize": self.resize_size, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "channels": self.channels}  # fmt: skip

    def __call__(self, image: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
        from swinedge.transforms import resize_center_crop

        return resize_center_crop(image, self.img_size, self.resize_size, self.interpolation, self.mean, self.std, self.channels)


@dataclass(frozen=True)
class FitPadPreprocess:
    """Detection/segmentation eval transform for a fixed (height, width) input: resize
    keeping the aspect ratio so the image fits inside, normalise, zero-pad at the
    bottom/right (mmdet's keep-ratio resize with its pad after normalisation)."""

    height: int
    width: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3

    @property
    def img_size(self) -> int:
        return max(self.height, self.width)

    @property
    def resize_size(self) -> int:
        return self.img_size

    @classmethod
    def from_spec(cls, size: tuple[int, int] | list[int], channels: int, spec: dict | None) -> "FitPadPreprocess":
        spec = _spec_dict(spec)
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise SwinedgeError(f"the manifest's input size must be [height, width], got {size!r}: {_REBUILD}")
        channels = _positive_int(channels, "in_chans")
        return cls(
            _positive_int(size[0], "input size (height)"),
            _positive_int(size[1], "input size (width)"),
            interpolation=_interpolation(spec.get("interpolation", "bilinear")),
            mean=_channel_values(spec.get("mean", IMAGENET_MEAN), "preprocess.mean", channels),
            std=_channel_values(spec.get("std", IMAGENET_STD), "preprocess.std", channels, positive=True),
            channels=channels,
        )

    def with_overrides(
        self,
        *,
        resize: int | None = None,
        interpolation: str | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> "FitPadPreprocess":
        """A copy with interpolation/mean/std replaced; a backbone's input is resized to
        fit its size, so ``--resize`` is refused."""
        import dataclasses

        if resize is not None:
            raise SwinedgeError(f"--resize does not apply to a backbone: images are resized to fit {self.height}x{self.width} and padded")
        checked = Preprocess(self.img_size, channels=self.channels).with_overrides(interpolation=interpolation, mean=mean, std=std)
        changes = {k: getattr(checked, k) for k, v in dict(interpolation=interpolation, mean=mean, std=std).items() if v is not None}
        return dataclasses.replace(self, **changes)

    def spec(self) -> dict:
        return {"mode": "fit-pad", "size": [self.height, self.width], "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}

    def serving_record(self) -> dict:
        """Everything :func:`swinedge.transforms.transform_from_record` needs (JSON)."""
        return {**self.spec(), "channels": self.channels}

    def __call__(self, image: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
        from swinedge.transforms import fit_and_pad

        return fit_and_pad(image, self.height, self.width, self.interpolation, self.mean, self.std, self.channels)


def preprocess_for_spec(spec: dict) -> "Preprocess | FitPadPreprocess":
    """The preprocessing an artifact's input spec asks for: ``img_size``, ``in_chans``,
    ``preprocess`` and, for a backbone, ``input_size`` (height, width)."""
    pre = spec.get("preprocess") or {}
    if spec.get("input_size") or pre.get("mode") == "fit-pad":
        size = spec.get("input_size") or pre.get("size")
        return FitPadPreprocess.from_spec(size, spec.get("in_chans", 3), pre)
    return Preprocess.from_spec(spec["img_size"], spec.get("in_chans", 3), pre)


@dataclass
class ImageSet:
    """Preprocessed images ``[N, C, H, W]`` float32 held in memory (calibration sets,
    the digits task), optional labels, and provenance."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    paths: list[str] = field(default_factory=list)
    skipped: int = 0
    class_names: list[str] | None = None
    preprocess: Preprocess | None = None
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (name, why) of each skipped file
    note: str | None = None  # the warning line naming them

    def __len__(self) -> int:
        return len(self.images)

    def skipped_note(self) -> str | None:
        return self.note

    def describe(self) -> dict:
        return _describe(self.source, len(self), self.labels is not None, self.skipped, self.preprocess)


def _describe(source: str, count: int, labelled: bool, skipped: int, preprocess: Preprocess | None) -> dict:
    out = {"source": source, "count": count, "labelled": labelled, "skipped": skipped}
    if isinstance(preprocess, FitPadPreprocess):
        out["preprocess"] = preprocess.spec()
    elif preprocess is not None:
        out["preprocess"] = {
            "resize": preprocess.resize_size,
            "crop": preprocess.img_size,
            "interpolation": preprocess.interpolation,
            "mean": list(preprocess.mean),
            "std": list(preprocess.std),
        }
    return out


@dataclass
class Batch:
    images: np.ndarray  # [n, C, H, W] float32
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)


class UnreadableImage(Exception):
    """A listed file that does not decode as an image; the stream skips it and says so."""


# -- readers: one per kind of source, random access by index --------------------------------------


class _FileReader:
    def __init__(self, paths: list[Path], preprocess: Preprocess, root: Path | None = None):
        self.paths, self.preprocess, self.root = paths, preprocess, root

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        p = self.paths[i]
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return str(p.relative_to(self.root))
        return str(p)

    def decode(self, i: int) -> "PIL.Image.Image":  # noqa: F821
        """The image as a viewer shows it (:func:`swinedge.transforms.viewed`: EXIF
        orientation applied, 16-bit, palette, alpha and CMYK made 8-bit RGB); its size is
        checked against the preprocessing's pixel budget from the header, before decoding."""
        from PIL import Image, UnidentifiedImageError

        from swinedge.transforms import viewed

        path = self.paths[i]
        with contextlib.suppress(OSError):  # a missing file is reported as unreadable below
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise SwinedgeError(f"{self.name(i)} is {_file_kind(path)}, not an image file: image sources take regular files only")
        try:
            with Image.open(path) as im:
                why = self.preprocess.budget_error(*im.size) if hasattr(self.preprocess, "budget_error") else None
                if why is not None:
                    raise SwinedgeError(f"{self.name(i)} {why}: crop the image or remove it from the set")
                im.load()
                out = viewed(im, getattr(self.preprocess, "channels", 3))
                return im.copy() if out is im else out
        except UnidentifiedImageError:
            raise UnreadableImage("not an image") from None
        except FileNotFoundError:
            raise UnreadableImage("missing") from None
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableImage(str(e).split("\n")[0][:80] or type(e).__name__) from None

    def read(self, i: int) -> np.ndarray:
        return self.preprocess(self.decode(i))


class _PhotoReader(_FileReader):
    """scikit-image's photographs, then seeded random crops of them (index >= photos)."""

    def __init__(self, paths: list[Path], preprocess: Preprocess, seed: int):
        super().__init__(paths, preprocess)
        self.seed = seed
        self.count = len(paths)
        self._photos: dict[int, "PIL.Image.Image"] = {}  # noqa: F821  (9 photos, decoded once)

    def __len__(self) -> int:
        return self.count

    def extend_to(self, count: int) -> None:
        self.count = max(self.count, count)

    def name(self, i: int) -> str:
        return self.paths[i].name if i < len(self.paths) else f"crop:{i}"

    def _photo(self, i: int) -> "PIL.Image.Image":  # noqa: F821
        if i not in self._photos:
            self._photos[i] = self.decode(i)
        return self._photos[i]

    def read(self, i: int) -> np.ndarray:
        if i < len(self.paths):
            return self.preprocess(self._photo(i))
        # A crop covering 35-100% of the area of photo i mod 9, flipped half the time.
        rng = random.Random(self.seed * 1_000_003 + i)
        img = self._photo(i % len(self.paths))
        w, h = img.size
        frac = math.sqrt(rng.uniform(0.35, 1.0))
        cw, ch = max(8, int(w * frac)), max(8, int(h * frac))
        x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        return self.preprocess(crop.transpose(0) if rng.random() < 0.5 else crop)  # 0: horizontal flip


# -- labels ----------------------------------------------------------------------------------------


def imagenet1k_classes() -> list[str]:
    """The 1000 ImageNet-1k synset ids in class-index order (sorted, as every ImageNet
    checkpoint numbers them)."""
    text = (Path(__file__).parent / "resources" / "imagenet1k_synsets.txt").read_text()
    return text.split()


def read_class_names(path: str | Path) -> list[str]:
    """A ``--labels`` file: the model's class names in class-index order, one per line
    (``#`` comments), or a JSON list of names."""
    path = Path(path)
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise SwinedgeError(f"--labels {path} is {_file_kind(path)}, not a file of class names")
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Excel, Notepad) is not part of the first name; CRLF is split below
    except (OSError, UnicodeDecodeError) as e:
        raise SwinedgeError(f"cannot read --labels {path}: {e.strerror or e}") from None
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except ValueError as e:
            raise SwinedgeError(f"--labels {path} is not valid JSON: {e}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SwinedgeError(f"--labels {path}: expected a JSON list of class names")
    else:
        names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise SwinedgeError(f"--labels {path} lists no class names")
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if dupes:
        raise SwinedgeError(f"--labels {path} names class '{dupes[0]}' more than once")
    return names


_WNID = re.compile(r"n\d{8}")


def folder_label_map(folders: list[str], where: str, class_names: list[str] | None, num_classes: int | None) -> dict[str, int]:
    """The class index of each class folder: from the model's class list, from folder
    names that are class indices, or from the ImageNet-1k synsets for a 1000-class model.
    Never from the sorted order of the folders present (a partial copy of ImageNet would
    shift every label); a folder that is not a class is an error."""

    def check(index: dict[str, int]) -> dict[str, int]:
        if num_classes is not None:
            over = [f for f, i in index.items() if i >= num_classes]
            if over:
                raise SwinedgeError(f"class folder '{over[0]}' in {where} is class {index[over[0]]}, but the model has {num_classes} classes")
        return index

    if class_names is not None:
        position = {name: i for i, name in enumerate(class_names)}
        unknown = [f for f in folders if f not in position]
        if unknown:
            raise SwinedgeError(
                f"class folder '{unknown[0]}' in {where} is not one of the model's {len(class_names)} class names "
                f"({len(unknown)} folder(s) unknown): rename it or pass --labels FILE with the right class list"
            )
        return check({f: position[f] for f in folders})
    if all(f.isdigit() for f in folders):
        return check({f: int(f) for f in folders})
    if num_classes == 1000 and all(_WNID.fullmatch(f) for f in folders):
        position = {name: i for i, name in enumerate(imagenet1k_classes())}
        unknown = [f for f in folders if f not in position]
        if unknown:
            raise SwinedgeError(f"class folder '{unknown[0]}' in {where} is not an ImageNet-1k synset: pass --labels FILE")
        return {f: position[f] for f in folders}
    shown = ", ".join(f"'{f}'" for f in folders[:3]) + (", ..." if len(folders) > 3 else "")
    raise SwinedgeError(
        f"cannot tell which class each folder of {where} is ({shown}): pass --labels FILE with the model's "
        "class names, one per line in class-index order (or name the folders by class index)"
    )


def _file_kind(path: str | Path) -> str:
    """'a FIFO', 'a socket', 'a device', ... for a path that is not a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "missing"
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return kind
    return "not a regular file"


def _not_regular(path: Path, flag: str) -> SwinedgeError:
    return SwinedgeError(f"{flag}{path} is {_file_kind(path)}, not an image file: image sources take regular files only (a pipe would hang the read)")


def _walk_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, following symlinked folders and files.
    A symlink back to a folder it sits in (a loop) is an error naming it; a dangling link
    with an image suffix is listed (and reported as missing when read); a FIFO, socket or
    device with an image suffix is an error (reading it would hang)."""
    files: list[Path] = []
    try:
        top = os.stat(root)
    except OSError as e:
        raise SwinedgeError(f"cannot list {root}: {e.strerror or e}") from None
    stack: list[tuple[Path, frozenset]] = [(root, frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            raise SwinedgeError(f"cannot list {folder}: {e.strerror or e}") from None
        for entry in entries:
            path = Path(entry.path)
            image_name = path.suffix.lower() in IMAGE_SUFFIXES
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                try:
                    st = entry.stat()
                except OSError as e:
                    raise SwinedgeError(f"cannot list {path}: {e.strerror or e}") from None
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise SwinedgeError(
                        f"{path} is a symlink loop (it links to {os.path.realpath(path)}, a folder it sits in): remove the link"
                    )
                stack.append((path, ancestors | {key}))
            elif is_file:
                if image_name:
                    files.append(path)
            elif image_name:
                if os.path.lexists(path) and os.path.exists(path):
                    raise _not_regular(path, "")
                files.append(path)  # a dangling link: reported as missing when read
    return sorted(files)


def _list_folder(root: Path) -> tuple[list[Path], list[str] | None]:
    """Image files under ``root`` (recursive, symlinked folders followed, sorted) and,
    when every file sits in a subfolder, each file's top folder (its class)."""
    files = _walk_images(root)
    tops = [p.relative_to(root).parts for p in files]
    if files and all(len(t) > 1 for t in tops):
        return files, [t[0] for t in tops]
    return files, None


def _read_manifest(path: Path) -> tuple[list[Path], list[int] | None]:
    entries: list[tuple[str, str | None]] = []
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
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
            with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's UTF-8 CSV) is not part of the first path
                for row in csv.reader(line for line in f if line.strip() and not line.lstrip().startswith("#")):
                    if row:
                        entries.append((row[0].strip(), row[1].strip() if len(row) > 1 and row[1].strip() else None))
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise SwinedgeError(f"cannot read manifest {path}: {e}") from None
    paths = [(path.parent / p) if not os.path.isabs(p) else Path(p) for p, _ in entries]
    for p in paths:  # before any read: opening a FIFO blocks forever
        with contextlib.suppress(OSError):  # missing files are reported as unreadable when read
            if not stat.S_ISREG(os.stat(p).st_mode):
                raise _not_regular(p, f"manifest {path} lists ")
    raw = [lab for _, lab in entries]
    if any(lab is not None for lab in raw):
        if any(lab is None for lab in raw):
            raise SwinedgeError(f"manifest {path}: either every line has a label or none does")
        try:
            labels = [int(lab) for lab in raw]  # type: ignore[arg-type]
        except ValueError:
            raise SwinedgeError(f"manifest {path}: labels must be integer class indices") from None
        if min(labels) < 0:
            raise SwinedgeError(f"manifest {path}: labels must be class indices >= 0, got {min(labels)}")
        return paths, labels
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


# -- the stream ------------------------------------------------------------------------------------


@dataclass
class ImageStream:
    """An image set read a batch at a time: files are listed up front and decoded only
    when their batch is due, so memory is one batch whatever the set's size.

    With a ``size``, a seeded random pick of that many files is read and an unreadable
    one is replaced by the next file of the same seeded order; without, every file is
    read and unreadable ones are skipped. Either way the skipped files are named."""

    source: str
    where: str
    reader: Any
    order: list[int]
    spares: list[int]
    labels: list[int] | None  # per reader index
    class_names: list[str] | None
    preprocess: Preprocess | None
    size: int | None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        """Images the stream will deliver (fewer only when files turn out unreadable)."""
        return self.size if self.size is not None else len(self.order)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def _images(self, warn: Callable[[str], None] | None, *, record: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        skipped: list[tuple[str, str]] = []
        if record:  # a whole pass: what it skipped is what describe() reports
            self.skipped = skipped
        pending, spares = deque(self.order), deque(self.spares)
        delivered = 0
        while pending:
            i = pending.popleft()
            try:
                x = self.reader.read(i)
            except UnreadableImage as e:
                skipped.append((self.reader.name(i), str(e)))
                if self.size is not None and spares:
                    pending.append(spares.popleft())
                continue
            delivered += 1
            yield i, x
        shown = ", ".join(f"{name} ({why})" for name, why in skipped[:3])
        shown += f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        if delivered == 0:
            raise SwinedgeError(f"no readable images found in {self.where}" + (f": {len(skipped)} unreadable, {shown}" if skipped else ""))
        if self.size is not None and delivered < self.size:
            raise SwinedgeError(
                f"asked for {self.size} images but found {delivered} readable in {self.where} "
                f"({len(skipped)} unreadable, e.g. {skipped[0][0]}): lower the image count or add images"
            )
        if skipped and warn is not None:
            warn(self._skipped_note(skipped))

    def _skipped_note(self, skipped: list[tuple[str, str]]) -> str:
        shown = ", ".join(f"{name} ({why})" for name, why in skipped[:3])
        shown += f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        replaced = " (others read in their place)" if self.size is not None else ""
        return f"skipped {len(skipped)} unreadable file(s) in {self.where}{replaced}: {shown}"

    def skipped_note(self) -> str | None:
        """The one warning line for the files the last whole pass skipped (None when it
        skipped none). ``self.skipped`` holds them, (name, why) each: a caller that read the
        stream where its warnings could not be seen (modelopt's calibration runs with stderr
        redirected) reports them afterwards with ``report_skipped(stream, warn)``."""
        return self._skipped_note(self.skipped) if self.skipped else None

    def batches(self, batch: int, *, warn: Callable[[str], None] | None = None) -> Iterator[Batch]:
        """Preprocessed batches of up to ``batch`` images, in a fixed order."""
        if batch < 1:
            raise SwinedgeError(f"batch must be >= 1, got {batch}")
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for i, x in self._images(warn):
            xs.append(x)
            if self.labels is not None:
                ys.append(self.labels[i])
            if len(xs) == batch:
                yield self._batch(xs, ys)
                xs, ys = [], []
        if xs:
            yield self._batch(xs, ys)

    def _batch(self, xs: list[np.ndarray], ys: list[int]) -> Batch:
        return Batch(np.stack(xs).astype(np.float32, copy=False), np.asarray(ys, dtype=np.int64) if self.labels is not None else None)

    def head(self, count: int) -> np.ndarray:
        """The first ``count`` readable images (fewer if the set is smaller): latency inputs."""
        out: list[np.ndarray] = []
        for _, x in self._images(None, record=False):
            out.append(x)
            if len(out) == count:
                break
        return np.stack(out).astype(np.float32, copy=False)

    def load(self, warn: Callable[[str], None] | None = None) -> ImageSet:
        """Every image in memory: for calibration sets, whose size is bounded."""
        xs, ys, names = [], [], []
        for i, x in self._images(warn):
            xs.append(x)
            names.append(self.reader.name(i))
            if self.labels is not None:
                ys.append(self.labels[i])
        return ImageSet(
            np.stack(xs).astype(np.float32, copy=False),
            np.asarray(ys, dtype=np.int64) if self.labels is not None else None,
            self.source,
            names,
            len(self.skipped),
            self.class_names,
            self.preprocess,
            list(self.skipped),
            self.skipped_note(),
        )

    def describe(self, delivered: int | None = None) -> dict:
        count = delivered if delivered is not None else len(self) - (0 if self.size is not None else len(self.skipped))
        return _describe(self.source, count, self.labelled, len(self.skipped), self.preprocess)


def report_skipped(images: Any, warn: Callable[[str], None] | None) -> int:
    """Tell ``warn`` (one line per stream) which files the last pass over ``images``
    skipped as unreadable: an :class:`ImageStream`, an :class:`ImageSet` from one, or
    anything with ``streams`` (``swinedge.quantize.SizedStreams``). Returns how many."""
    streams = getattr(images, "streams", None) or [images]
    total = 0
    for stream in streams:
        note = stream.skipped_note() if hasattr(stream, "skipped_note") else None
        if note is not None:
            total += stream.skipped if isinstance(stream.skipped, int) else len(stream.skipped)
            if warn is not None:
                warn(note)
    return total


def _pick(count: int, size: int | None, seed: int) -> tuple[list[int], list[int]]:
    """The seeded pick: ``size`` of ``count`` indices (sorted, as they sit on disk) and
    the rest in the same seeded order as replacements for unreadable ones."""
    if size is None or size >= count:
        return list(range(count)), []
    shuffled = random.Random(seed).sample(range(count), count)
    return sorted(shuffled[:size]), shuffled[size:]


NAMED_SOURCES = ("default", "digits", "digits-train")


def check_image_source(source: str | Path | None, flag: str) -> None:
    """A named set, or a folder or manifest that exists: checked before any work."""
    if source is None or str(source) in NAMED_SOURCES:
        return
    if not Path(source).exists():
        raise SwinedgeError(f"{flag} {source}: not found (give a folder, a manifest file, 'default', 'digits' or 'digits-train')")
    mode = os.stat(source).st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise _not_regular(Path(source), f"{flag} ")


def open_images(
    source: str | Path | None,
    preprocess: Preprocess,
    *,
    size: int | None = None,
    seed: int = 0,
    labelled: bool = True,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
) -> ImageStream:
    """List ``source`` (folder, manifest, ``default``/None, ``digits``, ``digits-train``)
    without decoding anything; every check that can fail before work fails here.

    ``labelled=False`` ignores labels (calibration). Class folders take their indices
    from ``class_names`` (the model's classes) or :func:`folder_label_map`'s rules."""
    if size is not None and not 1 <= size <= MAX_IMAGES:
        raise SwinedgeError(f"the image count must be 1..{MAX_IMAGES:,}, got {size}")
    src = "default" if source is None else str(source)
    if src in ("digits", "digits-train"):
        from swinedge.digits import digits_stream

        return digits_stream(preprocess, size=size, seed=seed, train=src == "digits-train")
    labels: list[int] | None = None
    names: list[str] | None = None
    if src == "default":
        paths = default_photo_paths()
        reader: Any = _PhotoReader(paths, preprocess, seed)
        where = "scikit-image's bundled photographs"
        if size is not None and size > MAX_CROPS:
            raise SwinedgeError(f"the bundled photos make at most {MAX_CROPS:,} crops, asked for {size}: give a folder of images")
        if size is not None and size > len(paths):
            reader.extend_to(size)  # the 9 photos, then seeded crops of them
    else:
        root = Path(src)
        if not root.exists():
            raise SwinedgeError(f"image source not found: {root} (give a folder, a manifest file, 'default', 'digits' or 'digits-train')")
        if not (root.is_dir() or root.is_file()):
            raise _not_regular(root, "")
        if root.is_dir():
            where = f"{root} (recursive; {', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
            paths, folders = _list_folder(root)
            reader = _FileReader(paths, preprocess, root)
            if folders is not None and labelled:
                index = folder_label_map(sorted(set(folders)), str(root), class_names, num_classes)
                labels = [index[f] for f in folders]
                names = class_names
        else:
            where = f"manifest {root}"
            paths, labels = _read_manifest(root)
            reader = _FileReader(paths, preprocess, root.parent)
            if labels is not None and num_classes is not None and max(labels) >= num_classes:
                raise SwinedgeError(f"manifest {root}: label {max(labels)} is not a class of the {num_classes}-class model")
            if not labelled:
                labels = None
        if not paths:
            raise SwinedgeError(f"no readable images found in {where}")
        if size is not None and size > len(paths):
            raise SwinedgeError(f"asked for {size} images but {where} lists {len(paths)}: lower the image count or add images")
    order, spares = _pick(len(reader), size, seed)
    return ImageStream(src, where, reader, order, spares, labels, names, preprocess, size)


def load_image_set(
    source: str | Path | None,
    preprocess: Preprocess,
    *,
    size: int | None = None,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
    labelled: bool = True,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
) -> ImageSet:
    """:func:`open_images` read into memory (calibration sets, the digits task)."""
    stream = open_images(source, preprocess, size=size, seed=seed, labelled=labelled, class_names=class_names, num_classes=num_classes)
    return stream.load(warn)


def tile_batch(images: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` images, cycling through ``images`` when there are fewer."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch])
