"""The gallery survives what connections go through: a server restart, blocked transports."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    generate,
    goto,
    pages_on,
    screenshot,
    tile_keys,
    timeline,
    upload,
    wait_live,
    wait_tiles,
    watch_tiles,
)
from tests.live import base_process, daphne

# Stand-ins for a network that lets plain HTTP through but refuses the streams.
NO_WEBSOCKET = """window.WebSocket = class {
    constructor() { setTimeout(() => this.onclose?.({ code: 1006 }), 20); }
    close() {}
    send() {}
};"""
NO_EVENTSOURCE = """window.EventSource = class {
    constructor() { setTimeout(() => this.onerror?.(new Event("error")), 20); }
    close() {}
};"""


def test_the_gallery_ends_complete_after_a_server_restart_mid_batch(browser, restartable, files):
    with pages_on(browser, restartable.base) as pages:
        page = pages.open("/")
        wait_live(page)
        upload(page, files.photo)
        watch_tiles(page)
        generate(page, 6)
        page.wait_for_selector("#gallery .tile[data-status=completed]")
        assert page.locator("#gallery .tile[data-status=completed]").count() < 6

        crashed = base_process[restartable.base]
        crashed.kill()  # a crash, not a clean shutdown
        crashed.wait(10)
        page.wait_for_selector("#connection-status[data-state=reconnecting]")
        page.locator("#notices .notice-warning", has_text="Connection lost").wait_for()
        screenshot(page, "photobooth-desktop-reconnecting")

        with daphne(restartable.env, restartable.port, serve=True):
            wait_tiles(page, "completed", 6, timeout=60_000)
            wait_live(page)
            page.locator("#notices .notice-success", has_text="Back online").wait_for()
            keys = tile_keys(page)
            assert len(set(keys)) == 6 and {key.split(":")[0] for key in keys} == {
                keys[0].split(":")[0]
            }
            for snapshot in timeline(page):
                shown = [key for key, _, _ in snapshot]
                assert len(shown) == len(set(shown)) <= 6, "a tile never appeared twice"
            statuses = {status for snapshot in timeline(page) for _, status, _ in snapshot}
            assert not {"failed", "cancelled"} & statuses

            goto(page, "/")  # and a reload still shows the whole batch
            wait_tiles(page, "completed", 6)
            assert tile_keys(page) == keys


@pytest.mark.parametrize(
    ("blocked", "shown"),
    [(NO_WEBSOCKET, "Live (SSE)"), (NO_WEBSOCKET + NO_EVENTSOURCE, "Live (polling)")],
    ids=["sse-when-websocket-is-blocked", "polling-when-both-streams-are-blocked"],
)
def test_the_gallery_falls_back_to_the_next_transport(pages, files, blocked, shown):
    page = pages.open("/", init_script=blocked)
    page.wait_for_function(
        "(shown) => document.querySelector('#connection-status').innerText.endsWith(shown)",
        arg=shown,
    )
    upload(page, files.photo)
    generate(page, 3)
    wait_tiles(page, "completed", 3)
    assert len(set(tile_keys(page))) == 3
