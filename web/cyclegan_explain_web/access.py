"""Who may use a running web viewer: the holder of its access token, one browser at a time.

trame keeps one state per server, shared by every connected browser: a second browser would see
and drive the first one's CT, seed and probabilities. So the viewer serves one session. The page
is served only with the access token printed in the viewer's address (``?secret=...``), and the
token also goes to wslink, which refuses a websocket that does not present it. While one browser
is connected, another gets a page saying that the viewer is busy, and its websocket is refused.

The page's response sets two same-site cookies: the token, so that the websocket request (which
carries no query of the client's choosing) is checked too, and a random browser id, so that the
browser holding the session can reload its page or open a second tab while a stranger's browser
cannot. (On a reload the old page's websocket closes only after the new page has arrived.)
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import posixpath
import re
import secrets

from aiohttp import web

TOKEN_PARAMETER = "secret"
_COOKIE = "cyclegan_explain_access"
_BROWSER_COOKIE = "cyclegan_explain_browser"
_PAGES = ("/", "/index.html")


def canonical_path(path: str) -> str:
    """``path`` as the static file handler resolves it: aiohttp serves /index.html for
    /./index.html, //index.html, /index.html/ and /static/../index.html alike, so the guard decides
    on this form, never on the text the client sent."""
    return posixpath.normpath(re.sub(r"/+", "/", "/" + path))


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _message_page(title: str, text: str, status: int) -> web.Response:
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family: sans-serif; margin: 3em;'><h2>{html.escape(title)}</h2>"
            f"<p id='access-message'>{html.escape(text)}</p></body></html>")
    return web.Response(text=body, status=status, content_type="text/html")


class SingleSessionGuard:
    """An aiohttp middleware: pages need the token, and one websocket at a time may be open."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.owner = None  # the browser id holding the session
        self.open_sockets = 0  # the owner's open websockets

    def _has_token(self, request: web.Request) -> bool:
        given = request.query.get(TOKEN_PARAMETER) or request.cookies.get(_COOKIE) or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        path = canonical_path(request.path)  # request.path is already percent-decoded
        is_page = path in _PAGES
        is_socket = path.endswith("/ws")
        if not (is_page or is_socket):
            return await handler(request)  # scripts and styles: nothing of the session's in them
        if not self._has_token(request):
            return _message_page("Access token needed",
                                 "Open the viewer with the full address printed where it was started "
                                 "(it ends with ?secret=...).", 403)
        browser = request.cookies.get(_BROWSER_COOKIE)
        if self.open_sockets > 0 and browser != self.owner:
            return _message_page("This viewer is in use",
                                 "Another browser is connected to this viewer, which serves one session at a "
                                 "time (it would see and drive the same CT). Close the other tab, or start "
                                 "another viewer with: cyclegan-explain-web", 409)
        if is_page:
            if TOKEN_PARAMETER not in request.query or request.path != "/index.html":
                # The page's client sends the token it finds in the address on its websocket; but
                # wslink's redirect to index.html drops the query, and the client removes the token
                # from the address bar, so a reload would lose the session without this.
                response = web.HTTPFound(f"index.html?{TOKEN_PARAMETER}={self.token}")
            else:
                response = await handler(request)
            response.set_cookie(_COOKIE, self.token, httponly=True, samesite="Strict")
            if browser is None:
                response.set_cookie(_BROWSER_COOKIE, secrets.token_urlsafe(16), httponly=True, samesite="Strict")
            return response
        if browser is None:  # a websocket from something that never loaded the page
            return _message_page("Access token needed", "Load the viewer's page first.", 403)
        self.owner = browser
        self.open_sockets += 1
        try:
            return await handler(request)  # returns when the websocket closes
        finally:
            self.open_sockets -= 1

    def bind(self, wslink_server) -> None:
        """trame's on_server_bind: before the aiohttp application starts, so it can still take middleware."""
        wslink_server.app.middlewares.append(self.middleware)
