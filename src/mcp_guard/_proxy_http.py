"""The proxy's streamable-HTTP front: clients connect to ``http://HOST:PORT/mcp``; identity from each request.

Stateful sessions (the SDK's ``StreamableHTTPSessionManager``), so a call that needs approval can ask its
client by elicitation on the same stream. Each client session gets its own upstream session.

Identity, when configured, comes from every request: ``bearer`` reads ``Authorization: Bearer <token>``
(mapped to a name by a tokens file, or else identified by the token's SHA-256 fingerprint, so the secret
itself never reaches the audit log); ``header`` reads a header you name (behind a gateway that sets it). A
request without it is refused with 401 before any MCP message is handled: an unknown caller is never
served under a default identity.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import uvicorn
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.context import RequestContext
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_guard._proxy_server import GuardProxy

IdentityFromHeaders = Callable[[Mapping[str, str]], "str | None"]


def identity_reader(
    source: Literal["bearer", "header"], *, header: str | None = None, tokens: Mapping[str, str] | None = None
) -> IdentityFromHeaders:
    """A function from request headers to the caller's identity, or None when the request does not carry one."""
    if source == "header":
        if not header:
            raise ValueError("identity from a header needs the header's name")
        name = header.lower()

        def from_header(headers: Mapping[str, str]) -> str | None:
            value = headers.get(name, "").strip()
            return value or None

        return from_header

    def from_bearer(headers: Mapping[str, str]) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if tokens is not None:
            return tokens.get(token)  # an unknown token is no identity
        return "bearer:" + hashlib.sha256(token.encode()).hexdigest()[:16]

    return from_bearer


class _Endpoint:
    """The ``/mcp`` ASGI endpoint: refuses callers without an identity, hands the rest to the SDK."""

    def __init__(self, manager: StreamableHTTPSessionManager, identity_of: IdentityFromHeaders | None) -> None:
        self.manager = manager
        self.identity_of = identity_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.identity_of is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
            if self.identity_of(headers) is None:
                response = JSONResponse(
                    {"error": "unauthorized", "reason": "this proxy needs the caller's identity on every request"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
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


def asgi_app(proxy: GuardProxy, identity_of: IdentityFromHeaders | None = None, gate: Any = None) -> Starlette:
    """The proxy as an ASGI application serving MCP at ``/mcp``. Call :meth:`GuardProxy.probe` first.

    ``gate``: wraps the endpoint, to refuse requests before the SDK sees them (the JWT front's ``JwtGate``)."""
    manager = StreamableHTTPSessionManager(app=proxy.server)
    endpoint: Any = _Endpoint(manager, identity_of)
    if gate is not None:
        endpoint = gate(endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return Starlette(routes=[Route("/mcp", endpoint=endpoint)], lifespan=lifespan)


async def serve_http(
    proxy: GuardProxy, host: str, port: int, identity_of: IdentityFromHeaders | None = None, gate: Any = None
) -> None:
    """Connect to the upstream once (fail early if it is down), then serve until SIGINT/SIGTERM."""
    try:
        await proxy.probe()
        config = uvicorn.Config(
            asgi_app(proxy, identity_of, gate),
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        await uvicorn.Server(config).serve()
    finally:
        await proxy.guard.aclose()  # store connections and audit files, from the loop that used them


__all__ = ["asgi_app", "identity_reader", "request_identity", "serve_http"]
