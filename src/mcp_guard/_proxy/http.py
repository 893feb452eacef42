"""The proxy's streamable-HTTP front: clients connect to ``http://HOST:PORT/mcp``; identity from each request.

Stateful sessions (the SDK's ``StreamableHTTPSessionManager``), each relayed by a relay of its own
(:mod:`mcp_guard._proxy.bridge`) to an upstream session of its own: whatever the client and the upstream say
to each other passes, only tool calls are judged. Streams are resumable (``Last-Event-ID``).

Every request first passes the ``Host`` / ``Origin`` check of :mod:`mcp_guard._proxy.origin` (DNS rebinding).

Identity, when configured, comes from every request: ``bearer`` reads ``Authorization: Bearer <token>``
(mapped to a name by a tokens file; only when told to trust any bearer, identified by the token's SHA-256
fingerprint, so the secret itself never reaches the audit log); ``header`` reads a header you name (behind a
gateway that sets it). A request without it is refused with 401, naming what it lacks, before any MCP message
is handled: an unknown caller is never served under a default identity.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import anyio
import uvicorn
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_guard._proxy.bridge import RelayFront
from mcp_guard._proxy.events import MemoryEventStore
from mcp_guard._proxy.origin import FrontDoor, FrontDoorMiddleware
from mcp_guard._proxy.relay import tell_on_reload

IdentityFromHeaders = Callable[[Mapping[str, str]], "str | None"]


class IdentityReader:
    """A function from request headers to the caller's identity (None when the request does not carry one),
    with ``expects``: what a request must carry, said in the 401 of a request without it."""

    def __init__(self, read: IdentityFromHeaders, expects: str, challenge: str | None = None) -> None:
        self._read = read
        self.expects = expects
        self.challenge = challenge  # the WWW-Authenticate scheme, for bearer tokens

    def __call__(self, headers: Mapping[str, str]) -> str | None:
        return self._read(headers)


def identity_reader(
    source: Literal["bearer", "header"],
    *,
    header: str | None = None,
    tokens: Mapping[str, str] | None = None,
    trust_any: bool = False,
) -> IdentityReader:
    """The caller's identity from request headers: a header's value, or a bearer token checked against ``tokens``.

    A bearer identity needs a way to check the token: ``tokens`` (token -> identity), or ``trust_any=True``,
    which takes any token as its own identity (its SHA-256 prefix), so a caller who invents tokens gets a
    fresh identity, and a fresh per-identity budget, with each one. (JWT keys, section 11, join here.)
    """
    if source == "header":
        if not header:
            raise ValueError("identity from a header needs the header's name")
        name = header.lower()

        def from_header(headers: Mapping[str, str]) -> str | None:
            value = headers.get(name, "").strip()
            return value or None

        return IdentityReader(from_header, f"a {header} header naming the caller")
    if tokens is None and not trust_any:
        raise ValueError("a bearer identity needs a way to check the token: tokens, or trust_any=True")

    def from_bearer(headers: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if tokens is not None:
            return tokens.get(token)  # an unknown token is no identity
        return "bearer:" + hashlib.sha256(token.encode()).hexdigest()[:16]

    known = " listed in the proxy's --tokens file" if tokens is not None else ""
    return IdentityReader(from_bearer, f"an Authorization: Bearer <token> header with a token{known}", "Bearer")


class _Endpoint:
    """The ``/mcp`` ASGI endpoint: refuses callers without an identity, hands the rest to the SDK."""

    def __init__(self, manager: StreamableHTTPSessionManager, identity_of: IdentityFromHeaders | None) -> None:
        self.manager = manager
        self.identity_of = identity_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.identity_of is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
            if self.identity_of(headers) is None:
                expects = getattr(self.identity_of, "expects", "the caller's identity")
                challenge = getattr(self.identity_of, "challenge", None)
                response = JSONResponse(
                    {"error": "unauthorized", "reason": f"this proxy needs {expects} on every request"},
                    status_code=401,
                    headers={"WWW-Authenticate": challenge} if challenge else None,
                )
                await response(scope, receive, send)
                return
        await self.manager.handle_request(scope, receive, send)


def request_identity(
    identity_of: IdentityFromHeaders,
) -> Callable[[RequestContext[ServerSession, Any, Any]], str | None]:
    """The proxy's per-call identity: read from the HTTP request that carried the call."""

    def of(ctx: RequestContext[ServerSession, Any, Any]) -> str | None:
        request = ctx.request
        headers = getattr(request, "headers", None)
        return identity_of(headers) if headers is not None else None

    return of


