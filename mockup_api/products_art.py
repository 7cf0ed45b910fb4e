"""Draw product mockups: a shaded product on a studio backdrop with the design printed on it.

Shapes are drawn in the catalog's 1000 x 1000 coordinates (the units of every print_area)
and scaled to the output size. Each product is described by a few layers (see Parts); one
composer turns them into a Scene, which is cached per product, colour, placement and size.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from mockup_api.styles_art import hex_to_rgb, noise

Point = tuple[float, float]
Box = tuple[int, int, int, int]

SUPERSAMPLE = 2  # shapes are drawn at twice the size and reduced, for smooth edges
TEXTURE_SEED = 1000  # fabric and paper textures are the same in every mockup
CANVAS = 1000  # the unit square of catalog print areas

# Designs sit at the top of a garment's print area, as printers place them by default.
TOP_ALIGNED = frozenset({"t-shirt", "hoodie"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """One product's layers, all L images of the output size unless noted."""

    mask: Image.Image  # where the product is
    shade: Image.Image  # soft lighting (folds, hollows): 255 = fully lit; blurred when composed
    crisp: Image.Image  # sharp lighting (seams, stitches, openings): 255 = fully lit
    gloss: Image.Image  # highlights screened on top of the product and the print: 0 = none
    texture: str  # "jersey", "canvas", "ceramic" or "paper"
    overlay: Image.Image | None = None  # RGBA drawn over the print (drawstrings)
    contact: tuple[int, int, int, int] | None = None  # the soft shadow where it stands
    gloss_blur: float = 1 / 70  # of the size: fabric sheen is soft, reflections in glaze sharp
    wall: bool = False  # hang on a wall instead of standing in a studio


@dataclass(frozen=True, slots=True, kw_only=True)
class Scene:
    """A rendered product without the design; never modified once cached."""

    image: Image.Image  # RGB
    light: Image.Image  # L multiplier over the print area: 255 = 1.0
    gloss: Image.Image  # L highlight over the print area
    overlay: Image.Image | None


def render(
    design: Image.Image, *, kind: str, color: str, placement: str, area: dict, size: int
) -> Image.Image:
    """Return a size x size RGB mockup of the RGBA design printed in area of the product."""
    box = _area_box(area, size)
    scene = _scene(kind, color, placement, box, size)
    width, height = box[2] - box[0], box[3] - box[1]
    if kind == "mug":
        curve = round(height * MUG_SMILE)
        art = _wrap_on_cylinder(_fit(design, (width, height - curve), top=True), size, box, curve)
    else:
        art = _fit(design, (width, height), top=kind in TOP_ALIGNED)
    # Ink takes the product's light: multiply by its shading, then add its highlights.
    rgb = ImageChops.multiply(art.convert("RGB"), scene.light.convert("RGB"))
    rgb = ImageChops.screen(rgb, scene.gloss.convert("RGB"))
    image = scene.image.copy()
    image.paste(rgb, box[:2], art.getchannel("A"))
    if scene.overlay is not None:
        image.paste(scene.overlay, (0, 0), scene.overlay)
    return image


