"""The example pair of "your own apps" (`asgi_lab/apps/own/`): a Flask and a FastAPI live report
over SSE, each event one real query on the shop database; and `experiments/your_apps.py`,
which serves them with command templates and loads them side by side."""

import os

import pytest

pytest.importorskip("flask")
pytest.importorskip("fastapi")

from asgi_lab import serve_in_background  # noqa: E402
from asgi_lab.apps.own import fastapi_report, flask_report  # noqa: E402
from asgi_lab.db import shop  # noqa: E402
from asgi_lab.exercises.client import request  # noqa: E402
from asgi_lab.experiments import your_apps  # noqa: E402

APPS = {"flask": (flask_report.app, "wsgi"), "fastapi": (fastapi_report.app, "asgi")}


@pytest.fixture(params=list(APPS))
def served(request):
    app, kind = APPS[request.param]
    with serve_in_background(app, kind, name=f"test-own-{request.param}", access_log=False) as server:
        yield server


def test_report_is_the_real_query(served):
    response = request(served.address, target="/report?orders=1000", timeout=30)
    assert response.status == 200
    assert response.body.decode().startswith(f"{shop.TOP_CUSTOMER} spent ")
    assert request(served.address, target="/ready").body == b"ready"


def test_events_carry_stamps_and_the_report(served):
    response = request(served.address, target="/events?interval=0.05&orders=500&limit=3", timeout=30)
    assert response.status == 200
    assert response.header(b"content-type").startswith(b"text/event-stream")
    events = [e for e in response.body.decode().split("\n\n") if e.strip()]
    assert len(events) == 3
    for seq, event in enumerate(events, 1):
        comment, id_line, data = event.split("\n")
        assert comment.startswith(f": {shop.TOP_CUSTOMER} spent ")
        assert id_line == f"id: {seq}"
        # the lab's stamp format, `data: SEQ DUE SENT`: the load generator can time it
        number, due, sent = data[len("data:"):].split()
        assert number == str(seq) and float(sent) >= float(due) - 0.001


def test_command_spec_fills_the_template():
    spec = your_apps.specs_from({"mine": "python -m asgi_lab asgi my:app --host {host} --port {port}"},
                                {"mine": "coroutine"})[0]
    argv = spec.command(8123, 0)
    assert argv[1:] == ["-m", "asgi_lab", "asgi", "my:app", "--host", "127.0.0.1", "--port", "8123"]
    assert os.path.basename(argv[0]).startswith("python") and os.access(argv[0], os.X_OK)
    assert spec.waits_in == "coroutine" and spec.name == "mine"


def test_side_by_side_threads_against_coroutines(tmp_path):
    """The same stream, the same query, the same load: the WSGI app holds a thread per client,
    the ASGI app a thread only while a query runs (the default executor's, bounded)."""
    clients = min((os.cpu_count() or 2) + 10, 40)  # more than the default executor's threads
    result = your_apps.run_sse({
        "flask": "python -m asgi_lab wsgi asgi_lab.apps.own.flask_report:app --threads 0 "
                 "--port {port} --no-access-log --log-level warning",
        "fastapi": "python -m asgi_lab asgi asgi_lab.apps.own.fastapi_report:app --port {port} "
                   "--no-access-log --log-level warning",
    }, path="/events?interval=0.3&orders=500", clients=clients, duration=1.0, interval=0.3,
        waits_in={"flask": "thread", "fastapi": "coroutine"}, progress=False,
        out=tmp_path / "pair.json")
    flask, fastapi = (run["summary"] for run in result["runs"])
    for summary in (flask, fastapi):
        assert summary["errors"] == 0 and summary["never"] == 0, your_apps.format_table(result)
        assert summary["events"] >= clients * 2
    assert flask["peak_threads"] >= clients
    assert fastapi["peak_threads"] < clients
    assert result["runs"][0]["server"]["command"].startswith("python -m asgi_lab wsgi")
    assert (tmp_path / "pair.json").exists()
    fig = your_apps.chart(result)
    assert fig.axes[0].get_title(loc="left") == f"{clients} clients: every one got its first event"
    assert "on at most" in your_apps.describe(result)
