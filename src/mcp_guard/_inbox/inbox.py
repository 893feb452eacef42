"""The approval inbox: pending approvals kept in a store every worker shares, decided by a person elsewhere.

:class:`Inbox` is an approver (``Guard(policy, approver=Inbox("redis://...", policy=policy))``). Each call that
needs a human becomes a *request* in the store: tool, server, redacted arguments, identity, session, rule,
reason, deadline and the tool's argument schema when known. The worker that asked waits for the decision
(approve, edit with new arguments, reject with a message) without polling: Redis ``BLPOP`` on a per-request
key, or a future in memory. A request is decided once: the store refuses a second decision atomically (a Lua
script on Redis, a lock in memory). The web page (``mcp-guard inbox``, :mod:`mcp_guard._inbox.web`) and
webhook receivers decide through the same store.

Stores:

- ``memory://`` (or ``memory://NAME``): one process. Every :class:`Inbox` built with the same URL in a
  process shares one inbox, so an in-process web page sees what the workers' threads asked.
- ``redis://host:port/db`` (``rediss://``, ``unix://``): every worker and the web page share it. Layout under
  ``prefix`` (default ``mcpg:inbox``): ``<prefix>:req:<id>`` a hash (the public record as JSON, its status,
  the shown decision) whose TTL is the request's deadline, so a worker that dies leaves nothing open for
  ever, and its ``lease`` field the worker renews; ``<prefix>:pending`` a sorted set of pending ids by deadline;
  ``<prefix>:history`` the ids decided lately; ``<prefix>:done:<id>`` a list the decision is pushed onto, which
  the waiting worker ``BLPOP``\\s.

No decision for a caller who has left: the worker waiting on a request renews a lease on it every
``lease_renew_s`` (default 1 s) for ``lease_s`` (default 5 s). A request whose lease ran out (its worker was
killed, crashed or froze) is *abandoned*, and one whose waiting task was cancelled is *withdrawn* at once; the
page shows either as such and refuses a decision for it (:class:`DecisionRefused` ``why="left"``, HTTP 410).
Leases compare times from the workers' and the page's clocks (``clock=``, the wall clock by default), so their
hosts' clocks must agree to well within ``lease_s``.

What the store holds is what the page may show: argument values under the rule's ``redact`` paths are
replaced by ``"[redacted]"`` before the request leaves the worker (the policy is needed to know them: pass
``policy=``; without it every value is hidden). An edit that leaves a hidden value as shown keeps the
original value; the worker puts it back, so the secret never travels.

Interrupt flows (LangGraph ``interrupt``, the Agents SDK's approval pause) do not block inside the guard: the
application records the pause with :meth:`Inbox.submit` and waits with :meth:`Inbox.wait`, which returns the
resume value (``{"type": "approve"}``, ``{"type": "edit", "args": {...}}``, ``{"type": "reject", "message":
...}``) to pass to ``Command(resume=...)`` or to ``state.approve`` / ``state.reject``. A paused run has no live
worker (it resumes in whichever process picks it up), so a request recorded by :meth:`Inbox.submit` has no
lease: it stays decidable until its deadline, whoever waits or stops waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mcp_guard._audit.events import REDACTED, redacted_paths, scrub
from mcp_guard._calls.approval import ApprovalDecision, ApprovalRequest, background_loop
from mcp_guard._errors import ApprovalError, ConfigurationError
from mcp_guard._inbox.stores import (
    GRACE_S,
    Backend,
    Conn,
    DecisionRefused,
    StoreOptions,
    backend_from_url,
    dumps,
)
from mcp_guard._inbox.urls import scheme_of, shown_url
from mcp_guard._policy.policy import Policy, load_policy

log = logging.getLogger("mcp_guard.inbox")

T = TypeVar("T")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: What the page shows for an argument value too large to show.
HIDDEN_TOO_LARGE = "[too large to show]"
#: Above this many characters of JSON, an argument value is not put in the store (the page shows a marker).
MAX_VALUE_CHARS = 64_000
#: Longest reject message kept (characters).
MAX_MESSAGE_CHARS = 2_000

# -- values the page may show ------------------------------------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: non-finite numbers and unknown types become text, deep nesting is cut."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= 64:
        return "[nested too deep to show]"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    return repr(value)


def shown_args(args: Mapping[str, Any], redact: Iterable[str] | None) -> tuple[dict[str, Any], list[str]]:
    """The arguments as the inbox may show them, and the top-level keys whose values it hides.

    ``redact`` is the rule's redact paths; ``None`` means they are unknown, so every value is hidden (fail
    closed). Redaction is by top-level key, as in the audit log: a nested path hides its whole top-level
    value, so no part of a secret is shown.
    """
    keys = set(args) if redact is None else redacted_paths(args, redact)
    shown: dict[str, Any] = {}
    hidden: list[str] = []
    for key, value in args.items():
        name = str(key)
        if key in keys:
            shown[name] = REDACTED
            hidden.append(name)
            continue
        safe = _jsonable(value)
        if len(dumps(safe)) > MAX_VALUE_CHARS:
            shown[name] = HIDDEN_TOO_LARGE
            hidden.append(name)
        else:
            shown[name] = safe
    return shown, hidden


def restore_hidden(
    edited: Mapping[str, Any], original: Mapping[str, Any] | None, hidden: Iterable[str]
) -> dict[str, Any]:
    """Edited arguments with every hidden value left as shown (``[redacted]``) put back from ``original``.

    A hidden key whose original is not known here keeps the marker text: the policy then judges that text,
    never a value nobody saw.
    """
    out = dict(edited)
    if original is None:
        return out
    for key in hidden:
        if key in out and out[key] in (REDACTED, HIDDEN_TOO_LARGE) and key in original:
            out[key] = original[key]
    return out


def _public_decision(decision: Mapping[str, Any], hidden: Iterable[str]) -> dict[str, Any]:
    """The decision as the page's history may show it: an edit's hidden keys stay hidden, even newly typed."""
    shown = dict(decision)
    args = shown.get("args")
    if isinstance(args, Mapping):
        hide = set(hidden)
        shown["args"] = {k: (REDACTED if k in hide else v) for k, v in args.items()}
    return shown


def validate_decision(body: Any) -> dict[str, Any]:
    """A decision from a person (the page, a webhook receiver) checked and normalised, or :class:`ValueError`.

    ``{"type": "approve"}``, ``{"type": "edit", "args": {...}}``, ``{"type": "reject", "message": "..."}``.
    """
    if not isinstance(body, Mapping):
        raise ValueError("a decision is a JSON object")
    kind = body.get("type")
    if kind == "approve":
        if body.get("args") not in (None, "any"):
            raise ValueError("an approval takes 'args' only as \"any\" (a grant for any arguments); use an edit")
        widen = {"args": "any"} if body.get("args") == "any" else {}
        return {"type": "approve", **_grant_fields(body), **widen}
    if kind == "edit":
        args = body.get("args")
        if not isinstance(args, Mapping):
            raise ValueError("an edit needs 'args', a JSON object of the new arguments")
        return {"type": "edit", "args": dict(args), **_grant_fields(body)}
    if kind == "reject":
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("'message' must be text")
        out: dict[str, Any] = {"type": "reject"}
        if message and message.strip():
            out["message"] = message.strip()[:MAX_MESSAGE_CHARS]
        return out
    raise ValueError("'type' must be 'approve', 'edit' or 'reject'")


#: The longest grant a person can give from the page or a webhook receiver (a year; a grant is not a policy).
MAX_GRANT_TTL_S = 365 * 24 * 3600.0


def _grant_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A yes that also covers later identical calls (spec section 11): ``scope`` and ``ttl_s``, checked."""
    out: dict[str, Any] = {}
    scope = body.get("scope", "once")
    if scope not in ("once", "session"):
        raise ValueError("'scope' must be 'once' or 'session'")
    if scope == "session":
        out["scope"] = "session"
    ttl_s = body.get("ttl_s")
    if ttl_s is not None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= MAX_GRANT_TTL_S:
            raise ValueError(f"'ttl_s' must be a number of seconds above 0 and at most {MAX_GRANT_TTL_S:g}")
        out["ttl_s"] = float(ttl_s)
    return out


