"""The built-in mockup API's renderer: styled photos, previews, upscales and product mockups.

Pure-function tests: no database, no server. The contact-sheet test writes PNGs to
test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageStat

from jobs_app.styles import STYLE_IDS as JOB_STYLE_IDS
from mockup_api import products_art, render
from mockup_api.catalog import CATALOG_PRODUCTS

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SIZE = 384  # small renders keep the suite fast; every painter scales with the size
STYLES = sorted(render.STYLE_IDS)

# Styles are compared as 96 px thumbnails, so grain, dots and strokes average out and only
# the look (palette, tones, layout) counts. On that scale a JPEG round trip at quality 75
# moves the test photo by 0.7 and a 10% brightness change by 12; a style must move further
# than that from the photo and from every other style. (The closest pair, watercolour and
# the photo, measured 22 when this was written.)
MIN_STYLE_DISTANCE = 15
# Another seed reframes the crop and changes palette or texture; measured 10 or more for
# every style, against exactly 0 for a repeat of the same seed.
MIN_SEED_DISTANCE = 6

DESIGN_GREEN = (0, 255, 0)  # no product in the catalog comes in anything like pure green
MAX_COLOR_DISTANCE = 60  # shading may darken a garment by up to ~15% near the print area

PLACEMENTS = [
    pytest.param(
        product, variant, placement["placement"], id=f"{variant['id']}-{placement['placement']}"
    )
    for product in CATALOG_PRODUCTS
    for variant in product["variants"]
    for placement in product["placements"]
]


def make_photo(width: int = 640, height: int = 480) -> Image.Image:
    """Return a synthetic portrait: sky, out-of-focus park, a face with shading, grain."""
    rng = random.Random(7)
    sky = Image.linear_gradient("L").resize((width, height))
    photo = Image.merge(
        "RGB",
        [
            sky.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
            for a, b in ((70, 235), (130, 205), (210, 190))
        ],
    )
    bokeh, spots = Image.new("RGB", photo.size), Image.new("L", photo.size, 0)
    for _ in range(70):
        x, y, r = (
            rng.uniform(0, width),
            rng.uniform(height * 0.25, height * 0.85),
            rng.uniform(15, 60),
        )
        leaf = rng.choice(
            [(60, 110, 50), (90, 140, 60), (40, 80, 40), (150, 170, 80), (230, 220, 160)]
        )
        ImageDraw.Draw(bokeh).ellipse((x - r, y - r, x + r, y + r), fill=leaf)
        ImageDraw.Draw(spots).ellipse((x - r, y - r, x + r, y + r), fill=rng.randint(150, 255))
    photo = Image.composite(bokeh, photo, spots).filter(ImageFilter.GaussianBlur(9))
    _paint(
        photo,
        (30, 120, 130),
        (160, 360, 480, 600),
        lambda d: d.polygon(
            [(150, 480), (185, 400), (250, 368), (320, 380), (390, 368), (455, 400), (490, 480)],
            fill=255,
        ),
    )
    _paint(
        photo,
        (200, 145, 115),
        (280, 280, 360, 400),
        lambda d: d.rounded_rectangle((288, 290, 352, 392), 20, fill=255),
    )
    hair = Image.new("RGB", photo.size, (74, 44, 28))
    for _ in range(500):
        x = rng.uniform(232, 408)
        strand = rng.choice([(50, 28, 18), (110, 70, 40), (140, 95, 55)])
        ImageDraw.Draw(hair).line(
            (x, 120, x + rng.uniform(-25, 25), rng.uniform(250, 330)), fill=strand
        )
    _paint(
        photo,
        hair,
        (232, 110, 408, 330),
        lambda d: (
            d.ellipse((232, 110, 408, 300), fill=255),
            d.rectangle((236, 200, 404, 330), fill=255),
        ),
    )
    _paint(
        photo,
        (226, 172, 140),
        (240, 150, 390, 330),
        lambda d: d.ellipse((262, 160, 378, 312), fill=255),
    )
    _paint(
        photo,
        hair,
        (232, 110, 408, 330),
        lambda d: d.chord((250, 118, 392, 232), 180, 360, fill=255),
    )
    face = ImageDraw.Draw(photo)
    for x in (296, 344):
        face.ellipse((x - 12, 218, x + 12, 232), fill=(240, 238, 232))
        face.ellipse((x - 6, 218, x + 6, 232), fill=(80, 110, 60))
        face.ellipse((x - 3, 222, x + 3, 228), fill=(15, 10, 10))
        face.arc((x - 16, 198, x + 14, 214), 200, 340, fill=(70, 40, 25), width=4)
    face.line((320, 236, 315, 262, 324, 266), fill=(180, 120, 95), width=3)
    face.chord((302, 276, 338, 294), 0, 180, fill=(176, 70, 75))
    for x in (286, 354):
        face.ellipse((x - 14, 250, x + 14, 268), fill=(224, 160, 134))
    photo = photo.filter(ImageFilter.GaussianBlur(0.8))
    grain = Image.frombytes("L", photo.size, rng.randbytes(width * height)).point(
        lambda v: 116 + v // 11
    )
    return ImageChops.soft_light(photo, Image.merge("RGB", (grain, grain, grain)))


def _paint(
    photo: Image.Image,
    fill: tuple[int, int, int] | Image.Image,
    light_box: tuple[int, int, int, int],
    shape: Callable[[ImageDraw.ImageDraw], object],
) -> None:
    """Paint a shape onto photo, shaded by a radial falloff inside light_box (3D-ish)."""
    mask = Image.new("L", photo.size, 0)
    shape(ImageDraw.Draw(mask))
    left, top, right, bottom = light_box
    falloff = Image.radial_gradient("L").resize((right - left, bottom - top))
    light = Image.new("L", photo.size, 150)
    light.paste(falloff.point(lambda v: 255 - 105 * min(190, v) // 190), (left, top))
    layer = fill if isinstance(fill, Image.Image) else Image.new("RGB", photo.size, fill)
    shaded = ImageChops.multiply(layer, light.convert("RGB"))
    photo.paste(shaded, mask=mask.filter(ImageFilter.GaussianBlur(1.5)))


def distance(a: Image.Image, b: Image.Image) -> float:
    """Return the mean absolute difference of two images' looks, as 96 px thumbnails."""
    size = (96, 72)
    diff = ImageChops.difference(
        a.resize(size, Image.Resampling.BOX), b.resize(size, Image.Resampling.BOX)
    )
    return sum(ImageStat.Stat(diff).mean) / 3


