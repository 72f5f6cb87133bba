"""Real browsers: headless Chromium (Debian's `chromium`, driven by playwright).

1. Two browser tabs open the chat page served by our ASGI server and chat with a Python
   WebSocket client. The test reads what each page *displays* (its `#log`), not what its
   script received: every participant shows every message in the same order, and the join
   and leave notices. Any uncaught error or console error on a page fails the test.
   The same page served by the WSGI server loads, but its WebSocket closes with 1006.
2. JupyterLab serves notebook 04. Opened, it shows the stored outputs, each widget as its
   static picture. The browser runs it with Run All, as notebook 00 tells a student to, and
   then uses what Run All left running: types into the chat box and sees the message
   arrive (in the box and in the chat page embedded below the link), pings from the frame
   inspector, and presses the close button, which then disables itself.
   ASGI_LAB_BROWSER_SHOTS=folder saves screenshots of the widgets to look at.

Playwright drives the system's Chromium, headless, in a fresh empty profile (tests/chromium.py).
Without Chromium these tests skip, loudly; CI (`.ci/run`) installs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from asgi_lab import serve_in_background
from asgi_lab.apps.chat import ChatApp
from asgi_lab.live import ChatClient
from chromium import launch_chromium, needs_chromium
from labserver import start_jupyterlab

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04-live-websockets.ipynb"

pytestmark = [
    needs_chromium("the real-browser tests"),
    pytest.mark.timeout(120),
]
pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as browser:
        yield browser


def watch_errors(page, console: bool = True) -> list[str]:
    """Every uncaught exception on `page` (and, with `console`, every console error), as
    text, from now on."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    if console:
        page.on("console", lambda message: message.type == "error" and errors.append(
            f"console error: {message.text}"))
    return errors


# -- 1. the chat page, twice, plus a Python client -------------------------------------------

#: What the page shows in its log, one entry per line item: its seq and type (data attributes)
#: and its visible text; for a chat message also the sender (the bold name) and the text.
SHOWN = """() => Array.from(document.querySelectorAll('#log li')).map(li => ({
    seq: Number(li.dataset.seq), type: li.dataset.type,
    who: li.querySelector('.who') ? li.querySelector('.who').textContent.replace(/:$/, '') : null,
    text: li.lastChild.textContent}))"""


def shown(page) -> list[dict]:
    return page.evaluate(SHOWN)


def displayed(page) -> list[tuple]:
    """The chat messages the page displays: (seq, sender, text)."""
    return [(item["seq"], item["who"], item["text"]) for item in shown(page) if item["type"] == "message"]


def notices(page) -> list[str]:
    return [item["text"] for item in shown(page) if item["type"] != "message"]


def conversation(messages) -> list[tuple]:
    return [(m["seq"], m["name"], m["text"]) for m in messages if m["type"] == "message"]


def test_two_tabs_and_a_python_client_show_one_conversation_and_every_notice(browser):
    with serve_in_background(ChatApp(), name="browser-chat", access_log=False) as server:
        context = browser.new_context()
        tabs, names, errors = [], ("tab1", "tab2"), []
        for name in names:
            tab = context.new_page()
            errors += [watch_errors(tab)]
            tab.goto(f"{server.url}/?room=lobby&name={name}", timeout=15_000)
            tab.wait_for_function("document.getElementById('status').textContent === 'connected'",
                                  timeout=10_000)
            tabs.append(tab)
        python = ChatClient.connect(server.ws_url + "/ws/lobby?name=python")
        tabs[0].wait_for_function(
            "document.querySelectorAll('#log li[data-type=join]').length === 3", timeout=10_000)
        assert notices(tabs[0]) == ["you are tab1 in #lobby with tab1", "tab1 joined (1 here)",
                                    "tab2 joined (2 here)", "python joined (3 here)"]
        assert notices(tabs[1])[0] == "you are tab2 in #lobby with tab1, tab2"

        rounds = 3
        for i in range(rounds):  # no waiting between senders: the server decides the order
            for tab, name in zip(tabs, names):
                tab.fill("#text", f"{name} says {i}")
                tab.press("#text", "Enter")
            python.send(f"python says {i}")
        total = rounds * 3
        for tab in tabs:
            tab.wait_for_function(
                f"document.querySelectorAll('#log li[data-type=message]').length === {total}",
                timeout=10_000)
        python.wait_for(lambda m: len(conversation(m)) == total, timeout=10)

        seen = [displayed(tab) for tab in tabs] + [conversation(python.messages)]
        assert seen[0] == seen[1] == seen[2]
        seqs = [seq for seq, _, _ in seen[0]]
        assert seqs == sorted(seqs) and len(set(seqs)) == total
        for sender in ("tab1", "tab2", "python"):
            assert [text for _, who, text in seen[0] if who == sender] == \
                [f"{sender} says {i}" for i in range(rounds)]

        # Leaving: the Python client says goodbye, tab2 presses Leave; tab1 shows both.
        python.close()
        tabs[1].click("#connect")
        tabs[1].wait_for_function("document.getElementById('status').textContent.startsWith('closed')",
                                  timeout=10_000)
        assert tabs[1].inner_text("#status") == "closed (code 1000: bye)" and tabs[1].is_disabled("#text")
        tabs[0].wait_for_function(
            "document.querySelectorAll('#log li[data-type=leave]').length === 2", timeout=10_000)
        assert notices(tabs[0])[-2:] == ["python left (2 here)", "tab2 left (1 here)"]
        assert [error for page_errors in errors for error in page_errors] == []
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
        assert shown(page) == [] and page.is_disabled("#text")
        page.close()


