"""An SDK-based MCP proxy server: an MCP server in front of an MCP server, every tool call through a :class:`Guard`.

``mcp-guard proxy`` no longer serves through this module (every path is the relay, which is transparent where
this server is not, see :mod:`mcp_guard._proxy.bridge`); it stays for embedding a proxy in a Python process
on the SDK's own streams.

Built on the official SDK's low-level ``Server`` (downstream, towards the client) and ``ClientSession``
(upstream). Requests are forwarded as the client sent them (cursor, ``_meta``, progress tokens), except:

- ``tools/list``: the tools the policy hides or denies outright are left out (``Policy.exposes``, as the
  in-process adapters do), and ``listChanged`` is advertised so :meth:`GuardProxy.policy_changed` can tell
  clients to list again;
- ``tools/call``: decided, rate-limited, approved and audited by the Guard exactly as in-process calls are
  (``Guard.arun``); a refusal comes back as an ``isError`` result whose text is the section 5 violation JSON
  and never reaches the upstream. Approvals are asked of the client by MCP elicitation when it declared the
  capability, else refused with ``approval_required``.

Resources, prompts, completions and logging pass through untouched when the upstream offers them; the
upstream's notifications are passed back to the client. Each downstream session has its own upstream
session (the HTTP front opens one per client session), so notifications and state never cross clients.

Not handled: requests the upstream makes of the client (sampling, elicitation, roots) are answered by the
proxy's ``ClientSession`` defaults (refused), not relayed. An upstream that dies mid-session is not
restarted: each later request gets a JSON-RPC error (nothing is allowed), until the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import mcp.types as types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel.server import Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.shared.context import RequestContext
from mcp.shared.session import RequestResponder

from mcp_guard._calls.approval import ApprovalDecision, ApprovalRequest
from mcp_guard._calls.call import GuardResult, new_call
from mcp_guard._compat import tool_annotations
from mcp_guard._guard.guard import Guard
from mcp_guard._proxy.strict_json import inexact_integer
from mcp_guard._proxy.wire import APPROVAL_SCHEMA, approval_answer, approval_message, can_elicit, refusal

log = logging.getLogger("mcp_guard.proxy")

#: Who is calling, from the request being served (its HTTP request, when there is one).
IdentityOf = Callable[[RequestContext[ServerSession, Any, Any]], "str | None"]
Upstream = Sequence[str] | str  # a command line (stdio) or a streamable-HTTP URL

_MessageHandler = Callable[..., Any]

# The requests passed through untouched, by the upstream capability that offers them.
_PASS_THROUGH: dict[str, tuple[tuple[type[Any], type[Any]], ...]] = {
    "resources": (
        (types.ListResourcesRequest, types.ListResourcesResult),
        (types.ListResourceTemplatesRequest, types.ListResourceTemplatesResult),
        (types.ReadResourceRequest, types.ReadResourceResult),
        (types.SubscribeRequest, types.EmptyResult),
        (types.UnsubscribeRequest, types.EmptyResult),
    ),
    "prompts": (
        (types.ListPromptsRequest, types.ListPromptsResult),
        (types.GetPromptRequest, types.GetPromptResult),
    ),
    "completions": ((types.CompleteRequest, types.CompleteResult),),
    "logging": ((types.SetLevelRequest, types.EmptyResult),),
}


class _Link:
    """One downstream session's path through the proxy: its upstream session and what it learned there."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex  # the guard's ``session`` for session-scoped limits
        self.upstream: ClientSession | None = None
        self.init: types.InitializeResult | None = None
        self.downstream: ServerSession | None = None
        self.tools: dict[str, types.Tool] = {}
        self.listed = False

    @property
    def session(self) -> ClientSession:
        if self.upstream is None:  # pragma: no cover - a link is only handed out once connected
            raise RuntimeError("the upstream session is not open")
        return self.upstream

    async def on_upstream_message(
        self,
        message: RequestResponder[types.ServerRequest, types.ClientResult] | types.ServerNotification | Exception,
    ) -> None:
        if isinstance(message, Exception):
            log.warning("upstream reported an error: %s", message)
            return
        if not isinstance(message, types.ServerNotification):
            return  # upstream requests are answered by the ClientSession's callbacks
        if isinstance(message.root, types.ToolListChangedNotification):
            self.tools.clear()
            self.listed = False
        if self.downstream is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.downstream.send_notification(message)

    def remember(self, tools: Sequence[types.Tool]) -> None:
        for tool in tools:
            self.tools[tool.name] = tool

    async def tool(self, name: str) -> types.Tool | None:
        """The upstream's declaration of ``name`` (for its annotations), listing the upstream once on a miss."""
        if name not in self.tools and not self.listed:
            cursor: str | None = None
            while True:
                page = await self.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
                self.remember(page.tools)
                cursor = page.nextCursor
                if not cursor:
                    break
            self.listed = True
        return self.tools.get(name)


