"""The NormativeAD page as a person uses it, through selenium: pick, click, type, wait, read.

Controls are found by the ids the page gives them (na-...); Vuetify's lists open in an overlay whose
items are clicked by their text, as a person would.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

RUN_TIMEOUT_S = 300


def shows_word(label: str, word: str) -> bool:
    """Whether a list item's label holds word as a whole word (ae-ixi-t1 is not in vae-ixi-t1)."""
    return re.search(rf"(^|[\s:]){re.escape(word)}($|[\s(])", label) is not None


class Page:
    def __init__(self, driver, url: str):
        self.driver = driver
        self.url = url

    def open(self) -> None:
        self.driver.get(self.url)
        self.wait(lambda: self.driver.find_elements(By.ID, "na-scan-source"), 60)
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#na-views img"), 60)

    def wait(self, condition, timeout: float = 60, message: str = ""):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition(), message)

    def element(self, element_id: str):
        return self.wait(lambda: self.driver.find_element(By.ID, element_id), 30, f"no element {element_id}")

    def exists(self, element_id: str) -> bool:
        return bool(self.driver.find_elements(By.ID, element_id))

    def text(self, element_id: str) -> str:
        found = self.driver.find_elements(By.ID, element_id)
        return found[0].text if found else ""

    def choose(self, select_id: str, text: str, close: bool = False) -> None:
        """Open a list by its field and click the item showing text."""
        field = self.element(select_id).find_element(By.XPATH, "./ancestor::div[contains(@class, 'v-field ')][1]")
        field.click()

        def click_item() -> bool:  # the list slides open: a click may land on its neighbour until it settles
            items = [item for item in self.driver.find_elements(
                By.CSS_SELECTOR, ".v-overlay-container .v-overlay--active .v-list-item") if shows_word(item.text, text)]
            if not items:
                return False
            try:
                items[0].click()
            except ElementClickInterceptedException:
                return False
            return True
        self.wait(click_item, 20, f"no item {text!r} in {select_id}")
        if close:  # a multiple choice list stays open
            self.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        time.sleep(0.3)

    def click(self, element_id: str) -> None:
        button = self.element(element_id)
        self.wait(lambda: button.is_enabled(), 30, f"{element_id} stays disabled")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()

    def upload(self, input_id: str, path: Path) -> None:
        self.element(input_id).send_keys(str(path))

    def press_on_slider(self, slider_id: str, key: str, times: int = 1) -> None:
        thumb = self.element(slider_id).find_element(
            By.XPATH, "./ancestor::div[contains(@class, 'v-slider ')][1]").find_element(By.CSS_SELECTOR,
                                                                                       ".v-slider-thumb")
        for _ in range(times):
            thumb.send_keys(key)
            time.sleep(0.1)

    def move_slice(self, view_index: int, key: str, times: int = 1) -> None:
        """Step a view's slice slider (the one under each view) by keyboard."""
        thumb = self.driver.find_elements(By.CSS_SELECTOR, "#na-views .slice-slider .v-slider-thumb")[view_index]
        for _ in range(times):
            thumb.send_keys(key)
            time.sleep(0.1)

    def run_and_wait(self, button_id: str = "na-run") -> str:
        """Press Run (or Compare), wait for the Cancel button to come and go; returns the status line."""
        before = self.text("na-status")
        self.click(button_id)
        self.wait(lambda: self.exists("na-cancel") or self.text("na-status") != before, 120, "the run did not start")
        self.wait(lambda: not self.exists("na-cancel"), RUN_TIMEOUT_S, "the run did not end")
        return self.text("na-status")

    def error(self) -> str:
        return self.text("na-error")

    def table(self) -> list[dict[str, str]]:
        """The metrics table's rows, read in one go (the page may redraw it between two reads)."""
        return self.driver.execute_script("""
            const table = document.querySelector('#na-table');
            if (!table) return [];
            const headers = [...table.querySelectorAll('thead th')].map(e => e.innerText.replace(/\\s+/g, ' ').trim());
            return [...table.querySelectorAll('tbody tr')].map(row => Object.fromEntries(
                [...row.querySelectorAll('td')].map((cell, i) => [headers[i], cell.innerText.trim()])));
        """)

    def download(self, kind: str, timeout: float = 60) -> Path:
        """Click a download button; the file the browser saved."""
        folder = Path(self.driver.downloads)
        before = set(folder.iterdir())
        self.click(f"na-download-{kind}")

        def finished():
            new = [p for p in set(folder.iterdir()) - before if not p.name.endswith(".crdownload")]
            return new[0] if new and new[0].stat().st_size > 0 else None
        return self.wait(finished, timeout, f"no {kind} download arrived")

    def views(self) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, "#na-views img")

    def screenshot(self, path: Path) -> np.ndarray:
        """The page as the browser draws it, saved to path; returns its (rows, columns, RGB) pixels."""
        from PIL import Image

        self.driver.execute_script("window.scrollTo(0, 0)")  # a download button may have scrolled the page
        time.sleep(0.3)
        self.driver.save_screenshot(str(path))
        return np.asarray(Image.open(path).convert("RGB"))

    def view_pixels(self, page_pixels: np.ndarray, index: int) -> np.ndarray:
        rect = self.views()[index].rect
        top, left = round(rect["y"]), round(rect["x"])
        return page_pixels[top:top + round(rect["height"]), left:left + round(rect["width"])]
