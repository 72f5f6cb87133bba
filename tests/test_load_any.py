"""`python -m asgi_lab load ...`: any server on loopback, framework apps included.

Each test serves an app on 127.0.0.1 (port 0) and loads it for about a second from a
generator process of its own.
"""

import json

import pytest

from asgi_lab.background import serve_in_background
from asgi_lab.cli import main
from asgi_lab.load.command import RemoteTarget, check_url, is_loopback, run_load
from asgi_lab.load.clients import stamp
from asgi_lab.viz.load_charts import load_chart


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("10.0.0.1", False), ("example.org", False), ("0.0.0.0", False), ("localhost.example.org", False),
])
def test_only_loopback_is_a_target_by_default(host, loopback):
    assert is_loopback(host) is loopback


def test_a_remote_target_is_refused_and_the_reason_given():
    with pytest.raises(RemoteTarget, match="not a loopback address.*--allow-remote"):
        check_url("sse", "http://example.org/events")
    assert check_url("sse", "http://example.org/events", allow_remote=True)
    with pytest.raises(ValueError, match="needs a ws:// URL"):
        check_url("ws", "http://127.0.0.1:8000/")


def test_the_command_refuses_a_remote_target_before_loading(capsys):
    assert main(["load", "http", "http://192.0.2.1/", "--clients", "1", "--duration", "0.1"]) == 2
    assert "refusing to load '192.0.2.1'" in capsys.readouterr().err


def test_events_in_another_format_count_without_a_lag():
    assert stamp(b" 3 100.5 100.75") == (3, 100.5, 100.75)
    assert stamp(b" {\"price\": 3}") is None and stamp(b"a b c") is None and stamp(b"hello") is None


def test_sse_load_on_a_fastapi_stream(tmp_path):
    from asgi_lab.apps.frameworks.fastapi_app import app

    with serve_in_background(app, name="load-fastapi", access_log=False) as server:
        result = run_load("sse", server.url + "/events?interval=0.2", clients=10, duration=1.0,
                          interval=0.2, spread=0.2, progress=False, command="test")
    summary = result["summary"]
    assert summary["with_errors"] == 0 and summary["clients_delivered_to"] == 10
    assert summary["delivered"] >= 10 * 3  # 1.2 s at one event per 0.2 s, less the ramp
    assert summary["lag_ms"]["n"] == summary["delivered"] and summary["ttfe_ms"]["n"] == 10
    machine = result["machine"]
    assert result["command"] == "test" and machine["cores"] >= 1 and machine["date"]
    fig = load_chart(result)
    assert [line.get_label() for line in fig.axes[3].lines] == ["lag"]


def test_sse_load_on_a_flask_stream_holds_a_thread_per_client():
    from asgi_lab.apps.frameworks.flask_app import app

    # Four worker threads, eight clients: four are served, four wait for a thread.
    with serve_in_background(app, "wsgi", name="load-flask", access_log=False, threads=4) as server:
        result = run_load("sse", server.url + "/events?interval=0.2", clients=8, duration=1.0,
                          interval=0.2, spread=0.1, progress=False)
    assert result["summary"]["clients_delivered_to"] == 4


def test_ws_load_on_the_echo_app_measures_the_round_trip():
    from asgi_lab.apps.echo import app

    with serve_in_background(app, name="load-echo", access_log=False) as server:
        result = run_load("ws", server.ws_url + "/", clients=6, duration=1.0, send_interval=0.25,
                          spread=0.2, progress=False)
    load, summary = result["load"], result["summary"]
    assert summary["with_errors"] == 0 and summary["handshake_ms"]["n"] == 6
    # Every message came back, but perhaps the last one: still on its way when the run ended.
    assert all(0 <= sent - received <= 1 for sent, received in zip(load["sent"], load["received"]))
    assert summary["sent"] >= 6 * 3 and summary["delivered"] >= 6 * 2
    assert summary["lag_ms"]["n"] == summary["delivered"]


def test_http_and_longpoll_load_through_the_command(tmp_path, capsys):
    from asgi_lab.apps import hello, sse

    with serve_in_background(hello.app, name="load-hello", access_log=False) as server:
        out = tmp_path / "http.json"
        assert main(["load", "http", server.url + "/", "--clients", "2", "--duration", "0.5",
                     "--out", str(out), "--charts", str(tmp_path), "--no-progress"]) == 0
    with serve_in_background(sse.app, name="load-sse-app", access_log=False) as server:
        assert main(["load", "longpoll", server.url + "/poll?period=0.3", "--clients", "4",
                     "--duration", "1", "--period", "0.3", "--spread", "0.1",
                     "--out", str(tmp_path / "lp.json"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "requests/s" in printed and "delivered" in printed
    result = json.loads(out.read_text())
    assert result["summary"]["requests"] > 0 and result["summary"]["errors"] == 0
    from asgi_lab.experiments.results import command_line

    assert result["command"] == command_line()  # this process's (pytest's), as typed
    assert result["machine"]["cores"] >= 1
    assert (tmp_path / "load-http.png").stat().st_size > 5000
    longpoll = json.loads((tmp_path / "lp.json").read_text())
    assert longpoll["summary"]["with_errors"] == 0 and longpoll["summary"]["delivered"] >= 4
    # Re-plotted from the saved file, without loading anything.
    assert main(["load", "longpoll", "--replot", str(tmp_path / "lp.json"),
                 "--charts", str(tmp_path)]) == 0
    assert (tmp_path / "load-longpoll.png").exists()
