"""Paint the ten photobooth styles with Pillow alone.

Each painter takes an RGB photo already at its output size, a random.Random seeded from the
seed, and the seed itself (to cycle palettes), and returns a new RGB image of the same size.
All randomness comes from that generator, never from Image.effect_noise or effect_spread,
which use C's unseedable rand().
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageMath, ImageOps

Painter = Callable[[Image.Image, random.Random, int], Image.Image]

Color = tuple[int, int, int]

# Warhol-like palettes; pop_art maps tones to them from the darkest colour to the lightest.
POP_PALETTES: tuple[tuple[str, ...], ...] = (
    ("#1b1464", "#ed1e79", "#f7931e", "#fcee21"),
    ("#0b3954", "#e0115f", "#ff9eb5", "#ffe74c"),
    ("#2d0a4e", "#00a6c8", "#ff7b54", "#f9f871"),
    ("#222222", "#d7263d", "#ff9f1c", "#f4f1de"),
    ("#3a0ca3", "#f72585", "#4cc9f0", "#fefae0"),
    ("#14213d", "#1b998b", "#ff8fab", "#fff275"),
)

# Classic retro 16-colour palettes; pixel-art picks one per seed.
RETRO_PALETTES: tuple[tuple[str, ...], ...] = (
    # PICO-8
    ("#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
     "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa"),
    # Sweetie 16
    ("#1a1c2c", "#5d275d", "#b13e53", "#ef7d57", "#ffcd75", "#a7f070", "#38b764", "#257179",
     "#29366f", "#3b5dc9", "#41a6f6", "#73eff7", "#f4f4f4", "#94b0c2", "#566c86", "#333c57"),
    # DawnBringer 16
    ("#140c1c", "#442434", "#30346d", "#4e4a4e", "#854c30", "#346524", "#d04648", "#757161",
     "#597dce", "#d27d2c", "#8595a1", "#6daa2c", "#d2aa99", "#6dc2ca", "#dad45e", "#deeed6"),
)  # fmt: skip

DUOTONES: tuple[tuple[str, str], ...] = (
    ("#1d1e4e", "#ff7eb6"),
    ("#2b0f54", "#f9e55b"),
    ("#0f3d3e", "#f6a35c"),
    ("#3d0a1e", "#7ee8fa"),
    ("#102542", "#f87060"),
    ("#23153c", "#38f2af"),
)

# Brush passes as (width, length) in fractions of the image width, coverage, and the local
# detail range they paint in: broad strokes only where flat, fine ones only where detailed.
OIL_STROKES = (
    (1 / 55, 1 / 20, 1.5, 0, 50),
    (1 / 100, 1 / 36, 1.2, 0, 110),
    (1 / 240, 1 / 80, 2.5, 30, 255),
)

NEON_PAIRS: tuple[tuple[str, str], ...] = (
    ("#ff2bd6", "#1ef4ff"),
    ("#ff3fa4", "#2de2e6"),
    ("#c13bff", "#00f0ff"),
    ("#ff2e88", "#41ffc9"),
)


def pop_art(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Map tones to four flat, saturated colours with halftone dots and ink outlines."""
    gray = ImageOps.autocontrast(_smooth(image.convert("L"), 5), cutoff=2)
    palette = sorted((hex_to_rgb(c) for c in _cycle(POP_PALETTES, seed)), key=_luma)
    # Unequal band edges keep faces in the two middle colours rather than the darkest.
    edges = sorted(rng.randint(lo, hi) for lo, hi in ((50, 70), (110, 135), (175, 200)))
    bands = gray.point(lambda v: sum(v >= e for e in edges))
    flat = _palette_map(bands, palette)
    cell = max(4, round(image.width / rng.uniform(70, 95)))
    darkness = ImageOps.invert(gray).point(lambda v: round(0.55 * v))
    dots = _halftone(darkness, cell, angle=rng.choice((15, 45, 75)))
    shaded = Image.composite(ImageEnhance.Brightness(flat).enhance(0.62), flat, dots)
    return ImageChops.multiply(shaded, _ink(gray, 1.0, 2.2, 5, 22).convert("RGB"))


