"""The image an annotator judges, decoded and scaled for display on the server: small
images (an 8x8 digit) are enlarged by whole pixels so they stay sharp, large ones are
shrunk, and hostile ones are refused before they are decoded in full."""

import base64
import binascii
import io
import math
from urllib.parse import urlsplit

from django.conf import settings
from PIL import Image

from common.storage import KEY_PART_RE, S3Storage, StorageError, get_storage

DISPLAY_MIN = 256
DISPLAY_MAX = 1024
FORMATS = {"PNG", "JPEG", "GIF", "WEBP"}


class ImageUnavailable(Exception):
    """The input has no image the server can show, or the image is refused."""


def source_bytes(input_value: dict) -> bytes:
    """The raw image bytes of a prediction's input: inline base64, or an s3:// key in the
    service's own bucket. Any other URL is never fetched by the server."""
    inline = input_value.get("image")
    if inline:
        data = inline.partition(",")[2] if inline.startswith("data:") else inline
        if len(data) > settings.FLYWHEEL_MAX_IMAGE_BYTES * 4 // 3 + 64:
            raise ImageUnavailable("The image is larger than the configured limit.")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ImageUnavailable("The image is not valid base64.") from None
    url = input_value.get("image_url") or ""
    if url.startswith("s3://"):
        return _from_own_bucket(url)
    raise ImageUnavailable("The input has no image the server may read.")


def _from_own_bucket(url: str) -> bytes:
    parts = urlsplit(url)
    storage = get_storage()
    if not isinstance(storage, S3Storage) or parts.netloc != storage.bucket:
        raise ImageUnavailable("Only images in the service's own bucket are read.")
    key_parts = parts.path.lstrip("/").split("/")
    if not all(KEY_PART_RE.match(part) and ".." not in part for part in key_parts):
        raise ImageUnavailable("The image key is not acceptable.")
    key = "/".join(key_parts)
    if storage.prefix:
        if not key.startswith(storage.prefix + "/"):
            raise ImageUnavailable("The image is outside the service's prefix.")
        key = key[len(storage.prefix) + 1:]
    try:
        return storage.get(key)
    except StorageError as exc:
        raise ImageUnavailable(f"The image could not be read: {exc}") from None


def display_png(raw: bytes) -> bytes:
    """The image as a PNG scaled for display. Refuses files that are not images, too many
    pixels (checked from the header, before decoding), and truncated data."""
    if len(raw) > settings.FLYWHEEL_MAX_IMAGE_BYTES:
        raise ImageUnavailable("The image is larger than the configured limit.")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in FORMATS:
                raise ImageUnavailable(f"{img.format} images are not shown.")
            width, height = img.size
            if width * height > settings.FLYWHEEL_MAX_IMAGE_PIXELS:
                raise ImageUnavailable(f"The image has {width}x{height} pixels, more than the limit.")
            img.load()
            picture = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageUnavailable(f"The image cannot be read: {exc}") from None
    longest = max(width, height)
    if longest < DISPLAY_MIN:
        factor = math.ceil(DISPLAY_MIN / longest)
        # Whole-pixel enlargement: each source pixel becomes a sharp square.
        picture = picture.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    elif longest > DISPLAY_MAX:
        picture.thumbnail((DISPLAY_MAX, DISPLAY_MAX), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()
