"""The page's sliders and views under a quick hand and a resized window, in a real headless Chromium
against a real `normativead web` (issue 26, item 3). After the window is resized, the views still show
the whole brain, on the same slice (a narrower window cropped it: Slicer keeps a view's pixel size when
it is resized). Every arrow key press on the threshold slider and on a slice slider is one step, even
30 sent at once, faster than the server re-segments; the report of lost steps did not reproduce here,
and these tests keep it so.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from web_server import DEMO_MODEL, browser_reason

pytestmark = pytest.mark.browser  # a real headless Chromium: `make check` leaves these out

if browser_reason():
    pytest.skip(browser_reason(), allow_module_level=True)

from selenium.webdriver.common.keys import Keys  # noqa: E402
from web_page import Page  # noqa: E402


@pytest.fixture(scope="module")
def page(server, browser):
    page = Page(browser, server.url)
    page.open()
    page.choose("na-scan-source", "FLAIR")
    page.wait(lambda: "opened" in page.text("na-status"), 60, "the scan did not open")
    page.choose("na-model", DEMO_MODEL)
    status = page.run_and_wait()
    assert status.startswith("finished"), f"{status} / {page.error()}"
    return page


def threshold_shown(page: Page) -> float:
    return float(page.table()[0]["Threshold"])


def test_quick_arrow_keys_on_the_threshold_slider_are_all_steps(page):
    start = threshold_shown(page)
    thumb = page.element("na-threshold").find_element(
        "xpath", "./ancestor::div[contains(@class, 'v-slider ')][1]").find_element("css selector", ".v-slider-thumb")
    presses = 30
    thumb.send_keys(Keys.ARROW_RIGHT * presses)  # faster than a held key repeats
    expected = round(start + 0.01 * presses, 2)
    page.wait(lambda: threshold_shown(page) == expected, 30,
              f"from {start}, {presses} steps of 0.01 gave {threshold_shown(page)}")
    time.sleep(1)
    assert threshold_shown(page) == expected, "the threshold moved on after the last step"


def test_quick_arrow_keys_on_a_slice_slider_are_all_steps(page):
    thumb = page.driver.find_elements("css selector", "#na-views .slice-slider .v-slider-thumb")[0]
    first = float(slices(page)[0])
    thumb.send_keys(Keys.ARROW_LEFT)  # one step: its size is the scan's spacing along the view's axis
    page.wait(lambda: float(slices(page)[0]) != first, 30, "one arrow key did not move the slice")
    start = float(slices(page)[0])
    step = first - start
    presses = 30
    thumb.send_keys(Keys.ARROW_RIGHT * presses)
    expected = start + presses * step
    page.wait(lambda: abs(float(slices(page)[0]) - expected) < step / 10, 30,
              f"from {start}, {presses} steps of {step} gave {slices(page)[0]}")
    time.sleep(1)
    assert abs(float(slices(page)[0]) - expected) < step / 10, "the slice moved on after the last step"


def brain_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) margins in pixels between the view's edges and the scan's bright pixels."""
    bright = pixels.max(axis=2) > 40
    rows, columns = np.where(bright.any(axis=1))[0], np.where(bright.any(axis=0))[0]
    return (int(rows[0]), int(bright.shape[0] - 1 - rows[-1]), int(columns[0]), int(bright.shape[1] - 1 - columns[-1]))


def rendered_views(page: Page, path) -> list[np.ndarray]:
    """The views' pixels as the server rendered them: the controls drawn over them (slice slider, buttons)
    hidden for the screenshot."""
    show = """const v = arguments[0]; document.querySelectorAll('#na-views .remote-controlled-area').forEach(
        rca => [...rca.parentElement.children].filter(c => c !== rca).forEach(c => c.style.visibility = v));"""
    page.driver.execute_script(show, "hidden")
    try:
        shot = page.screenshot(path)
        return [page.view_pixels(shot, i) for i in range(len(page.views()))]
    finally:
        page.driver.execute_script(show, "")


def slices(page: Page) -> list[str]:
    """The slice each view shows, as its slice slider says."""
    return page.driver.execute_script(
        "return [...document.querySelectorAll('#na-views .slice-slider input')].map(i => i.value)")


@pytest.mark.parametrize("size", [(900, 1100), (1600, 700)], ids=["narrower", "lower"])
def test_after_a_window_resize_the_views_show_the_whole_brain(page, tmp_path, size):
    page.driver.set_window_size(1600, 1100)
    page.wait(lambda: all(min(brain_box(v)) > 0 for v in rendered_views(page, tmp_path / "before.png")), 30,
              "the views do not show the whole brain before the resize")
    shown = slices(page)
    page.driver.set_window_size(*size)
    time.sleep(2)  # the new size reaches the server, which renders the views anew

    def whole() -> bool:
        return all(min(brain_box(v)) > 0 for v in rendered_views(page, tmp_path / "after.png"))
    page.wait(whole, 30, f"a view crops the brain after the resize to {size}: "
              f"{[brain_box(v) for v in rendered_views(page, tmp_path / 'after.png')]}")
    assert slices(page) == shown, "the resize moved the views to another slice"
