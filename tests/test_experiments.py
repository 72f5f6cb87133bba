"""The experiment machinery: process sampling, the runners end to end, JSON, charts, the CLI.

The end-to-end runs are tiny (20 clients, 2 s) but real: each server in its own process, the
load generator in another, as `python -m asgi_lab experiment` does.
"""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import time

import pytest
from matplotlib.figure import Figure

from asgi_lab.experiments import long_polling, sse_concurrency
from asgi_lab.experiments.measure import (NoProgress, PartProgress, TextProgress, load_result,
                                          make_progress, save_result)
from asgi_lab.experiments.procstats import ProcessSampler
from asgi_lab.experiments.servers import SERVERS, resolve_servers
from asgi_lab.viz import charts

CHILD = """
import threading, time
print("ready", flush=True)
time.sleep(0.3)
ballast = b"x" * (64 * 2**20)          # 64 MiB, every page written
stop = threading.Event()
for _ in range(5):
    threading.Thread(target=stop.wait).start()
end = time.process_time() + 0.3
while time.process_time() < end:       # burn 0.3 s of CPU
    pass
print("done", flush=True)
time.sleep(0.6)
stop.set()
"""


def test_procstats_samples_a_real_process_every_100_ms():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        with ProcessSampler(child.pid) as sampler:
            assert child.stdout.readline() == "ready\n"
            sampler.sample()
            sampler.mark("before")
            assert child.stdout.readline() == "done\n"  # however long a busy machine takes
            time.sleep(0.3)
            sampler.mark("after")
    finally:
        child.wait(20)
    samples = sampler.samples
    assert len(samples) >= 6
    gaps = [b.t - a.t for a, b in zip(samples, samples[1:])]
    assert 0.05 < sorted(gaps)[len(gaps) // 2] < 0.2  # the median gap is ~100 ms
    before, after = sampler.between(None, "before"), sampler.between("before", "after")
    assert max(s.rss for s in after) - before[-1].rss > 60 * 2**20
    assert max(s.threads for s in after) >= 6 and before[-1].threads == 1
    assert after[-1].cpu - before[-1].cpu > 0.25  # the 0.3 s burn, in 10 ms clock ticks
    assert all(s.vms >= s.rss for s in samples)


def test_procstats_stops_by_itself_when_the_process_exits():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    sampler = ProcessSampler(child.pid).start()
    child.wait(10)
    time.sleep(0.4)
    assert not sampler._thread.is_alive()
    assert sampler.stop()


@pytest.fixture(scope="module")
def sse_result(tmp_path_factory):
    """asgi against a 4-thread WSGI pool, 20 clients, an event every 0.5 s for 1.5 s: the
    starving pool in miniature."""
    out = tmp_path_factory.mktemp("sse") / "sse.json"
    result = sse_concurrency.run(clients=20, duration=1.5, interval=0.5, servers="asgi,wsgi-pool",
                                 pool_threads=4, progress=False, out=out)
    return result, out


def test_sse_experiment_end_to_end(sse_result):
    result, _ = sse_result
    runs = {run["server"]["name"]: run["summary"] for run in result["runs"]}
    assert list(runs) == ["asgi", "wsgi-pool"]
    asgi, pool = runs["asgi"], runs["wsgi-pool"]
    # Coroutines: everyone served, on one thread.
    assert asgi["served"] == 20 and asgi["never"] == 0 and asgi["errors"] == 0
    assert asgi["peak_threads"] == 1
    assert asgi["lag_ms"]["n"] == asgi["events"] >= 20 * 3
    # A pool of 4: 4 clients get their stream, 16 wait for a worker that never comes free.
    assert pool["served"] == 4 and pool["never"] == 16
    assert pool["peak_threads"] >= 4 + 1
    assert pool["ttfe_ms"]["n"] == 4
    for summary in runs.values():
        assert summary["peak_rss_mb"] >= summary["idle_rss_mb"] > 5
        assert summary["cpu_s"] >= 0
    table = sse_concurrency.format_table(result)
    assert "asgi" in table and "wsgi-pool" in table and "20/20" in table and "4/20" in table


def test_sse_result_round_trips_through_json(sse_result, tmp_path):
    result, out = sse_result
    assert load_result(out) == load_result(save_result(load_result(out), tmp_path / "again.json"))
    again = load_result(out)
    assert again["runs"][0]["summary"] == result["runs"][0]["summary"]
    assert sse_concurrency.format_table(again) == sse_concurrency.format_table(result)


def _labels(fig: Figure) -> list[str]:
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()
            if not line.get_label().startswith("_")]


