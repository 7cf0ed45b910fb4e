"""POST /api/uploads: sniffed type, byte and pixel limits, clean copies, nothing kept on failure."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import resource
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from PIL import ExifTags, Image, ImageFile, PngImagePlugin

from jobs_app.models import Upload
from photobooth.asgi import application
from tests.conftest import Booth, image_bytes, start_booth

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def stored_files() -> set[Path]:
    """Return every file under MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT)
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def stored_path(upload_id: str) -> Path:
    return Path(Upload.objects.get(pk=upload_id).file.path)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """Return one PNG chunk with its length and a correct CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """Return a tiny, well-formed PNG whose IHDR claims width x height (8-bit greyscale)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)  # a few bytes: the claim is all that differs from a photo
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """Return a real small JPEG whose SOF0 header is rewritten to claim width x height."""
    data = bytearray(image_bytes("JPEG", (64, 48)))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """Return a lossless (VP8L) WebP whose header claims width x height (at most 16384 each)."""
    bits = (width - 1) | (height - 1) << 14
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 16
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def lossy_webp_declaring(width: int, height: int) -> bytes:
    """Return a real lossy (VP8) WebP whose frame header claims width x height."""
    data = bytearray(image_bytes("WEBP", (64, 48)))
    assert data[12:16] == b"VP8 "
    data[26:30] = struct.pack("<HH", width, height)
    return bytes(data)


def extended_webp_declaring(width: int, height: int) -> bytes:
    """Return a real extended (VP8X) WebP whose canvas claims width x height."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Camera"
    data = bytearray(image_bytes("WEBP", (64, 48), exif=exif))
    assert data[12:16] == b"VP8X"
    data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


def sideways_jpeg_with_metadata() -> bytes:
    """Return a 40x20 JPEG (left red, right blue) tagged Orientation=6, with camera and GPS data."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored rotated: display needs 90 degrees clockwise
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Model] = "Tracker 3000"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 24.0)
    buffer = io.BytesIO()
    image.save(
        buffer, "JPEG", quality=95, exif=exif, comment=b"home: 48.85N 2.35E", xmp=b"<x:SpyXmp/>"
    )
    return buffer.getvalue()


def assert_refused(booth: Booth, content: bytes, name: str, status: int, code: str) -> dict:
    """Upload, expect the coded error, and check that no row and no file were left behind."""
    rows, files = Upload.objects.count(), stored_files()
    response = booth.upload(content, name)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert Upload.objects.count() == rows
    assert stored_files() == files
    return error


# --- Accepted images -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("JPEG", "image/jpeg", "jpg"), ("PNG", "image/png", "png"), ("WEBP", "image/webp", "webp")],
)
def test_it_accepts_a_jpeg_png_or_webp_and_stores_it_under_a_random_name(
    owner, fmt, content_type, extension
):
    response = owner.upload(image_bytes(fmt, (64, 48)), "holiday-in-paris.bin")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"uploadId", "width", "height", "contentType", "size"}
    assert (body["width"], body["height"]) == (64, 48)
    assert body["contentType"] == content_type
    upload = Upload.objects.get(pk=body["uploadId"])
    assert str(upload.session_id) == owner.session_id
    assert re.fullmatch(rf"uploads/[0-9a-f]{{32}}\.{extension}", upload.file.name)
    assert "holiday" not in upload.file.name
    path = Path(upload.file.path)
    assert path.parent == Path(settings.MEDIA_ROOT) / "uploads"
    assert body["size"] == path.stat().st_size == upload.size
    with Image.open(path) as stored:
        assert stored.format == fmt
        assert stored.size == (64, 48)


def test_it_takes_the_type_from_the_bytes_not_the_name(owner):
    response = owner.upload(image_bytes("JPEG"), "photo.png")

    assert response.status_code == 201, response.content
    assert response.json()["contentType"] == "image/jpeg"
    assert stored_path(response.json()["uploadId"]).suffix == ".jpg"