def watercolor(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Paint layered washes that pool at their edges and fade out onto textured paper."""
    w, h = image.size
    # The washes are laid out at half size: median filters are slow and hold the GIL.
    half = image.reduce(2) if min(w, h) >= 64 else image.copy()
    for _ in range(2):
        half = half.filter(ImageFilter.MedianFilter(7))
    half = _shift_hue(ImageEnhance.Color(half).enhance(1.4), rng.uniform(-10, 10))
    hue, sat, val = half.convert("HSV").split()
    # Posterizing the value into a few layers makes the washes; seeded wobble makes their
    # borders organic instead of contour lines. Hue and saturation stay smooth, so no new hues.
    wobble = noise(rng, half.size, scale=max(2, half.width // 16))
    wobble = wobble.point(lambda v: (v - 128) // 6 + 128)
    val = ImageChops.add(val, wobble, offset=-128).point(lambda v: min(255, v // 28 * 28 + 20))
    layers = Image.merge("HSV", (hue, sat, val)).convert("RGB").filter(ImageFilter.MedianFilter(3))
    washes = layers.resize((w, h), Image.Resampling.BICUBIC)
    # Colour bleeds past each layer while the pigment pools darker along its rim.
    bled = washes.filter(ImageFilter.GaussianBlur(w / 250))
    rims = ImageOps.autocontrast(_edges(washes.convert("L")), cutoff=1)
    rims = rims.filter(ImageFilter.GaussianBlur(1.0)).point(lambda v: 255 - round(v * 0.4))
    painted = ImageChops.multiply(bled, rims.convert("RGB"))
    # Transparent pigment: lift everything towards the paper, unevenly, as wet washes dry.
    blotches = noise(rng, (w, h), scale=max(4, w // 10)).point(lambda v: 20 + v // 4)
    painted = ImageChops.screen(painted, Image.merge("RGB", (blotches, blotches, blotches)))
    sketch = _ink(image.convert("L"), 0.8, 2.0, 6, 6).point(lambda v: 185 + v // 4)
    painted = ImageChops.multiply(painted, sketch.convert("RGB"))
    paper = _paper(rng, (w, h), "#fbf8f1", grain=8)
    painted = Image.composite(painted, paper, _ragged_vignette(rng, (w, h)))
    bumps = (
        noise(rng, (w, h), scale=3).filter(ImageFilter.GaussianBlur(1)).filter(ImageFilter.EMBOSS)
    )
    bumps = bumps.point(lambda v: min(255, 244 + (v - 128) // 5))  # cold-pressed paper tooth
    return ImageChops.multiply(ImageChops.multiply(painted, paper), bumps.convert("RGB"))


def comic(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Flatten colours into cels, add screentone shadows and bold ink outlines."""
    smooth = _smooth(image, 5)
    smooth = ImageEnhance.Contrast(ImageEnhance.Color(smooth).enhance(1.7)).enhance(1.15)
    smooth = _shift_hue(smooth, rng.uniform(-8, 8))
    # Median cut is slow on a full image; a palette from a quarter-size copy looks the same.
    palette = smooth.reduce(4 if min(smooth.size) >= 64 else 1).quantize(
        colors=rng.choice((12, 14, 16)), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    cels = smooth.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    gray = image.convert("L")
    shadow = gray.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 if v < 95 else 0)
    cell = max(4, round(image.width / rng.uniform(90, 120)))
    dots = ImageChops.multiply(_halftone(Image.new("L", image.size, 70), cell, angle=45), shadow)
    toned = Image.composite(ImageEnhance.Brightness(cels).enhance(0.45), cels, dots)
    lines = _ink(gray, 1.0, 2.6, 4, 40)
    # Thicken the ink a little: a min filter spreads dark lines by one pixel.
    lines = lines.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.GaussianBlur(0.6))
    return ImageChops.multiply(toned, lines.convert("RGB"))


