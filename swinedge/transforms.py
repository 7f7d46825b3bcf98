"""Image transforms on decoded PIL images: the single implementation of swinedge's
preprocessing.

This module imports only NumPy and Pillow, never swinedge: ``swinedge serve-repo``
copies this very file into the Python-backend preprocessing model of a Triton
repository, so a server computes exactly what ``verify`` and calibration compute.
"""

import numpy as np

RESAMPLING = ("bicubic", "bilinear", "nearest")
# The most pixels an image may have once resized as the preprocessing asks (its shorter
# side to ``resize``): 64 M is a 250:1 panorama at 512px; a 1x60000 strip resized to 256
# would be 256 x 15.4 M pixels (about 12 GB as RGB) from a PNG of a few hundred bytes.
MAX_RESIZED_PIXELS = 64_000_000
_ORIENTATION = 0x0112


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after the shorter side is resized to ``resize`` (timm's rule)."""
    if width <= height:
        return resize, max(1, int(resize * height / width))
    return max(1, int(resize * width / height)), resize


def resize_budget_error(width: int, height: int, resize: int):
    """Why an image of this size is refused before decoding (None when it fits the budget)."""
    w, h = resized_size(width, height, resize)
    if w * h <= MAX_RESIZED_PIXELS:
        return None
    return (
        f"is {width}x{height}: resizing its shorter side to {resize} makes {w}x{h} = {w * h / 1e6:,.0f} M pixels, "
        f"over the budget of {MAX_RESIZED_PIXELS // 1_000_000} M (an aspect ratio of {max(width, height) / min(width, height):,.0f}:1)"
    )


def viewed(image, channels: int = 3):
    """The 8-bit image a viewer shows, as ``L`` (one channel) or ``RGB``: EXIF orientation
    applied; 16-bit grey (``I;16``, ``I;16B``, ``I``) scaled from 0..65535 to 0..255
    (Pillow's ``convert`` clips it, turning most of it white); palette images through their
    palette; transparency (RGBA, LA, a palette's transparent entry) composited over white;
    CMYK and 1-bit through Pillow's conversion. 8-bit ``RGB``/``L`` are returned as they are."""
    from PIL import Image, ImageOps

    target = "L" if channels == 1 else "RGB"
    if image.getexif().get(_ORIENTATION, 1) not in (1, None):
        image = ImageOps.exif_transpose(image)
    if image.mode == target and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        raw = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(raw / 257.0), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("L", "1", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA" if image.mode == "RGB" else "LA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image if image.mode == target else image.convert(target)


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
    image = viewed(image, channels)
    why = resize_budget_error(*image.size, resize)
    if why is not None:
        raise ValueError(f"the image {why}")
    image = image.resize(resized_size(*image.size, resize), _resample(interpolation))
    w, h = image.size
    top = int(round((h - img_size) / 2.0))
    left = int(round((w - img_size) / 2.0))
    image = image.crop((left, top, left + img_size, top + img_size))
    return _normalised_chw(image, channels, mean, std).copy()


def fit_and_pad(image, height: int, width: int, interpolation: str, mean, std, channels: int) -> np.ndarray:
    """mmdet's keep-ratio resize to fit inside (height, width), normalise, zero-pad at
    the bottom/right; ``[C, height, width]`` float32."""
    image = viewed(image, channels)
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
