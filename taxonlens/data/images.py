"""Safe image decoding: every failure is one :class:`ImageError` for that file.

Truncated, corrupt, zero-byte and non-image files, and decompression bombs,
raise :class:`~taxonlens.errors.ImageError` naming the file and the reason, so
a batch job reports and skips them. EXIF orientation is applied and every
mode (grayscale, 16-bit, RGBA, palette, CMYK) becomes 8-bit RGB; transparent
pixels are composited onto white.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from taxonlens.errors import ImageError

#: Images above this many pixels are refused (about 16k x 11k). PIL's hard limit
#: (2 x ``Image.MAX_IMAGE_PIXELS``, the same number by default) still applies above it.
DEFAULT_MAX_PIXELS = 178_956_970
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one image file to an upright 8-bit RGB :class:`PIL.Image.Image`.

    Raises:
        ImageError: the file is missing, empty, not an image, truncated, corrupt or
            larger than ``max_pixels``.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise ImageError(str(path), "empty file (0 bytes)")
    except FileNotFoundError:
        raise ImageError(str(path), "no such file") from None
    except OSError as e:
        raise ImageError(str(path), f"corrupt or truncated image ({e})") from None
    return _decode(p, str(path), max_pixels)


def load_image_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image held in memory (an upload) as :func:`load_image` decodes a file; ``name``
    names it in errors.

    Raises:
        ImageError: empty, not an image, truncated, corrupt or larger than ``max_pixels``.
    """
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: Path | BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """The RGB image of a file or a binary stream; every failure an :class:`ImageError` naming ``name``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides
            with Image.open(source) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(name, f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(name, f"corrupt or truncated image ({e})") from None


def iter_images(
    paths: Iterable[str | Path], max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[str, Image.Image | ImageError]]:
    """Yield ``(path, image)`` for each path, or ``(path, ImageError)`` where decoding failed."""
    for path in paths:
        try:
            yield str(path), load_image(path, max_pixels)
        except ImageError as e:
            yield str(path), e
