"""Result files at capability URLs: `/media/results/<128-bit random name>`.

`<img>` tags and bearer clients cannot send credentials, so knowing the URL is the permission
(contract section 2). Names are random and never listed; uploads are not served here.
"""

from __future__ import annotations

import mimetypes
import re
import secrets

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

RESULTS_DIR = "results"
_RESULT_NAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|webp)$")
# Results never change under a name, so browsers and proxies may keep them.
CACHE_CONTROL = "public, max-age=31536000, immutable"


def new_result_name(extension: str) -> str:
    """Return a fresh storage name for a result file (128 bits of randomness)."""
    return f"{RESULTS_DIR}/{secrets.token_hex(16)}.{extension}"


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
