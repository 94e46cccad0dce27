"""Decoding and fitting single images, shared by the packer and the shard loader.

Fitting to a square resolution R (``fit``):
- ``pad``: an image no larger than R is centred on a black R x R canvas (28 -> 32 keeps
  every pixel); a larger one falls back to ``resize``.
- ``resize``: centre-crop to the shorter side, then resample to R x R with PIL's Lanczos
  filter (antialiased when shrinking).
"""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "npy", "ppm", "bmp")  # tar member extensions
IMAGE_FILE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")  # files in folders/zips


class BadSample(ValueError):
    """A sample that cannot be turned into an image (skipped and counted by the loader)."""


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """PIL image -> 'L' (channels=1) or 'RGB' (channels=3); alpha is dropped."""
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def fit_image(img: Image.Image, res: int, fit: str) -> Image.Image:
    """Fit a PIL image to res x res (see the module docstring)."""
    w, h = img.size
    if (w, h) == (res, res):
        return img
    if fit == "pad" and w <= res and h <= res:
        canvas = Image.new(img.mode, (res, res), 0)
        canvas.paste(img, ((res - w) // 2, (res - h) // 2))
        return canvas
    s = min(w, h)
    x0, y0 = (w - s) // 2, (h - s) // 2
    return img.crop((x0, y0, x0 + s, y0 + s)).resize((res, res), Image.Resampling.LANCZOS)


def array_to_pil(arr: np.ndarray) -> Image.Image:
    """uint8 HW / HWC (C = 1 or 3) -> PIL image."""
    if arr.dtype != np.uint8:
        raise BadSample(f"image array must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(arr[:, :, :3], "RGB")
    raise BadSample(f"image array has shape {arr.shape}; expected HxW or HxWx{{1,3}}")


def decode_image(ext: str, data: bytes, res: int, channels: int, fit: str) -> np.ndarray:
    """Encoded bytes (a ``key.ext`` tar member) -> uint8 [channels, res, res]."""
    try:
        if ext == "npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if arr.dtype == np.uint8 and arr.shape[:2] == (res, res):
                arr = arr if arr.ndim == 3 else arr[:, :, None]
                if arr.shape[2] == channels:  # the fast path: raw pixels already in shape
                    return np.ascontiguousarray(arr.transpose(2, 0, 1))
            img = array_to_pil(arr)
        else:
            img = Image.open(io.BytesIO(data))
            img.load()
    except BadSample:
        raise
    except Exception as e:  # PIL and numpy raise many types for corrupt bytes
        # PIL names its input by repr ("cannot identify image file <_io.BytesIO object at 0x...>"),
        # which says nothing; the caller's message names the shard and the sample's key.
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "(the member's bytes)", str(e))
        raise BadSample(f"cannot decode .{ext}: {type(e).__name__}: {reason}") from None
    img = fit_image(to_mode(img, channels), res, fit)
    arr = np.asarray(img)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))


def encode_image(img: Image.Image, fmt: str, quality: int = 95) -> tuple[str, bytes]:
    """PIL image -> (tar extension, bytes) for --format png|jpg|webp|raw."""
    buf = io.BytesIO()
    if fmt == "raw":
        arr = np.asarray(img)
        np.save(buf, arr if arr.ndim == 3 else arr[:, :, None], allow_pickle=False)
        return "npy", buf.getvalue()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt == "jpg":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality)
    else:
        raise ValueError(f"unknown image format {fmt!r}; expected png, jpg, webp or raw")
    return fmt, buf.getvalue()


def probe_image(ext: str, data: bytes) -> tuple[int, int, int] | None:
    """(height, width, channels) of an encoded image, or None if it cannot be read."""
    try:
        if ext == "npy":
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            return arr.shape[0], arr.shape[1], (arr.shape[2] if arr.ndim == 3 else 1)
        with Image.open(io.BytesIO(data)) as img:
            return img.size[1], img.size[0], 1 if img.mode in ("1", "L", "I", "I;16", "F") else 3
    except Exception:
        return None