def test_it_gives_each_upload_its_own_file_even_for_the_same_bytes(owner):
    first = owner.upload(image_bytes(), "photo.jpg").json()
    second = owner.upload(image_bytes(), "photo.jpg").json()

    assert first["uploadId"] != second["uploadId"]
    assert stored_path(first["uploadId"]) != stored_path(second["uploadId"])
    assert len(stored_files()) == 2


def test_it_keeps_each_upload_in_the_callers_session(owner, stranger):
    mine = owner.upload(image_bytes()).json()
    theirs = stranger.upload(image_bytes()).json()

    assert str(Upload.objects.get(pk=mine["uploadId"]).session_id) == owner.session_id
    assert str(Upload.objects.get(pk=theirs["uploadId"]).session_id) == stranger.session_id


def test_it_accepts_a_file_of_exactly_the_byte_limit(owner):
    jpeg = image_bytes("JPEG")
    padded = jpeg + b"\x00" * (settings.UPLOAD_MAX_BYTES - len(jpeg))  # ignored after EOI

    response = owner.upload(padded)

    assert response.status_code == 201, response.content
    assert response.json()["size"] < len(padded)  # the size of the clean copy we stored


# --- Orientation and metadata ----------------------------------------------------------------


def test_it_turns_the_photo_upright_and_strips_its_metadata(owner):
    original = sideways_jpeg_with_metadata()
    with Image.open(io.BytesIO(original)) as source:  # the test image really carries it all
        assert source.getexif()[ExifTags.Base.Orientation] == 6
        assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert source.info["comment"] and source.info["xmp"]

    response = owner.upload(original)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["width"], body["height"]) == (20, 40)
    path = stored_path(body["uploadId"])
    data = path.read_bytes()
    for secret in (b"Exif\x00\x00", b"SpyCam", b"Tracker", b"48.85N", b"SpyXmp"):
        assert secret not in data
    with Image.open(path) as stored:
        assert stored.size == (20, 40)
        assert not stored.getexif()
        assert "comment" not in stored.info and "xmp" not in stored.info
        # Rotated clockwise: the left (red) half of the sensor image is now the top.
        red, _, blue = stored.convert("RGB").getpixel((10, 5))
        assert red > 200 and blue < 60
        red, _, blue = stored.convert("RGB").getpixel((10, 35))
        assert red < 60 and blue > 200


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_it_strips_exif_xmp_and_text_from_pngs_and_webps(owner, fmt):
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "home: 48.85N 2.35E")
    save = {"exif": exif, "xmp": b"<x:SpyXmp/>"}
    if fmt == "PNG":
        save["pnginfo"] = text
    original = image_bytes(fmt, (32, 32), **save)
    assert b"SpyCam" in original

    response = owner.upload(original, "photo.bin")

    assert response.status_code == 201, response.content
    data = stored_path(response.json()["uploadId"]).read_bytes()
    for secret in (b"SpyCam", b"48.85N", b"SpyXmp"):
        assert secret not in data
    with Image.open(io.BytesIO(data)) as stored:
        assert not stored.getexif()


# --- Refused uploads -------------------------------------------------------------------------


def test_it_rejects_an_empty_file(owner):
    assert_refused(owner, b"", "photo.jpg", 400, "empty_upload")


