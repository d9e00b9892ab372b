"""A `normativead web` server process and a headless Chromium for it: shared by the browser tests
(conftest.py) and the measurements (bench_web.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120

# The browser tests' case and settings (tests import them from here, not from `conftest`: pytest
# imports every conftest.py of Testing as a module named `conftest`).
SAMPLE = REPO / "Resources" / "SampleData"
SAMPLE_FLAIR = SAMPLE / "mslub_patient26_flair.nii.gz"
SAMPLE_LESION = SAMPLE / "mslub_patient26_lesion.nii.gz"
DEMO_MODEL = "intensity-flair"  # catalogue.DEMO_MODEL: weightless, finds this case's lesions on FLAIR
COMPARE_MODEL = "ae-ixi-t1"  # the small shipped autoencoder
MAX_UPLOAD_MB = 20  # the test server's limit: above the sample files (4 MB), below the oversized test file
MAX_SESSIONS = 3  # the test server's: two browsers and one more visit, then "busy"


def browser_reason() -> str | None:
    """None when a headless Chromium can be driven here, else why not."""
    from importlib.util import find_spec

    if find_spec("selenium") is None:
        return "selenium is not installed; pip install -e '.[web]'"
    if find_spec("trame_slicer") is None:
        return "trame-slicer is not installed; pip install -e '.[slicer,web]'"
    if not chromium_binary() or not shutil.which("chromedriver"):
        return "Chromium and chromedriver are not installed; apt-get install chromium chromium-driver (.ci/run does)"
    return None


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `normativead web` process; its output is kept for failure messages."""

    def __init__(self, tmp: Path, max_upload_mb: float = 200, max_sessions: int = MAX_SESSIONS,
                 token: str | None = None):
        """token: the server asks for it (given as NORMATIVEAD_WEB_TOKEN, with --token)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tmp = tmp
        self.token = token
        self.lines: list[str] = []
        env = dict(os.environ, NORMATIVEAD_HOME=str(tmp / "home"), TMPDIR=str(tmp), OMP_NUM_THREADS="2",
                   PYTHONPATH=str(REPO))
        env.pop("NORMATIVEAD_WEB_TOKEN", None)
        if token is not None:
            env["NORMATIVEAD_WEB_TOKEN"] = token
        self.process = subprocess.Popen(
            [sys.executable, "-m", "NormativeADLib.cli", "web", "--port", str(self.port),
             "--max-upload-mb", str(max_upload_mb), "--max-sessions", str(max_sessions),
             *(["--token"] if token is not None else [])],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_until_up()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("normativead web stopped at start:\n" + self.log())
            try:
                urllib.request.urlopen(self.health_url(), timeout=2).read()  # a visit would start a session
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("normativead web did not answer in time:\n" + self.log())

    def wait_for_a_ready_session(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the session the launcher starts ahead answers: a visitor of a running server finds it so."""
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if json.loads(urllib.request.urlopen(self.health_url(), timeout=5).read())["session_ready_ahead"]:
                return
            time.sleep(0.5)
        raise RuntimeError("no session was ready in time:\n" + self.log())

    def health_url(self) -> str:
        return self.url + "health" + (f"?token={self.token}" if self.token is not None else "")

    def log(self, last: int = 40) -> str:
        return "\n".join(self.lines[-last:])

    def rss_mb(self, session_url: str | None = None) -> float:
        """Resident memory of the launcher, or of the session process serving session_url (a page's address)."""
        pid = self.process.pid
        if session_url is not None:
            port = session_url.rstrip("/").rsplit(":", 1)[1].split("/")[0]
            pid = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _session_of(p, port))
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _session_of(proc: Path, port: str) -> bool:
    try:
        args = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--session" in args and b"--port" in args and args[args.index(b"--port") + 1] == port.encode()


def new_browser(downloads: Path, size: str = "1600,1100"):
    """Headless Chromium through chromedriver, saving downloads into the given folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium_binary()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size}",
                     "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    return driver
