"""Optional token authentication for `normativead web --token`: the launcher and every session ask for it.

A visitor brings the token once, in the address the server printed (`/?token=...`); the launcher then
sets it as an HttpOnly cookie and redirects to the visitor's session. Browsers send a host's cookies to
every port of that host, so the session (another port of the same host, where the page, its assets and
its websocket are served) receives the same cookie and checks it too: a session's port is refused
(401) to anyone without the token, even someone who learnt the port. The token reaches the session
processes through their environment (NORMATIVEAD_WEB_TOKEN), never their command line, which `ps`
shows to every user of the machine. Standard library only, apart from the session's aiohttp middleware.
"""

from __future__ import annotations

import hmac
import html
import re
import secrets
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

TOKEN_ENV = "NORMATIVEAD_WEB_TOKEN"
COOKIE = "normativead_token"
MIN_LENGTH = 16
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")  # as they are in an address and a cookie, unquoted
REFUSAL_TITLE = "NormativeAD: access token needed"
REFUSAL_TEXT = ("This server asks for its access token. Open the address it printed at start-up (it ends in "
                "/?token=...), or ask the person who runs it for that address.")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """The token as given, or ValueError saying what a usable one is."""
    if len(token) < MIN_LENGTH or not TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError(f"a token is at least {MIN_LENGTH} characters among letters, digits and . _ ~ - "
                         "(give --token without a value and one is made)")
    return token


def matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def from_query(query: str) -> str | None:
    values = parse_qs(query).get("token")
    return values[0] if values else None


def from_cookie_header(header: str | None) -> str | None:
    if not header:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(header)
    except CookieError:
        return None
    return cookies[COOKIE].value if COOKIE in cookies else None


def allowed(token: str, query: str, cookie_header: str | None) -> tuple[bool, bool]:
    """(whether the request may pass, whether it brought the token in its address: then the answer sets
    the cookie)."""
    if matches(from_cookie_header(cookie_header), token):
        return True, False
    if matches(from_query(query), token):
        return True, True
    return False, False


def set_cookie_value(token: str) -> str:
    """The Set-Cookie header's value: the whole host (every port), never readable by the page's scripts."""
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"


def page(title: str, text: str) -> bytes:
    """The small HTML page the launcher and the sessions answer with when they refuse."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;margin:3em'><h1 id='na-launcher-title'>{html.escape(title)}"
            f"</h1><p id='na-launcher-text'>{html.escape(text)}</p></body></html>").encode()


def session_middleware(token: str):
    """aiohttp middleware of a session's server (the page, its assets, its websocket): without the token,
    401 and the refusal page."""
    from aiohttp import web

    @web.middleware
    async def require_token(request, handler):
        ok, in_address = allowed(token, request.query_string, request.headers.get("Cookie"))
        if not ok:
            return web.Response(status=401, body=page(REFUSAL_TITLE, REFUSAL_TEXT),
                                content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})
        response = await handler(request)
        if in_address and not response.prepared:  # a websocket's answer is sent already
            response.headers.add("Set-Cookie", set_cookie_value(token))
        return response

    return require_token