def _area_box(area: dict, size: int) -> Box:
    scale = size / CANVAS
    left, top = round(area["left"] * scale), round(area["top"] * scale)
    right = round((area["left"] + area["width"]) * scale)
    bottom = round((area["top"] + area["height"]) * scale)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _fit(design: Image.Image, size: tuple[int, int], *, top: bool) -> Image.Image:
    """Return design scaled to fit inside size, centred (or top-aligned) on transparency."""
    width, height = size
    scale = min(width / design.width, height / design.height)
    fitted_size = (max(1, round(design.width * scale)), max(1, round(design.height * scale)))
    # Resizing premultiplied alpha keeps transparent pixels' colours from bleeding in.
    fitted = design.convert("RGBa").resize(fitted_size, Image.Resampling.LANCZOS).convert("RGBA")
    canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    left = (width - fitted.width) // 2
    canvas.paste(fitted, (left, 0 if top else (height - fitted.height) // 2))
    return canvas


@functools.lru_cache(maxsize=24)
def _scene(kind: str, color: str, placement: str, box: Box, size: int) -> Scene:
    parts = DRAWERS[kind](size, placement == "back")
    rgb = hex_to_rgb(color)
    light = _light(parts, size)
    gloss = parts.gloss.filter(ImageFilter.GaussianBlur(size * parts.gloss_blur))
    product = ImageChops.multiply(Image.new("RGB", (size, size), rgb), light.convert("RGB"))
    product = ImageChops.screen(product, gloss.convert("RGB"))
    backdrop = _wall(size) if parts.wall else _studio(size)
    backdrop = _drop_shadow(backdrop, parts.mask, size)
    if parts.contact is not None:
        backdrop = _contact_shadow(backdrop, parts.contact, size)
    image = Image.composite(product, backdrop, parts.mask)
    return Scene(image=image, light=light.crop(box), gloss=gloss.crop(box), overlay=parts.overlay)


def _light(parts: Parts, size: int) -> Image.Image:
    # Fabric curves away from the viewer at the silhouette, so the rim is darker.
    rim = parts.mask.filter(ImageFilter.GaussianBlur(size / 36)).point(
        lambda v: 165 + v * 90 // 255
    )
    soft = parts.shade.filter(ImageFilter.GaussianBlur(size / 110))
    light = ImageChops.multiply(ImageChops.multiply(rim, soft), parts.crisp)
    return ImageChops.multiply(light, _texture(parts.texture, size))


@functools.lru_cache(maxsize=8)
def _texture(kind: str, size: int) -> Image.Image:
    if kind == "ceramic":
        return Image.new("L", (size, size), 255)
    rng = random.Random(f"{kind}:{TEXTURE_SEED}")
    if kind == "canvas":
        weave = _checker(size, 255, 226).filter(ImageFilter.SMOOTH)
        slubs = noise(rng, (size, size), scale=2).point(lambda v: 243 + v // 21)
        return ImageChops.multiply(weave, slubs)
    depth = {"jersey": 14, "paper": 6}[kind]
    grain = noise(rng, (size, size)).filter(ImageFilter.GaussianBlur(0.6))
    return ImageOps.autocontrast(grain).point(lambda v: 255 - depth + v * depth // 255)


def _checker(size: int, on: int, off: int) -> Image.Image:
    """Return a one-pixel checkerboard, the plain weave of canvas."""
    pairs = (size + 1) // 2
    even, odd = bytes((on, off)) * pairs, bytes((off, on)) * pairs
    rows = (even + odd) * pairs
    return Image.frombytes("L", (pairs * 2, pairs * 2), rows).crop((0, 0, size, size))


def _studio(size: int) -> Image.Image:
    """Return a soft seamless-paper backdrop, lighter in the middle."""
    vertical = Image.linear_gradient("L").resize((size, size))
    base = ImageOps.colorize(vertical, black="#f2f0ec", white="#d9d5cf")
    glow = Image.radial_gradient("L").resize((size, size)).point(lambda v: 255 - min(255, v) // 5)
    return ImageChops.multiply(base, glow.convert("RGB"))


def _wall(size: int) -> Image.Image:
    """Return a painted wall lit from above."""
    vertical = Image.linear_gradient("L").resize((size, size))
    base = ImageOps.colorize(vertical, black="#e9e4da", white="#c9c2b5")
    plaster = noise(random.Random(f"wall:{TEXTURE_SEED}"), (size, size), scale=2)
    plaster = plaster.point(lambda v: 246 + v // 28).convert("RGB")
    return ImageChops.multiply(base, plaster)


def _drop_shadow(backdrop: Image.Image, mask: Image.Image, size: int) -> Image.Image:
    offset = round(size * 0.012), round(size * 0.02)
    shadow = ImageChops.offset(mask, *offset).filter(ImageFilter.GaussianBlur(size / 60))
    shade = shadow.point(lambda v: 255 - v * 90 // 255).convert("RGB")
    return ImageChops.multiply(backdrop, shade)


def _contact_shadow(backdrop: Image.Image, box: Box, size: int) -> Image.Image:
    layer = _Layer(size, 255)
    layer.ellipse(box, 120)
    shade = layer.reduced().filter(ImageFilter.GaussianBlur(size / 90))
    return ImageChops.multiply(backdrop, shade.convert("RGB"))


class _Layer:
    """An L layer drawn in catalog units, supersampled for anti-aliased edges."""

    def __init__(self, size: int, fill: int) -> None:
        self.scale = size * SUPERSAMPLE / CANVAS
        self.image = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), fill)
        self.draw = ImageDraw.Draw(self.image)

    def polygon(self, points: list[Point], fill: int) -> None:
        self.draw.polygon([(x * self.scale, y * self.scale) for x, y in points], fill=fill)

    def ellipse(self, box: tuple[float, float, float, float], fill: int) -> None:
        self.draw.ellipse([v * self.scale for v in box], fill=fill)

    def line(self, points: list[Point], fill: int, width: float, *, dashed: bool = False) -> None:
        pixels = [(x * self.scale, y * self.scale) for x, y in points]
        thickness = max(1, round(width * self.scale))
        if not dashed:
            self.draw.line(pixels, fill=fill, width=thickness, joint="curve")
            return
        for dash in _dashes(pixels, 6 * self.scale):
            self.draw.line(dash, fill=fill, width=thickness)

    def gradient(
        self,
        points: list[Point],
        *,
        between: tuple[float, float],
        values: tuple[int, int],
        axis: str = "y",
    ) -> None:
        """Fill a polygon with a ramp from values[0] to values[1] between two x or y positions."""
        start, end = between
        side = self.image.width
        ramp = []
        for i in range(side):
            t = min(1.0, max(0.0, (i / self.scale - start) / ((end - start) or 1)))
            ramp.append(round(values[0] + (values[1] - values[0]) * t))
        strip = Image.new("L", (side, 1) if axis == "x" else (1, side))
        strip.putdata(ramp)
        shape = Image.new("L", self.image.size, 0)
        ImageDraw.Draw(shape).polygon(
            [(x * self.scale, y * self.scale) for x, y in points], fill=255
        )
        self.image.paste(strip.resize(self.image.size, Image.Resampling.NEAREST), mask=shape)

    def reduced(self) -> Image.Image:
        return self.image.reduce(SUPERSAMPLE)


def _dashes(points: list[Point], length: float) -> list[list[Point]]:
    """Split a polyline into dashes of the given length with equal gaps (stitching)."""
    dashes: list[list[Point]] = []
    drawn, on = 0.0, True
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        span = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while t < span:
            step = min(length - drawn, span - t)
            a, b = t / span, (t + step) / span
            if on:
                dashes.append(
                    [
                        (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                        (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                    ]
                )
            t += step
            drawn += step
            if drawn >= length:
                drawn, on = 0.0, not on
    return dashes


def _path(start: Point, *segments: Point | tuple[Point, Point], steps: int = 24) -> list[Point]:
    """Return a polyline through start and segments: end points or (control, end) curves."""
    points = [start]
    for segment in segments:
        if isinstance(segment[0], tuple):
            (cx, cy), (ex, ey) = segment
            x0, y0 = points[-1]
            for i in range(1, steps + 1):
                t = i / steps
                a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
                points.append((a * x0 + b * cx + c * ex, a * y0 + b * cy + c * ey))
        else:
            points.append(segment)
    return points


def _mirror(points: list[Point], axis: float = 500) -> list[Point]:
    return [(2 * axis - x, y) for x, y in points]


def _symmetric(left_half: list[Point]) -> list[Point]:
    """Return a closed outline from its left half, drawn from top centre to bottom centre."""
    return left_half + _mirror(left_half)[::-1]


def _both_sides(layer: _Layer, points: list[Point], fill: int, width: float, **kw: bool) -> None:
    layer.line(points, fill, width, **kw)
    layer.line(_mirror(points), fill, width, **kw)


def _new_layers(size: int) -> tuple[_Layer, _Layer, _Layer, _Layer]:
    return _Layer(size, 0), _Layer(size, 255), _Layer(size, 255), _Layer(size, 0)


def _t_shirt(size: int, back: bool) -> Parts:
    mask, shade, crisp, gloss = _new_layers(size)
    top = 168 if back else 142
    half = _path(
        (500, top), ((460, top), (425, 150)), ((370, 162), (300, 185)), (215, 237), (128, 396),
        (232, 448), (289, 381), ((276, 620), (283, 880)), ((390, 893), (500, 893)),
    )  # fmt: skip
    mask.polygon(_symmetric(half), 255)
    if back:
        neckline = _path((425, 150), ((500, 187), (575, 150)))
        crisp.line(neckline, 228, 14)
        crisp.line(_path((428, 160), ((500, 197), (572, 160))), 190, 1.6, dashed=True)
    else:
        front = _path((425, 150), ((500, 262), (575, 150)))
        back_band = _path((425, 150), ((500, 166), (575, 150)))
        crisp.polygon(front + back_band[::-1], 120)  # the inside of the shirt's back
        crisp.line(back_band, 150, 9)
        crisp.line(front, 236, 17)
        crisp.line(_path((422, 163), ((500, 279), (578, 163))), 190, 1.6, dashed=True)
    _both_sides(crisp, _path((300, 185), ((318, 290), (289, 381))), 185, 2.2)
    _both_sides(crisp, [(146, 382), (243, 430)], 190, 1.6, dashed=True)
    crisp.line(_path((286, 862), ((500, 877), (714, 862))), 195, 1.6, dashed=True)
    for fold, value, width in (
        ([(292, 392), (352, 452)], 195, 16),
        ([(294, 428), (336, 530)], 212, 10),
        ([(182, 330), (238, 296)], 215, 12),
        ([(405, 884), (414, 790)], 222, 14),
    ):
        _both_sides(shade, fold, value, width)
    _both_sides(gloss, [(307, 384), (366, 441)], 45, 14)
    return Parts(
        mask=mask.reduced(),
        shade=shade.reduced(),
        crisp=crisp.reduced(),
        gloss=gloss.reduced(),
        texture="jersey",
    )


def _hoodie(size: int, back: bool) -> Parts:
    mask, shade, crisp, gloss = _new_layers(size)
    half = _path(
        (500, 200), (350, 205), ((300, 212), (262, 236)), (176, 330), ((130, 520), (118, 745)),
        (205, 772), ((214, 560), (273, 430)), ((262, 650), (273, 850)), (289, 858), (291, 906),
        ((395, 913), (500, 913)),
    )  # fmt: skip
    mask.polygon(_symmetric(half), 255)
    crisp.line(_path((290, 856), ((500, 866), (710, 856))), 185, 2.2)  # waistband seam
    _both_sides(crisp, [(124, 706), (209, 722)], 185, 2.2)  # cuff seams
    for x in range(300, 700, 9):
        crisp.line([(x, 866), (x, 906)], 228, 1.4)  # rib knit
    _both_sides(crisp, _path((262, 236), ((290, 330), (273, 430))), 185, 2.2)
    for fold, value, width in (
        ([(276, 440), (345, 520)], 200, 18),
        ([(150, 560), (205, 600)], 205, 14),
        ([(140, 640), (200, 690)], 210, 12),
        ([(420, 900), (428, 800)], 220, 16),
    ):
        _both_sides(shade, fold, value, width)
    _both_sides(gloss, [(290, 440), (355, 515)], 35, 14)
    overlay = None
    if back:
        hood = _path(
            (500, 96), ((398, 96), (372, 160)), ((360, 228), (428, 240)), ((470, 246), (500, 246))
        )
        mask.polygon(_symmetric(hood), 255)
        shade.line(_path((380, 246), ((500, 262), (620, 246))), 150, 22)  # the hood's shadow
        crisp.line([*_symmetric(hood), (500, 96)], 195, 2.0)
        crisp.line([(500, 100), (500, 244)], 175, 2.2)  # centre seam of the hood
        gloss.line(_path((392, 200), ((392, 118), (470, 108))), 30, 16)  # light on the hood's crown
    else:
        hood = _path(
            (500, 48), ((385, 48), (360, 130)), ((340, 200), (352, 236)), ((420, 300), (500, 322))
        )
        mask.polygon(_symmetric(hood), 255)
        opening = _path((500, 108), ((428, 112), (424, 186)), ((428, 258), (500, 300)))
        # The inside of the hood: in shadow at the top, catching some light near the neck.
        crisp.gradient(_symmetric(opening), between=(108, 300), values=(55, 150))
        _both_sides(crisp, opening, 238, 24)
        _both_sides(gloss, opening[:-6], 60, 10)
        _both_sides(shade, _path((360, 140), ((350, 200), (380, 250))), 200, 20)
        _both_sides(crisp, _path((352, 232), ((420, 300), (500, 322))), 185, 2.0)
        pocket = _path((386, 600), ((334, 616), (322, 722)), (327, 818), (500, 820))
        crisp.line(_symmetric(pocket), 170, 2.6)
        _both_sides(shade, _path((386, 606), ((340, 622), (330, 718))), 150, 16)
        crisp.line([(386, 600), (614, 600)], 170, 2.6)
        crisp.line([(388, 608), (612, 608)], 200, 1.4, dashed=True)
        overlay = _drawstrings(size)
    return Parts(
        mask=mask.reduced(),
        shade=shade.reduced(),
        crisp=crisp.reduced(),
        gloss=gloss.reduced(),
        texture="jersey",
        overlay=overlay,
    )


def _drawstrings(size: int) -> Image.Image:
    """Return the RGBA cords hanging from the hood, drawn over the print."""
    layer = Image.new("RGBA", (size * SUPERSAMPLE, size * SUPERSAMPLE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = size * SUPERSAMPLE / CANVAS
    for cord in (
        _path((472, 298), ((470, 350), (463, 398))),
        _path((528, 298), ((530, 350), (537, 398))),
    ):
        pixels = [(x * scale, y * scale) for x, y in cord]
        draw.line(pixels, fill=(40, 40, 40, 120), width=round(11 * scale), joint="curve")
        draw.line(pixels, fill=(236, 234, 228, 255), width=round(8 * scale), joint="curve")
        x, y = pixels[-1]
        draw.rounded_rectangle(
            (x - 5 * scale, y, x + 5 * scale, y + 24 * scale), 3 * scale, fill=(170, 172, 176, 255)
        )
    return layer.reduce(SUPERSAMPLE)


MUG_CENTRE, MUG_RADIUS, MUG_TILT = 430, 225, 34  # tilt: half-height of the rim ellipse
MUG_TOP, MUG_BOTTOM = 262, 716
MUG_SMILE = 0.045  # how far the print bows down in the middle, as a fraction of its height


def _mug(size: int, back: bool) -> Parts:
    mask, shade, crisp, gloss = _new_layers(size)
    cx, r, tilt = MUG_CENTRE, MUG_RADIUS, MUG_TILT
    handle = _Layer(size, 0)
    handle.ellipse((560, 345, 795, 630), 255)
    handle.ellipse((598, 400, 738, 578), 0)
    mask.image.paste(255, mask=handle.image)
    body = _Layer(size, 0)
    body.polygon(
        [(cx - r, MUG_TOP), (cx + r, MUG_TOP), (cx + r, MUG_BOTTOM), (cx - r, MUG_BOTTOM)], 255
    )
    body.ellipse((cx - r, MUG_BOTTOM - tilt, cx + r, MUG_BOTTOM + tilt), 255)
    body.ellipse((cx - r, MUG_TOP - tilt, cx + r, MUG_TOP + tilt), 255)
    mask.image.paste(255, mask=body.image)
    crisp.gradient(_rect((600, 345, 795, 630)), between=(640, 795), values=(240, 160), axis="x")
    crisp.image.paste(_cylinder_light(size * SUPERSAMPLE), mask=body.image)
    # The far inner wall is lit; the near one, under the lip, is in shadow.
    rim = _ellipse_points((cx, MUG_TOP), r - 14, tilt - 7, 0, 360)
    crisp.gradient(rim, between=(MUG_TOP - tilt, MUG_TOP + tilt), values=(215, 95))
    crisp.line(_ellipse_points((cx, MUG_TOP), r - 7, tilt - 5, 0, 360), 250, 8)  # lit rim
    gloss.line(_ellipse_points((cx, MUG_TOP), r - 7, tilt - 5, 200, 300), 140, 5)
    shade.line(_ellipse_points((cx, MUG_BOTTOM), r, tilt, 20, 160), 170, 26)
    # Studio lights reflected in the glaze: a strong window on the left, a faint one on the right.
    for left, right, value in ((-154, -128, 150), (150, 160, 60)):
        gloss.polygon(_rect((cx + left, MUG_TOP + 55, cx + right, MUG_BOTTOM - 35)), value)
    gloss.line(_ellipse_points((678, 488), 100, 126, 290, 380), 90, 6)  # highlight on the handle
    return Parts(
        mask=mask.reduced(),
        shade=shade.reduced(),
        crisp=crisp.reduced(),
        gloss=gloss.reduced(),
        texture="ceramic",
        gloss_blur=1 / 200,
        contact=(cx - r + 10, MUG_BOTTOM + 5, cx + r + 30, MUG_BOTTOM + tilt + 18),
    )


def _cylinder_light(side: int) -> Image.Image:
    """Return an L image lit like a vertical cylinder with the light in front, to the left."""
    scale = side / CANVAS
    column = []
    for x in range(side):
        t = (x / scale - MUG_CENTRE) / MUG_RADIUS
        theta = math.asin(max(-1.0, min(1.0, t)))
        column.append(round(255 * max(0.5, min(1.0, 0.5 + 0.55 * math.cos(theta + 0.5)))))
    row = Image.new("L", (side, 1))
    row.putdata(column)
    return row.resize((side, side), Image.Resampling.NEAREST)


def _ellipse_points(centre: Point, rx: float, ry: float, start: float, end: float) -> list[Point]:
    cx, cy = centre
    steps = max(2, int(abs(end - start) / 4))
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * i / steps for i in range(steps + 1))
    ]


def _wrap_on_cylinder(art: Image.Image, size: int, box: Box, curve: int) -> Image.Image:
    """Return art as printed on the mug: squeezed towards the sides and bowed like the rim."""
    width, height = art.width, art.height + curve
    scale = size / CANVAS
    radius, centre = MUG_RADIUS * scale, MUG_CENTRE * scale

    def angle(x: float) -> float:
        return math.asin(max(-1.0, min(1.0, (box[0] + x - centre) / radius)))

    first, last = angle(0), angle(width)

    # Equal steps around the mug cover fewer screen pixels near its sides (arc length).
    def source_x(x: float) -> float:
        return (angle(x) - first) / (last - first) * art.width

    def drop(x: float) -> float:
        return curve * (math.cos(angle(x)) - math.cos(first)) / (1 - math.cos(first) or 1)

    mesh = []
    strips = 32
    for i in range(strips):
        x0, x1 = width * i / strips, width * (i + 1) / strips
        s0, s1, d0, d1 = source_x(x0), source_x(x1), drop(x0), drop(x1)
        quad = (s0, -d0, s0, height - d0, s1, height - d1, s1, -d1)
        mesh.append(((round(x0), 0, round(x1), height), quad))
    premultiplied = art.convert("RGBa")
    wrapped = premultiplied.transform(
        (width, height), Image.Transform.MESH, mesh, Image.Resampling.BICUBIC
    )
    return wrapped.convert("RGBA")


def _tote_bag(size: int, back: bool) -> Parts:
    mask, shade, crisp, gloss = _new_layers(size)
    behind = _path((392, 345), ((500, -115), (608, 345)))
    strap = _path((365, 345), ((500, -150), (635, 345)))
    mask.line(behind, 255, 34)
    crisp.line(behind, 150, 34)
    mask.polygon([(255, 330), (745, 330), (756, 878), (244, 878)], 255)
    mask.line(strap, 255, 36)
    crisp.polygon([(255, 330), (745, 330), (756, 878), (244, 878)], 255)
    crisp.line(strap, 190, 36)
    crisp.line(strap, 255, 30)
    crisp.line(_path((255, 366), (745, 366)), 200, 2.0)
    crisp.line(_path((256, 358), (744, 358)), 215, 1.4, dashed=True)
    for x in (365, 635):
        crisp.line(
            [(x - 17, 340), (x + 17, 340), (x + 17, 392), (x - 17, 392), (x - 17, 340)], 185, 2
        )
        crisp.line([(x - 17, 340), (x + 17, 392)], 185, 2)
        crisp.line([(x + 17, 340), (x - 17, 392)], 185, 2)
    for fold, value, width in (
        ([(395, 400), (385, 870)], 228, 34),
        ([(640, 390), (652, 870)], 222, 30),
        ([(250, 860), (750, 860)], 215, 30),
    ):
        shade.line(fold, value, width)
    gloss.line([(420, 400), (412, 860)], 22, 26)
    return Parts(
        mask=mask.reduced(),
        shade=shade.reduced(),
        crisp=crisp.reduced(),
        gloss=gloss.reduced(),
        texture="canvas",
    )


def _poster(size: int, back: bool) -> Parts:
    mask, shade, crisp, gloss = _new_layers(size)
    frame = (166, 26, 834, 974)
    paper = (196, 56, 804, 944)
    mask.polygon(_rect(frame), 255)
    crisp.polygon(_rect(frame), 34)  # a black frame, whatever the paper colour
    crisp.polygon(_rect(paper), 255)
    bevel_lit = [
        (frame[0], frame[1]),
        (frame[2], frame[1]),
        (paper[2], paper[1]),
        (paper[0], paper[1]),
    ]
    gloss.polygon(bevel_lit, 60)
    crisp.line([*_rect(paper), (paper[0], paper[1])], 150, 3)
    shade.polygon(_rect((paper[0], paper[1], paper[2], paper[1] + 14)), 205)  # frame casts a lip
    shade.polygon(_rect((paper[0], paper[1], paper[0] + 12, paper[3])), 215)
    # Light from the top left falls off across the paper.
    falloff = Image.linear_gradient("L").rotate(45, fillcolor=255).point(lambda v: 255 - v // 12)
    shade.image.paste(ImageChops.multiply(shade.image, falloff.resize(shade.image.size)))
    gloss.polygon([(560, 56), (700, 56), (380, 944), (240, 944)], 20)  # reflection in the glass
    return Parts(
        mask=mask.reduced(),
        shade=shade.reduced(),
        crisp=crisp.reduced(),
        gloss=gloss.reduced(),
        texture="paper",
        gloss_blur=1 / 200,
        wall=True,
    )


def _rect(box: tuple[float, float, float, float]) -> list[Point]:
    left, top, right, bottom = box
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


DRAWERS = {
    "t-shirt": _t_shirt,
    "hoodie": _hoodie,
    "mug": _mug,
    "tote-bag": _tote_bag,
    "poster": _poster,
}
