"""Contrast and names of every page's text and controls, in the light and the dark scheme."""

from __future__ import annotations

import pytest

from tests.browser.conftest import generate, goto, screenshot, upload, wait_tiles

# Every visible element with text of its own: the contrast of its colour against the
# background it sits on (its ancestors' background colours composited), per WCAG 2.x.
LOW_CONTRAST = """() => {
    const parse = (value) => {
        let m = value.match(/^rgba?\\(([^)]+)\\)/);
        if (m) {
            const [r, g, b, a = 1] = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number);
            return { r, g, b, a };
        }
        m = value.match(/^color\\(srgb ([^)]+)\\)/);  // what color-mix() computes to
        if (m) {
            const [r, g, b, a = 1] = m[1].split(/[\\s/]+/).filter(Boolean).map(Number);
            return { r: r * 255, g: g * 255, b: b * 255, a };
        }
        return null;
    };
    const over = (top, bottom) => {
        const a = top.a + bottom.a * (1 - top.a);
        const mix = (k) => (top[k] * top.a + bottom[k] * bottom.a * (1 - top.a)) / a;
        return { r: mix("r"), g: mix("g"), b: mix("b"), a };
    };
    const linear = (v) => {
        const c = v / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    const luminance = ({ r, g, b }) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    const visible = { opacityProperty: true, visibilityProperty: true };
    const failures = [];
    for (const node of document.querySelectorAll("body *")) {
        const text = [...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim());
        if (!text || !node.checkVisibility(visible)) continue;
        if (node.closest(".visually-hidden, :disabled, [aria-hidden=true]")) continue;
        const chain = [];
        for (let n = node; n; n = n.parentElement) chain.unshift(n);
        if (chain.some((n) => getComputedStyle(n).backgroundImage !== "none")) continue;
        let background = { r: 255, g: 255, b: 255, a: 1 };
        for (const n of chain) {
            const layer = parse(getComputedStyle(n).backgroundColor);
            if (layer && layer.a > 0) background = over(layer, background);
        }
        const style = getComputedStyle(node);
        const color = over(parse(style.color), background);
        const [light, dark] = [luminance(color), luminance(background)].sort((x, y) => y - x);
        const ratio = (light + 0.05) / (dark + 0.05);
        const size = parseFloat(style.fontSize);
        const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5)) {
            const label = node.textContent.trim().slice(0, 40);
            failures.push(`${node.tagName} ${node.className} "${label}" ${ratio.toFixed(2)}`);
        }
    }
    return failures;
}"""

# Controls a screen reader could not name.
UNNAMED = """() => [...document.querySelectorAll("input, select, button, a[href]")]
    .filter((n) => n.checkVisibility() || ["file", "radio", "checkbox"].includes(n.type))
    .filter((n) => !(n.labels?.length || n.getAttribute("aria-label")
                     || n.getAttribute("aria-labelledby") || n.textContent.trim()))
    .map((n) => n.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_has_readable_text_and_named_controls(pages, files, scheme):
    page = pages.open("/", color_scheme=scheme)
    upload(page, files.photo)
    generate(page, 1)
    wait_tiles(page, "completed", 1)
    for path, ready in (("/", "#gallery .tile"), ("/mockups/", "#products input"),
                        ("/history/", ".task-card img")):  # fmt: skip
        goto(page, path)
        page.wait_for_selector(ready)
        assert page.evaluate(LOW_CONTRAST) == [], f"{path} ({scheme}) has low-contrast text"
        assert page.evaluate(UNNAMED) == [], f"{path} has controls without a name"
    # The check itself finds what it should.
    page.evaluate("document.querySelector('h1').style.color = 'rgb(150 150 150 / 50%)'")
    assert page.evaluate(LOW_CONTRAST) != []
    if scheme == "dark":
        goto(page, "/")
        wait_tiles(page, "completed", 1)
        screenshot(page, "photobooth-desktop-dark")
