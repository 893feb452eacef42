"""The approval inbox's web page and JSON API (extra ``inbox``: Starlette and uvicorn); ``mcp-guard inbox`` serves it.

Routes (every one needs the token: a cookie set by opening ``/?token=T`` once, or ``Authorization: Bearer T``;
anything else is answered 401):

- ``GET /``: the page. It lists pending requests and refreshes itself every ``poll_s`` seconds, with Approve,
  Edit arguments (a JSON box beside the tool's schema) and Reject (with a message).
- ``GET /api/requests``: ``{"pending": [...], "history": [...], "now": <epoch s>}``.
- ``GET /api/requests/{id}``: one request.
- ``POST /api/requests/{id}/decision`` with a JSON body ``{"type": "approve"}``, ``{"type": "edit", "args":
  {...}}`` or ``{"type": "reject", "message": "..."}``: 200 and the decided request; 400 a malformed decision;
  404 unknown or past its deadline; 409 already decided; 410 the caller left (the request was withdrawn, or
  abandoned by its worker); 415 not JSON; 403 cross-site.

The page is static HTML and JavaScript shipped in the package (``inbox_static/``): no build step, no CDN. It
writes every model-supplied string with ``textContent`` (never as HTML), and a Content-Security-Policy allows
only the page's own script, so an argument such as ``<script>`` is shown as text and cannot run.
State-changing requests must be JSON (a cross-site HTML form cannot send that) and same-origin by the
browser's ``Sec-Fetch-Site`` / ``Origin`` headers; the cookie is ``HttpOnly`` and ``SameSite=Lax``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from mcp_guard._errors import require_extra
from mcp_guard._inbox.inbox import Inbox  # one way: the page knows the inbox, the inbox never the page
from mcp_guard._inbox.stores import DecisionRefused

log = logging.getLogger("mcp_guard.inbox")

COOKIE = "mcp_guard_inbox"
TOKEN_ENV = "MCP_GUARD_INBOX_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_BODY_BYTES = 256_000
_STATIC = {"inbox.js": "text/javascript; charset=utf-8", "inbox.css": "text/css; charset=utf-8"}
_SECURITY_HEADERS = {
    # Only the page's own script and style; no inline code, no plugins, not framed, no form posts anywhere.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def _static_text(name: str) -> str:
    return resources.files("mcp_guard").joinpath("inbox_static", name).read_text(encoding="utf-8")


def _token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def cookie_value(token: str) -> str:
    """What the session cookie holds: a digest of the token (cookie-safe, and not the token itself)."""
    return hmac.new(token.encode(), b"mcp-guard inbox cookie", hashlib.sha256).hexdigest()


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" and credential.strip() else None


def _same_origin(headers: Mapping[str, str], by_bearer: bool) -> bool:
    """Whether a state-changing request comes from the page itself (or from a non-browser client with a bearer).

    Browsers send ``Sec-Fetch-Site`` and ``Origin`` on every cross-site POST; a client that sends neither is not
    a browser being abused, and is accepted only when it authenticated with the bearer header (which a browser
    never adds on its own), not with the cookie.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc.lower() == headers.get("host", "").lower()
    return site is not None or by_bearer