class GuardProxy:
    """An MCP server that forwards to ``upstream`` and puts every tool call through ``guard``.

    ``upstream``: a command line (started over stdio, with this process's environment) or a streamable-HTTP
    URL. ``server_name``: the server name server-qualified rules see (default: the upstream's
    ``serverInfo.name``). ``identity``: a fixed caller identity, or a function of the request context (the
    HTTP front reads a bearer token or a header with it). ``claims``: a function of the request context giving
    the claims of its verified token (the JWT front), for ``claims.*`` conditions.
    """

    def __init__(
        self,
        guard: Guard,
        upstream: Upstream,
        *,
        server_name: str | None = None,
        identity: str | IdentityOf | None = None,
        claims: Callable[[RequestContext[ServerSession, Any, Any]], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.guard = guard
        self.upstream = upstream if isinstance(upstream, str) else list(upstream)
        if not self.upstream:
            raise ValueError("the upstream command is empty")
        self.server_name = server_name
        self._identity = identity
        self._claims = claims  # a verified token's claims, for claims.* conditions (the JWT front)
        self._fixed: _Link | None = None
        self._options: InitializationOptions | None = None
        self._sessions: weakref.WeakSet[ServerSession] = weakref.WeakSet()
        self._run_scope: anyio.CancelScope | None = None
        self.stopped = False
        self.connected = False  # an upstream session was opened once: later failures are not startup failures
        self.server: Server[_Link, Any] = Server("mcp-guard-proxy", lifespan=self._lifespan)
        self.server.create_initialization_options = self._initialization_options  # type: ignore[method-assign]
        self.server.request_handlers[types.ListToolsRequest] = self._list_tools
        self.server.request_handlers[types.CallToolRequest] = self._call_tool

    # -- connecting upstream ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[_Link]:
        """Open (and initialise) one upstream session; closing it ends the upstream process or HTTP session."""
        link = _Link()
        async with contextlib.AsyncExitStack() as stack:
            transport: AbstractAsyncContextManager[Any]
            if isinstance(self.upstream, str):
                transport = streamable_http_client(self.upstream)
            else:
                command, *args = self.upstream
                # The upstream inherits this process's environment (the SDK's default passes only a few
                # variables): a server configured by environment must behave the same behind the proxy.
                params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
                transport = stdio_client(params, errlog=sys.stderr)
            streams = await stack.enter_async_context(transport)
            session = await stack.enter_async_context(
                ClientSession(streams[0], streams[1], message_handler=link.on_upstream_message)
            )
            link.init = await session.initialize()
            link.upstream = session
            self.connected = True
            yield link

    @contextlib.asynccontextmanager
    async def _lifespan(self, _server: Server[_Link, Any]) -> AsyncIterator[_Link]:
        # Entered once per downstream session: stdio serves one, already connected; HTTP opens one per client.
        if self._fixed is not None:
            yield self._fixed
            return
        async with self.connect() as link:
            yield link

    def initialization_options(self, init: types.InitializeResult) -> InitializationOptions:
        """What the proxy tells clients: the upstream's identity and capabilities, tools with ``listChanged``."""
        caps = init.capabilities
        offered: dict[str, Any] = {
            "resources": caps.resources,
            "prompts": caps.prompts,
            "completions": caps.completions,
            "logging": caps.logging,
        }
        for handlers in _PASS_THROUGH.values():
            for request_type, _ in handlers:
                self.server.request_handlers.pop(request_type, None)
        for capability, handlers in _PASS_THROUGH.items():
            if offered[capability] is None:
                continue
            for request_type, result_type in handlers:
                if request_type in (types.SubscribeRequest, types.UnsubscribeRequest) and not (
                    caps.resources and caps.resources.subscribe
                ):
                    continue
                self.server.request_handlers[request_type] = self._forwarder(result_type)
        capabilities = types.ServerCapabilities(
            tools=types.ToolsCapability(listChanged=True),
            resources=caps.resources,
            prompts=caps.prompts,
            completions=caps.completions,
            logging=caps.logging,
        )
        options = InitializationOptions(
            server_name=init.serverInfo.name,
            server_version=init.serverInfo.version,
            capabilities=capabilities,
            instructions=init.instructions,
        )
        self._options = options
        return options

    def _initialization_options(self, *_: Any, **__: Any) -> InitializationOptions:
        if self._options is None:  # pragma: no cover - serve_* sets them before any session starts
            raise RuntimeError("the proxy has not connected to its upstream yet")
        return self._options

    # -- serving ---------------------------------------------------------------------------------------

    async def serve(self, read_stream: Any, write_stream: Any, *, connected: Callable[[], None] | None = None) -> None:
        """Serve one client on these streams (stdio), with one upstream session for its whole life.

        ``connected`` is called once that session is open, before the client is served.
        """
        self._run_scope = anyio.CancelScope()
        if self.stopped:
            self._run_scope.cancel()
        async with self.connect() as link:
            if connected is not None:
                connected()
            self._fixed = link
            try:
                # Only serving is cancelled by stop(): leaving connect() then closes the upstream gracefully.
                with self._run_scope:
                    await self.server.run(read_stream, write_stream, self.initialization_options(_init(link)))
            finally:
                self._fixed = None

    def stop(self) -> None:
        """End :meth:`serve` (from a signal handler task); the upstream is then closed as on a normal exit."""
        self.stopped = True
        if self._run_scope is not None:
            self._run_scope.cancel()

    async def probe(self) -> None:
        """Connect to the upstream once to learn what it offers (the HTTP front does this before listening)."""
        async with self.connect() as link:
            self.initialization_options(_init(link))

    async def policy_changed(self) -> None:
        """Tell every connected client that the tool list changed (after a policy reload changed what is hidden)."""
        for session in list(self._sessions):
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await session.send_tool_list_changed()

    # -- handlers --------------------------------------------------------------------------------------

    def _context(self) -> tuple[RequestContext[ServerSession, _Link, Any], _Link]:
        ctx = self.server.request_context
        link = ctx.lifespan_context
        link.downstream = ctx.session
        self._sessions.add(ctx.session)
        return ctx, link

    def _server_name(self, link: _Link) -> str:
        return self.server_name or _init(link).serverInfo.name

    def _forwarder(self, result_type: type[Any]) -> Callable[[Any], Any]:
        async def forward(request: Any) -> types.ServerResult:
            _, link = self._context()
            result = await link.session.send_request(_outgoing(request), result_type)
            return types.ServerResult(result)

        return forward

    async def _list_tools(self, request: types.ListToolsRequest) -> types.ServerResult:
        _, link = self._context()
        result = await link.session.send_request(_outgoing(request), types.ListToolsResult)
        link.remember(result.tools)
        guard, server = self.guard, self._server_name(link)
        shown = [
            t
            for t in result.tools
            if guard.listed(  # compared with the policy's pins, if any, at every listing
                t.name,
                server=server,
                annotations=tool_annotations(t.annotations),
                description=t.description,
                input_schema=getattr(t, "inputSchema", None) or getattr(t, "input_schema", None),
            )
        ]
        return types.ServerResult(result.model_copy(update={"tools": shown}))

    async def _call_tool(self, request: types.CallToolRequest) -> types.ServerResult:
        ctx, link = self._context()
        params = request.params
        tool = await link.tool(params.name)

        async def forward(**arguments: Any) -> types.CallToolResult:
            # The arguments the guard admitted (an approver may have edited them), with the client's _meta.
            call = types.CallToolRequest(params=params.model_copy(update={"arguments": arguments}))
            return await link.session.send_request(_outgoing(call), types.CallToolResult)

        guard = self._elicit_guard() if _can_elicit(ctx.session) else self.guard
        server = self._server_name(link)
        identity = self._identity(ctx) if callable(self._identity) else self._identity
        inexact = inexact_integer(params.arguments)
        if inexact is not None:  # the relay refuses such a message outright; here the SDK has parsed it already
            call = new_call(params.name, params.arguments, server, identity, link.id, call_id=str(ctx.request_id))
            refused = await guard.arefuse(call, guard.malformed(params.name, inexact, server=server), deliver=False)
            return types.ServerResult(types.CallToolResult.model_validate(refusal(refused)))
        decided = guard.arun(
            params.name,
            params.arguments or {},
            forward,
            server=server,
            identity=identity,
            claims=self._claims(ctx) if self._claims is not None else None,
            session=link.id,
            annotations=tool_annotations(tool.annotations) if tool is not None else None,
            tool_schema=tool.inputSchema if tool is not None else None,
            call_id=str(ctx.request_id),
        )
        result = await _cancelled_once(decided)
        if result.violation is not None:
            return types.ServerResult(types.CallToolResult.model_validate(refusal(result.violation)))
        value: types.CallToolResult = result.value
        return types.ServerResult(value)

    # -- approvals by elicitation ----------------------------------------------------------------------

    def _elicit_guard(self) -> Guard:
        """The guard for a client that declared elicitation: the same guard, asking that client instead.

        A shallow copy made per call, so it always carries the guard's current policy, store and audit
        sinks (a reload swaps the policy on the original) and differs only in its approver. Clients that
        cannot be asked get the guard as configured: its own approver (an inbox), or none, which refuses
        with ``approval_required``.
        """
        return self.guard.with_approver(self.ask_client)

    async def ask_client(self, request: ApprovalRequest) -> ApprovalDecision:
        """The Guard's approver: ask the client of the call being served, by ``elicitation/create``.

        Bound per request through the SDK's request context (the Guard runs the approver in a task that
        inherits it). Accept approves; decline and cancel deny; the Guard's approval timeout fails closed.
        """
        ctx = self.server.request_context
        answer = await ctx.session.elicit_form(
            message=approval_message(request),
            requestedSchema=APPROVAL_SCHEMA,
            related_request_id=ctx.request_id,
        )
        return approval_answer(answer.action)


async def _cancelled_once(decided: Coroutine[Any, Any, GuardResult]) -> GuardResult:
    """Run the guard on a call in a task of its own, so that a cancellation reaches it exactly once.

    The SDK cancels a request's handler (a client's ``notifications/cancelled``, a session that ends) through
    an anyio cancel scope, which cancels again at every later await of the handler: the guard's clean-up after
    the first cancellation (giving back the quota an approval held, in a store round trip) would be cut off
    there, and the call's one ``cancelled`` event never written. Here the guard's task is cancelled once, as
    asyncio does, and the handler waits, shielded, for that clean-up to end before it lets the cancellation go on.
    """
    task = asyncio.ensure_future(decided)  # copies the context: the request context, for ask_client
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        raise


def _outgoing(request: Any) -> types.ClientRequest:
    # The request as parsed keeps the incoming envelope (``jsonrpc``, ``id``) as extra fields; the upstream
    # session adds its own. Method and params (with their ``_meta`` and any extra fields) go on as they came.
    return types.ClientRequest(type(request)(method=request.method, params=request.params))


def _init(link: _Link) -> types.InitializeResult:
    if link.init is None:  # pragma: no cover - set by connect() before the link is handed out
        raise RuntimeError("the upstream session is not initialised")
    return link.init


def _can_elicit(session: ServerSession) -> bool:
    params = session.client_params
    return params is not None and can_elicit(params.capabilities.model_dump(exclude_none=True))


__all__ = ["GuardProxy", "IdentityOf", "Upstream"]
