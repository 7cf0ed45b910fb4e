"""The mockup product catalog as our API shows it (contract section 2).

Until the upstream client serves `/v2/catalog-products`, the catalog is the built-in mockup
API's own, read in process.
"""

from __future__ import annotations

from typing import Any, TypedDict

from mockup_api.catalog import CATALOG_PRODUCTS


class VariantDict(TypedDict):
    id: int
    name: str
    color: str
    size: str


class ProductDict(TypedDict):
    id: int
    name: str
    type: str
    variants: list[VariantDict]
    placements: list[str]


def to_product(upstream: dict[str, Any]) -> ProductDict:
    """Return an upstream catalog product in our API's shape."""
    return {
        "id": upstream["id"],
        "name": upstream["name"],
        "type": upstream["type"],
        "variants": [
            {"id": v["id"], "name": v["name"], "color": v["color"], "size": v["size"]}
            for v in upstream["variants"]
        ],
        "placements": [p["placement"] for p in upstream["placements"]],
    }


def list_products() -> list[ProductDict]:
    """Return every product of the mockup catalog."""
    return [to_product(product) for product in CATALOG_PRODUCTS]


def find_product(product_id: int) -> ProductDict | None:
    """Return one product of the catalog, or None."""
    return next((p for p in list_products() if p["id"] == product_id), None)
