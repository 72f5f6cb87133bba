"""The real browser of the browser tests: Debian's Chromium, driven by playwright.

Playwright never downloads a browser here: it drives the system's Chromium through
`executable_path`, headless, in a fresh empty profile (playwright's own temporary
user-data-dir), with no network services of its own. Without Chromium the tests that need it
skip, loudly; CI (`.ci/run`) installs it.

    pytestmark = [needs_chromium("the real-browser tests"), pytest.mark.timeout(120)]
    with launch_chromium() as browser:
        page = browser.new_page()
"""

from __future__ import annotations

import contextlib
import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def needs_chromium(what: str) -> pytest.MarkDecorator:
    """Skip, saying so in capitals, where Chromium is not installed."""
    return pytest.mark.skipif(not os.path.exists(CHROMIUM),
                              reason=f"CHROMIUM IS NOT INSTALLED (no /usr/bin/chromium): {what} did NOT "
                                     "run. apt-get install -y --no-install-recommends chromium")


@contextlib.contextmanager
def launch_chromium():
    """A headless Chromium (playwright's sync API), closed when the block ends."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()
