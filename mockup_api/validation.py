"""Validate request bodies into typed requests, collecting every problem into one 400."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest

from mockup_api.catalog import CATALOG_PRODUCTS
from mockup_api.errors import InvalidRequest
from mockup_api.generation import GenerationRequest
from mockup_api.mockups import MockupRequest
from mockup_api.render import STYLE_IDS

APP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
MAX_IMAGES = 16
MAX_URL_LENGTH = 2048
MAX_PRODUCTS = 10
SEED_RANGE = range(0, 2**63)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """Return the request's JSON object body."""
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_url(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _raise_if(errors: dict[str, str]) -> None:
    if errors:
        raise InvalidRequest("The request is not valid.", details={"fields": errors})


def generation_request(body: dict[str, Any]) -> GenerationRequest:
    """Validate a POST /v2/generation-tasks body."""
    errors: dict[str, str] = {}
    app_id = body.get("app_id")
    if not isinstance(app_id, str) or not APP_ID_RE.fullmatch(app_id):
        errors["app_id"] = "Required: 1-80 of letters, digits, '.', '_', '-'."
    kind = body.get("kind", "generation")
    if kind not in ("generation", "enhancement"):
        errors["kind"] = "One of: generation, enhancement."
    style, number_images = None, 1  # an enhancement ignores both
    if kind == "generation":
        style = body.get("style")
        if style not in STYLE_IDS:
            errors["style"] = f"One of: {', '.join(sorted(STYLE_IDS))}."
        number_images = body.get("number_images")
        if not _is_int(number_images) or not 1 <= number_images <= MAX_IMAGES:
            errors["number_images"] = f"An integer from 1 to {MAX_IMAGES}."
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or seed not in SEED_RANGE):
        errors["seed"] = "A non-negative 63-bit integer, or null to pick one."
    image_url = body.get("image_url")
    if not _is_url(image_url):
        errors["image_url"] = "Required: an absolute http(s) URL."
    _raise_if(errors)
    return GenerationRequest(
        app_id=app_id,
        kind=kind,
        style=style,
        number_images=number_images,
        seed=seed,
        image_url=image_url,
    )


def mockup_requests(body: dict[str, Any]) -> list[MockupRequest]:
    """Validate a POST /v2/mockup-tasks body against the catalog."""
    errors: dict[str, str] = {}
    if body.get("format", "png") != "png":
        errors["format"] = "Only png."
    entries = body.get("products")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_PRODUCTS:
        errors["products"] = f"A list of 1 to {MAX_PRODUCTS} products."
        entries = []
    requests = []
    for n, entry in enumerate(entries):
        request = _mockup_request(entry, f"products[{n}]", errors)
        if request is not None:
            requests.append(request)
    _raise_if(errors)
    return requests


def _mockup_request(entry: Any, where: str, errors: dict[str, str]) -> MockupRequest | None:
    if not isinstance(entry, dict):
        errors[where] = "An object."
        return None
    products = {product["id"]: product for product in CATALOG_PRODUCTS}
    product = products.get(entry.get("catalog_product_id"))  # type: ignore[arg-type]
    if product is None:
        errors[f"{where}.catalog_product_id"] = "Not a catalog product id."
        return None
    known_variants = {variant["id"] for variant in product["variants"]}
    variant_ids = entry.get("catalog_variant_ids")
    if (
        not isinstance(variant_ids, list)
        or not variant_ids
        or not all(_is_int(v) and v in known_variants for v in variant_ids)
    ):
        errors[f"{where}.catalog_variant_ids"] = "A non-empty list of this product's variant ids."
        return None
    layers = _layers(entry.get("placements"), product, f"{where}.placements", errors)
    if layers is None:
        return None
    return MockupRequest(
        product=product, variant_ids=list(dict.fromkeys(variant_ids)), layers=layers
    )


def _layers(
    placements: Any, product: dict[str, Any], where: str, errors: dict[str, str]
) -> dict[str, str] | None:
    known = {p["placement"] for p in product["placements"]}
    if not isinstance(placements, list) or not placements:
        errors[where] = "A non-empty list of placements."
        return None
    layers: dict[str, str] = {}
    for n, item in enumerate(placements):
        here = f"{where}[{n}]"
        name = item.get("placement") if isinstance(item, dict) else None
        if name not in known or name in layers:
            errors[f"{here}.placement"] = (
                f"One of this product's placements, once: {sorted(known)}."
            )
            return None
        files = [
            layer
            for layer in (item.get("layers") or [])
            if isinstance(layer, dict) and layer.get("type") == "file"
        ]
        # The renderer prints one design per placement: the first file layer.
        if not files or not _is_url(files[0].get("url")):
            errors[f"{here}.layers"] = 'At least one {"type": "file", "url": <http(s) URL>}.'
            return None
        layers[name] = files[0]["url"]
    return layers
