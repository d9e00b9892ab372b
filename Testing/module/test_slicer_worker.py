"""The module's runs on the warm analysis worker (NormativeADSlicerLib.process): the same process serves
one run after another, a cancel replaces it, a worker killed while idle is replaced at the next run.
Real restores of the shipped sample scan; no scene is needed."""

from __future__ import annotations

import signal
import time

import pytest

from slicer_testing import SAMPLE_T1

from NormativeADLib.core.options import RestoreOptions
from NormativeADSlicerLib import process
from NormativeADSlicerLib.process import ProcessRunner

pytestmark = pytest.mark.slow
TIMEOUT_S = 300


@pytest.fixture
def runs(tmp_path):
    """Makes runners of the fast model on the sample scan, each with its own output folder."""
    process.close_idle_workers()
    env = {"NORMATIVEAD_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "2"}
    made = []

    def make(model: str = "intensity-t1") -> ProcessRunner:
        request = RestoreOptions(input_path=SAMPLE_T1, out_dir=tmp_path / f"out{len(made)}", model=model,
                                 device="cpu")
        made.append(ProcessRunner(request, env=env))
        return made[-1]

    yield make
    process.close_idle_workers()


def finished(runner: ProcessRunner):
    runner.start()
    outcome = runner.wait(timeout=TIMEOUT_S)
    assert outcome.ok, outcome.message + "\n" + "\n".join(outcome.log[-20:])
    return outcome


def test_runs_one_after_another_share_one_worker(runs):
    first, second, seen = runs(), runs("dae-synth"), []
    second.on_event = seen.append
    finished(first)  # ends at "done": the worker draws its figures while the second run is handed to it
    finished(second)
    assert second._process.pid == first._process.pid and first._process.poll() is None
    assert list(second.request.out_dir.glob("heatmap.*"))
    # the second run saw only its own events, not the end of the first's
    assert {e.get("out") for e in seen if "out" in e} == {str(second.request.out_dir)}
    assert [e["event"] for e in seen if e["event"] != "progress"] == ["done"]
    assert (first.request.out_dir / "report.png").is_file()  # drawn before the worker took the second job
    deadline = time.monotonic() + 60
    while not (second.request.out_dir / "registration.png").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (second.request.out_dir / "report.png").is_file()


def test_a_cancel_replaces_the_worker(runs):
    doomed, events = runs("ae-ixi-t1"), []
    doomed.on_event = events.append
    doomed.start()
    deadline = time.monotonic() + TIMEOUT_S
    while doomed.poll() and not events and time.monotonic() < deadline:  # the job has begun
        time.sleep(0.05)
    doomed.cancel()
    assert doomed.wait(timeout=30).status == "cancelled" and doomed._process.poll() is not None
    left = {p.name for p in doomed.request.out_dir.rglob("*")}
    assert left <= {".normativead.lock"}, left  # no output; the lock is released by the kill (flock)
    after = runs()
    finished(after)
    assert after._process.pid != doomed._process.pid


def test_a_worker_killed_while_idle_is_replaced(runs):
    first = runs()
    finished(first)
    first._process.send_signal(signal.SIGKILL)
    first._process.wait(timeout=30)
    second = runs()
    finished(second)
    assert second._process.pid != first._process.pid


def test_what_the_worker_prints_reaches_the_console(runs, caplog):
    """A run's messages (here its error) go to Python's logging, which Slicer's Python console shows."""
    import logging

    failing = runs("no-such-model")
    failing.start()
    with caplog.at_level(logging.INFO, logger="NormativeAD.worker"):
        outcome = failing.wait(timeout=TIMEOUT_S)
    assert outcome.status == "failed"
    assert any("no-such-model" in r.getMessage() for r in caplog.records if r.name == "NormativeAD.worker")


def test_a_cancel_while_the_process_shuts_down_starts_no_worker(runs):
    """A web session stopped by SIGTERM cancels its run on the way out: its worker is killed and no fresh
    one is started for a next run that will not come (it would only delay the exit while it imports)."""
    doomed = runs()
    doomed.start()
    worker = doomed._process
    try:
        process.shut_down()
        doomed.cancel()
        assert doomed.wait(timeout=30).status == "cancelled" and worker.poll() is not None
        process.prewarm()
        assert not process._idle, "a worker was started while shutting down"
    finally:
        process._shutting_down = False  # this test process goes on


def test_a_worker_started_ahead_is_found_after_the_web_server_sets_its_variables(runs, monkeypatch):
    """A web session starts its worker ahead, then trame and wslink set their variables (WSLINK_READY_MSG)
    once the page is served: the first Run still finds that worker instead of starting a cold one (about
    4 s of imports on this CPU, a third of the page's time to its first heatmap)."""
    ahead = runs()
    process.prewarm(ahead.command(), ahead.environment())
    started_ahead = [w.process.pid for w in process._idle]
    monkeypatch.setenv("WSLINK_READY_MSG", "")
    first = runs()
    finished(first)
    assert started_ahead and [first._process.pid] == started_ahead
