"""The built-in mockup API's product catalog, in the upstream's own shape (contract section 6).

Print areas are in pixels of the product's mockup canvas (1000 x 1000).
"""

from __future__ import annotations

from typing import Any


def _variants(first_id: int, colors: list[tuple[str, str]], sizes: list[str]) -> list[dict]:
    variants = []
    for n, ((color_name, color_hex), size) in enumerate(
        (color, size) for color in colors for size in sizes
    ):
        variants.append(
            {
                "id": first_id + n,
                "name": f"{color_name} / {size}",
                "color": color_name,
                "color_code": color_hex,
                "size": size,
            }
        )
    return variants


def _area(width: int, height: int, top: int, left: int) -> dict[str, int]:
    return {"width": width, "height": height, "top": top, "left": left}


APPAREL_SIZES = ["S", "M", "L", "XL"]

CATALOG_PRODUCTS: list[dict[str, Any]] = [
    {
        "id": 71,
        "name": "Unisex Classic T-Shirt",
        "type": "t-shirt",
        "variants": _variants(
            7100,
            [("White", "#f4f4f2"), ("Black", "#1d1d1f"), ("Heather Grey", "#9ea1a6"),
             ("Navy", "#1f2a44"), ("Red", "#b3202a")],
            APPAREL_SIZES,
        ),
        "placements": [
            {"placement": "front", "print_area": _area(300, 380, 270, 350)},
            {"placement": "back", "print_area": _area(320, 420, 230, 340)},
        ],
    },
    {
        "id": 146,
        "name": "Pullover Hoodie",
        "type": "hoodie",
        "variants": _variants(
            14600,
            [("Black", "#1d1d1f"), ("Sport Grey", "#a7a9ac"), ("Forest Green", "#2f4a35")],
            APPAREL_SIZES,
        ),
        "placements": [
            {"placement": "front", "print_area": _area(280, 220, 330, 360)},
            {"placement": "back", "print_area": _area(320, 400, 250, 340)},
        ],
    },
    {
        "id": 19,
        "name": "Ceramic Mug",
        "type": "mug",
        "variants": _variants(1900, [("White", "#fbfbfb"), ("Black", "#222222")], ["11oz", "15oz"]),
        "placements": [{"placement": "front", "print_area": _area(360, 300, 330, 250)}],
    },
    {
        "id": 84,
        "name": "Canvas Tote Bag",
        "type": "tote-bag",
        "variants": _variants(8400, [("Natural", "#e9dfc9"), ("Black", "#232323")], ["One size"]),
        "placements": [{"placement": "front", "print_area": _area(360, 360, 420, 320)}],
    },
    {
        "id": 1,
        "name": "Matte Poster",
        "type": "poster",
        "variants": _variants(100, [("White", "#ffffff")], ["12x18 in", "18x24 in", "24x36 in"]),
        "placements": [{"placement": "front", "print_area": _area(560, 840, 80, 220)}],
    },
]  # fmt: skip
