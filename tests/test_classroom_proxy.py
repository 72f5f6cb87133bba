"""A classroom, for real: JupyterLab under a base URL, as JupyterHub serves a student's server.

1. The address rules of `asgi_lab/live/public_url.py`, one by one, without a browser.
2. JupyterLab with jupyter-server-proxy runs under `--ServerApp.base_url=/user/student/`
   (no `JUPYTERHUB_SERVICE_PREFIX`: the kernel must find the base URL through the server that
   started it), one for the whole module.
   - Both chats, the ASGI one of notebook 04 and the WSGI one (with our upgrade hatch) of
     notebook 06, answer through the proxy: the page, and a WebSocket member from Python.
     Without the login token the proxy refuses the WebSocket.
   - Headless Chromium opens notebook 04 and runs its first cells: the server, the chat
     page's link and IFrame, the notebook's own chat member and its chat box. The IFrame must
     point at `/user/student/proxy/<port>/`, the page in it must load through the proxy and
     open its WebSocket through the proxy too; a line typed in the page must reach the
     notebook's client (its chat box), and a line typed in the chat box must reach the page.

The browser only ever talks to JupyterLab's port; the chat server's port is reached through
the proxy alone. Skips without Chromium (CI installs it) or without jupyter-server-proxy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asgi_lab.live import public_url
from asgi_lab.live.public_url import LOCAL, public_address
from chromium import launch_chromium, needs_chromium

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04-live-websockets.ipynb"


# -- 1. the rules ------------------------------------------------------------------------------

class Server:
    host, port = "127.0.0.1", 8123


@pytest.fixture
def no_classroom(monkeypatch):
    """No hint of a classroom in the environment, and no Jupyter server above us."""
    for name in ("ASGI_LAB_PUBLIC_URL", "JUPYTERHUB_SERVICE_PREFIX", "CODESPACES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(public_url, "jupyter_server_of_this_kernel", lambda: None)
    return monkeypatch


def jupyter_server(monkeypatch, base_url="/", hostname="localhost"):
    monkeypatch.setattr(public_url, "jupyter_server_of_this_kernel",
                        lambda: {"base_url": base_url, "hostname": hostname, "pid": 1})


def test_on_a_laptop_links_go_straight_to_the_server(no_classroom):
    assert public_url.public_url(Server, "?room=lobby") == "http://127.0.0.1:8123/?room=lobby"
    jupyter_server(no_classroom)  # `jupyter lab` on the laptop: the browser is on this machine
    assert public_address().template == LOCAL and not public_address().proxied


def test_jupyterhub_prefix_goes_through_the_proxy(no_classroom):
    no_classroom.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert public_url.public_url(Server, "?room=lobby") == "/user/ada/proxy/8123/?room=lobby"
    no_classroom.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/named")  # no trailing slash
    assert public_url.public_url(Server) == "/user/ada/named/proxy/8123/"


@pytest.mark.parametrize("base_url, hostname, codespaces, expected", [
    ("/user/student/", "localhost", None, "/user/student/proxy/8123/"),  # behind a path router
    ("/", "0.0.0.0", None, "/proxy/8123/"),                              # a container, say
    ("/", "127.0.0.1", "true", "/proxy/8123/"),                          # a Codespace
    ("/", "127.0.0.1", None, "http://127.0.0.1:8123/"),                  # a laptop
])
def test_the_jupyter_server_of_the_kernel_decides(no_classroom, base_url, hostname, codespaces, expected):
    jupyter_server(no_classroom, base_url, hostname)
    if codespaces:
        no_classroom.setenv("CODESPACES", codespaces)
    assert public_url.public_url(Server) == expected


def test_an_explicit_template_wins(no_classroom):
    no_classroom.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    no_classroom.setenv("ASGI_LAB_PUBLIC_URL", "https://hub.example.org/user/ada/proxy/{port}")
    assert public_url.public_url(Server, "?x=1") == "https://hub.example.org/user/ada/proxy/8123/?x=1"
    assert public_url.public_url(Server, template="local") == "http://127.0.0.1:8123/"
    with pytest.raises(ValueError, match=r"\{port\}"):
        public_address("https://hub.example.org/user/ada/")


def test_outside_a_kernel_there_is_no_jupyter_server_to_find():
    # pytest is no kernel: the lookup finds no server, whatever else runs on this machine.
    assert public_url.jupyter_server_of_this_kernel() is None


# -- 2. JupyterLab under /user/student/ ---------------------------------------------------------

BASE_URL = "/user/student/"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab with jupyter-server-proxy under BASE_URL, serving a copy of notebook 04. No
    classroom variable in its environment: the kernel must find the base URL on its own."""
    pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is not installed "
                        "(pip install -e '.[lab]')")
    from labserver import start_jupyterlab

    env = {"JUPYTERHUB_SERVICE_PREFIX": "", "ASGI_LAB_PUBLIC_URL": "", "CODESPACES": ""}
    with start_jupyterlab(tmp_path_factory.mktemp("classroom"), [NOTEBOOK], base_url=BASE_URL,
                          env=env) as lab:
        yield lab


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_both_chats_page_and_websocket_answer_through_the_proxy_for_a_logged_in_user(lab, kind):
    """The ASGI chat (notebook 04) and the WSGI chat with our upgrade hatch (notebook 06),
    reached only through the proxy: the page, and a WebSocket member; without the token the
    proxy refuses the WebSocket."""
    import httpx
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from asgi_lab import serve_in_background
    from asgi_lab.apps.chat import ChatApp
    from asgi_lab.apps.wsgi_chat import WSGIChat

    settings = {"wsgi_upgrade": True, "threads": 4} if kind == "wsgi" else {}
    app = ChatApp() if kind == "asgi" else WSGIChat()
    login = {"Authorization": f"token {lab.token}"}
    with serve_in_background(app, kind=kind, name=f"classroom-{kind}", access_log=False, **settings) as server:
        proxied = f"{lab.url}proxy/{server.port}/"
        page = httpx.get(proxied + "?room=lobby", headers=login, timeout=10)
        assert page.status_code == 200 and "<title>asgi_lab chat</title>" in page.text
        ws_url = "ws" + proxied[len("http"):] + "ws/lobby?name=py"
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=10).close()
        assert refused.value.response.status_code in (302, 401, 403)
        with connect(ws_url, additional_headers=login, open_timeout=10, close_timeout=2) as member:
            assert json.loads(member.recv(timeout=10))["type"] == "welcome"
            member.send("through the proxy")
            received = [json.loads(member.recv(timeout=10)) for _ in range(2)]  # its join, its line
            assert [m["type"] for m in received] == ["join", "message"]
            assert received[1]["text"] == "through the proxy" and received[1]["name"] == "py"


