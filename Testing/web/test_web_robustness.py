"""What a visitor cannot do to `normativead web`: hang it with a value the page would never send, or keep
it from stopping. A real server and a real headless Chromium, as in test_web_page.py; the module's own
server (the conftest fixture is per module) is stopped by the last test.

The page's controls are Vue bindings to trame's shared state: anyone with the page can set any state
key to any value over its websocket (`window.trame.state.set` in the browser's console does it). A
device outside the list once left the job "running" with no process, and the next scan opened looped
forever in Job.cancel: HTTP timed out for everyone and only SIGKILL stopped the server, leaving its
private folder behind (issue 26). An upload that bypassed the page's size check was held whole in memory
before it was refused (RSS +1.7 GB for 600 MB): uploads are now an HTTP POST streamed to disk, and a
websocket message is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from web_server import MAX_UPLOAD_MB, browser_reason

pytestmark = pytest.mark.browser  # a real headless Chromium: `make check` leaves these out

if browser_reason():
    pytest.skip(browser_reason(), allow_module_level=True)

from web_page import Page  # noqa: E402

BAD_DEVICE = "tpu; rm -rf /"
OVERSIZED_MB = 300  # what a visitor sends past the page: 15 times the test server's limit
GREW_AT_MOST_MB = 60  # a session holding the body would grow by about OVERSIZED_MB
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


def session_root(page: Page) -> str:
    """http://host:port/ of the session the launcher gave this page."""
    parts = urlsplit(page.driver.current_url)
    return f"{parts.scheme}://{parts.netloc}/"


def post_upload(session_url: str, length_mb: int, declare_length: bool, headers: dict | None = None) -> int | None:
    """POST to the session's upload route as a script would: with a Content-Length of length_mb and no body
    sent (the answer must come from the header), or length_mb of zeros in 1 MB chunks; the answer's status,
    or None when the server closed the connection while the chunks were still going."""
    parts = urlsplit(session_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"X-NormativeAD-Upload": "1"} if headers is None else headers
    connection.putrequest("POST", f"/na-upload?role=scan&name={quote('big scan_FLAIR.nii.gz')}")
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.putheader(*(("Content-Length", str(length_mb << 20)) if declare_length
                           else ("Transfer-Encoding", "chunked")))
    connection.endheaders()
    piece = b"%x\r\n%s\r\n" % (1 << 20, bytes(1 << 20))
    try:
        if not declare_length:  # else the answer must come from the headers alone, before any of the body
            for _ in range(length_mb):
                connection.send(piece)
            connection.send(b"0\r\n\r\n")
        return connection.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        return None  # refused while we were still sending
    finally:
        connection.close()


def uploads_left(server) -> list[Path]:
    return [p for p in server.tmp.glob("normativead-web-*/upload-*/*")]


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_upload_is_refused_while_received_and_leaves_nothing(page, server, declare_length):
    """Past the page (no size check in a browser): the session refuses from the declared size, or as the
    bytes pass the limit when none is declared, without holding the body, and keeps no partial file."""
    session = session_root(page)
    set_state(page, "error", "")
    before_mb = server.rss_mb(session)
    status = post_upload(session, OVERSIZED_MB, declare_length)
    assert status in (413, None), f"the session accepted {OVERSIZED_MB} MB over a {MAX_UPLOAD_MB} MB limit: {status}"
    page.wait(lambda: f"limit of this server is {MAX_UPLOAD_MB} MB" in page.error(), 30,
              f"the page does not say why: {page.error()!r}")
    grew = server.rss_mb(session) - before_mb
    assert grew < GREW_AT_MOST_MB, f"the session grew by {grew:.0f} MB while refusing {OVERSIZED_MB} MB"
    assert not uploads_left(server), f"a refused upload stayed on disk: {uploads_left(server)}"
    assert answers(session), "the session does not answer after the refusal"


def test_an_upload_without_the_pages_header_is_refused(page, server):
    """Another site's page can post to this port only without the custom header (it would need a CORS
    preflight the session never answers): such a post is refused before its body is read."""
    assert post_upload(session_root(page), 1, True, headers={}) == 400
    assert not uploads_left(server)


async def claim_a_huge_websocket_message(session_url: str, claimed_mb: int) -> str:
    """Connect to the session's websocket as its page does (wslink hello), then send the first chunk of a
    message whose header claims claimed_mb; how the connection ends (CLOSE...), or that it stays open."""
    import aiohttp
    import msgpack
    from wslink.chunking import _encode_header, generate_chunks

    hello = msgpack.packb({"wslink": "1.0", "id": "system:c0:0", "method": "wslink.hello",
                           "args": [{"secret": "wslink-secret"}], "kwargs": {}})
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(session_url.replace("http", "ws", 1) + "ws") as ws:
            for chunk in generate_chunks(hello, 1 << 20):
                await ws.send_bytes(chunk)
            welcome = await ws.receive(timeout=30)
            assert welcome.type == aiohttp.WSMsgType.BINARY, welcome
            await ws.send_bytes(_encode_header(7, 0, claimed_mb << 20) + bytes(1024))
            try:
                while (answer := await ws.receive(timeout=15)).type == aiohttp.WSMsgType.BINARY:
                    pass  # the session's own messages to a page, if any
            except asyncio.TimeoutError:
                return "open after 15 s"
            return answer.type.name


def test_a_huge_websocket_message_is_refused_before_it_is_allocated(page, server):
    """wslink allocates a message's whole claimed size from its first chunk (up to 4 GB for a page past
    its hello): the session closes such a connection instead, and the page's own goes on working."""
    session = session_root(page)
    before_mb = server.rss_mb(session)
    answer = asyncio.run(claim_a_huge_websocket_message(session, OVERSIZED_MB))
    assert answer in ("CLOSE", "CLOSING", "CLOSED", "ERROR"), f"the session took the message: {answer}"
    grew = server.rss_mb(session) - before_mb
    assert grew < GREW_AT_MOST_MB, f"the session grew by {grew:.0f} MB for a claimed {OVERSIZED_MB} MB message"
    page.choose("na-scan-source", "FLAIR")
    page.wait(lambda: "FLAIR" in page.text("na-status") and "opened" in page.text("na-status"), 60,
              "the page's own connection stopped working")


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