def pencil_sketch(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Draw graphite outlines with a colour-dodge blend and hatch the shadows on paper."""
    w, h = image.size
    gray = ImageOps.autocontrast(image.convert("L"), cutoff=1)
    blurred = gray.filter(ImageFilter.GaussianBlur(max(2.0, w / 120)))
    # Colour dodge of the inverted blur: flat areas go white, edges keep their darkness.
    dodge = ImageMath.lambda_eval(
        lambda a: a["convert"](a["min"](a["g"] * 255 / (a["b"] + 1), 255), "L"),
        g=gray,
        b=blurred,
    )
    lines = dodge.point(lambda v: round(255 * (v / 255) ** 2.2))
    tone = gray.filter(ImageFilter.GaussianBlur(3))
    angle = rng.uniform(30, 60)
    hatch = _hatching(rng, (w, h), angle, density=1.0)
    cross = _hatching(rng, (w, h), angle + rng.uniform(70, 100), density=0.8)
    # lighter() hides a stroke wherever the tone is lighter than the stroke itself.
    shade = ImageChops.multiply(
        ImageChops.lighter(hatch, tone.point(lambda v: min(255, round(v * 1.25 + 35)))),
        ImageChops.lighter(cross, tone.point(lambda v: min(255, round(v * 1.6 + 80)))),
    )
    graphite = ImageChops.multiply(lines, shade)
    paper = _paper(rng, (w, h), "#f4efe4", grain=14)
    lead = ImageOps.colorize(graphite, black="#2b2b30", white="#ffffff")
    return ImageChops.multiply(paper, lead)


def vintage_film(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Fade and warm the colours, then add grain, a vignette, dust and a light leak."""
    w, h = image.size
    faded = ImageEnhance.Color(image).enhance(0.62)
    r, g, b = faded.split()
    # Lifted blacks and capped whites: the curves of a faded print.
    r = r.point(lambda v: round(38 + v * 0.84))
    g = g.point(lambda v: round(28 + v * 0.78))
    b = b.point(lambda v: round(42 + v * 0.58))
    warm = Image.merge("RGB", (r, g, b))
    grain = noise(rng, (w, h)).filter(ImageFilter.GaussianBlur(0.7))
    grain = ImageOps.autocontrast(grain).point(lambda v: 128 + (v - 128) // 3)
    warm = ImageChops.soft_light(warm, Image.merge("RGB", (grain, grain, grain)))
    leak = _light_leak(rng, (w, h))
    warm = ImageChops.screen(warm, leak)
    warm = ImageChops.multiply(warm, _vignette((w, h), strength=0.55).convert("RGB"))
    return _dust(rng, warm)


def neon_noir(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Sink the scene into blue-black and trace its edges in glowing magenta and cyan."""
    w, h = image.size
    gray = image.convert("L")
    dark = ImageOps.colorize(
        ImageOps.autocontrast(gray).point(lambda v: round(255 * (v / 255) ** 1.8)),
        black="#04020c",
        white="#3c3f78",
    )
    edges = ImageOps.autocontrast(_edges(gray.filter(ImageFilter.GaussianBlur(1.2))), cutoff=1)
    edges = edges.point(lambda v: min(255, max(0, (v - 25) * 2)))
    warm, cool = (hex_to_rgb(c) for c in _cycle(NEON_PAIRS, seed))
    if rng.random() < 0.5:
        warm, cool = cool, warm
    ramp = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((w, h))
    neon = ImageOps.colorize(ramp, black=warm, white=cool)
    lit = ImageChops.multiply(neon, edges.convert("RGB"))
    glow = ImageChops.add(
        lit.filter(ImageFilter.GaussianBlur(w / 150)),
        lit.filter(ImageFilter.GaussianBlur(w / 45)),
    )
    # Rim light from the neon side on the bright parts of the subject.
    rim = ImageChops.multiply(neon, gray.point(lambda v: max(0, v - 150)).convert("RGB"))
    out = ImageChops.screen(ImageChops.screen(dark, glow), ImageChops.screen(lit, rim))
    return ImageChops.screen(out, _rain(rng, (w, h)))


def oil_painting(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Cover a blurred underpainting with thick strokes that follow the picture's edges."""
    w, h = image.size
    base = ImageEnhance.Contrast(ImageEnhance.Color(image).enhance(1.5)).enhance(1.15)
    canvas = _smooth(base, 7).filter(ImageFilter.GaussianBlur(w / 200))
    colors = base.filter(ImageFilter.GaussianBlur(1)).load()
    grid = (max(1, w // 8), max(1, h // 8))
    flow = _flow_field(
        image.convert("L").resize(grid, Image.Resampling.BOX), rng.uniform(0, math.pi)
    )
    detail = _edges(image.convert("L").filter(ImageFilter.GaussianBlur(1))).resize(grid).load()
    draw = ImageDraw.Draw(canvas)
    for width, length, coverage, lo, hi in OIL_STROKES:
        width, length = max(1.0, w * width), w * length
        for _ in range(int(w * h / (width * length) * coverage)):
            x, y = rng.randrange(w), rng.randrange(h)
            cx, cy = x * grid[0] // w, y * grid[1] // h
            if not lo <= detail[cx, cy] <= hi:
                continue
            angle = flow[cy][cx] + rng.gauss(0, 0.2)
            reach = length * rng.uniform(0.35, 0.6)
            dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
            fill = _jitter(colors[x, y], rng, 8)
            _stroke(draw, (x - dx, y - dy, x + dx, y + dy), fill, max(1, round(width)))
    # Embossed luminance reads as paint thickness catching the light from the top left.
    relief = (
        canvas.convert("L").filter(ImageFilter.EMBOSS).point(lambda v: 128 + (v - 128) * 3 // 2)
    )
    painted = ImageChops.soft_light(canvas, Image.merge("RGB", (relief, relief, relief)))
    # Aged varnish warms every colour a little, as in a gallery painting.
    varnished = ImageChops.multiply(painted, Image.new("RGB", (w, h), (255, 240, 212)))
    return ImageChops.multiply(varnished, _canvas_weave((w, h)).convert("RGB"))


def pixel_art(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Shrink to chunky pixels in a seeded 16-colour retro palette."""
    w, h = image.size
    block = max(2, round(max(w, h) / rng.choice((56, 64, 72, 80))))
    cols, rows = math.ceil(w / block), math.ceil(h / block)
    small = image.resize((cols, rows), Image.Resampling.BOX)
    small = ImageEnhance.Contrast(ImageEnhance.Color(small).enhance(1.4)).enhance(1.15)
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for c in _cycle(RETRO_PALETTES, seed) for v in hex_to_rgb(c)])
    pixels = small.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")
    big = pixels.resize((cols * block, rows * block), Image.Resampling.NEAREST)
    return big.crop((0, 0, w, h))


def duotone(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Map tones onto a seeded pair of ink colours."""
    dark, light = _cycle(DUOTONES, seed)
    if rng.random() < 0.25:
        dark, light = light, dark
    gamma = rng.uniform(0.8, 1.25)
    gray = ImageOps.autocontrast(image.convert("L"), cutoff=1)
    gray = gray.point(lambda v: round(255 * (v / 255) ** gamma))
    return ImageOps.colorize(gray, black=dark, white=light)


def mosaic(image: Image.Image, rng: random.Random, seed: int) -> Image.Image:
    """Rebuild the picture from slightly irregular glazed tiles set in grout."""
    w, h = image.size
    tile = max(6, round(max(w, h) / rng.choice((40, 46, 52))))
    cols, rows = math.ceil(w / tile), math.ceil(h / tile)
    colors = ImageEnhance.Color(image.resize((cols, rows), Image.Resampling.BOX)).enhance(1.3)
    grout = hex_to_rgb(_cycle(("#d9d3c7", "#3a3531", "#bfb8aa"), seed))
    tiles = Image.new("RGB", (w, h), grout)
    mask = Image.new("L", (w, h), 0)
    draw, mask_draw = ImageDraw.Draw(tiles), ImageDraw.Draw(mask)
    gap = max(2, tile // 6)
    # Corners wobble by less than half the gap, so grout always shows between two tiles.
    wobble = gap * 0.45
    for row in range(rows):
        for col in range(cols):
            x0, y0 = col * tile + gap / 2, row * tile + gap / 2
            x1, y1 = x0 + tile - gap, y0 + tile - gap
            corners = [
                (x + rng.uniform(-wobble, wobble), y + rng.uniform(-wobble, wobble))
                for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
            ]
            draw.polygon(corners, fill=_jitter(colors.getpixel((col, row)), rng, 10))
            mask_draw.polygon(corners, fill=255)
    # A blurred mask rounds each tile's edges down into the grout; embossing it lights them.
    soft = mask.filter(ImageFilter.GaussianBlur(max(1.0, tile / 9)))
    rounded = ImageChops.multiply(tiles, soft.point(lambda v: 150 + v * 105 // 255).convert("RGB"))
    rounded = Image.composite(rounded, tiles, mask)
    bevel = soft.filter(ImageFilter.EMBOSS).point(lambda v: 128 + (v - 128) * 3 // 2)
    glazed = ImageChops.soft_light(rounded, Image.merge("RGB", (bevel, bevel, bevel)))
    grit = noise(rng, (w, h)).point(lambda v: 120 + v // 16)
    return ImageChops.soft_light(glazed, Image.merge("RGB", (grit, grit, grit)))


STYLES: dict[str, Painter] = {
    "pop-art": pop_art,
    "watercolor": watercolor,
    "comic": comic,
    "pencil-sketch": pencil_sketch,
    "vintage-film": vintage_film,
    "neon-noir": neon_noir,
    "oil-painting": oil_painting,
    "pixel-art": pixel_art,
    "duotone": duotone,
    "mosaic": mosaic,
}


def noise(rng: random.Random, size: tuple[int, int], *, scale: int = 1) -> Image.Image:
    """Return seeded uniform noise (L); scale > 1 gives smooth blobs about scale pixels wide."""
    w, h = size
    cols, rows = math.ceil(w / scale) + 1, math.ceil(h / scale) + 1
    seeds = Image.frombytes("L", (cols, rows), rng.randbytes(cols * rows))
    if scale == 1:
        return seeds.crop((0, 0, w, h))
    smooth = seeds.resize((cols * scale, rows * scale), Image.Resampling.BICUBIC)
    return ImageOps.autocontrast(smooth.crop((0, 0, w, h)))


def hex_to_rgb(hex_color: str) -> Color:
    """Return the (r, g, b) of a #rrggbb colour."""
    value = int(hex_color.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def _cycle[T](options: Sequence[T], seed: int) -> T:
    """Return an option that differs for consecutive seeds, so a batch of variations all differ."""
    return options[seed % len(options)]


def _luma(color: Color) -> float:
    r, g, b = color
    return 0.299 * r + 0.587 * g + 0.114 * b


def _jitter(color: tuple[int, ...], rng: random.Random, amount: int) -> Color:
    shift = rng.randint(-amount, amount)
    r, g, b = (max(0, min(255, c + shift + rng.randint(-3, 3))) for c in color[:3])
    return r, g, b


def _palette_map(indices: Image.Image, colors: list[Color]) -> Image.Image:
    mapped = indices.copy()
    mapped.putpalette([v for c in colors for v in c])  # turns the L image into a P image
    return mapped.convert("RGB")


def _shift_hue(image: Image.Image, degrees: float) -> Image.Image:
    offset = round(degrees / 360 * 256) % 256
    if offset == 0:
        return image
    hue, sat, val = image.convert("HSV").split()
    hue = hue.point(lambda v: (v + offset) % 256)
    return Image.merge("HSV", (hue, sat, val)).convert("RGB")


_SOBEL = tuple(
    ImageFilter.Kernel((3, 3), [sign * k for k in kernel], scale=1)
    for kernel in ((-1, 0, 1, -2, 0, 2, -1, 0, 1), (-1, -2, -1, 0, 0, 0, 1, 2, 1))
    for sign in (1, -1)
)


def _edges(gray: Image.Image) -> Image.Image:
    # Each kernel clips negative responses, so the four signed kernels cover both directions.
    parts = [gray.filter(kernel) for kernel in _SOBEL]
    edges = functools.reduce(ImageChops.lighter, parts)
    # Kernel filters copy the outermost pixels unfiltered; blank them so no frame appears.
    w, h = edges.size
    if min(w, h) < 3:
        return Image.new("L", (w, h), 0)
    return ImageOps.expand(edges.crop((1, 1, w - 1, h - 1)), border=1, fill=0)


def _smooth(image: Image.Image, size: int, *, passes: int = 1) -> Image.Image:
    """Return image with small detail removed by a median filter run at half resolution."""
    # A median filter costs O(size^2) per pixel; at half resolution it is four times cheaper.
    half = image.reduce(2) if min(image.size) >= 64 else image.copy()
    for _ in range(passes):
        half = half.filter(ImageFilter.MedianFilter(size))
    return half.resize(image.size, Image.Resampling.BICUBIC)


def _ink(gray: Image.Image, fine: float, coarse: float, threshold: int, gain: int) -> Image.Image:
    """Return dark lines (L, 255 = paper) where gray is darker than its surroundings."""
    # A difference of Gaussians: positive on the dark side of every edge and on thin dark lines.
    dog = ImageChops.subtract(
        gray.filter(ImageFilter.GaussianBlur(coarse)), gray.filter(ImageFilter.GaussianBlur(fine))
    )
    return dog.point(lambda v: 255 - min(255, max(0, (v - threshold) * gain)))


@functools.lru_cache(maxsize=64)
def _dot_tile(cell: int) -> Image.Image:
    # Distance from the cell centre, 255 at the corners; cached tiles are never modified.
    return Image.radial_gradient("L").resize((cell, cell), Image.Resampling.BILINEAR)


def _halftone(darkness: Image.Image, cell: int, *, angle: float) -> Image.Image:
    """Return an L mask of round dots whose area follows darkness (0 none, 255 solid)."""
    w, h = darkness.size
    side = math.ceil(math.hypot(w, h)) + cell
    row = Image.new("L", (side, cell))
    for x in range(0, side, cell):
        row.paste(_dot_tile(cell), (x, 0))
    screen = Image.new("L", (side, side))
    for y in range(0, side, cell):
        screen.paste(row, (0, y))
    screen = screen.rotate(angle, Image.Resampling.BILINEAR)
    left, top = (side - w) // 2, (side - h) // 2
    screen = screen.crop((left, top, left + w, top + h))
    # A dot covering fraction c of its cell has radius sqrt(c / pi) cells, i.e. this threshold.
    threshold = darkness.point(lambda v: round(255 * 0.8 * math.sqrt(v / 255)))
    return ImageChops.subtract(threshold, screen, scale=0.2)


def _paper(rng: random.Random, size: tuple[int, int], tint: str, *, grain: int) -> Image.Image:
    fibres = noise(rng, size).filter(ImageFilter.GaussianBlur(0.8))
    fibres = ImageOps.autocontrast(fibres).point(lambda v: 255 - grain + v * grain // 255)
    return ImageChops.multiply(Image.new("RGB", size, tint), fibres.convert("RGB"))


def _ragged_vignette(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Return a mask that keeps the middle and fades to paper in an uneven border."""
    width = size[0]
    centre = _vignette(size, strength=1.0)
    wobble = noise(rng, size, scale=max(4, width // 12))
    ragged = ImageChops.add(centre, wobble, scale=2.0)
    mask = ragged.point(lambda v: min(255, max(0, (v - 70) * 5)))
    return mask.filter(ImageFilter.GaussianBlur(width / 200))


def _vignette(size: tuple[int, int], *, strength: float) -> Image.Image:
    """Return an L image, 255 in the middle and darker towards the corners."""
    falloff = Image.radial_gradient("L").crop((20, 20, 236, 236)).resize(size)
    return falloff.point(lambda v: round(255 - strength * 255 * (v / 255) ** 2.2))


def _light_leak(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    glow = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(glow)
    x = rng.choice((0, w)) + rng.uniform(-0.1, 0.1) * w
    y = rng.uniform(0.1, 0.9) * h
    radius = rng.uniform(0.25, 0.45) * max(w, h)
    tint = rng.choice(((255, 110, 40), (255, 70, 60), (255, 160, 60)))
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tint)
    return ImageEnhance.Brightness(glow.filter(ImageFilter.GaussianBlur(radius / 2))).enhance(0.8)


def _dust(rng: random.Random, image: Image.Image) -> Image.Image:
    w, h = image.size
    out = image.copy()
    draw = ImageDraw.Draw(out)
    for _ in range(rng.randint(1, 3)):  # scratches along the film
        x = rng.uniform(0.05, 0.95) * w
        draw.line((x, 0, x + rng.uniform(-6, 6), h), fill=(236, 226, 206), width=1)
    speck = max(w, h) / 700
    for _ in range(rng.randint(15, 35)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.4, 1.5) * speck
        shade = rng.choice(((30, 26, 22), (240, 232, 215)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)
    return out


def _hatching(
    rng: random.Random, size: tuple[int, int], angle: float, *, density: float
) -> Image.Image:
    """Return short parallel pencil strokes (dark on white) covering the whole image."""
    w, h = size
    layer = Image.new("L", size, 255)
    draw = ImageDraw.Draw(layer)
    rad = math.radians(angle)
    spacing = max(3.0, w / 130)
    length = w / 14
    count = int(w * h / (spacing * length) * density)
    for _ in range(count):
        x, y = rng.uniform(-length, w), rng.uniform(-length, h)
        a = rad + rng.gauss(0, 0.05)
        dx, dy = math.cos(a) * length, math.sin(a) * length
        draw.line((x, y, x + dx * rng.uniform(0.5, 1.0), y + dy), fill=rng.randint(40, 130))
    return layer


def _flow_field(gray: Image.Image, calm_angle: float) -> list[list[float]]:
    """Return, per pixel of gray, the angle to stroke along: along edges, or calm_angle if flat."""
    smooth = gray.filter(ImageFilter.GaussianBlur(1.5))
    kx = ImageFilter.Kernel((3, 3), (-1, 0, 1, -2, 0, 2, -1, 0, 1), scale=8, offset=128)
    ky = ImageFilter.Kernel((3, 3), (-1, -2, -1, 0, 0, 0, 1, 2, 1), scale=8, offset=128)
    gx, gy = smooth.filter(kx).load(), smooth.filter(ky).load()
    w, h = gray.size
    field = []
    for y in range(h):
        row = []
        for x in range(w):
            dx, dy = gx[x, y] - 128, gy[x, y] - 128
            # Weak gradients point nowhere in particular: a painter keeps one hand direction there.
            row.append(math.atan2(dx, -dy) if dx * dx + dy * dy > 9 else calm_angle)
        field.append(row)
    return field


def _stroke(draw: ImageDraw.ImageDraw, line: tuple[float, ...], fill: Color, width: int) -> None:
    draw.line(line, fill=fill, width=width)
    r = width / 2
    for x, y in (line[:2], line[2:]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)  # round the square line caps


@functools.lru_cache(maxsize=8)
def _canvas_weave(size: tuple[int, int]) -> Image.Image:
    """Return the faint diagonal twill of a painting canvas; cached, so never modified."""
    w, h = size
    twill = ((236, 250, 244, 250), (250, 236, 250, 244), (244, 250, 236, 250), (250, 244, 250, 236))
    repeats = w // 4 + 1
    rows = b"".join(bytes(twill[y % 4]) * repeats for y in range(h))
    return (
        Image.frombytes("L", (repeats * 4, h), rows).crop((0, 0, w, h)).filter(ImageFilter.SMOOTH)
    )


def _rain(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    layer = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(layer)
    slant = rng.uniform(-0.25, 0.25)
    for _ in range(rng.randint(90, 160)):
        x, y, length = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.06) * h
        level = rng.randint(30, 80)
        draw.line((x, y, x + slant * length, y + length), fill=(level, level, level + 25))
    return layer
