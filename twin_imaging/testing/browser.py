"""Drive the twin page in headless Chromium (Debian's ``chromium``) with Playwright, for tests and screenshots.

    with twin_page(server.url) as browser:
        browser.sign_in(key)
        browser.open_patient("DEMO-TWIN-1")
        browser.open_view("viewer")
        picture = browser.canvas_pixels("#slices")
    browser.console_errors, browser.requests   # what the page logged as errors, every URL it asked for

Playwright's own browser download (``playwright install``) is not used: it fetches from outside the registries. The
Debian build gets WebGL2 from SwiftShader (software), which Niivue needs.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHROMIUM_ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1366, "height": 768}  # the smallest screen the page is built for
READY_TIMEOUT_MS = 60_000


def chromium_path() -> Path | None:
    found = os.environ.get("TWIN_IMAGING_CHROMIUM") or shutil.which("chromium")
    return Path(found) if found else None


def browser_missing() -> str | None:
    """Why the page cannot be driven here (None where it can)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (bash scripts/setup.sh dev)"
    if chromium_path() is None:
        return "Debian's chromium is not installed (bash scripts/setup.sh dev installs it)"
    return None


@dataclass
class PageDriver:
    page: object  # playwright.sync_api.Page
    base_url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def goto(self) -> None:
        self.page.goto(f"{self.base_url}/page/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=READY_TIMEOUT_MS)

    def sign_in(self, key: str, *, expect_success: bool = True) -> None:
        self.page.fill("#key", key)
        self.page.click("#sign-in-form button")
        selector = "#search:not([hidden])" if expect_success else "#message:not([hidden])"
        self.page.wait_for_selector(selector, timeout=READY_TIMEOUT_MS)

    def open_patient(self, patient_id: str, *, expect_success: bool = True) -> None:
        self.page.fill("#patient-id", patient_id)
        self.page.click("#search-form button")
        selector = "#patient:not([hidden])" if expect_success else "#message:not([hidden])"
        self.page.wait_for_selector(selector, timeout=READY_TIMEOUT_MS)

    def open_view(self, view: str) -> None:
        self.page.click(f"[role=tab][data-view={view}]")
        ready = {
            "timeline": "#timeline-rows tr",
            "trends": "svg.trend",
            "viewer": "#render3d[data-meshes]",
            "scenarios": "#scenario-list > *",
        }[view]
        self.page.wait_for_selector(ready, timeout=READY_TIMEOUT_MS)
        if view == "viewer":
            self.page.wait_for_timeout(500)  # the WebGL frames after the last load

    def message(self) -> str:
        return self.page.inner_text("#message")

    def canvas_pixels(self, selector: str) -> np.ndarray:
        """The canvas as the user sees it (a screenshot of the element), RGB."""
        from PIL import Image

        png = self.page.locator(selector).screenshot()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def screenshot(self, path: str | Path, *, full_page: bool = False) -> Path:
        self.page.screenshot(path=str(path), full_page=full_page)
        return Path(path)


@contextlib.contextmanager
def twin_page(base_url: str) -> Iterator[PageDriver]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path()), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            driver = PageDriver(page, base_url)
            page.on("console", lambda m: m.type == "error" and driver.console_errors.append(m.text))
            page.on("pageerror", lambda e: driver.console_errors.append(f"uncaught: {e}"))
            page.on("request", lambda r: driver.requests.append(r.url))
            driver.goto()
            yield driver
        finally:
            browser.close()
