"""The async pitfalls of notebook 05: the interleaved blocking-loop experiment, the sentences
it computes (each branch, including "too noisy"), and the costs of async (a task's lost
exception, asyncio's debug mode), on real servers over loopback."""

from __future__ import annotations

import logging
import sys

import pytest

from asgi_lab.apps import pitfalls
from asgi_lab.experiments import async_costs, blocking_loop
from asgi_lab.experiments.blocking_loop import Run


def run(variant, work_ms, slowest, probe, lag, cores=1.0, n=4, round_=0):
    """A made-up Run: latencies spread evenly up to `slowest`, `cores` busy over 1 s."""
    latencies = [slowest * (i + 1) / n for i in range(n)]
    return Run(variant, work_ms, n, latencies, probe, lag, 1.0, [200] * (n + 1), cpu=cores,
               round=round_)


# -- the interleaved sweep ------------------------------------------------------------------------

def test_sweep_interleaves_the_variants_and_rotates_their_order():
    apps = {"time.sleep": pitfalls.blocking_sleep, "asyncio.sleep": pitfalls.with_asyncio_sleep}
    runs = blocking_loop.sweep(apps, work_ms=(0, 40), concurrency=3, rounds=2)
    assert [(r.round, r.work_ms, r.variant) for r in runs] == [
        (0, 0, "time.sleep"), (0, 0, "asyncio.sleep"), (0, 40, "time.sleep"), (0, 40, "asyncio.sleep"),
        (1, 0, "asyncio.sleep"), (1, 0, "time.sleep"), (1, 40, "asyncio.sleep"), (1, 40, "time.sleep")]
    assert all(r.statuses == [200] * 4 for r in runs)
    typical = blocking_loop.medians(runs)
    assert [(r.variant, r.work_ms, r.rounds) for r in typical] == [
        ("time.sleep", 0, 2), ("asyncio.sleep", 0, 2), ("time.sleep", 40, 2), ("asyncio.sleep", 40, 2)]
    blocked = blocking_loop.pick(runs, "time.sleep")
    assert blocked.work_ms == 40 and blocked.slowest > 0.1  # three 40 ms sleeps, one by one
    table = blocking_loop.table(runs)
    assert "median of 2 rounds" in table and "cores" not in table
    assert table.splitlines()[1].startswith("time.sleep") and table.splitlines()[2].startswith("time.sleep")


def test_medians_take_each_number_over_the_rounds():
    runs = [run("a", 10, slowest=s, probe=p, lag=l, cores=c, round_=i)
            for i, (s, p, l, c) in enumerate([(0.4, 0.3, 0.2, 1.0), (0.8, 0.9, 0.1, 0.5),
                                               (0.6, 0.1, 0.3, 2.0)])]
    (typical,) = blocking_loop.medians(runs)
    assert typical.rounds == 3 and typical.round == -1
    assert typical.slowest == pytest.approx(0.6) and typical.probe_latency == pytest.approx(0.3)
    assert typical.loop_lag == pytest.approx(0.2) and typical.cores == pytest.approx(1.0)
    assert blocking_loop.spread(runs, "a", 10) == (0.1, 0.3, 0.9)
    assert blocking_loop.medians(runs[:1]) == runs[:1]
    with pytest.raises(KeyError, match="no run of 'b'"):
        blocking_loop.pick(runs, "b")


def test_runs_with_rounds_and_cpu_round_trip_through_json(tmp_path):
    runs = [run("a", 10, 0.4, 0.3, 0.2, cores=1.5, round_=2)]
    blocking_loop.save(runs, tmp_path / "runs.json")
    assert blocking_loop.load(tmp_path / "runs.json") == runs


def test_plot_draws_a_line_per_variant_from_zero():
    import matplotlib

    matplotlib.use("Agg")
    runs = [run(v, w, 0.1, p, 0.01, round_=r) for r in range(2) for v, p in (("x", 0.2), ("y", 0.001))
            for w in (0, 50)]
    ax = blocking_loop.plot(runs)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x", "y"]
    assert ax.get_ylim()[0] == 0 and "2 rounds" in ax.get_xlabel()


