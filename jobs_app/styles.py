"""The photobooth style presets: what `GET /api/styles` lists and generation tasks accept."""

from __future__ import annotations

from typing import TypedDict


class StyleDict(TypedDict):
    id: str
    name: str
    description: str


STYLES: tuple[StyleDict, ...] = (
    StyleDict(
        id="pop-art",
        name="Pop Art",
        description="Flat, saturated colour blocks and halftone dots, Warhol style.",
    ),
    StyleDict(
        id="watercolor",
        name="Watercolour",
        description="Soft washes bleeding into paper texture.",
    ),
    StyleDict(
        id="comic",
        name="Comic Book",
        description="Bold ink outlines and cel shading.",
    ),
    StyleDict(
        id="pencil-sketch",
        name="Pencil Sketch",
        description="Graphite strokes on off-white paper.",
    ),
    StyleDict(
        id="vintage-film",
        name="Vintage Film",
        description="Faded warm tones, grain and vignette.",
    ),
    StyleDict(
        id="neon-noir",
        name="Neon Noir",
        description="Deep shadows lit by magenta and cyan neon.",
    ),
    StyleDict(
        id="oil-painting",
        name="Oil Painting",
        description="Thick, smeared brush strokes.",
    ),
    StyleDict(
        id="pixel-art",
        name="Pixel Art",
        description="Chunky pixels in a limited retro palette.",
    ),
    StyleDict(
        id="duotone",
        name="Duotone",
        description="Two-colour poster print.",
    ),
    StyleDict(
        id="mosaic",
        name="Mosaic",
        description="Tiles of colour with grout lines.",
    ),
)

STYLE_IDS = frozenset(style["id"] for style in STYLES)