def test_charts_have_a_series_per_server(sse_result):
    result, _ = sse_result
    lag = charts.lag_chart(result)
    assert isinstance(lag, Figure)
    assert [label.split(" ")[0] for label in _labels(lag)] == ["asgi", "wsgi-pool"]
    ttfe = charts.ttfe_chart(result)
    assert _labels(ttfe) == ["asgi", "wsgi-pool: 16 never served"]
    resources = charts.resources_chart(result)
    assert _labels(resources) == ["asgi", "wsgi-pool"] * 3  # RSS, threads, CPU

    bigger = copy.deepcopy(result)
    bigger["clients"] = 40
    sweep = {"experiment": "sse-sweep", "results": [result, bigger]}
    fig = charts.sweep_chart(sweep)
    assert _labels(fig) == ["asgi", "wsgi-pool"] * 3
    memory = fig.axes[0].get_lines()[0]
    assert list(memory.get_xdata()) == [20, 40]


def test_long_polling_experiment_end_to_end(tmp_path):
    result = long_polling.run(clients=20, duration=2.5, period=0.5, spread=0.2,
                              servers="asgi,wsgi-pool", pool_threads=4, progress=False,
                              out=tmp_path / "lp.json")
    runs = {run["server"]["name"]: run["summary"] for run in result["runs"]}
    asgi, pool = runs["asgi"], runs["wsgi-pool"]
    assert asgi["errors"] == 0 and asgi["expected_messages"] >= 20 * 2
    # Every waiting coroutine is woken; a busy machine may delay some re-requests past a
    # publication (0.5 s apart here), rarely more than a few.
    assert asgi["messages"] >= 0.8 * asgi["expected_messages"]
    assert asgi["peak_threads"] == 1
    # 4 workers, 20 waiters: each publication reaches at most the 4 requests being held.
    assert pool["messages"] <= 4 * (2.5 + 0.2) / 0.5 + 4
    assert pool["messages"] < asgi["messages"] / 2
    assert pool["peak_threads"] >= 5
    assert "asgi" in long_polling.format_table(result)
    fig = charts.longpoll_chart(load_result(tmp_path / "lp.json"))
    bars = [patch.get_label() for patch in fig.axes[0].patches]
    assert bars == ["asgi", "wsgi-pool"]


def test_cli_replots_a_saved_result_without_running_anything(sse_result, tmp_path):
    _, out = sse_result
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--replot", str(out),
                           "--charts", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "asgi" in done.stdout and "wsgi-pool" in done.stdout
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["sse-lag.png", "sse-resources.png",
                                                              "sse-ttfe.png"]


def test_cli_rejects_unknown_servers_clearly():
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--clients", "5",
                           "--servers", "asgi,tornado"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "unknown server 'tornado'" in done.stderr


def test_servers_and_progress_helpers():
    assert [spec.name for spec in resolve_servers("asgi, wsgi-pool")] == ["asgi", "wsgi-pool"]
    assert set(SERVERS) == {"asgi", "wsgi-threads", "wsgi-pool", "uvicorn", "gunicorn", "hypercorn",
                            "gevent", "waitress"}
    command = SERVERS["wsgi-pool"].command(8123, 7)
    assert command[command.index("--threads") + 1] == "7" and "8123" in command
    assert isinstance(make_progress(False), NoProgress)
    stream = io.StringIO()
    bar = TextProgress(stream)
    PartProgress(bar, 1, 2).update(0.5, "half of the second half")
    bar.close()
    assert stream.getvalue().startswith("\r[" + "#" * 22 + "." * 8 + "] half of the second half")


def test_conclusions_are_computed_from_the_numbers(sse_result):
    result, _ = sse_result
    text = sse_concurrency.describe(result)
    assert "all 20 clients served on 1 OS thread" in text
    assert "4 of 20 clients served. 16 of 20 clients never received a single event" in text
    changed = copy.deepcopy(result)
    changed["runs"][1]["summary"].update(served=20, never=0)
    assert "all 20 clients served" in sse_concurrency.describe(changed).split("wsgi-pool")[1]
    bigger = copy.deepcopy(result)
    bigger["clients"] = 40
    for run in bigger["runs"]:
        run["summary"]["peak_rss_mb"] += 1.0  # 1 MB more for 20 more clients
    sweep = sse_concurrency.describe_sweep({"results": [result, bigger]})
    assert "`asgi`, 20 to 40 clients: 51.2 KB of RSS and 0.00 OS threads" in sweep
    bigger["runs"][0]["summary"].update(clients=40, served=30, never=0, errors=0)
    sweep = sse_concurrency.describe_sweep({"results": [result, bigger]})
    assert ("30 of 40 served every event they were due; 10 received events, but fewer than "
            "they were due (their stream started late or fell behind)") in sweep