# -- the sentences computed from the numbers ---------------------------------------------------

def test_one_by_one_is_claimed_only_when_the_numbers_show_it():
    clear = [run("time.sleep", 50, slowest=0.205, probe=0.18, lag=0.15),
             run("asyncio.sleep", 50, slowest=0.055, probe=0.002, lag=0.003)]
    text = blocking_loop.explain_one_by_one(clear)
    assert "**205 ms**" in text and "one after another" in text and "too noisy" not in text
    # A busy machine slowed the asyncio.sleep requests down as much as the blocking ones.
    noisy = [clear[0], run("asyncio.sleep", 50, slowest=0.21, probe=0.15, lag=0.15)]
    text = blocking_loop.explain_one_by_one(noisy)
    assert "too noisy" in text and "one after another" not in text and "cores" in text


def test_the_fixes_are_called_flat_only_when_they_are():
    runs = [run(v, w, 0, p, 0) for v, w, p in [
        ("time.sleep", 0, 0.001), ("time.sleep", 100, 0.38), ("asyncio.sleep", 0, 0.002),
        ("asyncio.sleep", 100, 0.003), ("asyncio.to_thread", 100, 0.004)]]
    text = blocking_loop.explain_fixes(runs, blocking=("time.sleep",))
    assert "**380 ms**" in text and "**4 ms**" in text and "too noisy" not in text
    runs[-1] = run("asyncio.to_thread", 100, 0, 0.04, 0)  # a busy machine, still far below
    assert "**40 ms**" in blocking_loop.explain_fixes(runs, blocking=("time.sleep",))
    runs[-1] = run("asyncio.to_thread", 100, 0, 0.09, 0)  # as long as half a request's work
    text = blocking_loop.explain_fixes(runs, blocking=("time.sleep",))
    assert "too noisy" in text and "`asyncio.to_thread` at 100 ms, 90 ms" in text


CPU = {"in the coroutine": dict(slowest=0.45, probe=0.5, lag=0.4, cores=1.0),
       "asyncio.to_thread": dict(slowest=0.5, probe=0.1, lag=0.03, cores=1.0),
       "process pool": dict(slowest=0.25, probe=0.002, lag=0.004, cores=1.8)}


def cpu_runs(**changes):
    numbers = {name: {**values, **changes.get(name, {})} for name, values in CPU.items()}
    return [run(name, 100, **values) for name, values in numbers.items()]


def test_the_cpu_story_when_the_machine_lets_it_show():
    text = blocking_loop.explain_cpu(cpu_runs())
    assert "too noisy" not in text and "free-threaded" not in text
    assert "the probe took **2 ms**" in text and "stalled at most 30 ms" in text
    assert "**1.0 core** busy" in text and "**1.8 cores** busy" in text and "1.8× sooner" in text


def test_the_cpu_story_says_what_a_busy_machine_hid():
    def processes(text):
        return text.split("**Processes.**")[1]

    busy = processes(blocking_loop.explain_cpu(cpu_runs(**{"process pool": dict(cores=0.9, slowest=0.5)})))
    assert "only 0.9 cores busy" in busy and "free loop" in busy and "sooner" not in busy
    blurred = processes(blocking_loop.explain_cpu(cpu_runs(**{"process pool": dict(slowest=0.44)})))
    assert "**1.8 cores** busy" in blurred and "blurred" in blurred and "sooner" not in blurred
    stalled = blocking_loop.explain_cpu(cpu_runs(**{"process pool": dict(probe=0.3, lag=0.3)}))
    assert stalled.startswith("**This run was too noisy")
    no_breath = blocking_loop.explain_cpu(cpu_runs(**{"asyncio.to_thread": dict(lag=0.35)}))
    assert "the loop breathed" not in no_breath and "too noisy" in no_breath


