"""What a visitor cannot do to `normativead web`: hang it with a value the page would never send, or keep
it from stopping. A real server and a real headless Chromium, as in test_web_page.py; the module's own
server (the conftest fixture is per module) is stopped by the last test.

The page's controls are Vue bindings to trame's shared state: anyone with the page can set any state
key to any value over its websocket (`window.trame.state.set` in the browser's console does it). A
device outside the list once left the job "running" with no process, and the next scan opened looped
forever in Job.cancel: HTTP timed out for everyone and only SIGKILL stopped the server, leaving its
private folder behind (issue 26).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from web_server import browser_reason

pytestmark = pytest.mark.browser  # a real headless Chromium: `make check` leaves these out

if browser_reason():
    pytest.skip(browser_reason(), allow_module_level=True)

from web_page import Page  # noqa: E402

BAD_DEVICE = "tpu; rm -rf /"
STOP_WITHIN_S = 15.0  # the launcher gives its sessions 20 s to end before killing them


@pytest.fixture(scope="module")
def page(server, browser):
    page = Page(browser, server.url)
    page.open()
    return page


def answers(url: str, timeout: float = 10) -> bool:
    try:
        urllib.request.urlopen(url, timeout=timeout).read(1)
        return True
    except OSError:
        return False


def set_state(page: Page, key: str, value) -> None:
    """What a hostile visitor does from the browser's console: any value, straight into the shared state."""
    page.driver.execute_script("return window.trame.state.set(arguments[0], arguments[1])", key, value)


def test_a_device_outside_the_list_cannot_hang_the_server(page, server):
    page.choose("na-scan-source", "FLAIR")
    page.wait(lambda: "opened" in page.text("na-status"), 60, "the scan did not open")
    set_state(page, "device", BAD_DEVICE)
    time.sleep(1)  # the server's answer to the state change, if any
    page.click("na-run")  # with whatever device the server kept
    time.sleep(2)
    # The next scan opened cancels whatever runs: it must open, and the server must go on answering.
    page.choose("na-scan-source", "T1")
    page.wait(lambda: "T1" in page.text("na-status") and "opened" in page.text("na-status"), 90,
              f"the next scan did not open: the server is stuck\n{server.log()}")
    assert answers(page.driver.current_url), "the session's page does not answer"
    assert answers(server.url + "health"), "the launcher does not answer"
    device = page.driver.execute_script("return window.trame.state.get('device')")
    assert device == "auto", f"the server kept the device {device!r}"
    assert not page.exists("na-cancel"), "a run is still shown as going on"


def own_processes(home: Path) -> list[int]:
    """This server's processes (launcher, sessions, analysis workers): their NORMATIVEAD_HOME is home."""
    marker = f"NORMATIVEAD_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_sigterm_stops_the_server_promptly_during_a_run_and_leaves_no_files(page, server):
    """SIGTERM to the launcher alone (as a service manager sends it to the main process), while a run is
    going on: every session, analysis worker and private folder is gone within seconds."""
    page.click("na-run")
    page.wait(lambda: page.exists("na-cancel"), 60, "the run did not start")
    time.sleep(2)  # into the analysis, on the session's worker
    home = server.tmp / "home"
    assert len(own_processes(home)) >= 3, "launcher, session and worker should be running"
    assert list(server.tmp.glob("normativead-web-*")), "the sessions' private folders"
    started = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=60)
    took = time.monotonic() - started
    assert took < STOP_WITHIN_S, f"the server took {took:.1f} s to stop\n{server.log()}"
    assert server.process.returncode == 0, server.log()
    left = own_processes(home)  # the sessions end their workers before they exit, and the launcher waits
    assert not left, f"processes outlived the server: {[Path(f'/proc/{p}/cmdline').read_bytes() for p in left]}"
    assert not list(server.tmp.glob("normativead-web-*")), "an upload folder outlived the server"
    assert not list(server.tmp.glob("NormativeAD-*")), "a run's work folder outlived the server"
