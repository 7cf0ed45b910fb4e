"""Browser tests: Debian's chromium, driven by Playwright, against real servers.

Without the browser (or Playwright) these tests skip with the reason, unless CI is set: there
the browser is mandatory and its absence fails them, as the postgres and redis markers do.
Every test gets its own browser context, so its own cookie and booth session. Screenshots go
to test-artifacts/browser/.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.conftest import image_bytes
from tests.live import ROOT, daphne, free_port, migrate, server_env

CHROMIUM = Path(os.environ.get("PHOTOBOOTH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A fake camera that needs no permission prompt, for the camera test.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}  # the narrowest screen the pages are made for
TIMEOUT_MS = 20_000
# Fast renders so progress is visible but a batch takes seconds: 4 steps of 0.15 s per job,
# 3 jobs at a time.
FAST_RENDERS = {
    "MOCKUP_API_STEP_SECONDS": "0.15",
    "MOCKUP_API_STEPS": "4",
    "MOCKUP_API_WORKERS": "3",
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless chromium per test module.

    Not per session: while Playwright's sync API is open, its event loop counts as running in
    this thread, and the async tests of other modules could not start theirs.
    """
    if not CHROMIUM.exists():
        _unavailable(f"chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def start_server(var_dir: Path, **env: str):
    """Return the context manager of a migrated server (`manage.py serve`) in `var_dir`."""
    environment = server_env(var_dir, **env)
    migrate(environment)
    return daphne(environment, serve=True)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[str]:
    """The server most browser tests share (each test has its own booth session)."""
    with start_server(tmp_path_factory.mktemp("browser-var"), **FAST_RENDERS) as base:
        yield base


@dataclass
class Pages:
    """Open pages of one test, each in a fresh browser context."""

    browser: object
    base: str
    errors: list[str]
    contexts: list

    def open(
        self,
        path: str = "/",
        *,
        viewport: dict | None = None,
        init_script: str = "",
        before: Callable | None = None,
        color_scheme: str = "light",
    ):
        """Open `path` in a new browser context (a new booth session); `before(page)` runs
        before the navigation (to route requests)."""
        context = self.browser.new_context(
            base_url=self.base,
            viewport=viewport or DESKTOP,
            accept_downloads=True,
            color_scheme=color_scheme,
        )
        context.set_default_timeout(TIMEOUT_MS)
        if init_script:
            context.add_init_script(init_script)
        self.contexts.append(context)
        page = context.new_page()
        if before:
            before(page)
        page.on("pageerror", lambda error: self.errors.append(f"{path}: {error}"))
        page.on("console", lambda message: self._console(path, message))
        goto(page, path)
        return page

    def _console(self, path: str, message) -> None:
        # The browser's own network log (a refused reconnect, a 4xx answer) is expected in
        # these tests; errors our scripts log are not.
        network = message.text.startswith(NETWORK_LOGS)
        if message.type == "error" and not network:
            self.errors.append(f"{path}: console: {message.text}")


NETWORK_LOGS = ("Failed to load resource", "WebSocket connection to")


def goto(page, path: str) -> None:
    """Navigate and wait until the page's script has started."""
    page.goto(path)
    page.wait_for_selector("body[data-ready=true]")


@contextmanager
def pages_on(browser, base: str) -> Iterator[Pages]:
    """Open pages on a server; fail on any script error of a page."""
    opened = Pages(browser, base, [], [])
    try:
        yield opened
    finally:
        for context in opened.contexts:
            context.close()
    assert opened.errors == [], "the pages logged script errors"


@pytest.fixture
def pages(browser, server) -> Iterator[Pages]:
    """Open pages on the shared server."""
    with pages_on(browser, server) as opened:
        yield opened


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot (the whole page by default) as a test artifact; return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.wait_for_function("[...document.images].every((image) => image.complete)")
    page.evaluate("Promise.all([...document.images].map((i) => i.decode().catch(() => null)))")
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_live(page) -> None:
    page.wait_for_selector("#connection-status[data-state=live]")


# --- test files -------------------------------------------------------------------------------


def portrait() -> bytes:
    """Return a colourful 640x480 JPEG (a sky, a hill and a sun), so results are worth seeing."""
    sky = Image.linear_gradient("L").resize((640, 480))
    red, green = sky.point(lambda v: 90 + v // 3), sky.point(lambda v: 140 + v // 4)
    image = Image.merge("RGB", (red, green, Image.new("L", (640, 480), 230)))
    draw = ImageDraw.Draw(image)
    draw.ellipse((420, 60, 540, 180), fill=(255, 196, 61))
    draw.ellipse((-200, 300, 500, 760), fill=(46, 139, 87))
    draw.ellipse((250, 330, 900, 800), fill=(34, 110, 70))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Files:
    photo: Path
    design: Path
    not_an_image: Path
    corrupt: Path
    too_many_pixels: Path
    too_big: Path


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> Files:
    folder = tmp_path_factory.mktemp("files")
    photo = folder / "me.jpg"
    photo.write_bytes(portrait())
    design = folder / "design.png"
    logo = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    for n in range(0, 400, 40):
        logo.paste((67, 56, 202, 255), (n, n, min(400, n + 40), min(400, n + 40)))
    buffer = io.BytesIO()
    logo.save(buffer, "PNG")
    design.write_bytes(buffer.getvalue())
    not_an_image = folder / "notes.jpg"  # the name says JPEG, the bytes say text
    not_an_image.write_text("these are not the pixels you are looking for\n" * 20)
    corrupt = folder / "broken.jpg"
    corrupt.write_bytes(image_bytes("JPEG", (640, 480))[:600])
    too_many_pixels = folder / "huge.png"  # 48 megapixels, a small file
    buffer = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buffer, "PNG")
    too_many_pixels.write_bytes(buffer.getvalue())
    too_big = folder / "big.jpg"
    too_big.write_bytes(image_bytes("JPEG", (64, 48)) + b"\0" * (16 * 1024 * 1024))
    return Files(photo, design, not_an_image, corrupt, too_many_pixels, too_big)


# --- a server whose upstream survives its restarts ------------------------------------------

MOCKUP_API_KEY = "browser-tests-mockup-api-key"
WEBHOOK_SECRET = "whsec_YnJvd3Nlci10ZXN0cy13ZWJob29rLXNlY3JldC0wMTIz"


@contextmanager
def mockup_api(var_dir: Path, port: int, **env: str) -> Iterator[str]:
    """Run `manage.py run_mockup_api` on `port`; yield its API root URL."""
    log = (var_dir / "mockup-api.log").open("wb")  # a file: a full pipe would stall it
    command = [sys.executable, "manage.py", "run_mockup_api", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=server_env(var_dir, **env), stdout=log,
                               stderr=log)  # fmt: skip
    root = f"http://127.0.0.1:{port}/mockup-api"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                # A missing file answers 404 without a key: the API is up.
                if httpx.get(f"{root}/v2/files/{'0' * 32}.png", timeout=1).status_code == 404:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = (var_dir / "mockup-api.log").read_text()[-3000:]
                pytest.fail(f"run_mockup_api did not start:\n{output}")
            time.sleep(0.1)
        yield root
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@dataclass
class Restartable:
    """A server (with its own upstream process) that a test can crash and start again."""

    base: str
    port: int
    env: dict[str, str]


@pytest.fixture
def restartable(tmp_path) -> Iterator[Restartable]:
    """Yield a server whose upstream runs in a process of its own, so it survives restarts.

    Restart it with `tests.live.base_process[base].kill()` and `daphne(env, port, serve=True)`.
    """
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    port, api_port = free_port(), free_port()
    shared = {"MOCKUP_API_KEY": MOCKUP_API_KEY, "WEBHOOK_SECRETS": WEBHOOK_SECRET}
    renders = {"MOCKUP_API_STEP_SECONDS": "0.25", "MOCKUP_API_STEPS": "4",
               "MOCKUP_API_WORKERS": "2"}  # fmt: skip
    # The upstream calls our webhooks at PUBLIC_BASE_URL, which must outlive our restarts.
    upstream_env = {**shared, **renders, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    with mockup_api(var_dir, api_port, **upstream_env) as root:
        env = server_env(var_dir, MOCKUP_API_URL=root, **shared)
        migrate(env)
        with daphne(env, port, serve=True) as base:
            yield Restartable(base, port, env)


# --- page helpers -----------------------------------------------------------------------------


def upload(page, path: Path, picker: str = "#photo-uploader") -> None:
    """Choose a file in an upload picker and wait until it is accepted."""
    page.set_input_files(f"{picker} input[type=file]", str(path))
    page.wait_for_selector(f"{picker} .upload-state[data-kind=ok]")


def browser_api(page, method: str, path: str, body: dict | None = None) -> dict:
    """Call the API from inside the page (its cookie, its CSRF token); return status and body."""
    return page.evaluate(
        """async ([method, path, body]) => {
            const csrf = document.cookie.split("; ").find((c) => c.startsWith("csrftoken="));
            const response = await fetch(path, {
                method,
                headers: {"Content-Type": "application/json", "X-CSRFToken": csrf?.slice(10) ?? ""},
                body: body === null ? undefined : JSON.stringify(body),
            });
            return {status: response.status, body: await response.json()};
        }""",
        [method, path, body],
    )


WATCH_TILES = """(selector) => {
    // Record every state the gallery goes through: [[key, status, state text], ...] per change.
    window.__timeline = [];
    const list = document.querySelector(selector);
    const record = () => window.__timeline.push([...list.querySelectorAll(".tile")].map((tile) => [
        tile.dataset.key, tile.dataset.status, tile.querySelector(".tile-state")?.textContent ?? "",
    ]));
    new MutationObserver(record).observe(list, {subtree: true, childList: true, attributes: true,
                                                characterData: true});
}"""


def watch_tiles(page, selector: str = "#gallery") -> None:
    page.evaluate(WATCH_TILES, selector)


def timeline(page) -> list[list[list[str]]]:
    return page.evaluate("window.__timeline")


def wait_tiles(page, status: str, count: int, selector: str = "#gallery", *, timeout=None) -> None:
    """Wait until exactly `count` tiles exist and all of them have `status`."""
    page.wait_for_function(
        """([selector, status, count]) => {
            const tiles = [...document.querySelectorAll(`${selector} .tile`)];
            return tiles.length === count && tiles.every((t) => t.dataset.status === status);
        }""",
        arg=[selector, status, count],
        timeout=timeout,
    )


def tile_keys(page, selector: str = "#gallery") -> list[str]:
    script = "(tiles) => tiles.map((t) => t.dataset.key)"
    return page.eval_on_selector_all(f"{selector} .tile", script)


def images_loaded(page, selector: str) -> bool:
    """Return whether the images are there and decoded (waiting a while for them)."""
    page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
    )
    return True


def generate(page, count: int, style: str | None = None) -> None:
    if style:
        page.click(f"label.choice:has(input[value={style}])")
    page.fill("#count", str(count))
    page.click("#generate")