def edge_energy(image: Image.Image) -> float:
    """Return the mean edge response: grain and detail alike."""
    return ImageStat.Stat(image.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


def edge_strength(image: Image.Image, fraction: float = 0.02) -> float:
    """Return the mean edge response of the strongest edges, which grain does not reach."""
    histogram = image.convert("L").filter(ImageFilter.FIND_EDGES).histogram()
    wanted, taken, total = sum(histogram) * fraction, 0.0, 0.0
    for value in range(255, -1, -1):
        take = min(histogram[value], wanted - taken)
        taken, total = taken + take, total + take * value
        if taken >= wanted:
            break
    return total / taken


def is_design_green(pixel: tuple[int, ...]) -> bool:
    r, g, b = pixel[:3]
    return g >= 80 and g > 2 * max(r, b) + 30


def green_mask(image: Image.Image) -> Image.Image:
    """Return an L mask, 255 where image shows the test design's green (see is_design_green)."""
    red, green, blue = image.split()
    threshold = ImageChops.lighter(red, blue).point(lambda v: min(255, 2 * v + 30))
    greener = ImageChops.subtract(green, threshold).point(lambda v: 255 if v > 0 else 0)
    bright = green.point(lambda v: 255 if v >= 80 else 0)
    return ImageChops.multiply(greener, bright)


def count(mask: Image.Image) -> int:
    return mask.histogram()[255]


def color_distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=False)) ** 0.5


