"""Real browsers: headless Chromium (Debian's `chromium`, driven by playwright).

1. Two browser tabs open the chat page served by our ASGI server and chat with a Python
   WebSocket client; every participant must receive every message, in the same order.
   The same page served by the WSGI server loads, but its WebSocket closes with 1006.
2. JupyterLab serves notebook 04; the browser runs it, types into the chat widget and
   checks the widgets render as widgets (not "Error displaying widget") and work.

Playwright never downloads a browser here: it drives the system's Chromium through
`executable_path`. Without it these tests skip; CI (`.ci/run`) installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from asgi_lab import serve_in_background
from asgi_lab.apps.chat import ChatApp
from asgi_lab.live import ChatClient

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04-live-websockets.ipynb"

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason="Chromium is not installed: apt-get install -y --no-install-recommends chromium"),
    pytest.mark.timeout(120),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True, timeout=30_000)
        yield browser
        browser.close()


# -- 1. the chat page, twice, plus a Python client -------------------------------------------

def received(page) -> list[dict]:
    return page.evaluate("window.received")


def conversation(messages) -> list[tuple]:
    return [(m["seq"], m["name"], m["text"]) for m in messages if m["type"] == "message"]


def test_two_tabs_and_a_python_client_chat_in_one_order(browser):
    with serve_in_background(ChatApp(), name="browser-chat", access_log=False) as server:
        context = browser.new_context()
        tabs, names = [], ("tab1", "tab2")
        for name in names:
            tab = context.new_page()
            tab.goto(f"{server.url}/?room=lobby&name={name}", timeout=15_000)
            tab.wait_for_function("document.getElementById('status').textContent === 'connected'",
                                  timeout=10_000)
            tabs.append(tab)
        python = ChatClient.connect(server.ws_url + "/ws/lobby?name=python")
        tabs[0].wait_for_function(
            "window.received.filter(m => m.type === 'join').length === 3", timeout=10_000)

        rounds = 3
        for i in range(rounds):  # no waiting between senders: the server decides the order
            for tab, name in zip(tabs, names):
                tab.fill("#text", f"{name} says {i}")
                tab.press("#text", "Enter")
            python.send(f"python says {i}")
        total = rounds * 3
        for tab in tabs:
            tab.wait_for_function(
                f"window.received.filter(m => m.type === 'message').length === {total}", timeout=10_000)
        python.wait_for(lambda m: len(conversation(m)) == total, timeout=10)

        seen = [conversation(received(tab)) for tab in tabs] + [conversation(python.messages)]
        assert seen[0] == seen[1] == seen[2]
        seqs = [seq for seq, _, _ in seen[0]]
        assert seqs == sorted(seqs) and len(set(seqs)) == total
        for sender in ("tab1", "tab2", "python"):
            assert [text for _, who, text in seen[0] if who == sender] == \
                [f"{sender} says {i}" for i in range(rounds)]
        # ...and the page shows them: one list item per message, with its seq.
        items = tabs[1].locator("#log li[data-type=message]")
        assert items.count() == total
        assert items.last.locator(".who").inner_text() == "python:"
        assert items.last.inner_text().endswith("python says 2")
        python.close()
        context.close()


def test_the_chat_page_served_by_wsgi_cannot_open_its_websocket(browser):
    """The same page from the WSGI server loads fine; its WebSocket never opens: the browser
    reports close code 1006 (no Close frame: the handshake got a 500, not a 101)."""
    from asgi_lab.live.wsgi_try import wsgi_chat

    with serve_in_background(wsgi_chat, kind="wsgi", name="browser-chat-wsgi", access_log=False) as server:
        page = browser.new_page()
        page.goto(f"{server.url}/?room=lobby&name=tab", timeout=15_000)
        page.wait_for_function("document.getElementById('status').textContent.startsWith('closed')",
                               timeout=10_000)
        assert page.inner_text("#status") == "closed (code 1006)"
        assert page.evaluate("window.received") == [] and page.is_disabled("#text")
        page.close()


# -- 2. notebook 04 in JupyterLab ---------------------------------------------------------------

@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free port, serving a copy of notebook 04 (its autosave must not touch
    the repository), with a token we choose and every Jupyter directory in tmp_path."""
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    # Render every cell, even off screen (JupyterLab 4 may otherwise skip hidden ones).
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    token = "asgi-lab-test-token"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root; Jupyter refuses without this
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    found = threading.Event()
    address: list[str] = []
    log: list[str] = []

    def read_log():
        for line in process.stderr:
            log.append(line)
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match and not found.is_set():
                address.append(f"http://127.0.0.1:{match.group(1)}")
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not found.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("JupyterLab did not start:\n" + "".join(log[-30:]))
        yield address[0], token, log
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the kernels it started
            process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


RUN_CELLS_UNTIL = """async (stop) => {
    // Run cells one at a time, from the first, until the cell whose source contains `stop`.
    const app = window.jupyterapp;
    const panel = app.shell.currentWidget;
    await panel.sessionContext.ready;
    const notebook = panel.content;
    notebook.activeCellIndex = 0;
    while (true) {
        const source = notebook.activeCell.model.sharedModel.getSource();
        await app.commands.execute('notebook:run-cell-and-select-next');
        if (source.includes(stop)) return notebook.activeCellIndex;
    }
}"""

WIDGET_ERRORS = ("Error displaying widget", "model not found", "Failed to load model class")


def test_notebook_04_widgets_render_and_chat_in_jupyterlab(browser, jupyterlab):
    base, token, log = jupyterlab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)

    # Run up to the notebook's own chat box, then use it as a learner would: type and Enter.
    next_cell = page.evaluate(RUN_CELLS_UNTIL, "ChatBox(me)")
    chat = page.locator(".asgi-lab-chat")
    chat.wait_for(state="visible")
    entry = chat.locator("input[type=text]")
    entry.fill("hello from JupyterLab")
    entry.press("Enter")
    # The message went kernel -> server -> back to the notebook's client -> the widget.
    page.wait_for_function(
        "document.querySelector('.asgi-lab-chat').innerText.includes('notebook: hello from JupyterLab')",
        timeout=15_000)

    # The rest of the notebook: the scripted run, the inspector, the close button, WSGI.
    # (Typing made the chat box's cell the active one: start again after it.)
    page.evaluate("""(index) => {
        const app = window.jupyterapp;
        app.shell.currentWidget.content.activeCellIndex = index;
        return app.commands.execute('notebook:run-all-below');
    }""", next_cell)
    page.wait_for_function(
        "document.body.innerText.includes('RejectConnection(status_code=500)')", timeout=45_000)
    page.wait_for_function(
        "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
        timeout=30_000)
    # The chat box still shows the conversation (its client was closed by the last cell).
    assert "notebook: hello from JupyterLab" in page.locator(".asgi-lab-chat").inner_text()
    inspector = page.locator(".asgi-lab-inspector")
    inspector.scroll_into_view_if_needed()
    inspector.wait_for(state="visible")
    page.wait_for_function("document.querySelector('.asgi-lab-inspector').textContent"
                           ".includes('server → client')", timeout=10_000)
    assert page.locator(".asgi-lab-chat, .asgi-lab-inspector, .asgi-lab-close").count() == 3

    text = page.locator(".jp-Notebook").text_content()
    for error in WIDGET_ERRORS:
        assert error not in text, error
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Traceback" not in text and errors.count() == 0, errors.all_text_contents()
    context.close()
