"""The mockup page, its result page and the history, in a real browser."""

from __future__ import annotations

import re

from tests.browser.conftest import (
    PHONE,
    generate,
    goto,
    images_loaded,
    screenshot,
    upload,
    wait_live,
    wait_tiles,
)

CHOSEN = ["Black / S", "Black / M", "Sport Grey / L"]


def test_the_mockup_flow_ends_on_the_result_page_with_every_variant(pages, files):
    page = pages.open("/mockups/")
    wait_live(page)
    page.wait_for_selector("#products input[name=product]")
    upload(page, files.design, "#design-uploader")
    page.click("label.choice:has-text('Pullover Hoodie')")
    page.click("#variants-none")
    for name in CHOSEN:
        page.click(f"label.chip:has(input[aria-label='{name}'])")
    assert page.inner_text("#variant-count") == "3 of 12 selected"
    page.click("label.chip:has-text('Back')")
    screenshot(page, "mockups-desktop-form")

    page.click("#create-mockups")
    page.wait_for_selector("#mockup-status:not([hidden])")
    assert re.match(r"(In queue|Rendering)", page.inner_text("#mockup-status-line"))
    # The task's `redirect` event takes the browser to its result page.
    page.wait_for_url(re.compile(r"/mockups/[0-9a-f-]{36}/$"))
    page.wait_for_selector("body[data-ready=true]")

    assert page.inner_text("h1") == "Pullover Hoodie · back"
    wait_tiles(page, "completed", 3, ".task-card")
    labels = page.eval_on_selector_all(".tile-label", "(nodes) => nodes.map((n) => n.textContent)")
    assert labels == CHOSEN
    assert images_loaded(page, ".task-card .tile-media img")
    screenshot(page, "mockup-result-desktop")

    # Back on the mockup page nothing redirects again; the mockups are listed there.
    page.go_back()
    page.wait_for_selector("body[data-ready=true]")
    assert page.url.endswith("/mockups/")
    page.wait_for_selector("#recent li .badge[data-status=completed]")


def test_a_result_page_opened_early_follows_its_task_until_done(pages, files):
    page = pages.open("/mockups/")
    page.wait_for_selector("#products input[name=product]")
    upload(page, files.design, "#design-uploader")
    page.click("label.choice:has-text('Ceramic Mug')")
    page.click("#variants-all")
    page.click("#create-mockups")
    page.wait_for_selector("#recent li a")
    # Open the result page at once, in another tab: it shows progress, then the mockups.
    result = page.context.new_page()
    goto(result, page.get_attribute("#recent li a", "href"))
    wait_tiles(result, "completed", 4, ".task-card")
    assert images_loaded(result, ".task-card .tile-media img")
    result.wait_for_selector(".task-card .badge[data-status=completed]")


def test_history_lists_this_sessions_tasks_and_shows_new_ones_live(pages, files):
    booth = pages.open("/")
    upload(booth, files.photo)
    generate(booth, 2, style="watercolor")
    wait_tiles(booth, "completed", 2)

    history = booth.context.new_page()
    goto(history, "/history/")
    wait_live(history)
    assert history.locator(".task-card").count() == 1
    assert history.inner_text(".task-card h2") == "Watercolour · 2 images"
    assert images_loaded(history, ".task-card img")

    generate(booth, 3, style="neon-noir")  # from the other tab: history follows the session
    history.wait_for_function("document.querySelectorAll('.task-card').length === 2")
    assert history.inner_text(".task-card h2 >> nth=0") == "Neon Noir · 3 images"
    history.wait_for_selector(".task-card >> nth=0 >> .badge[data-status=completed]")
    assert images_loaded(history, ".task-card img")
    screenshot(history, "history-desktop")

    a_stranger = pages.open("/history/")
    assert a_stranger.locator(".task-card").count() == 0, "another session sees nothing"
    assert a_stranger.is_visible("#history-empty")


def test_every_page_fits_a_phone_screen(pages, files):
    page = pages.open("/mockups/", viewport=PHONE)
    page.wait_for_selector("#products input[name=product]")
    screenshot(page, "mockups-phone")
    upload(page, files.design, "#design-uploader")
    page.click("#create-mockups")
    page.wait_for_url(re.compile(r"/mockups/[0-9a-f-]{36}/$"))
    page.wait_for_selector("body[data-ready=true]")
    wait_tiles(page, "completed", 1, ".task-card")
    screenshot(page, "mockup-result-phone")
    for path in ("/", "/mockups/", "/history/", page.url):
        goto(page, path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} sticks out sideways ({width}px)"
    goto(page, "/history/")
    screenshot(page, "history-phone")
