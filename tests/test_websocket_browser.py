"""A real browser on our WebSocket: headless Chromium opens the echo page (asgi_lab/apps/echo.py).

Chromium offers `permessage-deflate` and more headers than any Python client; the server must
complete the handshake without it and echo what the page sends. As in tests/test_browser.py,
playwright drives the system's Chromium (CI installs it) and the test skips without one.
"""

from __future__ import annotations

import pytest

from asgi_lab import serve_in_background
from asgi_lab.apps.echo import app
from chromium import launch_chromium, needs_chromium

pytestmark = [
    needs_chromium("the real-browser test"),
    pytest.mark.timeout(60),
]
pytest.importorskip("playwright.sync_api")


def test_chromium_echoes_through_the_echo_page():
    with serve_in_background(app, name="test-websocket-browser", access_log=False,
                             timeout_graceful_shutdown=1.0) as server, launch_chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", lambda message: message.type == "error" and errors.append(
            f"console error: {message.text}"))
        page.goto(server.url + "/", timeout=10_000)
        page.wait_for_function("document.getElementById('log').textContent.includes('open')",
                               timeout=10_000)
        page.fill("#text", "héllo from Chromium")
        page.click("#send")
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('< héllo from Chromium')",
            timeout=10_000)
        page.evaluate("ws.close(4321, 'done')")
        page.wait_for_function(
            "document.getElementById('log').textContent.includes('closed with code 4321')",
            timeout=10_000)
        assert errors == []
