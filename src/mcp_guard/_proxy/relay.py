"""The MCP proxy's stdio fast path: a JSON-RPC relay that forwards lines as bytes, guarding only tool calls.

``mcp-guard proxy -- CMD`` serves a stdio client in front of a stdio upstream. The SDK-based server
(:mod:`mcp_guard._proxy.server`) is a full second MCP hop: every message is parsed into pydantic models and
serialised again, both ways, through anyio task groups; on a local echo that more than doubles a call. This
relay keeps the wire as it is: each newline-delimited message is parsed once, strictly
(:mod:`mcp_guard._proxy.strict_json`), to read its ``method`` and ``id``, and what goes on is that parse
re-serialised, never the bytes received (another reader could split or decode them another way); a message
that cannot be read one way only is refused with a JSON-RPC error. Messages go on as they came, except:

- the upstream's answer to ``initialize``: ``capabilities.tools.listChanged`` is set, so
  :meth:`Relay.policy_changed` can tell the client to list again;
- the upstream's answer to ``tools/list``: tools the policy hides or denies outright are left out
  (``Policy.exposes``, as the SDK path and the in-process adapters do); their ``inputSchema`` and
  ``annotations`` are remembered for the calls;
- ``tools/call``: put through ``Guard.arun`` exactly as the SDK path does. An admitted call goes upstream
  with the client's id (with the approved arguments, if an approver edited them), and the upstream's answer
  goes back as it came; a refusal is answered here (an ``isError`` result whose text is the violation JSON)
  and never reaches the upstream.
- ``notifications/cancelled`` for a call: a call the guard still holds (waiting for an approval or a
  rate-limit window) is withdrawn (it never goes upstream; the guard writes its ``cancelled`` event and gives
  its quota back); a call already sent upstream is cancelled there too, and keeps its charge (the tool may
  have acted), whatever the upstream answers to the cancellation. No answer goes to the client (MCP).

Approvals: a client that declared elicitation is asked by an ``elicitation/create`` request the relay sends;
any other client gets the guard's own approver (``--inbox``) or ``approval_required``.

Ids: every request the relay originates (its own ``tools/list`` before a first call, elicitation) has a
string id ``mcp-guard-<random>``; a client request using that prefix, or reusing the id of a request still
in flight, is refused with a JSON-RPC error instead of being forwarded, so no answer can reach the wrong
waiter. Requests the upstream makes of the client (sampling, roots, elicitation) and their answers pass
through, which the SDK path cannot do.

An upstream that ends mid-session is not restarted: every request in flight and every later one is answered
with a JSON-RPC error (nothing is allowed, nothing hangs) until the client leaves. A tool call in flight
when it ended keeps its charge and is audited as an ``error``: the tool may have run. Shutdown (client EOF,
SIGINT, SIGTERM) closes the upstream's stdin, then terminates it, then kills it, so it never outlives the
relay. JSON-RPC batches (dropped from MCP in 2025-06-18) are refused: a batch could carry an unguarded call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from mcp_guard._calls.approval import ApprovalDecision, ApprovalRequest
from mcp_guard._calls.call import Admission, GuardResult, new_call
from mcp_guard._compat import tool_annotations
from mcp_guard._guard.guard import Guard
from mcp_guard._policy.decision import Decision
from mcp_guard._proxy.drive import CallDriver, plan_steps
from mcp_guard._proxy.strict_json import INVALID_REQUEST, Refusal, dump, read_messages
from mcp_guard._proxy.wire import APPROVAL_SCHEMA, approval_answer, approval_message, can_elicit, refusal

log = logging.getLogger("mcp_guard.proxy")

#: Prefix of every id the relay originates; client requests may not use it.
ID_PREFIX = "mcp-guard-"
_LINE_LIMIT = 1 << 28  # one upstream message per line; resources can be large
#: The longest client message relayed: below the TypeScript SDK's 10 MiB read buffer, so that whatever the
#: relay passes on, an upstream on that SDK can read (a longer message is refused whole).
MAX_CLIENT_MESSAGE = 8 << 20
_CLOSE_WAIT_S = 2.0  # for the upstream to leave after its stdin closes, then after SIGTERM

_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603
_UPSTREAM_GONE = -32000


class Sink(Protocol):
    """Where the relay writes the client's side of the wire (an ``asyncio.StreamWriter`` in practice)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class _Reply:
    """An upstream answer the relay waited for: the line to relay (its parse re-serialised) and the parse.

    Reads like an MCP ``CallToolResult`` (``content``, ``structuredContent``, ``model_copy``) for the policy's
    result rules (spec section 11): a rule that redacts gets a new reply whose line is written from the
    changed parse.
    """

    __slots__ = ("line", "message")

    def __init__(self, line: bytes, message: dict[str, Any]) -> None:
        self.line = line
        self.message = message

    def _result(self) -> dict[str, Any]:
        result = self.message.get("result")
        return result if isinstance(result, dict) else {}

    @property
    def content(self) -> list[Any]:
        content = self._result().get("content")
        return content if isinstance(content, list) else []

    @property
    def structuredContent(self) -> Any:  # MCP's own spelling, read by the result rules
        return self._result().get("structuredContent")

    def model_copy(self, *, update: Mapping[str, Any]) -> _Reply:
        message = {**self.message, "result": {**self._result(), **update}}
        return _Reply(_dump(message), message)


