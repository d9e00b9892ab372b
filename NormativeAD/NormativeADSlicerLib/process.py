"""Running the NormativeAD command line in a warm worker process, with streamed progress and cancel.

Lifecycle: ProcessRunner(request).start() hands the request's command line (`restore ...
--progress json`) to an analysis worker (`python -m NormativeADLib.cli.worker`, see its docstring): an
idle one kept from an earlier run when there is one, so that the imports and, for a second model on
the same scan, the registration are not paid again; a fresh one otherwise. A reader thread queues
the worker's output lines; poll() (called by a GUI timer in Slicer, or by wait() in blocking mode)
parses them into events and calls on_event; once the outputs are in place (the "done" event) or the
job has failed, poll() returns False and `outcome` (a RunOutcome) says how. The worker goes on to draw
report.png and registration.png, then waits for the next run (a run handed to it meanwhile waits in
its input, and skips the earlier job's last lines). cancel() kills the worker's whole
process tree and starts a fresh one in the background; the command line writes its outputs
atomically, so a cancelled run leaves neither files nor nodes. A worker that dies (a crash, a kill
from outside) fails its job and is replaced at the next start.

No Qt, no slicer.app: inside Slicer the widget drives poll() with a QTimer; scripts and tests call
wait(). Inside Slicer the interpreter is PythonSlicer (Slicer's Python, set up to find Slicer's
packages); elsewhere it is the current interpreter.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from NormativeADLib.core.options import RestoreOptions

# What the analysis worker prints besides its events (warnings, error messages, a traceback): in Slicer
# the Python console shows it, in the web viewer the server's log.
log = logging.getLogger("NormativeAD.worker")


def library_root() -> Path | None:
    """The folder holding NormativeADLib: beside the module in a checkout or an extension build."""
    here = Path(__file__).resolve().parent  # .../NormativeADSlicerLib
    for candidate in (here.parent, here.parent.parent):
        if (candidate / "NormativeADLib" / "__init__.py").is_file():
            return candidate
    return None


def python_executable() -> str:
    """PythonSlicer inside Slicer (it sets up Slicer's Python paths), the current interpreter otherwise."""
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    candidates = [Path(sys.executable).with_name(name)]
    found = shutil.which("PythonSlicer")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return sys.executable


@dataclass
class RunOutcome:
    """How a run ended: status is 'done', 'failed' or 'cancelled'."""

    status: str
    out_dir: Path | None = None
    message: str = ""
    exit_code: int | None = None
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "done"


class ProcessProtocol(Protocol):
    """What a Job needs from the process of one run (a test double can stand in).

    Made by a factory called as factory(request, on_event=callback); `outcome` is set once poll()
    has returned False.
    """

    outcome: RunOutcome | None

    def start(self) -> None: ...
    def poll(self) -> bool: ...
    def cancel(self) -> None: ...


class Worker:
    """One analysis worker process and the lines it prints (None once it has ended)."""

    def __init__(self, command: list[str], env: dict):
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group, so a kill reaches its children
        self.key = _pool_key(command, env)
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
            text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self.lines: queue.Queue = queue.Queue()
        self.unfinished = 0  # earlier jobs still drawing their figures: their lines are not the next job's
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def alive(self) -> bool:
        return self.process.poll() is None

    def next_line(self) -> str | None:
        """The current job's next line (queue.Empty when there is none yet; None once the worker has
        ended), past what earlier jobs print up to their job-end."""
        while True:
            line = self.lines.get_nowait()
            if not self.unfinished or line is None:
                return line
            if _event_of(line).get("event") == "job-end":
                self.unfinished -= 1

    def submit(self, argv: list[str]) -> None:
        self.process.stdin.write(json.dumps({"argv": argv}) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        """Let it end on its own (its input closed), or kill it if it does not."""
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            kill_process_tree(self.process)


MAX_IDLE = 2  # idle workers kept (each holds the libraries and a few models: about 1 GB)
_idle: list[Worker] = []  # oldest first
_idle_lock = threading.Lock()
_shutting_down = False  # set by shut_down(): no worker is started or kept any more


# Variables (names or name prefixes) that change while the worker cannot care: pytest's changes with every
# test, and the web server's frameworks (trame, wslink) set theirs once the page is served, after the
# session's worker was started ahead; keyed on them, no run would find a warm worker.
_NOT_THE_WORKERS = ("PYTEST_CURRENT_TEST", "WSLINK_", "TRAME_")


def _pool_key(command: list[str], env: dict) -> tuple:
    """Workers are shared only between runs that would have started the same process."""
    return (tuple(command), frozenset(i for i in env.items() if not i[0].startswith(_NOT_THE_WORKERS)),
            os.getcwd())


def _take_worker(command: list[str], env: dict) -> Worker:
    key = _pool_key(command, env)
    with _idle_lock:
        mine = [w for w in _idle if w.key == key]
        for worker in mine:
            _idle.remove(worker)
    chosen = None
    for worker in reversed(mine):  # the most recently used first: its models are the likeliest wanted
        if chosen is None and worker.alive() and _drained(worker):
            chosen = worker
        else:
            worker.close()
    return chosen or Worker(command, env)


def _drained(worker: Worker) -> bool:
    """Empty an idle worker's queue (its "ready" line); False when it has ended meanwhile."""
    while True:
        try:
            if worker.next_line() is None:
                return False
        except queue.Empty:
            return True


def _event_of(line: str) -> dict:
    """The JSON event a line carries ({} for a plain line of output)."""
    if line.startswith("{"):
        try:
            event = json.loads(line)
        except ValueError:
            return {}
        if isinstance(event, dict) and "event" in event:
            return event
    return {}


def _give_back(worker: Worker) -> None:
    """Keep the worker for the next run; the oldest idle one goes when more than MAX_IDLE wait."""
    if not worker.alive():
        return
    if _shutting_down:
        worker.close()
        return
    with _idle_lock:
        _idle.append(worker)
        surplus = _idle[:-MAX_IDLE] if len(_idle) > MAX_IDLE else []
        del _idle[:len(surplus)]
    for old in surplus:
        old.close()


def prewarm(command: list[str] | None = None, env: dict | None = None) -> None:
    """Start an idle worker now (when the module is opened, after a cancel) unless one is waiting, so
    that the next Apply finds its imports done. A failure here is the next run's to report."""
    if _shutting_down:
        return
    command = command or worker_command(python_executable())
    env = env or worker_environment({})
    key = _pool_key(command, env)
    with _idle_lock:
        if any(w.key == key and w.alive() for w in _idle):
            return
    try:
        _give_back(Worker(command, env))
    except OSError:
        pass


def shut_down() -> None:
    """The process is ending (a web session stopped by SIGTERM or its idle time): close the idle workers
    and start none after this, not even the fresh one a cancel starts for the next run (it would only
    delay the exit while it imports)."""
    global _shutting_down
    _shutting_down = True
    close_idle_workers()


@atexit.register
def close_idle_workers() -> None:
    with _idle_lock:
        workers = list(_idle)
        _idle.clear()
    for worker in workers:
        worker.close()


def worker_command(python: str) -> list[str]:
    return [python, "-m", "NormativeADLib.cli.worker"]


def worker_environment(extra: dict) -> dict:
    """The environment a worker runs in: this one, with the library importable and output unbuffered."""
    env = dict(os.environ)
    root = library_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ProcessRunner:
    """Runs one request on an analysis worker; see the module docstring for the lifecycle."""

    def __init__(self, request: RestoreOptions, on_event: Callable[[dict], None] | None = None,
                 python: str | None = None, env: dict | None = None):
        self.request = request
        self.on_event = on_event or (lambda event: None)
        self.python = python or python_executable()
        self.extra_env = env or {}
        self.outcome: RunOutcome | None = None
        self._worker: Worker | None = None
        self._cancelled = False
        self._done_event: dict | None = None
        self._error_event: dict | None = None
        self._exit_code: int | None = None
        self._log: list[str] = []

    @property
    def _process(self) -> subprocess.Popen | None:
        """The process of the worker this run was handed to."""
        return self._worker.process if self._worker is not None else None

    def command(self) -> list[str]:
        """The worker's command line (the job itself, the request's arguments, is sent to it)."""
        return worker_command(self.python)

    def environment(self) -> dict:
        return worker_environment(self.extra_env)

    def start(self) -> None:
        """Hand the job to a worker. A run that cannot start (bad options, no interpreter) does not raise:
        it is finished at once as 'failed' with the reason, so that poll() and cancel() end."""
        if self._worker is not None or self.outcome is not None:
            raise RuntimeError("this run was already started")
        try:
            arguments = self.request.arguments()
            self._worker = _take_worker(self.command(), self.environment())
        except Exception as err:  # noqa: BLE001 - any failure to start is this run's failure, said once
            self.outcome = RunOutcome("failed", message=f"the run could not start: {err}", log=self._log)
            return
        try:
            self._worker.submit(arguments)
        except OSError:
            pass  # it died before taking the job: poll() reports how, with its last words

    def poll(self) -> bool:
        """Handle queued output; returns True while the run goes on. Call from the GUI thread."""
        if self.outcome is not None:
            return False
        if self._worker is None:
            raise RuntimeError("poll() before start()")
        ended = False
        while not ended:
            try:
                line = self._worker.next_line()
            except queue.Empty:
                break
            if line is None:  # the worker is gone: its exit code is the run's
                self._process.wait()
                self._exit_code = self._process.returncode
                ended = True
            else:
                ended = self._handle_line(line)
        if ended:
            self._finish()
            return False
        return True

    def _handle_line(self, line: str) -> bool:
        """Log or pass on one line of the worker's; True once the run is over for the front end: at its
        job-end, or at "done", when its outputs are in place and the worker goes on to draw the figures."""
        event = _event_of(line)
        if not event:
            self._log.append(line)
            del self._log[:-200]
            if line.strip():
                log.info(line)
            return False
        if event["event"] == "job-end":
            self._exit_code = event.get("exit_code")
            return True
        if event["event"] == "ready":
            return False
        if event["event"] == "done" and not self._cancelled:
            self._done_event = event
            self._exit_code = 0
            self._worker.unfinished += 1  # its figures and job-end are still to come
            self.on_event(event)
            return True
        if event["event"] == "error":
            self._error_event = event
            log.warning("%s: %s", self.request.model or "the default model", event.get("message", ""))
        if not self._cancelled:
            self.on_event(event)
        return False

    def _finish(self) -> None:
        code = self._exit_code
        if not self._cancelled:
            _give_back(self._worker)
        if self._cancelled:
            outcome = RunOutcome("cancelled", message="cancelled by the user", exit_code=code, log=self._log)
        elif code == 0 and self._done_event is not None:
            outcome = RunOutcome("done", Path(self._done_event.get("out", self.request.out_dir)), exit_code=0,
                                 log=self._log)
        else:
            if self._error_event is not None:
                message = self._error_event.get("message", "")
            else:
                tail = [line for line in self._log if line.strip()][-5:]
                message = "the run stopped (exit code {}): {}".format(code, " / ".join(tail) or "no output")
            outcome = RunOutcome("failed", message=message, exit_code=code, log=self._log)
        self.outcome = outcome

    def cancel(self) -> None:
        """Kill the worker and its children (the outcome becomes 'cancelled'); a fresh worker starts in
        the background for the next run."""
        if self._worker is None or self.outcome is not None:
            return
        self._cancelled = True
        kill_process_tree(self._process)
        prewarm(self.command(), self.environment())

    def wait(self, timeout: float | None = None) -> RunOutcome:
        """Blocking mode: poll until the run ends (cancel it on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(0.05)
        return self.outcome


def kill_process_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def new_work_dir() -> Path:
    """A private folder for one run's input copies and outputs."""
    return Path(tempfile.mkdtemp(prefix="NormativeAD-"))