@needs_chromium("the classroom test")
@pytest.mark.timeout(120)
def test_notebook_04_chat_page_and_its_websocket_go_through_jupyter_server_proxy(lab):
    with launch_chromium() as browser:
        run_chat_through_the_proxy(browser, lab, BASE_URL)


#: Run the notebook's cells from the first one through the cell that shows the chat box (found
#: by its source, not its number), as a student pressing Shift+Enter would.
RUN_THROUGH = """async (marker) => {
    const app = window.jupyterapp;
    const panel = app.shell.currentWidget;
    await panel.sessionContext.ready;
    await app.commands.execute('notebook:clear-all-cell-outputs');
    const cells = panel.content.widgets;
    const last = cells.findIndex(cell => cell.model.type === 'code' &&
                                         cell.model.sharedModel.getSource().includes(marker));
    if (last < 0) throw new Error('no cell contains ' + marker);
    panel.content.activeCellIndex = last;
    await app.commands.execute('notebook:run-all-above');
    await app.commands.execute('notebook:run-cell');
    return last;
}"""

RAN_THROUGH = """(last) => {
    const panel = window.jupyterapp.shell.currentWidget;
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const cells = panel.content.widgets.slice(0, last + 1).filter(cell => cell.model.type === 'code');
    return kernel && kernel.status === 'idle' && cells.every(cell => cell.model.executionCount !== null);
}"""


def run_chat_through_the_proxy(browser, lab, base_url: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    sockets: list[str] = []
    page.on("websocket", lambda websocket: sockets.append(websocket.url))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.goto(lab.lab(NOTEBOOK.name), timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
    last = page.evaluate(RUN_THROUGH, "ChatBox(me)")
    page.wait_for_function(RAN_THROUGH, arg=last, timeout=60_000, polling=250)
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert stderr.count() == 0, stderr.all_text_contents()

    # The link and the IFrame point at the proxy route under the base URL, never at 127.0.0.1.
    iframe = page.locator("iframe[src*='room=lobby']")
    iframe.wait_for(timeout=15_000)
    src = iframe.get_attribute("src")
    match = re.fullmatch(re.escape(base_url) + r"proxy/(\d+)/\?room=lobby&name=iframe", src)
    assert match, src
    port = match.group(1)
    link = page.locator("a[href*='room=lobby']").first.get_attribute("href")
    assert link == f"{base_url}proxy/{port}/?room=lobby&name=tab"
    assert "through the Jupyter server's proxy" in page.locator(".jp-Notebook").text_content()

    # The page in the IFrame loaded through the proxy and opened its WebSocket through it too.
    chat_page = page.frame_locator("iframe[src*='room=lobby']")
    chat_page.locator("#status", has_text=re.compile("^connected$")).wait_for(timeout=15_000)
    expected_ws = re.compile(r"^ws://127\.0\.0\.1:\d+" + re.escape(f"{base_url}proxy/{port}/ws/lobby")
                             + r"\?name=iframe$")
    assert [url for url in sockets if expected_ws.match(url)], sockets
    assert not [url for url in sockets if f":{port}/" in url], sockets  # never the server's own port

    # Page -> server -> the notebook's client (its chat box shows it).
    chat_page.locator("#text").fill("hello from the proxied page")
    chat_page.locator("#text").press("Enter")
    page.wait_for_function("document.querySelector('.asgi-lab-chat') && document.querySelector("
                           "'.asgi-lab-chat').innerText.includes('iframe: hello from the proxied page')",
                           timeout=15_000)
    # The notebook's chat box -> server -> the page, back through the proxy.
    entry = page.locator(".asgi-lab-chat input[type=text]")
    entry.fill("hello back from the notebook")
    entry.press("Enter")
    chat_page.locator("li[data-type=message]", has_text="hello back from the notebook").wait_for(timeout=15_000)
    assert chat_page.locator("li[data-type=message] .who").all_text_contents() == ["iframe:", "notebook:"]
    assert errors == []
    page.close()
