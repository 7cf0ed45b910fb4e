"""The mockup product catalog as our API shows it (contract section 2), cached from the upstream.

The task queue refreshes the cache from the upstream (async, on the server loop); requests only
read it, so a request never waits on the upstream. The built-in API's catalog is in this
process anyway, so with no MOCKUP_API_URL a cold cache falls back to it.
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from django.conf import settings
from django.core.cache import cache

from jobs_app.errors import UpstreamUnavailable
from jobs_app.upstream.errors import UpstreamError
from mockup_api.catalog import CATALOG_PRODUCTS

logger = logging.getLogger(__name__)

CACHE_KEY = "photobooth:mockup-catalog"
CACHE_SECONDS = 600


class VariantDict(TypedDict):
    id: int
    name: str
    color: str
    size: str
    colorCode: str | None


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
            {
                "id": v["id"],
                "name": v["name"],
                "color": v["color"],
                "size": v["size"],
                "colorCode": v.get("color_code"),
            }
            for v in upstream["variants"]
        ],
        "placements": [p["placement"] for p in upstream["placements"]],
    }


def list_products() -> list[ProductDict]:
    """Return the cached catalog (sync code: never calls the upstream)."""
    products = cache.get(CACHE_KEY)
    if products is not None:
        return products
    if settings.MOCKUP_API_URL is None:
        return [to_product(product) for product in CATALOG_PRODUCTS]
    raise UpstreamUnavailable("The product catalog is not available yet; try again shortly.")


async def refresh_products(client) -> bool:
    """Read the catalog from the upstream into the cache; return whether it worked."""
    try:
        raw = await client.catalog()
    except UpstreamError as exc:
        logger.warning("catalog_refresh_failed error=%s", exc)
        return False
    # Kept twice as long as the refresh period, so one failed refresh does not empty it.
    await cache.aset(CACHE_KEY, [to_product(product) for product in raw], 2 * CACHE_SECONDS)
    return True


def find_product(product_id: int) -> ProductDict | None:
    """Return one product of the catalog, or None."""
    return next((p for p in list_products() if p["id"] == product_id), None)
