"""What the render pool's worker processes run: decode, render, encode and save. No Django here.

`runner.in_pool()` sends these functions to worker processes (mockup_api/runner.py), so they
take plain values (the input's bytes, style, seed, sizes, the folder to write into) and return
small ones (file names and sizes): no PIL image crosses a process boundary, and nothing here
reads settings or needs `django.setup()`. This module imports Pillow and the painters only; the
fork server preloads it, so a new worker is a fork of a ready interpreter, not a fresh one.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mockup_api import render

# Renders yield the CPU to the server (and its event loop) when both want it.
WORKER_NICENESS = 5
# The jobs of a task usually follow one another through the FIFO queue; a worker keeps its last
# decoded inputs, so it decodes each photo once rather than once per job.
DECODED_INPUTS_KEPT = 2

_decoded: OrderedDict[bytes, Image.Image] = OrderedDict()
_decoded_lock = threading.Lock()


class UndecodableImage(ValueError):
    """The input is not an image Pillow can decode."""


@dataclass(frozen=True, slots=True)
class GenerationRender:
    """The files one generation or enhancement job wrote."""

    preview: str  # file name of the preview
    result: str  # file name of the full-size result
    width: int
    height: int


def init_worker() -> None:
    """Prepare a new worker process: quiet Ctrl+C, lower priority, end with the server."""
    # A terminal's Ctrl+C reaches the whole process group; the server decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(WORKER_NICENESS)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        # A server killed outright never tells its workers; its end closes this sentinel.
        threading.Thread(
            target=_exit_with_parent, args=(parent.sentinel,), name="parent-watch", daemon=True
        ).start()


def _exit_with_parent(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def warm_up() -> int:
    """Do nothing (starts a worker ahead of the first render); return the worker's pid."""
    return os.getpid()


def check_image(data: bytes) -> tuple[int, int]:
    """Decode `data` (and keep it for the renders to come); return its size."""
    return _decode(data).size


def render_generation(
    data: bytes,
    *,
    kind: str,
    style: str,
    seed: int,
    size: int,
    preview_size: int,
    directory: Path,
) -> GenerationRender:
    """Render a generation (or enhancement) job, save its preview and result as PNGs."""
    source = _decode(data)
    if kind == "enhancement":
        image = render.enhance(source, seed)
    else:
        image = render.render_style(source, style, seed, size=size)
    preview, _ = save_png(render.render_preview(image, size=preview_size), directory)
    result, _ = save_png(image, directory)
    return GenerationRender(preview=preview, result=result, width=image.width, height=image.height)


def render_mockup(
    data: bytes,
    product: dict[str, Any],
    variant: dict[str, Any],
    placement: str,
    *,
    size: int,
    directory: Path,
) -> str:
    """Render one mockup of the design in `data` and save it as a PNG; return the file name."""
    image = render.render_mockup(_decode(data), product, variant, placement, size=size)
    name, _ = save_png(image, directory)
    return name


def save_png(image: Image.Image, directory: Path) -> tuple[str, int]:
    """Encode `image` as PNG into a new file of `directory` (created if need be); return its
    name (128 random bits: the URL is the capability) and its size in bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    name = secrets.token_hex(16) + ".png"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(buffer.getvalue())
    return name, buffer.tell()


def _decode(data: bytes) -> Image.Image:
    """Return the fully decoded image in `data`, from this worker's cache when it can."""
    key = hashlib.sha256(data).digest()
    with _decoded_lock:
        if (image := _decoded.get(key)) is not None:
            _decoded.move_to_end(key)
            return image
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(str(exc)) from None
    with _decoded_lock:
        _decoded[key] = image
        while len(_decoded) > DECODED_INPUTS_KEPT:
            _decoded.popitem(last=False)
    return image