def test_experiment_fails_clearly_before_starting_when_n_cannot_be_reached():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.fail("no hard open-files limit here: cannot check the error path")
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--clients",
                           str(hard + 1), "--servers", "asgi"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "file descriptors are needed" in done.stderr and "The server needs one per client" in done.stderr


def test_gevent_serves_the_same_streams_on_one_thread():
    result = sse_concurrency.run(clients=20, duration=1.0, interval=0.5, servers="gevent",
                                 progress=False)
    (run,) = result["runs"]
    assert run["server"]["waits_in"] == "greenlet"
    summary = run["summary"]
    assert summary["served"] == 20 and summary["errors"] == 0
    assert summary["peak_threads"] <= 3  # the hub's thread (and gevent's resolver), not 20


def test_a_blocking_call_in_c_stalls_gevent_but_not_a_thread_per_client():
    from asgi_lab.experiments import stall

    result = stall.run(["gevent", "wsgi-threads"], clients=10, block_ms=400, interval=0.1,
                       duration=1.5)
    runs = {run["server"]["name"]: run for run in result["runs"]}
    gevent, threads = runs["gevent"], runs["wsgi-threads"]
    for run in (gevent, threads):
        assert run["errors"] == 0 and len(run["worst_late_ms"]) == 10
        assert run["block_request_ms"] >= 390
    assert gevent["stalled_clients"] == 10 and min(gevent["worst_late_ms"]) > 200
    assert threads["stalled_clients"] <= 2  # a busy machine may delay one, not all
    assert "gevent" in stall.format_table(result) and "10 of 10 other clients" in stall.describe(result)
    fig = charts.stall_chart(result)
    assert [label.split(" ")[0] for label in _labels(fig)] == ["gevent", "wsgi-threads"]


def test_address_space_splits_into_stacks_and_arenas():
    from asgi_lab.experiments import procstats

    default = procstats.thread_address_space(40)
    capped = procstats.thread_address_space(40, arena_max=2)
    for m in (default, capped):
        parts = m["parts"]
        # Every byte of the address space is in one part, and VMS agrees with the parts.
        assert abs(sum(p["size"] for p in parts.values()) - m["vms"]) < 2**20
        assert parts["thread stacks"]["mappings"] == 41  # 40 threads and the main one
        assert parts["thread stacks"]["size"] > 40 * 2**20  # stacks of MiBs, reserved
        assert parts["thread stacks"]["rss"] < parts["thread stacks"]["size"] / 50  # not used
    # glibc: 8 arenas per core (at most), 64 MiB each; MALLOC_ARENA_MAX=2 keeps one extra.
    assert capped["parts"]["malloc arenas"]["size"] == 64 * 2**20
    assert default["parts"]["malloc arenas"]["size"] > capped["parts"]["malloc arenas"]["size"]
    assert default["vms"] > capped["vms"]
    rows = procstats.address_space_rows(default, capped)
    assert rows[-1]["part"].startswith("total") and len(rows) == len(procstats.PARTS) + 1


def test_classify_recognises_arenas_and_stacks_by_their_shape():
    from asgi_lab.experiments.procstats import classify

    MiB = 2**20
    base = 0x7F0000000000  # a multiple of 64 MiB
    mappings = [
        {"start": base, "end": base + MiB, "perms": "rw-p", "path": "", "rss": 4096},  # arena
        {"start": base + MiB, "end": base + 64 * MiB, "perms": "---p", "path": "", "rss": 0},
        {"start": base + 64 * MiB, "end": base + 64 * MiB + 4096, "perms": "---p", "path": "",
         "rss": 0},  # guard
        {"start": base + 64 * MiB + 4096, "end": base + 72 * MiB + 4096, "perms": "rw-p",
         "path": "", "rss": 8192},  # stack
        {"start": base + 80 * MiB, "end": base + 81 * MiB, "perms": "rw-p", "path": "", "rss": 0},
        {"start": base + 90 * MiB, "end": base + 91 * MiB, "perms": "r-xp", "path": "/lib/libc.so.6",
         "rss": 0},
    ]
    parts = classify(mappings)
    assert parts["malloc arenas"] == {"mappings": 2, "size": 64 * MiB, "rss": 4096}
    assert parts["thread stacks"] == {"mappings": 1, "size": 8 * MiB + 4096, "rss": 8192}
    assert parts["other anonymous"]["size"] == MiB
    assert parts["files (python, libraries)"]["size"] == MiB


