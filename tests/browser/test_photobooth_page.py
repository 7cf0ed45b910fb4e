"""The photobooth page (/) in a real browser: batches, enhancements, cancel, reload, camera."""

from __future__ import annotations

from tests.browser.conftest import (
    PHONE,
    browser_api,
    generate,
    images_loaded,
    screenshot,
    tile_keys,
    timeline,
    upload,
    wait_live,
    wait_tiles,
    watch_tiles,
)


def test_a_four_image_batch_appears_tile_by_tile(pages, files):
    page = pages.open("/")
    wait_live(page)
    upload(page, files.photo)
    watch_tiles(page)

    generate(page, 4, style="comic")
    page.wait_for_function(
        "document.querySelectorAll('#gallery .tile[data-status=completed]').length >= 1"
    )
    screenshot(page, "photobooth-desktop-rendering")
    wait_tiles(page, "completed", 4)

    states = [snapshot for snapshot in timeline(page) if snapshot]
    # One tile per job at once, straight from the created task. In the queue with a position
    # if it still was when the page drew it; the queue now submits within milliseconds, and
    # events that came before the POST's answer are applied first (forward only), so the first
    # drawing may already show the upstream's states.
    assert len(states[0]) == 4
    first = {status for _, status, _ in states[0]}
    assert first <= {"queued", "pending", "initiating", "running"}, states[0]
    if first == {"queued"}:
        assert states[0][0][2].startswith("In queue · #1")
    # Then each tile goes its own way: rendering with progress, then its image.
    seen = {(key, status) for snapshot in states for key, status, _ in snapshot}
    for key in tile_keys(page):
        assert {(key, "running"), (key, "completed")} <= seen
    assert any(text.startswith("Rendering ") for s in states for _, _, text in s)
    done_counts = [sum(status == "completed" for _, status, _ in s) for s in states]
    assert done_counts == sorted(done_counts), "a finished tile never went back"
    assert {1, 2, 3} & set(done_counts), "results arrived one by one, not all at once"
    assert max(len(s) for s in states) == 4
    assert images_loaded(page, "#gallery .tile-image")
    assert page.inner_text("#batch-summary") == "Comic Book · Done: all 4 images are ready."

    # The full-size view opens from the keyboard and closes with Escape.
    page.focus("#gallery .tile >> nth=1 >> [data-action=view]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert images_loaded(page, "#viewer img")
    screenshot(page, "photobooth-desktop-viewer", full_page=False)
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.evaluate("document.activeElement.dataset.action") == "view", "focus comes back"
    href = page.get_attribute("#gallery .tile >> nth=1 >> [data-action=download]", "href")
    assert href.startswith("/media/results/")
    screenshot(page, "photobooth-desktop-done")


def test_reloading_mid_batch_keeps_the_gallery_and_resumes(pages, files):
    page = pages.open("/")
    upload(page, files.photo)
    generate(page, 6)
    page.wait_for_function(
        "document.querySelectorAll('#gallery .tile[data-status=completed]').length >= 1"
    )
    before = tile_keys(page)

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    # The gallery comes back from the API at once, then follows the events from its cursor.
    assert tile_keys(page) == before
    assert page.inner_text(".upload-state").startswith("Ready:"), "the photo stays chosen"
    wait_tiles(page, "completed", 6)
    assert tile_keys(page) == before
    assert images_loaded(page, "#gallery .tile-image")


def test_an_enhancement_runs_alongside_the_batch_and_never_cancels_it(pages, files):
    page = pages.open("/")
    wait_live(page)
    upload(page, files.photo)
    watch_tiles(page)
    generate(page, 8)
    first_done = "#gallery .tile[data-status=completed] [data-action=enhance]"
    page.wait_for_selector(first_done)
    unfinished = page.locator("#gallery .tile:not([data-status=completed])").count()
    assert unfinished > 0, "the batch is still rendering when the enhancement starts"

    page.click(first_done)
    page.wait_for_selector("#enhancements .tile")
    assert page.locator("#gallery .tile").count() == 8, "the batch is untouched"
    wait_tiles(page, "completed", 1, "#enhancements")
    wait_tiles(page, "completed", 8)

    statuses = {status for snapshot in timeline(page) for _, status, _ in snapshot}
    assert "cancelled" not in statuses
    label = page.inner_text("#enhancements .tile .tile-label")
    assert label.startswith("Enhanced image ")
    assert images_loaded(page, "#enhancements .tile-image")
    # Both were out with the upstream at the same time.
    batch_id = tile_keys(page)[0].split(":")[0]
    enhancement_id = tile_keys(page, "#enhancements")[0].split(":")[0]
    batch = browser_api(page, "GET", f"/api/tasks/{batch_id}")["body"]
    enhancement = browser_api(page, "GET", f"/api/tasks/{enhancement_id}")["body"]
    assert batch["status"] == "completed" and enhancement["status"] == "completed"
    assert enhancement["startedAt"] < batch["finishedAt"]
    screenshot(page, "photobooth-desktop-enhanced")


def test_a_new_batch_replaces_the_unfinished_one_and_cancel_stops_it(pages, files):
    page = pages.open("/")
    upload(page, files.photo)
    generate(page, 8)
    page.wait_for_selector("#gallery .tile")
    first_batch = tile_keys(page)[0].split(":")[0]
    assert page.is_visible("#replace-hint")

    generate(page, 12)
    page.wait_for_function(
        """(old) => {
            const tiles = [...document.querySelectorAll("#gallery .tile")];
            return tiles.length === 12 && tiles.every((t) => !t.dataset.key.startsWith(old));
        }""",
        arg=first_batch,
    )
    replaced = browser_api(page, "GET", f"/api/tasks/{first_batch}")["body"]
    assert (replaced["status"], replaced["cancelReason"]) == ("cancelled", "replaced")

    page.click("#cancel-batch")
    page.wait_for_function(
        "document.querySelector('#batch-summary').textContent.includes('ancelled')"
    )
    page.wait_for_selector("#gallery .tile[data-status=cancelled]")
    assert page.locator("#gallery .tile[data-status=running]").count() == 0
    assert page.is_hidden("#cancel-batch")
    assert len(set(tile_keys(page))) == 12
    screenshot(page, "photobooth-desktop-cancelled")


def test_a_photo_taken_with_the_camera_is_uploaded(pages):
    page = pages.open("/")
    page.click("#camera-start")
    page.wait_for_function("document.querySelector('#camera').videoWidth > 0")
    # Focus moves to the capture button once the stream plays: wait for it (fails on timeout).
    page.wait_for_function("document.activeElement?.id === 'camera-capture'", timeout=5000)
    assert page.evaluate("document.activeElement.id") == "camera-capture"
    page.keyboard.press("Enter")
    page.wait_for_selector("#photo-uploader .upload-state[data-kind=ok]")
    assert page.is_hidden("#camera")
    assert page.is_visible("#photo-uploader .upload-preview")


def test_the_page_works_on_a_phone_sized_screen(pages, files):
    page = pages.open("/", viewport=PHONE)
    wait_live(page)
    upload(page, files.photo)
    generate(page, 2)
    wait_tiles(page, "completed", 2)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "nothing sticks out sideways"
    screenshot(page, "photobooth-phone")


def test_keyboard_users_reach_every_control_in_order(pages):
    page = pages.open("/")

    def tab_until(target: str) -> list[str]:
        reached = []
        for _ in range(25):
            page.keyboard.press("Tab")
            reached.append(page.evaluate(ACTIVE))
            if reached[-1] == target:
                return reached
        raise AssertionError(f"Tab never reached {target}: {reached}")

    assert tab_until("Skip to content") == ["Skip to content"]
    reached = tab_until("style")
    assert reached.index("camera-start") < reached.index("photo-file") < reached.index("style")
    page.keyboard.press("ArrowRight")  # a radio group moves with the arrow keys
    assert page.evaluate("document.activeElement.value") == "watercolor"
    outline = page.evaluate("getComputedStyle(document.activeElement.closest('label')).outline")
    assert "solid" in outline, "the focused choice shows a visible outline"

    assert tab_until("generate")[-3:] == ["count", "One image more", "generate"]
    page.keyboard.press("Enter")
    page.wait_for_selector("#notices .notice-error >> text=Add a photo first")
    assert page.evaluate(ACTIVE) == "camera-start", "focus goes where the problem is"


# The id, name or text of the focused element.
ACTIVE = """(() => {
    const node = document.activeElement;
    return node.id || node.name || node.getAttribute("aria-label") || node.textContent.trim();
})()"""
