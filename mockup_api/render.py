"""Render the built-in mockup API's images: styled photos, previews, upscales and mockups.

Everything here is a pure function of its arguments (no settings, no I/O) and safe to call
from several threads at once; the server runs these in the render pool's worker processes
(`mockup_api.render_jobs`), never on the event loop.
"""

from __future__ import annotations

import random
import threading

from PIL import Image, ImageFilter, ImageOps

from mockup_api import products_art, styles_art

STYLE_IDS: frozenset[str] = frozenset(styles_art.STYLES)

# Upscales stop at 4096 px a side: 48 MB of RGB and about 1.3 s of filtering at most.
MAX_ENHANCED_SIDE = 4096
MAX_CROP = 0.06  # seeded zoom of up to 6% reframes each variation without losing the subject

_load_lock = threading.Lock()


def render_style(source: Image.Image, style: str, seed: int, *, size: int = 768) -> Image.Image:
    """Return the photo restyled, RGB, with its longest side equal to size."""
    paint = styles_art.STYLES.get(style)
    if paint is None:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(STYLE_IDS)}")
    # String seeds hash the same way in every process, whatever PYTHONHASHSEED says.
    rng = random.Random(f"{style}:{seed}")
    photo = _seeded_crop(_to_rgb(source), rng)
    return paint(_fit_longest_side(photo, size), rng, seed)


def render_preview(image: Image.Image, *, size: int = 192) -> Image.Image:
    """Return a small, slightly blurred RGB preview of a result."""
    preview = _fit_longest_side(_to_rgb(image), size, upscale=False)
    return preview.filter(ImageFilter.GaussianBlur(max(0.6, preview.width / 200)))


def enhance(source: Image.Image, seed: int) -> Image.Image:
    """Return the image upscaled 2x with sharpened detail, local contrast and less noise."""
    # Enhancement tasks carry a seed like generation tasks do, but sharpening has nothing
    # random to vary: the same source always enhances to the same pixels, whatever the seed.
    image = _to_rgb(source)
    if 2 * max(image.size) > MAX_ENHANCED_SIDE:
        image = _fit_longest_side(image, MAX_ENHANCED_SIDE // 2)
    # Denoise before upscaling, or the sharpening below would amplify sensor noise too.
    clean = Image.blend(image, image.filter(ImageFilter.MedianFilter(3)), 0.5)
    big = clean.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    # Fine detail first, then a wide, gentle unsharp mask for local contrast ("clarity").
    big = big.filter(ImageFilter.UnsharpMask(radius=1.6, percent=140, threshold=2))
    clarity = ImageFilter.UnsharpMask(radius=max(8, big.width // 60), percent=30, threshold=0)
    return big.filter(clarity)


def render_mockup(
    design: Image.Image, product: dict, variant: dict, placement: str, *, size: int = 1000
) -> Image.Image:
    """Return a size x size RGB mockup of design printed on the product's variant."""
    areas = {p["placement"]: p["print_area"] for p in product["placements"]}
    if placement not in areas:
        raise ValueError(f"product {product['id']} has no placement {placement!r}")
    return products_art.render(
        _to_rgba(design),
        kind=product["type"],
        color=variant["color_code"],
        placement=placement,
        area=areas[placement],
        size=size,
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Return a new RGB copy of image, upright, with transparency flattened onto white."""
    upright = _upright(image)
    if upright.mode == "RGB":
        return upright
    rgba = upright.convert("RGBA")
    if rgba.getextrema()[3][0] == 255:
        return rgba.convert("RGB")
    paper = Image.new("RGB", rgba.size, (255, 255, 255))
    paper.paste(rgba, mask=rgba.getchannel("A"))
    return paper


def _to_rgba(image: Image.Image) -> Image.Image:
    """Return a new RGBA copy of image, upright."""
    return _upright(image).convert("RGBA")


def _upright(image: Image.Image) -> Image.Image:
    """Return a new copy of image turned upright, in a mode that converts to RGB(A) faithfully."""
    with _load_lock:
        # Image.open() decodes lazily; two threads sharing one source must not decode it twice.
        image.load()
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _scale_to_8_bits(upright)  # convert() would clip 16-bit values at 255
    if upright.mode == "P" and "transparency" in upright.info:
        return upright.convert("RGBA")  # keep the transparent palette entry transparent
    if upright.mode == "CMYK":
        return upright.convert("RGB")  # no ICC profile handling: a plain conversion is enough
    if upright.mode == "La":
        return upright.convert("LA")  # Pillow converts premultiplied La to nothing else
    return upright


def _scale_to_8_bits(image: Image.Image) -> Image.Image:
    wide = image.convert("F")
    low, high = wide.getextrema()
    span = (high - low) or 1.0
    return wide.point(lambda v: (v - low) * 255.0 / span).convert("L")


def _seeded_crop(image: Image.Image, rng: random.Random) -> Image.Image:
    width, height = image.size
    zoom = 1.0 - rng.uniform(0.0, MAX_CROP)
    crop_w = max(1, round(width * zoom))
    crop_h = max(1, round(crop_w * height / width))  # same aspect ratio as the photo
    left = rng.randint(0, width - crop_w)
    top = rng.randint(0, height - crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h))


def _fit_longest_side(image: Image.Image, size: int, *, upscale: bool = True) -> Image.Image:
    width, height = image.size
    if not upscale:
        size = min(size, max(width, height))
    scale = size / max(width, height)
    target = (
        (size, max(1, round(height * scale)))
        if width >= height
        else (max(1, round(width * scale)), size)
    )
    if target == image.size:
        return image.copy()
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
