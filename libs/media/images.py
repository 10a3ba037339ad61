"""Images with Pillow: dimensions at upload, thumbnails on first request.

Every decode is bounded: the pixel count is checked from the header, before any
pixel is decoded, against `max_pixels` (a decompression bomb is a small file
that claims a huge canvas); only the formats in IMAGE_FORMATS are opened, so
Pillow's rarer decoders never see user bytes. Errors are the two below, which
the gateway answers as 422 with a stable code. CPU-bound work runs in a thread.
"""

from __future__ import annotations

import io
import warnings
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

#: Pillow format names we decode, and the media types that claim them.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
THUMBNAIL_TYPE = "image/webp"


class NotAnImage(Exception):
    """The bytes are not a complete image of a supported format."""


class ImageTooLarge(Exception):
    """The image's canvas exceeds the pixel limit (a decompression bomb, or just huge)."""


def _open(source: IO[bytes], max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=list(IMAGE_FORMATS))
    except (UnidentifiedImageError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, Image.DecompressionBombWarning):
            raise ImageTooLarge(str(exc)) from None
        raise NotAnImage("the file is not an image of a supported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image cannot be read: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} pixels exceeds the limit of {max_pixels}")
    return image


def dimensions(head: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the first bytes of an upload, or None when they do not tell."""
    try:
        image = _open(io.BytesIO(head), max_pixels)
    except (NotAnImage, ImageTooLarge):
        return None
    return image.size


def make_thumbnail(source: IO[bytes], max_side: int, max_pixels: int) -> tuple[bytes, int, int]:
    """A WebP at most max_side on its longer side: (bytes, width, height)."""
    image = _open(source, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode at a reduced scale
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            image.thumbnail((max_side, max_side))
            out = io.BytesIO()
            image.save(out, format="WEBP", quality=80)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageTooLarge(str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage(f"the image cannot be decoded: {exc}") from None
    return out.getvalue(), image.width, image.height
