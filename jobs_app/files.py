"""Result files at capability URLs: `/media/results/<128-bit random name>`.

`<img>` tags and bearer clients cannot send credentials, so knowing the URL is the permission
(contract section 2). Names are random and never listed; uploads are not served here.
"""

from __future__ import annotations

import io
import mimetypes
import re
import secrets

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest
from PIL import Image

from jobs_app.models import Upload
from jobs_app.progress import StoredResult
from jobs_app.uploads import sniff_image_type

RESULTS_DIR = "results"
_RESULT_NAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|webp)$")
UPLOAD_URL_SALT = "photobooth.upload-url"
UPLOAD_URL_MAX_AGE = 3600  # contract section 2: signed upload URLs expire within 1 h
# Results never change under a name, so browsers and proxies may keep them.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def new_result_name(extension: str) -> str:
    """Return a fresh storage name for a result file (128 bits of randomness)."""
    return f"{RESULTS_DIR}/{secrets.token_hex(16)}.{extension}"


def store_result(data: bytes) -> StoredResult:
    """Copy a result image into our storage under a capability name; refuse non-images."""
    image_type = sniff_image_type(data[:16])
    if image_type is None:
        raise ValueError("the upstream's result is not a JPEG, PNG or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()
    except Exception as exc:
        raise ValueError(f"the upstream's result is not a readable image: {exc}") from None
    name = default_storage.save(new_result_name(image_type.extension), ContentFile(data))
    return StoredResult(
        name=name,
        url=default_storage.url(name),
        width=width,
        height=height,
        content_type=image_type.content_type,
        size=len(data),
    )


def delete_result(name: str) -> None:
    """Remove a stored result nobody refers to (a duplicate report's copy)."""
    default_storage.delete(name)


def signed_upload_url(upload: Upload) -> str:
    """Return an absolute URL the upstream can fetch an upload from, valid for an hour."""
    token = signing.dumps(str(upload.pk), salt=UPLOAD_URL_SALT, compress=False)
    return f"{settings.PUBLIC_BASE_URL}/media/uploads/{token}"


def upload_file_view(request: HttpRequest, token: str) -> FileResponse:
    """Serve an upload to whoever holds a fresh signed URL (403 otherwise)."""
    try:
        upload_id = signing.loads(token, salt=UPLOAD_URL_SALT, max_age=UPLOAD_URL_MAX_AGE)
    except signing.SignatureExpired:
        raise PermissionDenied("This upload URL has expired.") from None
    except signing.BadSignature:
        raise PermissionDenied("This upload URL is not valid.") from None
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        raise Http404
    response = FileResponse(upload.file.open("rb"), content_type=upload.content_type)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def result_file_view(request: HttpRequest, name: str) -> FileResponse:
    """Serve one result file by its capability name."""
    if not _RESULT_NAME.fullmatch(name):
        raise Http404
    path = f"{RESULTS_DIR}/{name}"
    try:
        handle = default_storage.open(path, "rb")
    except FileNotFoundError:
        raise Http404 from None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = CACHE_CONTROL
    response["X-Content-Type-Options"] = "nosniff"
    return response