def asgi_app(
    proxy: RelayFront, identity_of: IdentityFromHeaders | None = None, *, door: FrontDoor, gate: Any = None
) -> Starlette:
    """The proxy as an ASGI application serving MCP at ``/mcp``, behind ``door``'s Host/Origin check.

    ``proxy``: a :class:`RelayFront` (each client session relayed to its own upstream session). ``gate`` wraps
    the endpoint, to refuse requests before the SDK sees them (the JWT front's ``JwtGate``). Call
    ``proxy.probe()`` first. Streams are resumable: a client that lost one gets what it missed with
    ``Last-Event-ID`` (:mod:`mcp_guard._proxy.events`).
    """
    app: Any = proxy  # not an SDK Server: RelayFront offers the one method the manager calls, run()
    manager = StreamableHTTPSessionManager(app=app, event_store=MemoryEventStore())
    endpoint: Any = _Endpoint(manager, identity_of)
    if gate is not None:
        endpoint = gate(endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return Starlette(
        routes=[Route("/mcp", endpoint=endpoint)],
        middleware=[Middleware(FrontDoorMiddleware, door=door)],
        lifespan=lifespan,
    )


class _Server(uvicorn.Server):
    """uvicorn's server, saying once on stderr where it listens (uvicorn's own start lines are info-level, and the
    proxy logs warnings only): an operator who starts ``--listen`` sees the URL to give clients."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]  # the socket the caller bound, not uvicorn's defaults
            shown = f"[{host}]" if ":" in host else host
            print(f"mcp-guard proxy: serving MCP at http://{shown}:{port}/mcp (Ctrl-C to stop)", file=sys.stderr)


class _QuietDisconnects(logging.Filter):
    """Drops the SDK's error log, with its traceback, for a client that went away: the streamable-HTTP server logs
    ``Error in standalone SSE writer`` with ``anyio.ClosedResourceError`` each time a client disconnects, which
    is how every client session ends. Any other error still reaches the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream))


_SDK_HTTP_LOGGER = "mcp.server.streamable_http"


def quiet_disconnects() -> None:
    """Install :class:`_QuietDisconnects` on the SDK's streamable-HTTP server logger (once)."""
    logger = logging.getLogger(_SDK_HTTP_LOGGER)
    if not any(isinstance(f, _QuietDisconnects) for f in logger.filters):
        logger.addFilter(_QuietDisconnects())


async def serve_http(
    proxy: RelayFront,
    sock: socket.socket,
    door: FrontDoor,
    identity_of: IdentityFromHeaders | None = None,
    gate: Any = None,
) -> None:
    """Connect to the upstream once (fail early if it is down), then serve on ``sock`` until SIGINT/SIGTERM.

    ``sock`` is bound by the caller before the upstream is started, so a port in use is said in one line and
    starts nothing.
    """
    try:
        if not (isinstance(proxy, RelayFront) and proxy.connected):
            await proxy.probe()
        if isinstance(proxy, RelayFront):
            tell_on_reload(proxy)
        quiet_disconnects()
        config = uvicorn.Config(
            asgi_app(proxy, identity_of, door=door, gate=gate),
            log_level="warning",
            log_config=None,  # uvicorn's records go to the CLI's one-line handler, not its own formatter
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        await _Server(config).serve(sockets=[sock])
    finally:
        await proxy.guard.aclose()  # store connections and audit files, from the loop that used them


__all__ = ["IdentityReader", "asgi_app", "identity_reader", "quiet_disconnects", "request_identity", "serve_http"]