def test_cli_sweep_records_the_machine_and_leaves_thread_servers_out_of_big_runs(tmp_path):
    out = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--clients", "4,8",
                           "--duration", "0.5", "--servers", "asgi,wsgi-pool", "--pool-threads", "2",
                           "--thread-servers-up-to", "4", "--slim", "--note", "a test",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sweep = load_result(out)
    machine = sweep["machine"]
    assert sweep["note"] == "a test" and machine["cores"] >= 1 and machine["cpu_model"]
    assert machine["date"] and machine["python"] and len(machine["load_average"]) == 3
    assert sweep["command"].startswith("python -m asgi_lab experiment sse --clients 4,8")
    assert machine["commit"] is None or len(machine["commit"].split("+")[0]) == 40
    env = sweep["environment"]  # the older keys, still there for the notebooks that read them
    assert env["note"] == "a test" and env["cpus"] == machine["cores"] and env["command"] == sweep["command"]
    assert [[run["server"]["name"] for run in r["runs"]] for r in sweep["results"]] == \
        [["asgi", "wsgi-pool"], ["asgi"]]
    first = sweep["results"][0]
    assert first["slim"] and "lags_ms" not in first["runs"][0]["load"]
    assert len(first["runs"][1]["load"]["ttfe_ms"]) == 4
    assert first["runs"][1]["summary"]["never"] == 2  # a pool of 2, 4 clients
    charts_dir = tmp_path / "charts"
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--replot", str(out),
                           "--charts", str(charts_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in charts_dir.glob("*.png")) == [
        "sse-sweep-memory-per-client-8.png", "sse-sweep-never-served.png",
        "sse-sweep-resources-8.png", "sse-sweep-sweep.png", "sse-sweep-threads.png",
        "sse-sweep-ttfe-8.png"]  # no lag chart: a slim sweep keeps no per-event lags


def test_source_line_names_file_commit_date_and_machine():
    from asgi_lab.experiments.measure import source_line
    from asgi_lab.experiments.results import stamp

    result = stamp({}, "python -m asgi_lab experiment sse", note="shared")
    assert result["command"] == "python -m asgi_lab experiment sse" and result["machine"]["cores"] >= 1
    assert source_line(result).endswith("cores · Python " + result["machine"]["python"] + " · shared")
    # A file written before results.py kept the machine under "environment": still read.
    line = source_line({"environment": {"commit": "a" * 40 + "+dirty", "time": "2026-12-02T10:00:00",
                                        "cpu_model": "AMD EPYC", "cpus": 2, "python": "3.11.7",
                                        "note": "shared machine"}}, "data/ref.json")
    assert line == ("source: data/ref.json · commit aaaaaaaaaa+dirty · 2026-12-02 · AMD EPYC, "
                    "2 cores · Python 3.11.7 · shared machine")
    assert source_line({}) == "source: this run"


# -- the one launcher (experiments/servers.py) and the result files (experiments/results.py) ------

FAKE_MAIN = """
import socket, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
print("imported from", __file__, flush=True)
with socket.create_server(("127.0.0.1", port)) as listener:
    while True:
        connection, _ = listener.accept()
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\n\\r\\n")
        connection.close()
"""


def test_a_server_from_another_checkout_imports_that_checkout(tmp_path):
    """--baseline DIR: `python -m asgi_lab` would import this tree (or the editable
    install); from_checkout puts DIR first, whatever the current directory."""
    from asgi_lab.experiments.servers import ServerProcess, from_checkout, ours, with_baseline

    package = tmp_path / "checkout" / "asgi_lab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_MAIN)
    specs = with_baseline([ours("asgi", name="asgi_lab"), SERVERS["uvicorn"]], str(package.parent))
    assert [spec.name for spec in specs] == ["asgi_lab", "baseline", "uvicorn"]
    with ServerProcess(specs[1], app="asgi_lab.apps.hello:app", ready_path="/") as server:
        assert server.answers()
        assert f"imported from {package / '__main__.py'}" in server.output()
    with pytest.raises(ValueError, match="no asgi_lab package"):
        from_checkout(specs[0], str(tmp_path))
    with pytest.raises(ValueError, match="not one of our servers"):
        from_checkout(SERVERS["uvicorn"], str(package.parent))