def test_it_rejects_a_body_without_the_image_field(owner):
    rows = Upload.objects.count()
    file = SimpleUploadedFile("photo.jpg", image_bytes(), content_type="image/jpeg")

    response = owner.client.post(
        "/api/uploads", {"photo": file}, headers={"Authorization": f"Bearer {owner.token}"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_image"
    assert Upload.objects.count() == rows and stored_files() == set()


def test_it_rejects_a_json_body_as_an_unsupported_media_type(owner):
    response = owner.post("/api/uploads", {"image": "aGVsbG8="})

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORRUPT = {
    "truncated_jpeg": lambda: _half(image_bytes("JPEG", (640, 480))),
    "truncated_png": lambda: _half(image_bytes("PNG", (640, 480))),
    "truncated_webp": lambda: _half(image_bytes("WEBP", (640, 480))),
    "garbage_after_png_signature": lambda: PNG_SIGNATURE + random.Random(1).randbytes(4096),
    "garbage_after_jpeg_marker": lambda: b"\xff\xd8\xff\xe0" + random.Random(2).randbytes(4096),
    "png_with_a_bad_header_crc": lambda: png_declaring(64, 48)[:29] + b"\x00\x00\x00\x00",
}


@pytest.mark.parametrize("make", CORRUPT.values(), ids=CORRUPT.keys())
def test_it_rejects_a_truncated_or_corrupt_image(uploaded, owner, make):
    assert_refused(owner, make(), "photo.jpg", 422, "corrupt_image")


UNSUPPORTED = {
    "text_named_png": lambda: b"just some notes, not a photo\n" * 10,
    "gif": lambda: image_bytes("GIF"),
    "bmp": lambda: image_bytes("BMP"),
    "tiff": lambda: image_bytes("TIFF"),
    "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "riff_wave": lambda: b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32,
}


@pytest.mark.parametrize("make", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_it_rejects_what_is_not_a_jpeg_png_or_webp(uploaded, owner, make):
    assert_refused(owner, make(), "photo.png", 415, "unsupported_media_type")


@contextlib.contextmanager
def address_space_ceiling(headroom: int) -> Iterator[None]:
    """Make any allocation of more than `headroom` bytes (in C too) fail while inside."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status to read the address space size")
    vm_size = next(line for line in status.read_text().splitlines() if line.startswith("VmSize"))
    current = int(vm_size.split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = current + headroom
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize(
    ("make", "width", "height"),
    [
        (png_declaring, 100_000, 100_000),  # 10 gigapixels: Pillow's bomb guard fires first
        (png_declaring, 10_000, 10_000),  # 100 MP: over Pillow's warning, under its error
        (png_declaring, 8_000, 5_001),  # 40,008,000: just over our limit
        (jpeg_declaring, 65_000, 65_000),
        (jpeg_declaring, 8_000, 6_000),
        (webp_declaring, 16_384, 16_384),
        (webp_declaring, 10_000, 10_000),  # Pillow's WebP opener allocates the canvas: 800 MB
        (webp_declaring, 8_000, 5_001),
        (lossy_webp_declaring, 10_000, 10_000),
        (extended_webp_declaring, 12_000, 12_000),
        (extended_webp_declaring, 100_000, 100_000),
    ],
)
def test_it_refuses_too_many_declared_pixels_before_decoding(
    uploaded, owner, monkeypatch, make, width, height
):
    def no_decoding(image):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    content = make(width, height)
    assert len(content) < 10_000

    started = time.perf_counter()
    with address_space_ceiling(64 * MiB):  # one decoded frame would take hundreds of MB
        error = assert_refused(owner, content, "photo.png", 413, "image_too_large")
    assert time.perf_counter() - started < 2

    if "details" in error:  # absent when Pillow's own bomb guard answered first
        assert error["details"] == {"width": width, "height": height, "maxPixels": 40_000_000}


def test_it_reads_the_pixel_limit_at_call_time(owner, settings):
    settings.UPLOAD_MAX_PIXELS = 64 * 48

    assert owner.upload(image_bytes("PNG", (64, 48))).status_code == 201
    error = assert_refused(owner, image_bytes("PNG", (65, 48)), "p.png", 413, "image_too_large")
    assert error["details"] == {"width": 65, "height": 48, "maxPixels": 64 * 48}


def test_it_refuses_a_file_one_byte_over_the_limit(uploaded, owner):
    jpeg = image_bytes("JPEG")
    padded = jpeg + b"\x00" * (settings.UPLOAD_MAX_BYTES + 1 - len(jpeg))

    assert_refused(owner, padded, "photo.jpg", 413, "file_too_large")


def test_it_refuses_a_16_mib_file(uploaded, owner):
    sixteen_mib = b"\xff\xd8\xff" + b"\x00" * (16 * MiB - 3)

    assert_refused(owner, sixteen_mib, "photo.jpg", 413, "file_too_large")


def test_it_deletes_the_stored_file_when_the_row_cannot_be_written(owner, monkeypatch):
    def broken_create(**fields):
        raise DatabaseError("disk full")

    monkeypatch.setattr(Upload.objects, "create", broken_create)

    with pytest.raises(DatabaseError):
        owner.upload(image_bytes())

    assert stored_files() == set()


# --- Sessions --------------------------------------------------------------------------------


def test_it_requires_a_session():
    file = SimpleUploadedFile("photo.jpg", image_bytes(), content_type="image/jpeg")

    response = Client().post("/api/uploads", {"image": file})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "no_session"
    assert Upload.objects.count() == 0 and stored_files() == set()


def test_it_rejects_an_unknown_token():
    file = SimpleUploadedFile("photo.jpg", image_bytes(), content_type="image/jpeg")

    response = Client().post(
        "/api/uploads", {"image": file}, headers={"Authorization": "Bearer pbt_nope"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"
    assert Upload.objects.count() == 0 and stored_files() == set()


def test_it_needs_the_csrf_token_for_a_cookie_session():
    client = Client(enforce_csrf_checks=True)
    assert client.post("/api/sessions").status_code == 201

    def upload(**headers):
        file = SimpleUploadedFile("photo.jpg", image_bytes(), content_type="image/jpeg")
        return client.post("/api/uploads", {"image": file}, headers=headers)

    refused = upload()
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    assert Upload.objects.count() == 0 and stored_files() == set()
    accepted = upload(**{"X-CSRFToken": client.cookies["csrftoken"].value})
    assert accepted.status_code == 201, accepted.content


# --- Through the ASGI application (the body-size guard) -------------------------------------


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/uploads",
        "raw_path": b"/api/uploads",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


async def _asgi_post(body: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
    communicator = HttpCommunicator(application, "POST", "/api/uploads", body, headers)
    response = await communicator.get_response(timeout=30)
    await communicator.wait(timeout=5)
    return response


def _multipart(content: bytes, token: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    file = SimpleUploadedFile("photo.jpg", content, content_type="application/octet-stream")
    body = encode_multipart(BOUNDARY, {"image": file})
    headers = [
        (b"host", b"testserver"),
        (b"content-type", MULTIPART_CONTENT.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    return body, headers


@pytest.mark.django_db(transaction=True)
async def test_it_accepts_an_upload_through_the_asgi_application():
    booth = await sync_to_async(start_booth)()
    body, headers = _multipart(image_bytes("PNG", (30, 20)), booth.token)

    response = await _asgi_post(body, headers)

    assert response["status"] == 201, response["body"]
    body = json.loads(response["body"])
    assert (body["width"], body["height"], body["contentType"]) == (30, 20, "image/png")
    assert await Upload.objects.filter(pk=body["uploadId"]).aexists()


@pytest.mark.django_db(transaction=True)
async def test_the_asgi_guard_answers_413_json_to_a_16_mib_upload():
    booth = await sync_to_async(start_booth)()
    body, headers = _multipart(b"\xff\xd8\xff" + b"\x00" * (16 * MiB - 3), booth.token)

    response = await _asgi_post(body, headers)

    assert response["status"] == 413
    assert (b"content-type", b"application/json") in response["headers"]
    error = json.loads(response["body"])["error"]
    assert error["code"] == "file_too_large"
    assert error["message"] == "The request body is too large."  # the guard's, not the view's
    assert await Upload.objects.acount() == 0
    assert stored_files() == set()


@pytest.mark.django_db(transaction=True)
async def test_the_asgi_guard_refuses_a_declared_oversize_body_without_reading_it():
    reads = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"\x00" * MiB, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    declared = str(settings.REQUEST_BODY_MAX_BYTES + 1).encode()
    await application(_scope([(b"content-length", declared)]), receive, send)

    assert reads == 0
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert b"file_too_large" in sent[1]["body"]


@pytest.mark.django_db(transaction=True)
async def test_the_asgi_guard_stops_reading_a_body_that_streams_past_the_limit():
    chunk = b"\x00" * MiB
    reads = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    # No Content-Length (chunked): the guard counts the bytes as they arrive.
    await application(_scope([(b"content-type", MULTIPART_CONTENT.encode())]), receive, send)

    assert reads == settings.REQUEST_BODY_MAX_BYTES // len(chunk) + 1
    assert sent[0]["status"] == 413
    assert b"file_too_large" in sent[1]["body"]