def hex_rgb(code: str) -> tuple[int, int, int]:
    value = int(code.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def patch_color(image: Image.Image, x: int, y: int, radius: int = 5) -> tuple[float, ...]:
    return tuple(
        ImageStat.Stat(image.crop((x - radius, y - radius, x + radius + 1, y + radius + 1))).mean
    )


def half_green_design(side: int = 400) -> Image.Image:
    """Return a square design: transparent on the left, pure green on the right."""
    design = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(design).rectangle((side // 2, 0, side, side), fill=(*DESIGN_GREEN, 255))
    return design


def print_box(product: dict, placement: str) -> tuple[int, int, int, int]:
    area = next(p["print_area"] for p in product["placements"] if p["placement"] == placement)
    return area["left"], area["top"], area["left"] + area["width"], area["top"] + area["height"]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return make_photo()


@pytest.fixture(scope="module")
def renders(photo: Image.Image) -> dict[tuple[str, int], Image.Image]:
    return {
        (style, seed): render.render_style(photo, style, seed, size=SIZE)
        for style in STYLES
        for seed in (1, 2)
    }


def test_it_offers_exactly_the_styles_the_jobs_app_accepts():
    assert render.STYLE_IDS == JOB_STYLE_IDS


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_rgb_with_its_longest_side_equal_to_size(style, photo, renders):
    image = renders[style, 1]
    assert image.mode == "RGB"
    assert image.width == SIZE
    assert abs(image.height - SIZE * photo.height / photo.width) <= 1


@pytest.mark.parametrize("style", STYLES)
def test_the_same_seed_gives_identical_pixels(style, photo, renders):
    assert render.render_style(photo, style, 1, size=SIZE).tobytes() == renders[style, 1].tobytes()


@pytest.mark.parametrize("style", STYLES)
def test_another_seed_gives_a_visibly_different_variation(style, renders):
    first, second = renders[style, 1], renders[style, 2]
    assert distance(first, second.resize(first.size)) > MIN_SEED_DISTANCE


def test_styles_look_clearly_different_from_each_other_and_from_the_photo(photo, renders):
    looks = {"photo": photo, **{style: renders[style, 1] for style in STYLES}}
    too_close = {
        (a, b): round(distance(looks[a], looks[b]), 1)
        for a, b in itertools.combinations(looks, 2)
        if distance(looks[a], looks[b]) <= MIN_STYLE_DISTANCE
    }
    assert not too_close


def test_it_rejects_an_unknown_style(photo):
    with pytest.raises(ValueError, match="unknown style 'sepia'"):
        render.render_style(photo, "sepia", 1)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "La", "I;16", "F", "1"])
def test_it_accepts_photos_in_any_mode(mode, photo):
    source = photo.convert("L" if mode in ("I;16", "F") else "RGBA").convert(mode)
    image = render.render_style(source, "comic", 3, size=128)
    assert image.mode == "RGB"
    assert max(image.size) == 128


def test_it_flattens_transparent_photos_onto_white():
    clear = Image.new("RGBA", (200, 100), (255, 0, 0, 0))
    assert render.render_preview(clear).getextrema() == ((255, 255), (255, 255), (255, 255))


@pytest.mark.parametrize("style", STYLES)
def test_every_style_copes_with_tiny_sizes_and_tiny_photos(style, photo):
    assert max(render.render_style(photo, style, 1, size=2).size) == 2
    assert max(render.render_style(photo.resize((3, 2)), style, 1, size=48).size) == 48


def test_it_keeps_portrait_photos_upright_and_in_proportion(photo):
    portrait = photo.rotate(90, expand=True)
    image = render.render_style(portrait, "duotone", 1, size=300)
    assert image.height == 300
    assert abs(image.width - 300 * portrait.width / portrait.height) <= 1


def test_enhance_doubles_the_size_exactly():
    source = make_photo(301, 199)
    image = render.enhance(source, 5)
    assert image.mode == "RGB"
    assert image.size == (602, 398)


def test_enhance_is_sharper_and_cleaner_than_a_plain_resize(photo):
    plain = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.LANCZOS)
    enhanced = render.enhance(photo, 1)
    assert edge_strength(enhanced) > 1.2 * edge_strength(plain)
    # Less grain in a flat patch of sky: the denoise step, and sharpening did not undo it.
    sky = (20, 20, 220, 120)
    assert edge_energy(enhanced.crop(sky)) < 0.9 * edge_energy(plain.crop(sky))
    # Sharper, but the same picture: no shift in colour or framing.
    assert distance(enhanced, plain) < 6