class _UpstreamFailed(Exception):
    """A tool call sent upstream got no answer the relay can pass on: the upstream ended, or its answer was
    refused. Raised out of the guard's tool function, so the call keeps its charge (the tool may have run) and
    is audited as an ``error``; the client gets this JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Call:
    """A client's ``tools/call`` from its arrival until its answer: the request as parsed, the task deciding
    it when it is not driven in line (see :mod:`mcp_guard._proxy.drive`), whether it is inside the guard yet,
    and whether the client withdrew it before that."""

    __slots__ = ("args", "in_guard", "line", "message", "params", "task", "withdrawn")

    def __init__(self, message: dict[str, Any], line: bytes) -> None:
        self.message = message
        self.line = line
        self.params: dict[str, Any] = {}
        self.args: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.in_guard = False
        self.withdrawn = False


# A pending client request: forwarded as is (None), rewritten on the way back (a callback), waited on by a
# task (a future), still being decided by the guard (_HELD), or cancelled by the client after it went
# upstream (_CANCELLED: its id stays taken until the upstream answers, and that answer is dropped).
_Rewrite = Callable[[bytes, dict[str, Any]], bytes]
_HELD = object()
_CANCELLED = object()
_dump = dump


def _error_line(rid: Any, code: int, message: str) -> bytes:
    return dump({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


def _is_error(reply: Any) -> bool:
    """For the guard: a JSON-RPC error or an ``isError`` result is a failed call (quota given back)."""
    if not isinstance(reply, _Reply):
        return False
    if "error" in reply.message:
        return True
    return Guard.is_error_result(reply.message.get("result"))


def _new_id() -> str:
    return f"{ID_PREFIX}{uuid.uuid4().hex}"


def _valid_id(rid: Any) -> bool:
    return isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))


class Relay:
    """A stdio MCP proxy in front of the upstream ``command``, every tool call through ``guard``.

    ``server_name``: what server-qualified rules see (default: the upstream's ``serverInfo.name``);
    ``identity``: the caller identity of every call. :meth:`serve` runs one client session.
    """

    def __init__(
        self,
        guard: Guard,
        command: Sequence[str],
        *,
        server_name: str | None = None,
        identity: str | None = None,
    ) -> None:
        self.guard = guard
        self.command = list(command)
        if not self.command:
            raise ValueError("the upstream command is empty")
        self.server_name = server_name
        self.identity = identity
        self.session = uuid.uuid4().hex  # the guard's ``session`` for session-scoped limits
        self.stopped = False
        self._client: Sink | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[Any, Any] = {}  # client request id (or relay id) -> None | _Rewrite | Future | _HELD
        self._asks: dict[str, asyncio.Future[dict[str, Any]]] = {}  # elicitations waiting for the client
        self._tools: dict[str, dict[str, Any]] = {}
        self._listed = False
        self._list_lock = asyncio.Lock()
        self._upstream_name: str | None = None
        self._elicit = False
        self._gone = False
        self._calls: set[asyncio.Task[None]] = set()
        self._held: dict[Any, _Call] = {}  # tools/call id -> its state, until its task ends
        self._stop = asyncio.Event()

    # -- life cycle ------------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: Sink) -> None:
        """Start the upstream and relay between it and the client on ``reader``/``writer`` until either
        the client leaves or :meth:`stop` is called; then close the upstream."""
        self._client = writer
        self._proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ),  # as the SDK path: a server configured by environment behaves the same
            limit=_LINE_LIMIT,
        )
        assert self._proc.stdout is not None
        upstream = asyncio.create_task(self._from_upstream(self._proc.stdout))
        client = asyncio.create_task(self._from_client(reader))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({client, stop}, return_when=asyncio.FIRST_COMPLETED)
            if client.done() and not client.cancelled() and client.exception() is not None:
                log.error("reading the client failed: %r", client.exception())
        finally:
            for rid, waiter in list(self._pending.items()):
                if isinstance(waiter, CallDriver):  # in flight upstream, driven in line: cancelled, as a task is
                    self._pending[rid] = _CANCELLED
                    waiter.advance(None, asyncio.CancelledError())
            for task in (client, stop, *self._calls):
                task.cancel()
            await self._close_upstream()
            upstream.cancel()
            await asyncio.gather(upstream, client, stop, *self._calls, return_exceptions=True)

    def stop(self) -> None:
        """End :meth:`serve` (a signal handler calls this); the upstream is then closed as on client EOF."""
        self.stopped = True
        self._stop.set()

    async def _close_upstream(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        for step in (None, proc.terminate, proc.kill):
            if step is not None:
                with contextlib.suppress(ProcessLookupError):
                    step()
            try:
                await asyncio.wait_for(proc.wait(), _CLOSE_WAIT_S)
                return
            except asyncio.TimeoutError:
                continue
        await proc.wait()

    async def policy_changed(self) -> None:
        """Tell the client the tool list changed (after a policy reload changed what is hidden)."""
        self._to_client(_dump({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
        if self._client is not None:
            with contextlib.suppress(ConnectionError):
                await self._client.drain()

    # -- the two directions ----------------------------------------------------------------------------

    def _client_refused(self, refusal: Refusal) -> None:
        """A client message not passed on: its sender gets a JSON-RPC error (a batch could carry a tools/call
        past the guard, a message read two ways could carry anything)."""
        log.warning("refused a client message: %s", refusal.reason)
        text = f"mcp-guard: refused {refusal.reason}"
        rid = refusal.id
        if rid is not None and not refusal.request:
            # An answer the client sent: whoever asked gets the error instead (never the client, whose own
            # request may carry the same id).
            if isinstance(rid, str) and rid.startswith(ID_PREFIX):
                asked = self._asks.get(rid)
                if asked is not None and not asked.done():
                    asked.set_result({"error": {"code": refusal.code, "message": text}})
            else:
                self._write_upstream(_error_line(rid, refusal.code, text))
            return
        self._to_client(_error_line(rid, refusal.code, text))

    async def _from_client(self, reader: asyncio.StreamReader) -> None:
        async for line, message in read_messages(reader, self._client_refused):
            method = message.get("method")
            rid = message.get("id")
            if method is None:  # an answer: to one of the relay's elicitations, or to an upstream request
                if isinstance(rid, str) and rid.startswith(ID_PREFIX):
                    asked = self._asks.get(rid)
                    if asked is not None and not asked.done():
                        asked.set_result(message)
                    continue  # never upstream: the upstream did not ask
                await self._to_upstream(line)
                continue
            if "id" not in message:  # a notification
                if method == "notifications/cancelled" and self._cancelled(message):
                    continue
                await self._to_upstream(line)
                continue
            if not _valid_id(rid) or (isinstance(rid, str) and rid.startswith(ID_PREFIX)) or rid in self._pending:
                self._to_client(_error_line(rid if _valid_id(rid) else None, INVALID_REQUEST, _bad_id(rid)))
                continue
            if self._gone:
                self._to_client(_error_line(rid, _UPSTREAM_GONE, "mcp-guard: the upstream server has ended"))
                continue
            if method == "tools/call":
                self._pending[rid] = _HELD
                state = self._held[rid] = _Call(message, line)
                self._start_call(rid, state)
                proc = self._proc
                if proc is not None and proc.stdin is not None and not self._gone:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await proc.stdin.drain()  # backpressure, as for every other message sent upstream
                continue
            if method == "initialize":
                params = message.get("params")
                self._elicit = can_elicit(params.get("capabilities") if isinstance(params, dict) else None)
                self._pending[rid] = self._on_initialize
            elif method == "tools/list":
                self._pending[rid] = self._on_tools_list
            else:
                self._pending[rid] = None
            await self._to_upstream(line)

    def _cancelled(self, message: dict[str, Any]) -> bool:
        """A client's ``notifications/cancelled``: True when it withdrew a call the guard still holds (the
        notification then goes no further: the upstream never saw the call)."""
        params = message.get("params")
        rid = params.get("requestId") if isinstance(params, dict) else None
        state = self._held.get(rid) if _valid_id(rid) else None
        if state is None:
            return False  # not a tools/call in flight here: the upstream's business
        waiter = self._pending.get(rid)
        if state.task is None and not isinstance(waiter, CallDriver):
            return False
        if waiter is _HELD:
            # Not upstream: withdrawn. The guard writes its "cancelled" event and gives back the quota it held
            # (a call between two attempts keeps the charge: the guard knows it was handed on).
            state.withdrawn = True
            if state.in_guard and state.task is not None:
                state.task.cancel()
            return True
        if isinstance(waiter, CallDriver):
            # In flight upstream, driven in line: as below, the guard is told by the cancellation thrown into
            # the call's steps (charge kept, "cancelled" written), and the upstream is told too.
            self._pending[rid] = _CANCELLED
            waiter.advance(None, asyncio.CancelledError())
            return False
        if isinstance(waiter, asyncio.Future):
            # In flight upstream: the upstream is told too. The id stays taken until it answers, and that
            # answer (the Python SDK sends a "Request cancelled" error) is dropped, never counted as a failed
            # call: cancelling the task makes the guard keep the charge and write "cancelled".
            self._pending[rid] = _CANCELLED
            if state.task is not None:
                state.task.cancel()
            return False
        return True  # cancelled already

    async def _from_upstream(self, reader: asyncio.StreamReader) -> None:
        try:
            async for line, message in read_messages(reader, self._upstream_refused, exact=False):
                if "method" in message:  # a notification, or a request of the client: through as it came
                    if message["method"] == "notifications/tools/list_changed":
                        self._tools.clear()
                        self._listed = False
                    self._to_client(line)
                elif _valid_id(message.get("id")) and message["id"] in self._pending:
                    self._answered(message["id"], line, message)
                else:
                    log.warning("the upstream answered a request it was not sent (id %r); dropped", message.get("id"))
                    continue
                if self._client is not None:
                    await self._client.drain()
        finally:
            self._upstream_ended()

    def _upstream_refused(self, refusal: Refusal) -> None:
        """An upstream message not passed on: its sender, or whoever waits on its answer, gets an error."""
        log.warning("the upstream wrote %s; dropped", refusal.reason)
        rid = refusal.id
        if rid is None:
            return
        text = f"mcp-guard: refused the upstream's {refusal.reason}"
        if refusal.request:  # the upstream asked the client something: it is told instead
            self._write_upstream(_error_line(rid, refusal.code, text))
        elif rid in self._pending:
            self._fail(rid, refusal.code, text)

    def _answered(self, rid: Any, line: bytes, message: dict[str, Any]) -> None:
        waiter = self._pending[rid]
        if waiter is _HELD:  # the guard has not sent this id upstream yet: not an answer to anything
            log.warning("the upstream answered a request it was not sent (id %r); dropped", rid)
            return
        if waiter is _CANCELLED:  # the client cancelled it: nobody waits for this answer any more
            del self._pending[rid]
            return
        if isinstance(waiter, CallDriver):
            self._pending[rid] = _HELD  # with the guard again until its steps end (a retry sends it again)
            reply = _Reply(line, message)
            if waiter.session_free and not _is_error(reply):
                # The steps will hand on exactly this answer (no result rule, nothing to retry): the client gets
                # it now, and the quota and the audit event are settled after, off the client's wait.
                waiter.early = True
                self._to_client(line)
            waiter.advance(reply, None)
            return
        if isinstance(waiter, asyncio.Future):
            self._settled(rid)
            if not waiter.done():
                waiter.set_result(_Reply(line, message))
            return
        del self._pending[rid]
        self._to_client(line if waiter is None else waiter(line, message))

    def _settled(self, rid: Any) -> None:
        # A tools/call's id stays taken (held) until its task ends: a retry may still send it again.
        if rid in self._held:
            self._pending[rid] = _HELD
        else:
            del self._pending[rid]

    def _fail(self, rid: Any, code: int, message: str) -> None:
        """No answer will come for ``rid``: whoever waits gets this error (a tool call: as an exception)."""
        waiter = self._pending.get(rid)
        if waiter is _HELD:
            return  # still with the guard: its forward() sees _gone and answers
        if waiter is _CANCELLED:
            del self._pending[rid]
        elif isinstance(waiter, CallDriver):
            self._pending[rid] = _HELD
            waiter.advance(None, _UpstreamFailed(code, message))
        elif isinstance(waiter, asyncio.Future):
            self._settled(rid)
            if not waiter.done():
                waiter.set_exception(_UpstreamFailed(code, message))
        else:
            del self._pending[rid]
            if not (isinstance(rid, str) and rid.startswith(ID_PREFIX)):
                self._to_client(_error_line(rid, code, message))

    def _upstream_ended(self) -> None:
        """Answer everything in flight with an error; later requests get one too (see ``_from_client``)."""
        self._gone = True
        for rid in list(self._pending):
            self._fail(rid, _UPSTREAM_GONE, "mcp-guard: the upstream server has ended")

    def _to_client(self, line: bytes) -> None:
        if self._client is not None:
            self._client.write(line)

    def _write_upstream(self, line: bytes) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or self._gone:
            return False
        try:
            proc.stdin.write(line)
        except (ConnectionError, RuntimeError):
            return False  # the upstream is going; its stdout's EOF answers what is in flight
        return True

    async def _to_upstream(self, line: bytes) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and self._write_upstream(line):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await proc.stdin.drain()

    async def _request_upstream(self, rid: Any, line: bytes) -> _Reply:
        """Send a request upstream and wait for its answer: an error reply if the upstream had already ended
        (nothing was sent); :class:`_UpstreamFailed` if it ends, or its answer is refused, once sent."""
        if self._gone:
            gone = _error_line(rid, _UPSTREAM_GONE, "mcp-guard: the upstream server has ended")
            return _Reply(gone, json.loads(gone))
        future: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        await self._to_upstream(line)
        return await future

    # -- rewritten answers -----------------------------------------------------------------------------

    def _on_initialize(self, line: bytes, message: dict[str, Any]) -> bytes:
        result = message.get("result")
        if not isinstance(result, dict):
            return line
        info = result.get("serverInfo")
        if isinstance(info, dict) and isinstance(info.get("name"), str):
            self._upstream_name = info["name"]
        caps = result.get("capabilities")
        caps = dict(caps) if isinstance(caps, dict) else {}
        tools = caps.get("tools")
        caps["tools"] = {**(tools if isinstance(tools, dict) else {}), "listChanged": True}
        return _dump({**message, "result": {**result, "capabilities": caps}})

    def _on_tools_list(self, line: bytes, message: dict[str, Any]) -> bytes:
        result = message.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(tools, list):
            return line
        self._remember(tools)
        guard, server = self.guard, self._server()
        shown = [
            t
            for t in tools
            if isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and guard.listed(  # compared with the policy's pins, if any, at every listing
                t["name"],
                server=server,
                annotations=tool_annotations(t.get("annotations")),
                description=t.get("description") if isinstance(t.get("description"), str) else None,
                input_schema=t.get("inputSchema") if isinstance(t.get("inputSchema"), dict) else None,
            )
        ]
        if len(shown) == len(tools):
            return line
        return _dump({**message, "result": {**result, "tools": shown}})

    def _remember(self, tools: Any) -> None:
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                self._tools[tool["name"]] = tool

    def _server(self) -> str | None:
        return self.server_name or self._upstream_name

    async def _tool(self, name: str) -> dict[str, Any] | None:
        """The upstream's declaration of ``name``, listing the upstream once if the client never did."""
        if name not in self._tools and not self._listed:
            async with self._list_lock:
                if name not in self._tools and not self._listed:
                    await self._list_upstream()
        return self._tools.get(name)

    async def _list_upstream(self) -> None:
        cursor: Any = None
        while True:
            rid = _new_id()
            request = {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "tools/list",
                "params": {"cursor": cursor} if cursor else {},
            }
            try:
                reply = await self._request_upstream(rid, _dump(request))
            except _UpstreamFailed:
                return  # the call goes on without a declaration (fails closed)
            result = reply.message.get("result")
            if not isinstance(result, dict):
                return  # an error or a dead upstream: the call goes on without a declaration (fails closed)
            self._remember(result.get("tools"))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        self._listed = True

    # -- tool calls ------------------------------------------------------------------------------------

    def _start_call(self, rid: Any, state: _Call) -> None:
        """A client's ``tools/call``: decided and sent upstream on this turn when the tool's declaration is
        known; else a task lists the upstream's tools first."""
        message = state.message
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        args = params.get("arguments", {}) if isinstance(params, dict) else None
        if args is None:
            args = {}
        if not isinstance(params, dict) or not isinstance(name, str) or not isinstance(args, dict):
            self._end_call(rid)
            self._to_client(_error_line(rid, _INVALID_PARAMS, "mcp-guard: tools/call needs a name and arguments"))
            return
        state.params, state.args = params, args
        if name in self._tools or self._listed:
            self._guard_call(rid, state, name, self._tools.get(name))
            return
        task = state.task = asyncio.create_task(self._list_then_call(rid, state, name))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _list_then_call(self, rid: Any, state: _Call, name: str) -> None:
        try:
            tool = await self._tool(name)
        except asyncio.CancelledError:
            self._end_call(rid)
            raise
        except Exception:  # never leave the client waiting
            log.exception("tools/call %r failed in the relay", rid)
            self._end_call(rid)
            self._to_client(_error_line(rid, _INTERNAL_ERROR, "mcp-guard: the call could not be decided"))
            return
        if state.withdrawn:  # cancelled by the client before the guard saw it: never decided, never sent
            self._end_call(rid)
            await self._withdrawn(rid, name, state.args)
            return
        state.task = None  # from here the driver hands the call to a task of its own if it must wait
        self._guard_call(rid, state, name, tool)

    def _guard_call(self, rid: Any, state: _Call, name: str, tool: dict[str, Any] | None) -> None:
        guard = self.guard.with_approver(self._asker()) if self._elicit else self.guard
        keywords: dict[str, Any] = {
            "is_error": _is_error,
            "server": self._server(),
            "identity": self.identity,
            "session": self.session,
            "annotations": tool_annotations(tool.get("annotations")) if tool is not None else None,
            "tool_schema": tool.get("inputSchema") if tool is not None else None,
            "call_id": str(rid),
        }
        try:
            plan, session_free = plan_steps(guard, name, state.args, keywords)
        except Exception:  # never let a call through on a fault
            log.exception("tools/call %r failed in the relay", rid)
            self._end_call(rid)
            self._to_client(_error_line(rid, _INTERNAL_ERROR, "mcp-guard: the call could not be decided"))
            return
        if isinstance(plan, GuardResult):  # refused outright (its event written)
            self._end_call(rid)
            self._answer(rid, plan)
            return
        # From here a cancellation reaches the guard (see _cancelled), which writes the call's one event.
        state.in_guard = True
        CallDriver(self, rid, guard, plan, session_free).advance(None, None)

    def _end_call(self, rid: Any) -> None:
        self._held.pop(rid, None)
        if self._pending.get(rid) is not _CANCELLED:
            self._pending.pop(rid, None)

    def _answer(self, rid: Any, result: GuardResult) -> None:
        if result.violation is not None:
            self._to_client(_dump({"jsonrpc": "2.0", "id": rid, "result": refusal(result.violation)}))
        else:
            self._to_client(result.value.line)

    def _call_line(self, state: _Call, arguments: Mapping[str, Any]) -> bytes:
        # The client's request as parsed when the guard admitted the arguments as sent; else with the approved
        # arguments (same id, same _meta and progress token).
        if arguments == state.args and "arguments" in state.params:
            return state.line
        return _dump({**state.message, "params": {**state.params, "arguments": dict(arguments)}})

    # -- the call driver's host (mcp_guard._proxy.drive.Host) ------------------------------------------

    def send_call(self, driver: CallDriver, args: Mapping[str, Any]) -> Any:
        rid = driver.rid
        if self._gone:
            gone = _error_line(rid, _UPSTREAM_GONE, "mcp-guard: the upstream server has ended")
            return _Reply(gone, json.loads(gone))
        state = self._held.get(rid)
        assert state is not None  # held until the driver ends
        self._pending[rid] = driver
        self._write_upstream(self._call_line(state, args))  # a failed write: the upstream's EOF answers it
        return None

    async def request_call(self, driver: CallDriver, args: Mapping[str, Any]) -> Any:
        state = self._held.get(driver.rid)
        assert state is not None
        return await self._request_upstream(driver.rid, self._call_line(state, args))

    def call_task(self, driver: CallDriver, task: asyncio.Task[None]) -> None:
        state = self._held.get(driver.rid)
        if state is not None:
            state.task = task
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def call_done(self, driver: CallDriver, result: GuardResult) -> None:
        rid = driver.rid
        self._end_call(rid)
        if not driver.early:
            self._answer(rid, result)
        elif result.violation is not None:  # pragma: no cover - the steps hand on an admitted call's answer
            log.error("tools/call %r was refused after its answer went to the client", rid)

    def call_raised(self, driver: CallDriver, exc: BaseException) -> None:
        rid = driver.rid
        self._end_call(rid)
        if isinstance(exc, asyncio.CancelledError) or driver.early:
            return  # withdrawn or cancelled: MCP sends no answer
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: the relay stops, as it did when a call task raised them
        if isinstance(exc, _UpstreamFailed):  # sent, and no answer came back: audited as an error, charge kept
            self._to_client(_error_line(rid, exc.code, exc.message))
            return
        # Never leave the client waiting, never let a call through on a fault.
        log.error("tools/call %r failed in the relay", rid, exc_info=exc)
        self._to_client(_error_line(rid, _INTERNAL_ERROR, "mcp-guard: the call could not be decided"))

    async def _withdrawn(self, rid: Any, name: str, args: Mapping[str, Any]) -> None:
        """The one event of a call withdrawn before the guard decided it, as the guard writes a call cancelled
        before its decision."""
        call = new_call(name, args, self._server(), self.identity, self.session, call_id=str(rid))
        decision = Decision.deny(name, "guard_unavailable", server=call.server, reason="withdrawn by the client")
        await self.guard.afinish(Admission(call, decision), "cancelled")

    def _asker(self) -> Callable[[ApprovalRequest], Awaitable[ApprovalDecision]]:
        async def ask(request: ApprovalRequest) -> ApprovalDecision:
            """Ask the client by ``elicitation/create``: accept approves, decline and cancel deny."""
            aid = _new_id()
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._asks[aid] = future
            try:
                params = {"message": approval_message(request), "requestedSchema": APPROVAL_SCHEMA}
                self._to_client(_dump({"jsonrpc": "2.0", "id": aid, "method": "elicitation/create", "params": params}))
                answer = await future
            except asyncio.CancelledError:
                # The call was withdrawn or timed out: the client need not answer any more.
                params = {"requestId": aid, "reason": "mcp-guard: the call no longer waits for this approval"}
                self._to_client(_dump({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}))
                raise
            finally:
                self._asks.pop(aid, None)
            result = answer.get("result")
            return approval_answer(result.get("action") if isinstance(result, dict) else None)

        return ask


