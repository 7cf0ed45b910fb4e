"""Every failure a person can meet is shown in words: uploads, rate limits, the upstream, jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.browser.conftest import (
    FAST_RENDERS,
    generate,
    pages_on,
    screenshot,
    start_server,
    upload,
    wait_tiles,
)


def alert(page, text: str):
    """Return the alert notice containing `text` once it shows."""
    notice = page.locator("#notices [role=alert]", has_text=text)
    notice.wait_for()
    return notice


def test_upload_errors_are_shown_in_words(pages, files):
    page = pages.open("/")
    cases = [
        (files.not_an_image, "That file isn't a supported image"),
        (files.corrupt, "That image can't be read"),
        (files.too_many_pixels, "That image is too large"),
        (files.too_big, "That file is too big"),
    ]
    for path, title in cases:
        page.set_input_files("#photo-file", str(path))
        alert(page, title)
        assert page.get_attribute("#photo-uploader .upload-state", "data-kind") == "error"
    screenshot(page, "photobooth-desktop-upload-error")

    upload(page, files.photo)
    assert page.locator("#notices [role=alert]").count() == 0, "a good photo clears the error"


def test_generating_without_a_photo_says_what_is_missing(pages):
    page = pages.open("/")
    page.click("#generate")
    alert(page, "Add a photo first")
    assert page.locator("#gallery .tile").count() == 0


def test_a_rate_limited_request_says_when_to_try_again(pages, files):
    page = pages.open("/")
    upload(page, files.photo)

    def limited(route) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        body = {"error": {"code": "rate_limited", "message": "Request was throttled."}}
        route.fulfill(status=429, headers={"Retry-After": "2"}, content_type="application/json",
                      body=json.dumps(body))  # fmt: skip

    page.route("**/api/tasks", limited)
    page.click("#generate")
    assert "Try again in 2 seconds" in alert(page, "Too many requests").inner_text()
    assert page.is_disabled("#generate")
    page.unroute("**/api/tasks")
    page.wait_for_function("document.querySelector('#generate').textContent === 'Generate'")
    page.click("#generate")
    page.wait_for_selector("#gallery .tile")


def test_an_unavailable_catalog_is_explained_and_retried(pages):
    def unavailable(route) -> None:
        body = {"error": {"code": "upstream_unavailable", "message": "The catalog is not ready."}}
        route.fulfill(status=503, content_type="application/json", body=json.dumps(body))

    page = pages.open("/mockups/", before=lambda page: page.route("**/api/products", unavailable))
    alert(page, "The image service is unavailable")
    screenshot(page, "mockups-desktop-unavailable")
    page.unroute("**/api/products")
    page.click("text=Try again now")
    page.wait_for_selector("#products input[name=product]")
    page.wait_for_function("!document.querySelector('#notices [role=alert]')")


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory) -> Iterator[str]:
    """A server whose upstream fails every job."""
    var_dir = tmp_path_factory.mktemp("failing-var")
    with start_server(var_dir, MOCKUP_API_FAILURE_RATE="1", **FAST_RENDERS) as base:
        yield base


def test_failed_jobs_show_failed_tiles_and_the_batch_says_why(browser, failing_server, files):
    with pages_on(browser, failing_server) as pages:
        page = pages.open("/")
        upload(page, files.photo)
        generate(page, 2)
        wait_tiles(page, "failed", 2)
        assert page.inner_text("#gallery .tile .tile-state").startswith("Failed: ")
        page.wait_for_selector("#batch-summary[data-tone=error]")
        assert "This batch failed: " in page.inner_text("#batch-summary")
        alert(page, "Your batch failed")
        assert page.locator("#gallery [data-action=enhance]:visible").count() == 0
        screenshot(page, "photobooth-desktop-failed")