# -- the Inbox -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Original:
    args: Mapping[str, Any]
    hidden: tuple[str, ...]


class Inbox:
    """An approver whose requests wait in a store every worker shares, for a person to decide on a web page.

    >>> inbox = Inbox("redis://localhost:6379/0", policy=policy)
    >>> guard = Guard(policy, approver=inbox)        # each call needing approval waits in the inbox
    >>> # elsewhere: mcp-guard inbox --store redis://localhost:6379/0 --token "$MCP_GUARD_INBOX_TOKEN"

    ``url``: ``memory://`` (one process; ``memory://NAME`` for a separate one; the first Inbox built for a name
    sets its ``history`` and ``clock``) or ``redis://host:port/db``.
    ``policy``: the policy whose ``redact`` paths hide argument values from the page; without it every
    argument value is hidden. ``schemas``: the tools' argument JSON schemas by tool name, shown beside the
    edit box (a rule's ``args_schema`` is used when there is none). ``ttl_s``: how long a request waits when
    the caller gives no timeout (the guard passes its approval timeout). ``webhook``: a URL that receives
    each new request as JSON, signed with ``webhook_secret`` (header ``X-MCP-Guard-Signature:
    sha256=<hex HMAC-SHA256 of the body>``). ``history``: how many decided requests the page lists, kept
    ``history_ttl_s``. ``prefix``: Redis key prefix. ``timeout_s``: bound on one Redis command.
    ``lease_s`` / ``lease_renew_s``: while it waits, the worker renews its request's lease every
    ``lease_renew_s`` seconds for ``lease_s`` seconds; a request whose lease runs out is abandoned (its worker
    is gone), so the page stops offering it within ``lease_s`` of the worker's death. A longer lease rides out
    longer stalls of the worker's event loop or the store; a worker whose lease ran out while it was stalled
    gets no decision (the call is refused), never one the page did not show. ``clock``: the wall clock that
    deadlines and leases are measured on.

    As an approver it is async: the guard awaits it (``ainvoke``) or runs it on a private loop (``invoke``).
    When the guard's approval timeout passes, the request is marked expired and a late decision is refused;
    when the waiting task is cancelled before that (the caller left), the request is withdrawn at once.
    Not for one person at one terminal: :func:`~mcp_guard.console_approver` is simpler there.
    """

    DecisionRefused = DecisionRefused

    def __init__(
        self,
        url: str = "memory://",
        *,
        policy: Any = None,
        schemas: Mapping[str, Mapping[str, Any]] | None = None,
        webhook: str | None = None,
        webhook_secret: str | bytes | None = None,
        ttl_s: float = 300.0,
        history: int = 50,
        history_ttl_s: float = 3600.0,
        prefix: str = "mcpg:inbox",
        timeout_s: float = 5.0,
        lease_s: float = 5.0,
        lease_renew_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # ConfigurationError is a ValueError, what these raised before 0.3.
        if not ttl_s > 0 or not history_ttl_s > 0 or not timeout_s > 0 or history < 1:
            raise ConfigurationError("ttl_s, history_ttl_s and timeout_s must be > 0, history >= 1")
        if not 0 < lease_renew_s < lease_s < math.inf:
            raise ConfigurationError("the lease needs 0 < lease_renew_s < lease_s: it is renewed before it runs out")
        if webhook is not None:
            if scheme_of(webhook) not in ("http", "https"):
                raise ConfigurationError(f"webhook must be an http(s) URL, not {shown_url(webhook)!r}")
            if not webhook_secret:
                raise ConfigurationError("a webhook needs webhook_secret: receivers verify the HMAC signature with it")
        self.url = url
        self.ttl_s = float(ttl_s)
        self.lease_s = float(lease_s)
        self.lease_renew_s = float(lease_renew_s)
        self.clock = clock
        self.webhook = webhook
        self._webhook_key = webhook_secret.encode() if isinstance(webhook_secret, str) else webhook_secret
        self.schemas: dict[str, Mapping[str, Any]] = dict(schemas or {})
        # A Guard is read at each request, so a policy it reloads is the one whose redact paths apply.
        self._guard: Any = policy if policy is not None and hasattr(policy, "policy") else None
        self._policy: Policy | None = load_policy(policy) if policy is not None else None
        options = StoreOptions(
            prefix=prefix, timeout_s=timeout_s, history=history, history_ttl_s=history_ttl_s, clock=clock
        )
        self._backend: Backend = backend_from_url(url, options)
        self._originals: dict[str, _Original] = {}
        self._originals_lock = threading.Lock()
        self._held: tuple[asyncio.AbstractEventLoop, Conn] | None = None
        self._warned = False

    @property
    def policy(self) -> Policy | None:
        """The policy whose ``redact`` paths apply (a Guard's current one when built with a Guard)."""
        return self._guard.policy if self._guard is not None else self._policy

    def __repr__(self) -> str:
        return f"Inbox({shown_url(self.url)})"  # never the password

    # -- connections ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        held = self._held
        if held is not None and held[0] is asyncio.get_running_loop():
            yield held[1]
            return
        # One connection per operation otherwise: approvals are human-paced, and a connection is bound to the
        # event loop it was made on (callers await on their own loops; sync calls run on the background loop).
        conn = await self._backend.connect()
        try:
            yield conn
        finally:
            await conn.aclose()

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Inbox]:
        """Keep one connection open on the running loop for the block (a web server's lifespan)."""
        conn = await self._backend.connect()
        self._held = (asyncio.get_running_loop(), conn)
        try:
            yield self
        finally:
            self._held = None
            await conn.aclose()

    # -- the approver ----------------------------------------------------------------------------------------

    async def __call__(self, request: ApprovalRequest) -> ApprovalDecision:
        """Record ``request``, wait for a person's decision, and return it (the guard's approver protocol).

        While it waits, a task renews the request's lease, so that the page knows a worker still waits.
        """
        timeout = float(request.timeout_s) if request.timeout_s else self.ttl_s
        started = time.monotonic()
        async with self._conn() as conn:
            rid = await self._submit(conn, request, timeout_s=timeout, leased=True)
            renewer = asyncio.create_task(self._keep_lease(conn, rid), name=f"mcp-guard-inbox-lease-{rid}")
            answer: dict[str, Any] | None = None
            try:
                answer = await self._wait(conn, rid, timeout + GRACE_S)
            finally:
                renewer.cancel()
                await asyncio.wait((renewer,))
                if answer is None:  # timed out, or the caller left: a late decision must be refused
                    # The guard cancels us at its approval timeout too; a cancellation well before the deadline
                    # is the caller leaving (its task cancelled), which the page shows as withdrawn.
                    gone = time.monotonic() - started < timeout - min(GRACE_S, timeout / 4)
                    kind = "withdraw" if gone else "expire"
                    with contextlib.suppress(Exception):
                        await conn.decide(rid, {"type": kind}, {"type": kind}, self.clock())
                    self._forget(rid)
        if answer is None:
            raise ApprovalError(f"no decision on approval request {rid} within {timeout:g} s")
        return _to_decision(answer, rid)

    # -- the interrupt helpers -------------------------------------------------------------------------------

    async def submit(
        self,
        request: ApprovalRequest | Mapping[str, Any] | Any,
        *,
        request_id: str | None = None,
        server: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Record a pause in the inbox and return its id (the same id again if ``request_id`` exists already).

        ``request``: an :class:`~mcp_guard.ApprovalRequest`, the payload of ``GuardMiddleware``'s interrupt
        (``interrupt.value``), or an Agents SDK ``ToolApprovalItem``. Use the interrupt's id as
        ``request_id`` so that submitting again after a restart does not record the pause twice. ``server``,
        ``identity`` and ``session`` fill in what the pause does not carry (an Agents SDK item names no server:
        pass it, or the policy's server-qualified rules cannot be found and every value is hidden).
        """
        call = as_request(request, server=server, identity=identity, session=session, timeout_s=timeout_s)
        timeout = float(call.timeout_s) if call.timeout_s else self.ttl_s
        async with self._conn() as conn:
            return await self._submit(conn, call, timeout_s=timeout, request_id=request_id, schema=schema)

    def submit_sync(self, request: Any, **options: Any) -> str:
        """:meth:`submit` for sync code."""
        return _run_sync(lambda: self.submit(request, **options))

    async def wait(self, request_id: str, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The resume value once a person decides: ``{"type": "approve"}``, ``{"type": "edit", "args": {...}}``
        or ``{"type": "reject", "message": ...}``; ``None`` when ``timeout_s`` passes first (the request stays
        pending until its deadline) or the request is unknown or past its deadline.

        Hidden values left as shown in an edit are put back when this process submitted the request.
        """
        timeout = self.ttl_s if timeout_s is None else float(timeout_s)
        async with self._conn() as conn:
            answer = await self._wait(conn, request_id, timeout)
        if answer is not None:
            self._forget(request_id)
            if answer.get("type") in _NOT_DECIDED:
                return None
        return answer

    def wait_sync(self, request_id: str, timeout_s: float | None = None) -> dict[str, Any] | None:
        """:meth:`wait` for sync code."""
        return _run_sync(lambda: self.wait(request_id, timeout_s))

    # -- what the page and webhook receivers use -------------------------------------------------------------

    async def pending(self) -> list[dict[str, Any]]:
        """The requests waiting for a decision, oldest first, as the page shows them (redacted)."""
        async with self._conn() as conn:
            return (await conn.listing())[0]

    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Pending requests (oldest first) and recently decided ones (newest first)."""
        async with self._conn() as conn:
            return await conn.listing()

    def listing_sync(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`listing` for sync code."""
        return _run_sync(self.listing)

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """One request as the page shows it, or ``None``."""
        if not _ID.match(request_id):
            return None
        async with self._conn() as conn:
            return await conn.get(request_id)

    async def decide(self, request_id: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """Decide a pending request once; returns the updated record.

        ``decision``: ``{"type": "approve"}``, ``{"type": "edit", "args": {...}}`` or ``{"type": "reject",
        "message": "..."}``. Raises :class:`ValueError` for a malformed decision and
        :class:`Inbox.DecisionRefused` for an unknown, expired or already decided request, and for one whose
        caller left (``why="left"``: withdrawn, or abandoned by its worker).
        """
        checked = validate_decision(decision)
        if not _ID.match(request_id):
            raise DecisionRefused("unknown", request_id)
        async with self._conn() as conn:
            record = await conn.get(request_id)
            if record is None:
                raise DecisionRefused("unknown", request_id)
            await conn.decide(request_id, checked, _public_decision(checked, record.get("hidden", ())), self.clock())
            updated = await conn.get(request_id)
        return updated if updated is not None else record

    def decide_sync(self, request_id: str, decision: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`decide` for sync code."""
        return _run_sync(lambda: self.decide(request_id, decision))

    # -- internals ---------------------------------------------------------------------------------------------

    def _redact_paths(self, call: ApprovalRequest) -> tuple[str, ...] | None:
        """The redact paths for ``call``, or ``None`` (hide every value) when they cannot be known for sure."""
        carried = call.redact  # the guard's request carries its rule's redact paths
        if carried is not None:
            return tuple(carried)
        policy = self.policy
        if policy is None:
            return None
        try:
            decision = policy.evaluate(
                call.tool, call.args, server=call.server, identity=call.identity, session=call.session
            )
        except Exception:
            log.exception("could not find the redact paths for %s; hiding every argument value", call.tool)
            return None
        if decision.action == "deny" and decision.code in ("hidden", "default_deny"):
            # The policy does not see the call as the guard did (the server is not known here, e.g. an Agents
            # SDK pause submitted without server=): which rule's redact paths apply is unknown, so hide all.
            return None
        paths = list(decision.redact)
        if call.rule:  # the rule the guard named, in case the evaluation here picked a broader one
            rule = policy.rule_at(call.rule)
            extra = rule.get("redact") if isinstance(rule, Mapping) else None
            if isinstance(extra, list):
                paths.extend(p for p in extra if isinstance(p, str) and p not in paths)
        return tuple(paths)

    def _schema_for(self, call: ApprovalRequest, given: Mapping[str, Any] | None) -> Any:
        if given is not None:
            return _jsonable(given)
        if call.tool in self.schemas:
            return _jsonable(self.schemas[call.tool])
        policy = self.policy
        if policy is not None and call.rule:
            rule = policy.rule_at(call.rule)
            if isinstance(rule, Mapping) and isinstance(rule.get("args_schema"), Mapping):
                return _jsonable(rule["args_schema"])
        return None

    def _record(
        self, call: ApprovalRequest, rid: str, timeout_s: float, schema: Mapping[str, Any] | None, leased: bool
    ) -> tuple[dict[str, Any], _Original]:
        args = call.args if isinstance(call.args, Mapping) else {}
        redact = self._redact_paths(call)
        if redact is None and not self._warned:
            self._warned = True
            log.warning("Inbox has no policy: every argument value is hidden on the page (pass policy=)")
        shown, hidden = shown_args(args, redact)
        scrub_paths = tuple(redact) if redact is not None else ("args",)
        now = self.clock()
        record = {
            "id": rid,
            "tool": call.tool,
            "server": call.server,
            "args": shown,
            "hidden": hidden,
            "identity": call.identity,
            "session": call.session,
            "rule": call.rule,
            "reason": scrub(call.reason, args, scrub_paths),
            "risk_class": call.risk_class,
            "description": scrub(call.description, args, scrub_paths),
            "schema": self._schema_for(call, schema),
            "created_at": now,
            "deadline": now + timeout_s,
            # Until when the waiting worker is known to be there (it renews this); None for an interrupt's
            # pause, which nobody waits on while it is paused.
            "lease_until": now + self.lease_s if leased else None,
            "status": "pending",
            "decision": None,
            "decided_at": None,
        }
        return record, _Original(dict(args), tuple(hidden))

    async def _submit(
        self,
        conn: Conn,
        call: ApprovalRequest,
        *,
        timeout_s: float,
        request_id: str | None = None,
        schema: Mapping[str, Any] | None = None,
        leased: bool = False,
    ) -> str:
        if request_id is not None and not _ID.match(request_id):
            raise ValueError("request_id: 1-128 characters of letters, digits and . _ : -")
        rid = request_id or uuid.uuid4().hex
        record, original = self._record(call, rid, timeout_s, schema, leased)
        with self._originals_lock:
            self._originals[rid] = original
        added = await conn.put(record)
        if added and self.webhook is not None:
            self._post_webhook(record)
        return rid

    async def _wait(self, conn: Conn, rid: str, timeout_s: float) -> dict[str, Any] | None:
        answer = await conn.wait(rid, timeout_s)
        if answer is not None and answer.get("type") == "edit" and isinstance(answer.get("args"), Mapping):
            with self._originals_lock:
                original = self._originals.get(rid)
            if original is not None:
                answer = {**answer, "args": restore_hidden(answer["args"], original.args, original.hidden)}
        return answer

    async def _keep_lease(self, conn: Conn, rid: str) -> None:
        """Renew ``rid``'s lease until it is settled (or this task is cancelled, when the worker stops waiting).

        A renewal that fails is tried again at the next tick: if the store stays unreachable for the whole
        lease, the request is abandoned and this worker, once it can reach the store again, is told so.
        """
        while True:
            await asyncio.sleep(self.lease_renew_s)
            now = self.clock()
            try:
                status = await conn.renew(rid, now + self.lease_s, now)
            except Exception as exc:
                log.warning("could not renew the lease of approval request %s: %s: %s", rid, type(exc).__name__, exc)
                continue
            if status != "ok":
                return  # settled (decided, expired, abandoned) or gone: the waiter hears of it by itself

    def _forget(self, rid: str) -> None:
        with self._originals_lock:
            self._originals.pop(rid, None)

    def _post_webhook(self, record: Mapping[str, Any]) -> None:
        # A thread of its own: a slow or failing receiver never delays the call beyond its approval timeout.
        assert self.webhook is not None
        assert self._webhook_key is not None
        body = dumps({"event": "approval_requested", "request": record}).encode("utf-8")
        signature = "sha256=" + hmac.new(self._webhook_key, body, hashlib.sha256).hexdigest()
        url = self.webhook

        def post() -> None:
            req = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "X-MCP-Guard-Signature": signature},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as response:
                    response.read()
            except Exception as exc:
                log.warning("inbox webhook %s failed for request %s: %s", url, record["id"], exc)

        threading.Thread(target=post, name="mcp-guard-inbox-webhook", daemon=True).start()


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-MCP-Guard-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str | bytes) -> bool:
    """Whether a webhook ``body`` carries a valid ``X-MCP-Guard-Signature`` (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


# What the worker's own list may hold that is no person's decision.
_NOT_DECIDED = frozenset({"expire", "withdraw", "abandon"})


def _to_decision(answer: Mapping[str, Any], rid: str) -> ApprovalDecision:
    kind = answer.get("type")
    if kind == "abandon":
        # This worker was too slow to renew (a stalled loop, an unreachable store): the page has shown the
        # request as abandoned and refused decisions for it, so nothing a person decided can apply.
        raise ApprovalError(f"approval request {rid} was abandoned: its lease ran out before this worker renewed it")
    scope: Literal["once", "session"] = "session" if answer.get("scope") == "session" else "once"
    ttl_s = answer.get("ttl_s") if isinstance(answer.get("ttl_s"), float) else None
    if kind == "approve":
        return ApprovalDecision.approve(scope=scope, ttl_s=ttl_s, args="any" if answer.get("args") == "any" else None)
    if kind == "edit" and isinstance(answer.get("args"), Mapping):
        return ApprovalDecision.edit(answer["args"], scope=scope, ttl_s=ttl_s)
    if kind == "reject":
        message = answer.get("message")
        return ApprovalDecision.deny(message if isinstance(message, str) else "a human rejected this call in the inbox")
    raise ApprovalError(f"no usable decision in the inbox (type {kind!r})")


def as_request(
    request: ApprovalRequest | Mapping[str, Any] | Any,
    *,
    server: str | None = None,
    identity: str | None = None,
    session: str | None = None,
    timeout_s: float | None = None,
) -> ApprovalRequest:
    """An :class:`ApprovalRequest` from an ApprovalRequest, a GuardMiddleware interrupt payload, or an Agents
    SDK ``ToolApprovalItem`` (``name`` and ``arguments`` as JSON text)."""
    if isinstance(request, ApprovalRequest):
        call = request
    elif isinstance(request, Mapping):
        args = request.get("args")
        # GuardMiddleware's pause is LangChain's ToolApprovalRequest; what LangChain's shape does not carry
        # (server, caller, rule) sits in its "mcp_guard" block. Older payloads had those at the top level.
        extra = request.get("mcp_guard")
        more: Mapping[str, Any] = extra if isinstance(extra, Mapping) else request
        call = ApprovalRequest(
            tool=str(request.get("tool") or request.get("name") or ""),
            args=dict(args) if isinstance(args, Mapping) else {},
            server=more.get("server"),
            identity=more.get("identity"),
            session=more.get("session"),
            rule=more.get("rule"),
            reason=more.get("reason"),
            risk_class=more.get("risk_class"),
            description=request.get("description"),
        )
    elif isinstance(getattr(request, "name", None), str):
        raw = getattr(request, "arguments", None)
        try:
            args = json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            args = {"arguments": raw}  # shown as given; the guard refuses it when the call runs
        call = ApprovalRequest(tool=request.name, args=args if isinstance(args, dict) else {"arguments": args})
    else:
        raise TypeError(f"cannot make an approval request from {type(request).__name__}")
    if not call.tool:
        raise ValueError("an approval request needs the tool's name")
    changes: dict[str, Any] = {}
    if server is not None:
        changes["server"] = server
    if identity is not None:
        changes["identity"] = identity
    if session is not None:
        changes["session"] = session
    if timeout_s is not None:
        changes["timeout_s"] = timeout_s
    if changes:
        import dataclasses

        call = dataclasses.replace(call, **changes)
    return call


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code on the shared background loop (the one sync callers of async approvers use):
    no thread and no event loop made per call, and the store's connections live on a loop that outlives the call.

    From the background loop's own thread this would wait for itself for ever: a :class:`RuntimeError` says so
    instead (code running there is async; it awaits the async method). If the caller is interrupted (Ctrl-C), the
    coroutine is cancelled, as an awaiting caller's would be, so that it does not wait on with nobody to answer.
    """
    loop = background_loop()
    if _running_loop() is loop:
        raise RuntimeError(
            "an Inbox *_sync method was called on mcp-guard's background event loop, which it would wait on for "
            "ever; await the async method (submit, wait, listing, decide) there instead"
        )
    future = asyncio.run_coroutine_threadsafe(make(), loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # KeyboardInterrupt, or a timeout of the caller's own: the coroutine must not live on
        raise


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["DecisionRefused", "Inbox", "as_request", "shown_args", "sign", "validate_decision", "verify_signature"]
