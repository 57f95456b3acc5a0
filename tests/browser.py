"""Headless Chromium for page tests: Debian's chromium + chromium-driver, driven by Selenium.

No skipping: when the browser or its driver is missing the tests that need it fail, saying
how to install them (.ci/run does it with apt-get). Selenium is pointed at the Debian
chromedriver explicitly so that Selenium Manager never tries to download a browser.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from starlette.types import ASGIApp

BROWSERS = ["chromium", "chromium-browser", "google-chrome"]

# The machine has no internet: without these, Chromium's background services keep
# opening connections that are refused, and it looks up Google's hosts at every start.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def _find(names: list[str], package: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        f"{names[0]} is not installed: apt-get install {package} (.ci/run does it for CI)"
    )


@contextmanager
def chromium_driver() -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium with its own empty profile, quit on exit."""
    binary = _find(BROWSERS, "chromium")
    driver_path = _find(["chromedriver"], "chromium-driver")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


@contextmanager
def live_app(app: ASGIApp, timeout: float = 10.0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
