"""`normativead web --token`: a real server that asks for its token, met over HTTP and in a real headless
Chromium. Without the token the launcher answers 401 with a page that says why; the token in the address
sets an HttpOnly cookie and the page works; a session's own port (where the page, its assets and its
websocket are served) refuses anyone without it, even someone who knows the port.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from web_server import Server, browser_reason, new_browser

pytestmark = pytest.mark.browser  # a real headless Chromium: `make check` leaves these out

if browser_reason():
    pytest.skip(browser_reason(), allow_module_level=True)

from web_page import Page  # noqa: E402

TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("web_token"), token=TOKEN)
    yield running
    running.stop()


def status_and_body(url: str, cookie: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def get_without_redirect(url: str, headers: dict | None = None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=180)
    connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer


def websocket_handshake(url: str, cookie: str | None) -> int:
    """The status a websocket upgrade request gets (101: the websocket is open)."""
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    if cookie:
        headers["Cookie"] = cookie
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request("GET", parts.path, headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


def upload_status(session: str, cookie: str | None) -> int:
    """The status a small upload posted to the session's upload route gets (a file that is no image)."""
    headers = {"X-NormativeAD-Upload": "1", **({"Cookie": cookie} if cookie else {})}
    connection = http.client.HTTPConnection(urlsplit(session).hostname, urlsplit(session).port, timeout=60)
    connection.request("POST", "/na-upload?role=scan&name=garbage.nii.gz", body=b"not an image", headers=headers)
    status = connection.getresponse().status
    connection.close()
    return status


def test_the_launcher_refuses_requests_without_the_token(server):
    for url, cookie in ((server.url, None), (server.url + "health", None), (server.url + "?token=wrong" + TOKEN[5:], None),
                        (server.url, f"normativead_token={TOKEN[:-1]}x")):
        status, body = status_and_body(url, cookie)
        assert status == 401, (url, cookie, status)
        assert "access token" in body and "/?token=" in body, body
    assert status_and_body(server.health_url())[0] == 200


def test_the_token_sets_a_cookie_and_a_session_port_refuses_anyone_without_it(server):
    answer = get_without_redirect(server.url + f"?token={TOKEN}")
    assert answer.status == 302, answer.status
    cookie = answer.getheader("Set-Cookie")
    assert cookie.startswith(f"normativead_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = answer.getheader("Location")
    assert "token" not in session and urlsplit(session).port != server.port
    mine = f"normativead_token={TOKEN}"

    status, body = status_and_body(session)  # someone who learnt the port
    assert status == 401 and "access token" in body
    assert status_and_body(session + "index.html")[0] == 401
    assert websocket_handshake(session + "ws", None) == 401
    assert status_and_body(session, f"normativead_token={TOKEN[:-1]}x")[0] == 401
    status, body = status_and_body(session, mine)
    assert status == 200 and "<html" in body.lower()
    assert websocket_handshake(session + "ws", mine) == 101  # the route exists: the 401 above is the token's
    assert upload_status(session, None) == 401
    assert upload_status(session, mine) == 422  # received, then refused as no image: the 401 was the token's


def test_with_the_token_the_page_works_and_without_it_a_browser_reads_why(server, tmp_path):
    driver = new_browser(tmp_path / "with")
    stranger = new_browser(tmp_path / "without")
    try:
        page = Page(driver, server.url + f"?token={TOKEN}")
        page.open()
        assert "token" not in driver.current_url, "the token stays in the address bar"
        assert TOKEN not in driver.execute_script("return document.cookie"), "the page's scripts can read the token"
        page.choose("na-scan-source", "FLAIR")
        page.wait(lambda: "opened" in page.text("na-status"), 60, "the scan did not open over the websocket")

        for url in (server.url, driver.current_url):  # the launcher, and the first visitor's own session
            stranger.get(url)
            assert "access token" in Page(stranger, url).text("na-launcher-text"), stranger.page_source[:500]
    finally:
        driver.quit()
        stranger.quit()