def create_app(inbox: Inbox, *, token: str, poll_s: float = 1.0) -> Any:
    """The inbox's ASGI app (Starlette) for ``inbox``, an :class:`~mcp_guard.Inbox` (``Inbox(url)`` for a store).

    ``token`` is required on every route. ``poll_s``: how often the page refreshes its list.
    """
    if not isinstance(inbox, Inbox):
        raise TypeError(f"create_app takes an Inbox (Inbox(url) for a store URL), not {type(inbox).__name__}")
    if not token or len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the inbox token must be at least {MIN_TOKEN_CHARS} characters")
    if not poll_s > 0:
        raise ValueError("poll_s must be > 0")
    require_extra("starlette", "inbox", "The approval inbox's web page")
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    box = inbox
    page = _static_text("index.html").replace("__POLL_MS__", str(round(poll_s * 1000)))
    static = {name: _static_text(name) for name in _STATIC}

    def problem(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def index(request: Request) -> Response:
        if "token" in request.query_params:
            # First visit from the printed address: keep the token in a cookie and take it out of the URL bar.
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE,
                cookie_value(token),
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
                path="/",
            )
            return response
        return Response(page, media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            return problem(404, "not found")
        return Response(static[name], media_type=_STATIC[name])

    async def requests(request: Request) -> Response:
        pending, history = await box.listing()
        return JSONResponse({"pending": pending, "history": history, "now": box.clock()})

    async def one(request: Request) -> Response:
        record = await box.get(request.path_params["id"])
        return JSONResponse(record) if record is not None else problem(404, "no such pending request")

    def store_answers(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # the store failed (Redis down): say so; the details go to the log
                log.error("inbox store failed on %s: %s: %s", request.url.path, type(exc).__name__, exc)
                return problem(503, "the inbox store is unreachable")

        return answer

    async def decide(request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return problem(415, "send the decision as JSON (Content-Type: application/json)")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return problem(413, "the decision is too large")
        try:
            decision = json.loads(body)
        except ValueError:
            return problem(400, "the body is not valid JSON")
        try:
            record = await box.decide(request.path_params["id"], decision)
        except ValueError as exc:
            return problem(400, str(exc))
        except DecisionRefused as exc:
            if exc.why == "decided":
                return JSONResponse({"error": "already decided", "status": exc.status}, status_code=409)
            if exc.why == "left":
                # Gone, not merely decided: no worker waits for an answer, so no decision can take effect.
                why = "its worker stopped" if exc.status == "abandoned" else "its request was withdrawn"
                message = f"the caller left ({why}): nobody is waiting for this decision"
                return JSONResponse({"error": message, "status": exc.status}, status_code=410)
            return problem(404, "no such pending request (unknown, or past its deadline)")
        return JSONResponse(record)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with box.connected():
            yield

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/static/{name}", asset, methods=["GET"]),
            Route("/api/requests", store_answers(requests), methods=["GET"]),
            Route("/api/requests/{id}", store_answers(one), methods=["GET"]),
            Route("/api/requests/{id}/decision", store_answers(decide), methods=["POST"]),
        ],
        lifespan=lifespan,
    )

    def refuse(status: int, message: str) -> Response:
        return PlainTextResponse(message, status_code=status, headers={"www-authenticate": "Bearer"})

    async def guarded(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """Every HTTP request: the token first, then the same-origin rule for anything that changes state."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope)
        bearer = _bearer(request.headers)
        if bearer is not None:
            authorised = _token_ok(bearer, token)
        elif request.method == "GET" and scope["path"] == "/" and "token" in request.query_params:
            authorised = _token_ok(request.query_params["token"], token)
        else:
            authorised = _token_ok(request.cookies.get(COOKIE), cookie_value(token))

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend((k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items())
                message = {**message, "headers": headers}
            await send(message)

        if not authorised:
            response = refuse(401, "missing or wrong token: open the address mcp-guard inbox printed (with ?token=)")
            await response(scope, receive, send_secured)
            return
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request.headers, bearer is not None):
            response = PlainTextResponse("cross-site request refused", status_code=403)
            await response(scope, receive, send_secured)
            return
        await app(scope, receive, send_secured)

    return guarded


class InboxServer:
    """Serve an inbox app with uvicorn in a thread of its own (demos and tests); ``url`` once started.

    >>> with InboxServer(create_app(inbox, token=t)) as server:
    ...     print(server.url)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._uvicorn = require_extra("uvicorn", "inbox", "The approval inbox's web server")
        self.app = app
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self._server: Any = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> InboxServer:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = self._uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        server = self._server = self._uvicorn.Server(config)
        thread = self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="mcp-guard-inbox-web", daemon=True
        )
        thread.start()
        ready = threading.Event()
        waited = 0.0
        while not server.started:
            if not thread.is_alive() or waited > timeout_s:
                self.stop()
                raise RuntimeError("the inbox web server did not start")
            ready.wait(0.01)
            waited += 0.01
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> InboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["COOKIE", "MIN_TOKEN_CHARS", "TOKEN_ENV", "InboxServer", "cookie_value", "create_app"]