def test_a_user_template_is_started_pinned_sampled_and_stopped_like_a_built_in():
    from asgi_lab.experiments.servers import ServerProcess, parse_server_option

    spec = parse_server_option('mine={python} -m asgi_lab asgi asgi_lab.apps.hello:app '
                               '--host {host} --port {port} --log-level warning')
    assert spec.name == "mine" and "{port}" in spec.label
    server = ServerProcess(spec, ready_path="/", pin="0").start()
    try:
        assert server.ps.cpu_affinity() == [0]  # taskset --cpu-list 0
        with server.sampler() as sampler:
            time.sleep(0.25)
        assert sampler.samples and sampler.samples[-1].threads >= 1 and sampler.samples[-1].rss > 2**20
        assert server.cpu_seconds() > 0
    finally:
        assert server.stop() == 0  # SIGTERM: a graceful exit
    with pytest.raises(ValueError, match="{port}"):
        parse_server_option("mine=gunicorn myapp:app")
    with pytest.raises(ValueError, match="NAME="):
        parse_server_option("gunicorn -b {host}:{port} myapp:app")


def test_a_server_that_exits_at_once_is_reported_with_its_output():
    from asgi_lab.experiments.servers import ServerProcess, from_template

    spec = from_template("broken", "{python} -c 'import sys; print(\"no app here\"); sys.exit(3)' {port}")
    with pytest.raises(RuntimeError, match="broken exited with 3:\nno app here"):
        ServerProcess(spec).start()


def test_experiment_cli_runs_a_user_template_beside_a_built_in(tmp_path):
    """`--server NAME="COMMAND"`: a gunicorn command of the user's, in the same table."""
    out = tmp_path / "mine.json"
    template = ("gthread=gunicorn -k gthread --threads 2 -b {host}:{port} --log-level warning "
                "asgi_lab.apps.sse:wsgi_app")
    done = subprocess.run([sys.executable, "-m", "asgi_lab", "experiment", "sse", "--clients", "4",
                           "--duration", "0.6", "--interval", "0.3", "--servers", "asgi",
                           "--server", template, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = load_result(out)
    runs = {run["server"]["name"]: run for run in result["runs"]}
    assert list(runs) == ["asgi", "gthread"]
    mine = runs["gthread"]
    assert mine["server"]["label"].startswith("gunicorn -k gthread")
    assert mine["summary"]["served"] == 2 and mine["summary"]["never"] == 2  # 2 threads, 4 clients
    assert mine["summary"]["peak_threads"] >= 3 and mine["summary"]["peak_rss_mb"] > 5
    assert "gthread" in done.stdout and "asgi" in done.stdout
    assert result["command"].startswith("python -m asgi_lab experiment sse") and "--server" in result["command"]


def test_result_files_record_command_and_machine_and_read_old_ones(tmp_path):
    from asgi_lab.experiments.results import command_line, machine_of, read_result, write_result

    path = write_result({"benchmark": "x", "runs": [{"round": 0, "rps": 1.0}]}, tmp_path / "r" / "x.json",
                        note="shared")
    result = read_result(path)
    assert set(result["machine"]) == {"commit", "date", "cpu_model", "cores", "python",
                                      "load_average", "platform"}
    assert result["command"] == command_line() and result["note"] == "shared"
    assert result["runs"] == [{"round": 0, "rps": 1.0}]
    again = read_result(write_result(result, tmp_path / "y.json"))
    assert again["machine"] == result["machine"]  # stamped once, when it was measured
    old = {"environment": {"commit": "c" * 40, "time": "2026-12-02T16:25:58+0000", "cpus": 2,
                           "cpu_model": "AMD EPYC", "python": "3.11.7", "command": "python -m x"}}
    facts = machine_of(old)
    assert (facts["cores"], facts["date"][:10], facts["command"]) == (2, "2026-12-02", "python -m x")


def test_websocket_experiment_holds_clients_on_one_thread_and_refuses_wsgi_servers():
    from asgi_lab.experiments import ws_concurrency

    result = ws_concurrency.run(clients=6, duration=0.8, send_interval=0.2, spread=0.2,
                                servers="asgi", progress=False)
    (run,) = result["runs"]
    summary = run["summary"]
    assert summary["served"] == 6 and summary["errors"] == 0 and summary["peak_threads"] == 1
    assert summary["sent"] >= 6 * 3 and summary["received"] >= summary["sent"] - 6
    assert summary["lag_ms"]["n"] == summary["received"] and summary["handshake_ms"]["n"] == 6
    assert "6/6" in ws_concurrency.format_table(result) and result["machine"]["cores"] >= 1
    with pytest.raises(ValueError, match="cannot hold a WebSocket"):
        ws_concurrency.run(clients=2, duration=0.1, servers="asgi,wsgi-pool", progress=False)