def _bad_id(rid: Any) -> str:
    if not _valid_id(rid):
        return "mcp-guard: a request id must be a string or an integer"
    if isinstance(rid, str) and rid.startswith(ID_PREFIX):
        return f"mcp-guard: request ids starting with {ID_PREFIX!r} are reserved for the proxy"
    return f"mcp-guard: request id {rid!r} is already in flight"


def can_relay() -> bool:
    """Whether this process's stdin and stdout are pipes or sockets, which the relay's event loop can read
    and write without threads (a terminal or a file gets the SDK path)."""
    if sys.platform == "win32":
        return False
    for fd in (0, 1):
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return False
    return True


async def serve_stdio(relay: Relay) -> None:
    """Serve the client on this process's stdin/stdout; SIGINT and SIGTERM end it cleanly."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_CLIENT_MESSAGE)
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, relay.stop)
    notices: set[asyncio.Task[None]] = set()

    def tell_client(_policy: object) -> None:
        # A reload happens on the file watcher's thread: hand the notification to this loop.
        def send() -> None:
            task = loop.create_task(relay.policy_changed())
            notices.add(task)
            task.add_done_callback(notices.discard)

        loop.call_soon_threadsafe(send)

    relay.guard.on_reload(tell_client)
    try:
        await relay.serve(reader, writer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await relay.guard.aclose()
        transport.close()


__all__ = ["ID_PREFIX", "MAX_CLIENT_MESSAGE", "Relay", "approval_message", "can_elicit", "can_relay", "serve_stdio"]