def test_a_starved_run_says_so_and_claims_nothing_the_times_contradict():
    text = blocking_loop.explain_cpu(cpu_runs(**{
        "in the coroutine": dict(cores=0.2, slowest=1.7), "asyncio.to_thread": dict(cores=0.3, slowest=1.2),
        "process pool": dict(cores=0.3, slowest=1.7)}))
    assert text.startswith("*A busy machine.*") and "got 0.2 of one" in text
    assert "not done any sooner" not in text and "differs by the machine's other work" in text
    assert "only 0.3 cores busy" in text


def test_threads_on_more_than_one_core_are_not_explained_by_the_gil():
    text = blocking_loop.explain_cpu(cpu_runs(**{"asyncio.to_thread": dict(cores=1.9)}))
    assert "free-threaded" in text and "only the thread holding the GIL" not in text


def test_cpu_bound_variants_on_a_real_server():
    """The claims that hold on any machine: only the coroutine stalls the loop for a whole
    computation; threads under the GIL never keep much more than one core busy."""
    assert pitfalls.warm_up_process_pool() == 2
    try:
        runs = blocking_loop.sweep(pitfalls.CPU_VARIANTS, work_ms=(60,), concurrency=3)
    finally:
        pitfalls.shutdown_process_pool()
    inline, thread, process = blocking_loop.medians(runs)
    assert all(r.statuses == [200] * 4 for r in runs)
    assert inline.loop_lag > 0.05 and process.loop_lag < inline.loop_lag
    if getattr(sys, "_is_gil_enabled", lambda: True)():  # not on a free-threaded build
        assert thread.cores < 1.3
    assert "cores" in blocking_loop.table(runs, cores=True)


def test_cpu_work_is_calibrated_on_cpu_time():
    rate = pitfalls.iterations_per_ms()
    assert rate > 100 and pitfalls.iterations_per_ms() == rate  # measured once
    assert pitfalls.cpu_work(1, rate) == pitfalls._spin(int(rate))


# -- the costs of async ---------------------------------------------------------------------------

def test_a_forgotten_task_fails_where_nobody_looks(capfd):
    seen = async_costs.task_exception(pitfalls.fire_and_forget)
    assert (seen.status, seen.body) == (200, "welcome!")
    (entry,) = seen.logged
    assert (entry.logger, entry.level, entry.headline) == ("asyncio", "ERROR",
                                                           "Task exception was never retrieved")
    assert entry.exception == "ConnectionRefusedError(111, 'Connection refused')"
    assert [frame.split(":")[0] for frame in entry.frames] == ["send_welcome_email", "smtp_deliver"]
    assert not seen.shows_handler and not seen.shows_request and entry.created_at == []
    assert seen.after is not None and seen.after < 2
    assert "/work" not in entry.message and "asgi_lab/apps/pitfalls.py" in entry.message
    text = async_costs.explain_forgotten_task(seen)
    assert "**200 'welcome!'**" in text and "does not show the handler" in text
    assert capfd.readouterr().err == ""  # collected as data, not printed


def test_debug_mode_adds_where_the_task_was_created():
    seen = async_costs.task_exception(pitfalls.fire_and_forget, debug=True)
    (entry,) = seen.logged
    assert seen.shows_handler and not seen.shows_request
    assert any(frame.startswith("fire_and_forget: asyncio.create_task(") for frame in entry.created_at)
    assert async_costs.explain_forgotten_task(seen).endswith(
        "It does not show the request that caused it.")


def test_the_fixes_bring_the_failure_to_the_handler_or_name_the_request():
    group = async_costs.task_exception(pitfalls.with_task_group)
    assert group.status == 500 and group.shows_handler
    (entry,) = group.logged
    assert entry.logger == "asgi_lab.error" and entry.exception.startswith("ExceptionGroup(")
    assert any("smtp_deliver" in frame for frame in entry.frames)
    kept = async_costs.task_exception(pitfalls.with_kept_task, target="/signup?user=grace")
    assert kept.status == 200 and kept.shows_request and not pitfalls.background_tasks
    (entry,) = kept.logged
    assert entry.logger == "asgi_lab.apps.pitfalls"
    assert entry.headline == "Background task 'welcome e-mail for GET /signup?user=grace' failed"
    text = async_costs.explain_fixes(group, kept)
    assert "**500**" in text and "runs through the handler" in text and "names the request" in text


