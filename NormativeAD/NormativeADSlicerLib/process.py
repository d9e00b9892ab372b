"""Running the NormativeAD command line as a separate process, with streamed progress and cancel.

Lifecycle: ProcessRunner(request).start() launches `python -m NormativeADLib.cli restore ...
--progress json`; a reader thread queues its output lines; poll() (called by a GUI timer in
Slicer, or by wait() in blocking mode) parses them into events and calls on_event; once the
process has ended poll() returns False and `outcome` (a RunOutcome) says how. cancel() kills the
whole process tree; the command line writes its outputs atomically, so a cancelled run leaves
neither files nor nodes.

No Qt, no slicer.app: inside Slicer the widget drives poll() with a QTimer; scripts and tests call
wait(). Inside Slicer the interpreter is PythonSlicer (Slicer's Python, set up to find Slicer's
packages); elsewhere it is the current interpreter.
"""

from __future__ import annotations

import json
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

from NormativeADLib.options import RestoreOptions


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


class ProcessRunner:
    """Runs one request in a child process; see the module docstring for the lifecycle."""

    def __init__(self, request: RestoreOptions, on_event: Callable[[dict], None] | None = None,
                 python: str | None = None, env: dict | None = None):
        self.request = request
        self.on_event = on_event or (lambda event: None)
        self.python = python or python_executable()
        self.extra_env = env or {}
        self.outcome: RunOutcome | None = None
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._cancelled = False
        self._done_event: dict | None = None
        self._error_event: dict | None = None
        self._log: list[str] = []

    def command(self) -> list[str]:
        return [self.python, "-m", "NormativeADLib.cli", *self.request.arguments()]

    def environment(self) -> dict:
        env = dict(os.environ)
        root = library_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Launch the process. A run that cannot start (bad options, no interpreter) does not raise:
        it is finished at once as 'failed' with the reason, so that poll() and cancel() end."""
        if self._process is not None or self.outcome is not None:
            raise RuntimeError("this run was already started")
        try:
            self._launch()
        except Exception as err:  # noqa: BLE001 - any failure to start is this run's failure, said once
            self.outcome = RunOutcome("failed", message=f"the run could not start: {err}", log=self._log)

    def _launch(self) -> None:
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group, so cancel reaches its children
        self._process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.environment(), text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def poll(self) -> bool:
        """Handle queued output; returns True while the run goes on. Call from the GUI thread."""
        if self.outcome is not None:
            return False
        if self._process is None:
            raise RuntimeError("poll() before start()")
        ended = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            self._handle_line(line)
        if ended:
            self._process.wait()
            self._finish()
            return False
        return True

    def _handle_line(self, line: str) -> None:
        event = None
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
        if not isinstance(event, dict) or "event" not in event:
            self._log.append(line)
            del self._log[:-200]
            return
        if event["event"] == "done":
            self._done_event = event
        elif event["event"] == "error":
            self._error_event = event
        if not self._cancelled:
            self.on_event(event)

    def _finish(self) -> None:
        code = self._process.returncode
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
        """Kill the process and its children; the outcome becomes 'cancelled'."""
        if self._process is None or self.outcome is not None:
            return
        self._cancelled = True
        kill_process_tree(self._process)

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
