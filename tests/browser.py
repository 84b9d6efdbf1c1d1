"""Headless Chromium for the UI tests: Debian's `chromium` and `chromium-driver`, driven by Selenium.

`chromium_binaries()` finds both programs. Without them a test skips with the line that
installs them, except under CI (`GENEBENCH_CI=1`, set by `.ci/run`), where it fails: a
browser test that silently skipped there would prove nothing. `headless_chromium(...)`
yields a Selenium driver; `wait_for(driver, what, condition)` waits for the React app
to render something, and fails naming `what` with the page's text.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

INSTALL_HINT = "apt-get install chromium chromium-driver"
WAIT_SECONDS = 60  # a busy 2-core machine renders a page in a few seconds; the margin is for CI


def chromium_binaries() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skips the test when one is missing, or fails under CI."""
    paths = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        message = f"browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} not on PATH): {INSTALL_HINT}"
        if os.environ.get("GENEBENCH_CI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return paths["chromium"], paths["chromedriver"]


@contextlib.contextmanager
def headless_chromium(chromium: str, chromedriver: str) -> Iterator[Any]:
    """A Selenium driver of headless Chromium with a window tall enough for a runs table."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start;
    # --disable-dev-shm-usage: containers often have a tiny /dev/shm.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, what: str, condition: Callable[[Any], Any], timeout: float = WAIT_SECONDS) -> Any:
    """`condition(driver)`'s first truthy value; an AssertionError naming `what` after `timeout` s.

    An element React replaced while `condition` read it counts as not there yet.
    """
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the MLflow UI showed no {what} within {timeout} s at {driver.current_url}; "
                             f"the page read:\n{text[:3000]}") from None