def test_debug_mode_logs_the_slow_callback_and_only_that(capfd):
    status, slow = async_costs.slow_callbacks(pitfalls.blocking_sleep, work_ms=150)
    assert status == 200 and len(slow) == 1
    (record,) = slow
    assert (record.logger, record.level, record.coroutine) == ("asyncio", "WARNING", "blocking_sleep")
    assert record.seconds >= 0.15 and "/work" not in record.callback
    assert async_costs.slow_callbacks(pitfalls.with_asyncio_sleep, work_ms=150) == (200, [])
    assert capfd.readouterr().err == ""


def test_the_slow_callback_sentences():
    record = async_costs.SlowCallback("asyncio", "WARNING", "<Task ...>", "blocking_sleep", 0.152)
    text = async_costs.explain_slow_callbacks((200, [record]), (200, []))
    assert "**1 WARNING**" in text and "**152 ms**" in text and "caused no record" in text
    assert "hints, not proofs" in async_costs.explain_slow_callbacks((200, [record]), (200, [record]))
    assert "logged **nothing**" in async_costs.explain_slow_callbacks((200, []), (200, []))


def test_debug_mode_is_switched_back_off():
    from asgi_lab.background import serve_in_background

    with serve_in_background(pitfalls.with_asyncio_sleep, lifespan="off",
                             access_log=False) as server:
        with async_costs.debug_mode(server.loop, 0.05) as loop:
            assert loop.get_debug() and loop.slow_callback_duration == 0.05
        assert not server.loop.get_debug() and server.loop.slow_callback_duration == 0.1


def test_collect_log_keeps_records_off_stderr_and_restores_the_loggers(capfd):
    logger = logging.getLogger("asyncio")
    with async_costs.collect_log("asyncio") as records:
        logger.error("caught")
        logger.info("below the level")
    assert [r.getMessage() for r in records] == ["caught"]
    assert logger.propagate and capfd.readouterr().err == ""


def test_short_paths_keep_what_a_reader_needs():
    text = ('File "/home/x/wt/asgi_lab/apps/pitfalls.py", line 3 and '
            '/usr/lib/python3.11/asyncio/tasks.py:384 and /opt/other/thing.py')
    assert async_costs.short_paths(text) == (
        'File "asgi_lab/apps/pitfalls.py", line 3 and asyncio/tasks.py:384 and thing.py')


# -- a real database: the blocking driver and its three fixes ----------------------------------

def test_a_real_query_blocks_the_loop_and_the_fixes_do_not():
    pitfalls.warm_up_database()
    # Three interleaved rounds; each variant judged by its least-disturbed round (its smallest
    # lag): another process taking the CPU adds lag to any variant, never removes a stall.
    runs = blocking_loop.sweep(pitfalls.DB_VARIANTS, work_ms=(60,), concurrency=3, rounds=3)
    assert all(run.statuses == [200] * 4 for run in runs)
    least = {variant: min((run for run in runs if run.variant == variant), key=lambda run: run.loop_lag)
             for variant in pitfalls.DB_VARIANTS}
    blocked = least["blocking driver"]
    assert blocked.loop_lag > 0.05 and blocked.probe_latency > 0.05  # one query stalls it all
    for fix in ("asyncio.to_thread", "thread pool", "async driver"):
        assert least[fix].loop_lag < blocked.loop_lag / 2, (fix, least[fix], blocked)


def test_the_database_apps_answer_the_top_customer():
    from asgi_lab.background import serve_in_background
    from asgi_lab.exercises.client import request

    for app in pitfalls.DB_VARIANTS.values():
        with serve_in_background(app, lifespan="off", access_log=False) as server:
            assert request(server.address, target="/?ms=5").body == b"Ada Lovelace"
            assert request(server.address, target="/?ms=0").body == b"no query"
