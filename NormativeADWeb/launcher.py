"""One browser session per process: the launcher in front of `normativead web`.

A trame server shares one state and one Slicer scene among every page connected to it, so two users
of one server would see each other's scans and results. `normativead web` therefore listens with this
launcher (the trame/wslink launcher pattern): each visitor of its address is redirected to a session
of their own, a `normativead web --session` process on its own port, with its own state, scene, upload
folder and analysis worker. A session ends when its page has been closed for --idle-minutes (trame's
auto-shutdown) and removes its files as it ends; the launcher starts no more than --max-sessions at a
time and answers the next visitor with a "busy" page. One session is kept started ahead, so that the
next visitor does not wait for its imports. With a token (access.py) the launcher refuses any request
without it and the sessions do too. Standard library only; the sessions import trame.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import access

SESSION_START_TIMEOUT_S = 120.0  # a cold session imports trame, VTK and Slicer's core
# The next session is started ahead this long after a visitor took the last one: its imports would
# otherwise take the CPU from that visitor's first run (5 s more page-to-heatmap on 2 cores).
NEXT_SPARE_DELAY_S = 60.0


class Session:
    """One `normativead web --session` process and the port it serves."""

    def __init__(self, command: Callable[[int], list[str]], host: str, token: str | None = None):
        self.port = free_port(host)
        self.host = host
        self.token = token  # the session reads it from its environment (access.TOKEN_ENV), inherited
        self.ready = False
        self.process = subprocess.Popen(command(self.port))

    def alive(self) -> bool:
        return self.process.poll() is None

    def answers(self, timeout: float = 2.0) -> bool:
        if self.ready:
            return True
        request = urllib.request.Request(f"http://{_connect_host(self.host)}:{self.port}/")
        if self.token is not None:
            request.add_header("Cookie", f"{access.COOKIE}={self.token}")
        try:
            urllib.request.urlopen(request, timeout=timeout).read(1)
        except OSError:
            return False
        self.ready = True
        return True

    def wait_ready(self, timeout: float = SESSION_START_TIMEOUT_S) -> None:
        """Return once the session's page answers; RuntimeError if it ended or took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the session process ended at start (exit code {self.process.returncode})")
            if self.answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the session did not answer within {timeout:.0f} s")

    def terminate(self) -> None:
        """SIGTERM: the session removes its upload folder as it ends."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout: float = 20.0) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Launcher:
    """Hands each visitor a session of their own, at most max_sessions at a time."""

    def __init__(self, command: Callable[[int], list[str]], host: str, max_sessions: int, token: str | None = None):
        self.command, self.host, self.max_sessions, self.token = command, host, max_sessions, token
        self.sessions: list[Session] = []
        self.spare: Session | None = None
        self.stopped = False
        self._lock = threading.Lock()

    def start_spare(self) -> None:
        with self._lock:
            if not self.stopped:
                self._keep_spare()

    def claim(self) -> Session | None:
        """A session for a new visitor, started and answering; None when max_sessions are in use."""
        with self._lock:
            self.sessions = [s for s in self.sessions if s.alive()]  # ended ones have removed their files
            if len(self.sessions) >= self.max_sessions:
                return None
            session = self.spare if self.spare is not None and self.spare.alive() else self._new_session()
            self.spare = None
            self.sessions.append(session)
        timer = threading.Timer(NEXT_SPARE_DELAY_S, self.start_spare)
        timer.daemon = True
        timer.start()
        session.wait_ready()
        return session

    def health(self) -> dict:
        """Sessions in use, the limit, and whether the session started ahead answers already."""
        spare = self.spare
        return {"sessions_in_use": sum(s.alive() for s in self.sessions), "max_sessions": self.max_sessions,
                "session_ready_ahead": spare is not None and spare.answers()}

    def _keep_spare(self) -> None:
        if (self.spare is None or not self.spare.alive()) and len(self.sessions) < self.max_sessions:
            self.spare = self._new_session()

    def _new_session(self) -> Session:
        return Session(self.command, self.host, self.token)

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            everyone = self.sessions + ([self.spare] if self.spare else [])
            self.sessions, self.spare = [], None
        for session in everyone:  # all at once: each takes a moment to end
            session.terminate()
        for session in everyone:
            session.wait_or_kill()


def serve(launcher: Launcher, host: str, port: int) -> None:
    """Answer visitors until SIGTERM or SIGINT; the sessions are stopped on the way out."""
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6}) if ":" in host \
        else ThreadingHTTPServer
    server = server_class((host, port), _handler(launcher))
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(signum, frame) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        launcher.start_spare()
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        launcher.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _handler(launcher: Launcher):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self._cookie = None
            if launcher.token is not None:
                ok, in_address = access.allowed(launcher.token, self.path.partition("?")[2], self.headers.get("Cookie"))
                if not ok:
                    self._page(401, access.REFUSAL_TITLE, access.REFUSAL_TEXT)
                    return
                if in_address:  # from now on the browser brings it to this host's every port
                    self._cookie = access.set_cookie_value(launcher.token)
            if self.path.split("?", 1)[0] == "/health":  # for monitoring: answers without starting a session
                self._json(launcher.health())
                return
            if self.path.split("?", 1)[0] not in ("/", "/index.html"):
                self._page(404, "Not found", "This address serves NormativeAD sessions at / only.")
                return
            try:
                session = launcher.claim()
            except RuntimeError as err:
                self._page(500, "Could not start a session", f"{err}. The server's log says more.")
                return
            if session is None:
                self._page(503, "NormativeAD is busy",
                           f"All {launcher.max_sessions} session(s) of this server are in use. A session ends a few "
                           "minutes after its page is closed: try again later.", retry_after=60)
                return
            self.send_response(302)
            self.send_header("Location", f"http://{self._host_name()}:{session.port}/")
            self.send_header("Cache-Control", "no-store")
            self._end_headers()

        def _end_headers(self) -> None:
            if self._cookie:
                self.send_header("Set-Cookie", self._cookie)
            self.end_headers()

        def _json(self, value: dict) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self._end_headers()
            self.wfile.write(body)

        def _host_name(self) -> str:
            """The host the visitor used to reach this address (their own view of the machine)."""
            host = self.headers.get("Host") or launcher.host
            return host.rsplit(":", 1)[0] if not host.endswith("]") else host

        def _page(self, code: int, title: str, text: str, retry_after: int | None = None) -> None:
            body = access.page(title, text)
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if retry_after:
                self.send_header("Retry-After", str(retry_after))
            self._end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002 - the http.server signature
            pass  # the sessions log what matters

    return Handler


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _connect_host(host: str) -> str:
    """Where this machine reaches a server bound to host (a wildcard bind is reached on loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