def test_enhance_is_deterministic(photo):
    assert render.enhance(photo, 1).tobytes() == render.enhance(photo, 1).tobytes()


def test_enhance_shrinks_large_inputs_first_so_the_result_stays_within_4096_px():
    wide = Image.linear_gradient("L").resize((3000, 1000)).convert("RGB")
    assert render.enhance(wide, 1).size == (4096, 1366)  # 2 x (2048, 683)


def test_enhance_does_not_shrink_an_input_that_exactly_fits():
    square = Image.new("RGB", (2048, 20), (10, 20, 30))
    assert render.enhance(square, 1).size == (4096, 40)


def test_a_preview_is_small_blurred_and_rgb(renders):
    result = renders["pop-art", 1]
    preview = render.render_preview(result.convert("P"))
    assert preview.mode == "RGB"
    assert max(preview.size) == 192
    assert edge_energy(preview) < edge_energy(result.resize(preview.size, Image.Resampling.LANCZOS))


@pytest.mark.parametrize(("product", "variant", "placement"), PLACEMENTS)
def test_a_mockup_prints_the_design_inside_the_print_area_on_the_variant_colour(
    product, variant, placement
):
    image = render.render_mockup(half_green_design(), product, variant, placement)
    assert image.mode == "RGB"
    assert image.size == (1000, 1000)

    left, top, right, bottom = print_box(product, placement)
    width, height = right - left, bottom - top
    green = green_mask(image)
    # The square design fits inside the area, so its green half covers min(w, h)^2 / 2 pixels
    # (less a little under the mug's highlights and the hoodie's drawstrings).
    assert count(green.crop((left, top, right, bottom))) >= 0.6 * min(width, height) ** 2 / 2
    # Nothing green outside, allowing 2 px for the anti-aliased edge.
    assert count(green) == count(green.crop((left - 2, top - 2, right + 2, bottom + 2)))

    own = hex_rgb(variant["color_code"])
    others = {hex_rgb(v["color_code"]) for v in product["variants"]} - {own}
    below_area = patch_color(image, (left + right) // 2, bottom + 12)
    transparent_half = patch_color(image, left + width // 4, top + height // 2)
    for garment in (below_area, transparent_half):
        assert color_distance(garment, own) < MAX_COLOR_DISTANCE
        assert all(color_distance(garment, own) < color_distance(garment, c) for c in others)
    assert is_design_green(
        tuple(round(v) for v in patch_color(image, left + 3 * width // 4, top + height // 2))
    )


def test_a_mockup_is_deterministic_even_when_drawn_afresh():
    hoodie = next(p for p in CATALOG_PRODUCTS if p["type"] == "hoodie")
    first = render.render_mockup(half_green_design(), hoodie, hoodie["variants"][5], "front")
    products_art._scene.cache_clear()  # draw the garment again rather than reuse it
    again = render.render_mockup(half_green_design(), hoodie, hoodie["variants"][5], "front")
    assert first.tobytes() == again.tobytes()


def test_a_back_placement_draws_the_back_of_the_garment():
    shirt = next(p for p in CATALOG_PRODUCTS if p["type"] == "t-shirt")
    variant = shirt["variants"][0]
    design = half_green_design()
    front = render.render_mockup(design, shirt, variant, "front", size=500)
    back = render.render_mockup(design, shirt, variant, "back", size=500)
    # The front shows the inside of the collar, a darker patch below the neckline.
    assert (
        sum(patch_color(front, 250, 88, radius=3)) < sum(patch_color(back, 250, 88, radius=3)) - 60
    )


def test_a_mockup_can_be_rendered_at_another_size():
    tote = next(p for p in CATALOG_PRODUCTS if p["type"] == "tote-bag")
    image = render.render_mockup(half_green_design(), tote, tote["variants"][0], "front", size=600)
    assert image.size == (600, 600)


def test_a_mockup_rejects_a_placement_the_product_does_not_have():
    mug = next(p for p in CATALOG_PRODUCTS if p["type"] == "mug")
    with pytest.raises(ValueError, match="no placement 'back'"):
        render.render_mockup(half_green_design(), mug, mug["variants"][0], "back")


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "PA"])
def test_a_mockup_accepts_designs_in_any_mode(mode, renders):
    poster = next(p for p in CATALOG_PRODUCTS if p["type"] == "poster")
    design = renders["pop-art", 1].convert("RGBA").convert(mode)
    image = render.render_mockup(design, poster, poster["variants"][0], "front", size=300)
    assert image.mode == "RGB"


def test_it_is_safe_to_call_from_several_threads_at_once(photo):
    product = next(p for p in CATALOG_PRODUCTS if p["type"] == "mug")
    jobs = [(render.render_style, (photo, style, 11), {"size": 256}) for style in STYLES]
    jobs += [(render.enhance, (photo, 1), {}), (render.render_preview, (photo,), {})]
    jobs += [
        (render.render_mockup, (half_green_design(), product, v, "front"), {})
        for v in product["variants"]
    ]
    serial = [func(*args, **kwargs).tobytes() for func, args, kwargs in jobs]
    # Every thread shares one source image, as the server would; a lazily decoded one, even.
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    shared = Image.open(buffer)
    jobs = [(func, tuple(shared if a is photo else a for a in args), kw) for func, args, kw in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(func, *args, **kwargs) for func, args, kwargs in jobs * 2]
        parallel = [future.result().tobytes() for future in futures]
    assert parallel == serial * 2


def test_it_saves_contact_sheets_of_every_style_and_product(photo):
    ARTIFACTS.mkdir(exist_ok=True)
    cells = [("photo", photo)]
    cells += [
        (f"{style} seed {seed}", render.render_style(photo, style, seed, size=512))
        for style in STYLES
        for seed in (1, 2)
    ]
    _contact_sheet(cells, (480, 360), columns=3).save(ARTIFACTS / "styles.png")

    design = _rounded(render.render_style(photo, "pop-art", 1, size=640))
    cells = []
    for product in CATALOG_PRODUCTS:
        colors = {v["color_code"]: v for v in product["variants"]}  # sizes look the same
        for variant in colors.values():
            for placement in product["placements"]:
                label = f"{product['type']} {variant['color']} {placement['placement']}"
                cells.append(
                    (
                        label,
                        render.render_mockup(
                            design, product, variant, placement["placement"], size=500
                        ),
                    )
                )
    _contact_sheet(cells, (400, 400), columns=4).save(ARTIFACTS / "mockups.png")

    crop = (250, 150, 410, 270)
    plain = photo.crop(crop).resize((320, 240), Image.Resampling.LANCZOS)
    enhanced = render.enhance(photo.crop(crop), 1)
    _contact_sheet([("plain resize", plain), ("enhance", enhanced)], (320, 240), columns=2).save(
        ARTIFACTS / "enhance.png"
    )
    assert {"styles.png", "mockups.png", "enhance.png"} <= {p.name for p in ARTIFACTS.iterdir()}


def _rounded(image: Image.Image) -> Image.Image:
    """Return image with transparent rounded corners, to show transparency on the products."""
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, image.width - 1, image.height - 1), image.width // 7, fill=255
    )
    design = image.convert("RGBA")
    design.putalpha(mask)
    return design


def _contact_sheet(
    cells: list[tuple[str, Image.Image]], cell: tuple[int, int], *, columns: int
) -> Image.Image:
    width, height = cell
    label_height = 28
    rows = -(-len(cells) // columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for i, (label, image) in enumerate(cells):
        x, y = i % columns * width, i // columns * (height + label_height)
        thumb = image.copy()
        thumb.thumbnail(cell, Image.Resampling.LANCZOS)
        sheet.paste(
            thumb, (x + (width - thumb.width) // 2, y + label_height + (height - thumb.height) // 2)
        )
        draw.text((x + 8, y + 6), label, fill=(40, 40, 40), font=font)
    return sheet
