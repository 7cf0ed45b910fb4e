"""Uploaded images are hostile input: sniff, bound, decode carefully, re-encode, store.

Order matters: the byte limit is enforced while the body streams in (LimitedUploadHandler),
the type comes from the first bytes, the pixel count from the header before any decoding,
and only then is the image decoded, turned upright and re-encoded without its metadata.
"""

from __future__ import annotations

import hashlib
import io
import logging
import secrets
import struct
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import FileUploadHandler
from django.db import transaction
from PIL import Image, ImageFile, ImageOps

from jobs_app.errors import (
    CorruptImage,
    EmptyUpload,
    ImageTooLarge,
    UnsupportedImageType,
    UploadTooLarge,
)
from jobs_app.models import Upload
from sessions_app.models import BoothSession

logger = logging.getLogger(__name__)

# A truncated file must fail, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True, slots=True)
class ImageType:
    content_type: str
    pillow_format: str
    extension: str


JPEG = ImageType("image/jpeg", "JPEG", "jpg")
PNG = ImageType("image/png", "PNG", "png")
WEBP = ImageType("image/webp", "WEBP", "webp")


def sniff_image_type(head: bytes) -> ImageType | None:
    """Return the image type the first bytes announce (never the name or header)."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


class LimitedUploadHandler(FileUploadHandler):
    """Refuse a file as soon as its streamed bytes pass UPLOAD_MAX_BYTES."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            raise UploadTooLarge()
        return raw_data  # the next handler (memory, then temporary file) keeps the bytes

    def file_complete(self, file_size: int) -> None:
        return None


def do_store_upload(session: BoothSession, uploaded: File) -> Upload:
    """Validate an uploaded image and store a clean copy; nothing is kept when it fails."""
    size = uploaded.size or 0
    if size == 0:
        raise EmptyUpload()
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLarge()
    uploaded.seek(0)
    image_type = sniff_image_type(uploaded.read(16))
    if image_type is None:
        raise UnsupportedImageType()
    uploaded.seek(0)
    data, width, height = _clean_image(uploaded, image_type)

    name = default_storage.save(
        f"uploads/{secrets.token_hex(16)}.{image_type.extension}", ContentFile(data)
    )
    try:
        with transaction.atomic():
            return Upload.objects.create(
                session=session,
                file=name,
                content_type=image_type.content_type,
                width=width,
                height=height,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
    except BaseException:
        default_storage.delete(name)
        raise


def _clean_image(uploaded: File, image_type: ImageType) -> tuple[bytes, int, int]:
    """Decode within the pixel limit; return upright, metadata-free bytes and the size."""
    limit = settings.UPLOAD_MAX_PIXELS
    if image_type is WEBP:
        # Pillow's WebP opener allocates the whole canvas (twice) when it opens the file, so
        # check the size its header declares first. The PNG and JPEG openers only parse.
        uploaded.seek(0)
        _check_pixels(webp_canvas_size(uploaded.read(30)), limit)
        uploaded.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(uploaded, formats=[image_type.pillow_format])
    except Image.DecompressionBombError:
        raise ImageTooLarge() from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage(details={"reason": str(exc)}) from None
    _check_pixels(image.size, limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImage(details={"reason": str(exc)}) from None
    return _encode(image, image_type), image.width, image.height


def webp_canvas_size(head: bytes) -> tuple[int, int] | None:
    """Return the canvas size a WebP header declares, without decoding anything."""
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        width, height = (int.from_bytes(head[i : i + 3], "little") + 1 for i in (24, 27))
        return width, height
    return None  # Pillow's opener then refuses the file as corrupt


def _check_pixels(size: tuple[int, int] | None, limit: int) -> None:
    """Refuse an image that declares more pixels than the limit."""
    if size is not None and size[0] * size[1] > limit:
        width, height = size
        raise ImageTooLarge(details={"width": width, "height": height, "maxPixels": limit})


def _encode(image: Image.Image, image_type: ImageType) -> bytes:
    """Re-encode without EXIF, XMP or text chunks (the colour profile stays)."""
    options: dict = {}
    if icc := image.info.get("icc_profile"):
        options["icc_profile"] = icc
    if image_type is JPEG:
        if image.mode not in ("RGB", "L"):
            # The profile describes the old colour space (e.g. CMYK); keeping it would
            # misread the converted pixels.
            options.pop("icc_profile", None)
            image = image.convert("RGB")
        options.update(quality=92, optimize=True)
    elif image_type is WEBP:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        options.update(quality=92)
    else:
        if "transparency" in image.info:
            options["transparency"] = image.info["transparency"]
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            image = image.convert("RGBA")
    # Savers also copy some metadata from image.info (the JPEG saver writes its COM comment);
    # everything we keep is in options. The image is ours: exif_transpose returns a new one.
    image.info = {}
    buffer = io.BytesIO()
    image.save(buffer, format=image_type.pillow_format, **options)
    return buffer.getvalue()