# -- 2. notebook 04 in JupyterLab ---------------------------------------------------------------

@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a free port, serving a copy of notebook 04 (tests/labserver.py)."""
    try:
        with start_jupyterlab(tmp_path, [NOTEBOOK]) as lab:
            yield lab.url.rstrip("/"), lab.token, lab.log
    except RuntimeError as error:  # it did not start: say why, with its log
        pytest.fail(str(error))


RUN_ALL = """async () => {
    // What a student does: Run > Run All Cells. (First clear the stored outputs, so that
    // we can tell when every cell has run: each then has an execution count again.)
    const app = window.jupyterapp;
    await app.shell.currentWidget.sessionContext.ready;
    await app.commands.execute('notebook:clear-all-cell-outputs');
    app.commands.execute('notebook:run-all-cells');  // returns when queued; we poll below
}"""

ALL_CELLS_RAN = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.filter(cell => cell.model.type === 'code');
    return kernel && kernel.status === 'idle' &&
           cells.every(cell => cell.model.executionCount !== null);
}"""

WIDGET_ERRORS = ("Error displaying widget", "model not found", "Failed to load model class")
SHOTS = os.environ.get("ASGI_LAB_BROWSER_SHOTS")  # a folder: save screenshots there to look at


def shoot(locator, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        locator.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


@pytest.mark.timeout(240)
def test_notebook_04_after_run_all_the_chat_box_inspector_close_button_and_page_work(browser, jupyterlab):
    base, token, log = jupyterlab
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = watch_errors(page, console=False)  # JupyterLab's own console is not ours to judge
    page.set_default_timeout(30_000)
    page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)

    # Before running, a reader sees the stored outputs: each widget's static picture (the
    # notebook is not trusted yet, so JupyterLab picks the widget's text/html), no error.
    page.wait_for_function("document.body.innerText.includes('the chat box when this cell ran')",
                           timeout=30_000)
    text = page.locator(".jp-Notebook").text_content()
    assert "the frames on the wire when this cell ran" in text and "dan is open" in text
    for error in WIDGET_ERRORS:
        assert error not in text, error
    page.evaluate(RUN_ALL)
    page.wait_for_function(ALL_CELLS_RAN, timeout=90_000, polling=500)
    notebook = page.locator(".jp-Notebook")
    text = notebook.text_content()
    for error in WIDGET_ERRORS:
        assert error not in text, (error, text[max(0, text.find(error) - 300):text.find(error) + 300])
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Traceback" not in text and stderr.count() == 0, stderr.all_text_contents()
    assert page.locator(".asgi-lab-chat, .asgi-lab-inspector, .asgi-lab-close").count() == 3

    # 1. The chat box: type, press Enter; the message goes kernel -> server -> back to the
    #    notebook's client -> the widget, and to the chat page embedded under the link.
    chat = page.locator(".asgi-lab-chat")
    chat.scroll_into_view_if_needed()
    entry = chat.locator("input[type=text]")
    entry.fill("hello after Run All")
    entry.press("Enter")
    page.wait_for_function("document.querySelector('.asgi-lab-chat').innerText"
                           ".includes('notebook: hello after Run All')", timeout=15_000)
    chat_page = page.frame_locator("iframe[src*='room=lobby']").locator("#log")
    chat_page.locator("li[data-type=message]", has_text="hello after Run All").wait_for(timeout=15_000)
    # Its own join notice (who else it saw join depends on when the frame loaded).
    assert chat_page.locator("li[data-type=join]", has_text=re.compile(r"^#\d+iframe joined \(\d+ here\)$")).count() == 1

    # 2. The frame inspector: a ping on the picked connection, and its pong.
    inspector = page.locator(".asgi-lab-inspector")
    inspector.scroll_into_view_if_needed()
    inspector.get_by_role("button", name="Ping", exact=True).click()
    page.wait_for_function("document.querySelector('.asgi-lab-inspector').innerText"
                           ".includes('pong after')", timeout=10_000)

    # 3. The close button: it closes dan, then says so and disables itself; the room (the
    #    chat page) shows dan leave.
    close = page.locator(".asgi-lab-close")
    close.scroll_into_view_if_needed()
    button = close.get_by_role("button", name="Close dan")
    assert button.is_enabled()
    button.click()
    page.wait_for_function("document.querySelector('.asgi-lab-close').innerText"
                           ".includes('dan is closed by the client, code 4000')", timeout=10_000)
    assert button.is_disabled()
    chat_page.locator("li[data-type=leave]", has_text="dan left (").wait_for(timeout=10_000)
    for name, widget in (("chat-box", chat), ("inspector", inspector), ("close-button", close),
                         ("chat-page", page.locator("iframe[src*='room=lobby']"))):
        shoot(widget, name)
    assert errors == []
    context.close()
