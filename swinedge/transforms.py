"""Image transforms on decoded PIL images: the single implementation of swinedge's
preprocessing.

This module imports only NumPy and Pillow, never swinedge: ``swinedge serve-repo``
copies this very file into the Python-backend preprocessing model of a Triton
repository, so a server computes exactly what ``verify`` and calibration compute.
"""

import numpy as np

RESAMPLING = ("bicubic", "bilinear", "nearest")


def _resample(name: str) -> int:
    from PIL import Image

    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[name]


def _normalised_chw(image, channels: int, mean, std) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels > arr.shape[2]:
        arr = np.repeat(arr, channels, axis=2)
    m = np.asarray(mean[:channels], dtype=np.float32)
    s = np.asarray(std[:channels], dtype=np.float32)
    return ((arr - m) / s).transpose(2, 0, 1)


def resize_center_crop(image, img_size: int, resize: int, interpolation: str, mean, std, channels: int) -> np.ndarray:
    """timm's eval transform: shorter side to ``resize``, center crop ``img_size``,
    normalise; ``[C, img_size, img_size]`` float32."""
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    size = (resize, max(1, int(resize * h / w))) if w <= h else (max(1, int(resize * w / h)), resize)
    image = image.resize(size, _resample(interpolation))
    w, h = image.size
    top = int(round((h - img_size) / 2.0))
    left = int(round((w - img_size) / 2.0))
    image = image.crop((left, top, left + img_size, top + img_size))
    return _normalised_chw(image, channels, mean, std).copy()


def fit_and_pad(image, height: int, width: int, interpolation: str, mean, std, channels: int) -> np.ndarray:
    """mmdet's keep-ratio resize to fit inside (height, width), normalise, zero-pad at
    the bottom/right; ``[C, height, width]`` float32."""
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    scale = min(height / h, width / w)
    nw, nh = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    out = np.zeros((channels, height, width), dtype=np.float32)
    out[:, :nh, :nw] = _normalised_chw(image.resize((nw, nh), _resample(interpolation)), channels, mean, std)
    return out


def transform_from_record(record: dict):
    """The transform a serving record describes (``swinedge.data``'s ``serving_record``):
    a function from a PIL image to the model's input array."""
    mean, std, channels, interp = tuple(record["mean"]), tuple(record["std"]), int(record["channels"]), record["interpolation"]
    if record["mode"] == "fit-pad":
        h, w = (int(v) for v in record["size"])
        return lambda image: fit_and_pad(image, h, w, interp, mean, std, channels)
    size, resize = int(record["img_size"]), int(record["resize"])
    return lambda image: resize_center_crop(image, size, resize, interp, mean, std, channels)
