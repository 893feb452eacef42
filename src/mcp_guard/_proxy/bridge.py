"""The relay on the mcp SDK's transports: ``--no-relay`` stdio, the HTTP front, and a streamable-HTTP upstream.

Every proxy path is one :class:`~mcp_guard._proxy.relay.Relay`: a JSON-RPC relay that judges ``tools/call``
and passes everything else both ways as it parsed it (issue 25). The SDK-based server that the HTTP front and
``--no-relay`` used before was a second MCP session of its own: it declared none of the client's capabilities
upstream and answered the upstream's requests (sampling, roots, elicitation) itself, so a server behind it
could not do what it does without the proxy. Relaying instead of re-enacting makes the proxy transparent by
construction: the client's ``initialize`` goes upstream as the client sent it, whatever it declares, and the
upstream's requests reach the client with their answers coming back, under the relay's id rules and tool-call
guard, which every path now shares.

What the SDK still does is the transport, where it is the right tool: the streamable-HTTP server (sessions,
SSE, ``Last-Event-ID`` resumption from an event store, DNS-rebinding checks stay ours), its stdio server (which
reads a terminal or a file, where the relay's own pipe reader cannot), and its streamable-HTTP client for an
``--upstream URL``. Between those and the relay, messages are lines: each message the SDK parsed is
re-serialised and parsed again, strictly, by the relay (so the same rules hold on every path), and each line the
relay writes is validated into the SDK's message model on its way out.

On the HTTP front each client session gets its own relay and its own upstream session (one process, or one
HTTP session upstream), for its whole life. An upstream's message that answers no request goes on the stream
of the request it belongs to when that is known (progress, by its token) or when only one client request is
in flight (as a server relates its sampling request to the tool call that needs it); else on the session's
standalone ``GET`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import mcp.types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import ServerMessageMetadata, SessionMessage

from mcp_guard._guard.guard import Guard
from mcp_guard._proxy.relay import MAX_CLIENT_MESSAGE, Relay, UpstreamProcess

log = logging.getLogger("mcp_guard.proxy")

_LINE_LIMIT = 1 << 28  # as the relay's upstream reader: resources can be large
_FLUSH_S = 5.0  # for what the relay wrote to reach the client's transport once the session ends

#: Who is calling, from the request that carried a message (``.request``: the HTTP request, when there is one).
CallerOf = Callable[[Any], Any]


class _Context:
    """What the HTTP front's identity readers are given: ``request``, as in the SDK's request context."""

    __slots__ = ("request",)

    def __init__(self, request: object | None) -> None:
        self.request = request


def _line(message: types.JSONRPCMessage) -> bytes:
    # The fields the sender set, as the SDK's own transports write them (an explicit null stays a null).
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"


class ClientSide:
    """The client's side of a relay on an SDK server transport's streams.

    ``reader`` gives the relay the client's messages as lines; the relay writes its lines for the client here
    (the relay's ``Sink``). Keeps, per client request still unanswered, the HTTP request that carried it (for
    the caller's identity) and its progress token (to send its progress on its stream).
    """

    def __init__(
        self,
        read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
        write_stream: MemoryObjectSendStream[SessionMessage],
    ) -> None:
        self.reader = asyncio.StreamReader(limit=MAX_CLIENT_MESSAGE)
        self._read_stream = read_stream
        self._write_stream = write_stream
        self._out: asyncio.Queue[SessionMessage] = asyncio.Queue()
        self._closed = False
        self._open: OrderedDict[Any, object | None] = OrderedDict()  # request id -> its HTTP request
        self._tokens: dict[Any, Any] = {}  # progress token -> request id

    def context(self, rid: Any) -> _Context:
        return _Context(self._open.get(rid))

    # -- client -> relay ---------------------------------------------------------------------------------

    async def pump_in(self) -> None:
        try:
            async for item in self._read_stream:
                if isinstance(item, Exception):
                    # Not a JSON-RPC message the SDK could read: nothing to relay (as the SDK server did).
                    log.warning("refused a client message the transport could not read: %s", item)
                    continue
                self._note(item)
                self.reader.feed_data(_line(item.message))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass
        finally:
            self.reader.feed_eof()

    def _note(self, item: SessionMessage) -> None:
        root = item.message.root
        if isinstance(root, types.JSONRPCNotification) and root.method == "notifications/cancelled":
            # A cancelled request gets no answer (MCP): it is in flight no more.
            rid = root.params.get("requestId") if isinstance(root.params, dict) else None
            if isinstance(rid, str | int):
                self._open.pop(rid, None)
            return
        if not isinstance(root, types.JSONRPCRequest):
            return
        metadata = item.metadata
        request = metadata.request_context if isinstance(metadata, ServerMessageMetadata) else None
        self._open[root.id] = request
        meta = root.params.get("_meta") if isinstance(root.params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if isinstance(token, str | int) and not isinstance(token, bool):
            self._tokens[token] = root.id

    # -- relay -> client ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            message = types.JSONRPCMessage.model_validate(json.loads(data))
        except ValueError as exc:  # the relay writes what it parsed; a message the SDK's model cannot hold
            log.warning("a message for the client did not fit the SDK's model; dropped: %s", exc)
            return
        self._out.put_nowait(
            SessionMessage(message, metadata=ServerMessageMetadata(related_request_id=self._related(message)))
        )

    def _related(self, message: types.JSONRPCMessage) -> Any:
        root = message.root
        if isinstance(root, types.JSONRPCResponse | types.JSONRPCError):
            self._open.pop(root.id, None)  # the transport sends an answer on its request's stream
            for token in [t for t, rid in self._tokens.items() if rid == root.id]:
                del self._tokens[token]
            return None
        params = root.params if isinstance(root.params, dict) else {}
        if isinstance(root, types.JSONRPCNotification) and root.method == "notifications/progress":
            token = params.get("progressToken")
            if isinstance(token, str | int) and token in self._tokens:
                return self._tokens[token]
        if len(self._open) == 1:
            return next(iter(self._open))
        return None  # the session's standalone stream

    async def drain(self) -> None:
        await self._out.join()

    async def pump_out(self) -> None:
        while True:
            message = await self._out.get()
            try:
                if not self._closed:
                    await self._write_stream.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._closed = True  # the client is gone: what is queued, and what comes, goes nowhere
            finally:
                self._out.task_done()


async def serve_on(
    relay: Relay,
    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
    write_stream: MemoryObjectSendStream[SessionMessage],
) -> None:
    """Run ``relay`` for the one client on these SDK transport streams, until the client leaves or the relay
    is stopped; what the relay wrote last still reaches the transport."""
    side = ClientSide(read_stream, write_stream)
    if isinstance(relay, SdkRelay):
        relay.side = side
    pumps = [asyncio.create_task(side.pump_in()), asyncio.create_task(side.pump_out())]
    try:
        await relay.serve(side.reader, side)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(side.drain(), _FLUSH_S)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        write_stream.close()  # the transport's writer ends (the SDK's stdio server waits for this)


class SdkRelay(Relay):
    """A relay whose upstream is a command or a streamable-HTTP URL, and whose caller is read per request.

    ``identity``: a fixed identity, or a function of a request context (``.request``: the HTTP request that
    carried the call); ``claims``: likewise, the verified token claims (the JWT front).
    """

    def __init__(
        self,
        guard: Guard,
        upstream: Sequence[str] | str,
        *,
        server_name: str | None = None,
        identity: str | CallerOf | None = None,
        claims: CallerOf | None = None,
    ) -> None:
        self.url = upstream if isinstance(upstream, str) else None
        super().__init__(
            guard,
            [upstream] if isinstance(upstream, str) else upstream,
            server_name=server_name,
            identity=identity if isinstance(identity, str) else None,
        )
        self._identity_of = identity if callable(identity) else None
        self._claims_of = claims
        self.side: ClientSide | None = None

    async def _start_upstream(self) -> UpstreamProcess:
        if self.url is None:
            return await super()._start_upstream()
        return await HttpUpstream.open(self.url)

    def caller(self, rid: Any) -> str | None:
        if self._identity_of is None:
            return self.identity
        found = self._identity_of(self.side.context(rid) if self.side is not None else _Context(None))
        return found if isinstance(found, str) else None

    def caller_claims(self, rid: Any) -> Mapping[str, Any] | None:
        if self._claims_of is None:
            return None
        found = self._claims_of(self.side.context(rid) if self.side is not None else _Context(None))
        return found if isinstance(found, Mapping) else None


# -- a streamable-HTTP upstream ------------------------------------------------------------------------------


class _Pipe:
    """The relay's lines for an HTTP upstream, queued as SDK messages for its client session."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SessionMessage | None] = asyncio.Queue()
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("the upstream session is closed")
        self.queue.put_nowait(SessionMessage(types.JSONRPCMessage.model_validate(json.loads(data))))

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class HttpUpstream:
    """One streamable-HTTP client session to ``url``, looking to the relay like the child process it expects:
    ``stdin`` takes its lines, ``stdout`` gives the upstream's messages as lines; closing ``stdin`` ends the
    session (the SDK's client says so to the server). An error on the session ends it: whatever waits gets the
    relay's "upstream ended" error (nothing passes on a fault)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stdin = _Pipe()
        self.stdout = asyncio.StreamReader(limit=_LINE_LIMIT)
        self.returncode: int | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str) -> HttpUpstream:
        upstream = cls(url)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        upstream._task = asyncio.create_task(upstream._run(started))
        await started
        return upstream

    async def _run(self, started: asyncio.Future[None]) -> None:
        try:
            async with streamable_http_client(self.url) as (read, write, _):
                started.set_result(None)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read, read, tg.cancel_scope)
                    await self._write(write)
                    tg.cancel_scope.cancel()
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                log.warning("the upstream session at %s failed: %s", self.url, exc)
        finally:
            self.returncode = 0
            self.stdout.feed_eof()

    async def _read(
        self, read: MemoryObjectReceiveStream[SessionMessage | Exception], scope: anyio.CancelScope
    ) -> None:
        async for item in read:
            if isinstance(item, Exception):
                log.warning("the upstream session at %s failed: %s", self.url, item)
                break
            self.stdout.feed_data(_line(item.message))
        scope.cancel()

    async def _write(self, write: MemoryObjectSendStream[SessionMessage]) -> None:
        while (message := await self.stdin.queue.get()) is not None:
            await write.send(message)

    def terminate(self) -> None:
        if self._task is not None:
            self._task.cancel()

    kill = terminate

    async def wait(self) -> int:
        if self._task is not None:
            await asyncio.wait({self._task})
        return 0


async def probe(upstream: Sequence[str] | str) -> None:
    """Start (or reach) the upstream and initialise an MCP session with it; raise if that fails.

    Once initialised, an error while the session closes is not the upstream's failure: the SDK's stdio client
    raises ``BrokenResourceError`` when the server still talks as it is closed (server-everything announces its
    tools then), which said nothing about whether it is an MCP server.
    """
    transport: contextlib.AbstractAsyncContextManager[Any]
    if isinstance(upstream, str):
        transport = streamable_http_client(upstream)
    else:
        command, *args = upstream
        # As the relay starts it: with this process's environment (the SDK's default passes only a few variables).
        params = StdioServerParameters(command=command, args=args, env=dict(os.environ))
        transport = stdio_client(params, errlog=sys.stderr)
    initialised = False
    try:
        async with transport as streams, ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            initialised = True
    except Exception as exc:
        if not initialised:
            raise
        log.debug("the probe's session with the upstream ended with %r", exc)


# -- the HTTP front's MCP application --------------------------------------------------------------------------


class RelayFront:
    """What the SDK's streamable-HTTP session manager runs for each client session: a relay of its own, with
    its own upstream session, for the session's whole life (the proxy's session maps one-to-one onto the
    upstream's). ``identity`` and ``claims`` as for :class:`SdkRelay`."""

    def __init__(
        self,
        guard: Guard,
        upstream: Sequence[str] | str,
        *,
        server_name: str | None = None,
        identity: str | CallerOf | None = None,
        claims: CallerOf | None = None,
    ) -> None:
        self.guard = guard
        self.upstream = upstream
        self.server_name = server_name
        self.identity = identity
        self.claims = claims
        self.connected = False  # the upstream answered once: later failures are not startup failures
        self._relays: set[Relay] = set()

    async def probe(self) -> None:
        """Reach the upstream once, before serving, to fail early (in one line) if it is down or not MCP."""
        await probe(self.upstream)
        self.connected = True

    def create_initialization_options(self) -> None:
        return None  # the upstream answers each client's initialize itself

    async def run(
        self,
        read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
        write_stream: MemoryObjectSendStream[SessionMessage],
        _options: object = None,
        **_: Any,
    ) -> None:
        relay = SdkRelay(
            self.guard, self.upstream, server_name=self.server_name, identity=self.identity, claims=self.claims
        )
        self._relays.add(relay)
        try:
            await serve_on(relay, read_stream, write_stream)
        finally:
            self._relays.discard(relay)

    async def policy_changed(self) -> None:
        """Tell every connected client that the tool list changed (after a reload changed what is hidden)."""
        for relay in list(self._relays):
            await relay.policy_changed()


__all__ = ["ClientSide", "HttpUpstream", "RelayFront", "SdkRelay", "probe", "serve_on"]
