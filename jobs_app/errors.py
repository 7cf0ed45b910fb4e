"""Coded errors of uploads, tasks and events."""

from __future__ import annotations

from rest_framework import status

from photobooth.errors import NotFoundError, PhotoboothError


class EmptyUpload(PhotoboothError):
    """The uploaded file has no bytes."""

    default_code = "empty_upload"
    default_detail = "The uploaded file is empty."


class MissingUpload(PhotoboothError):
    """The multipart body has no `image` field."""

    default_code = "missing_image"
    default_detail = "Send the photo as the multipart field 'image'."


class UploadTooLarge(PhotoboothError):
    """The uploaded file is over the byte limit."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "file_too_large"
    default_detail = "The file is over 15 MiB."


class ImageTooLarge(PhotoboothError):
    """The image declares more pixels than we decode."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "image_too_large"
    default_detail = "The image is over 40 megapixels."


class UnsupportedImageType(PhotoboothError):
    """The bytes are not a JPEG, PNG or WebP image."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_code = "unsupported_media_type"
    default_detail = "Upload a JPEG, PNG or WebP image."


class CorruptImage(PhotoboothError):
    """The image is truncated or cannot be decoded."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "corrupt_image"
    default_detail = "The image is truncated or corrupt and cannot be decoded."


class UploadNotFound(NotFoundError):
    """No upload with this id in the caller's session."""

    default_code = "upload_not_found"
    default_detail = "No upload with this id in your session."


class TaskNotFound(NotFoundError):
    """No task with this id in the caller's session."""

    default_code = "task_not_found"
    default_detail = "No task with this id in your session."


class JobNotFound(NotFoundError):
    """No job with this id in the caller's session."""

    default_code = "job_not_found"
    default_detail = "No job with this id in your session."


class SourceNotReady(PhotoboothError):
    """An enhancement's source job has no result (yet)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "source_not_ready"
    default_detail = "The source job has no result to enhance yet."


class IdempotencyConflict(PhotoboothError):
    """The Idempotency-Key was used with another body."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used with a different request body."


class UpstreamUnavailable(PhotoboothError):
    """The upstream cannot be reached right now."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "upstream_unavailable"
    default_detail = "The image service is unavailable; try again shortly."
