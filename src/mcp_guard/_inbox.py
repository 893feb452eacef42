"""The approval inbox: pending approvals kept in a store every worker shares, decided by a person elsewhere.

:class:`Inbox` is an approver (``Guard(policy, approver=Inbox("redis://...", policy=policy))``). Each call that
needs a human becomes a *request* in the store: tool, server, redacted arguments, identity, session, rule,
reason, deadline and the tool's argument schema when known. The worker that asked waits for the decision
(approve, edit with new arguments, reject with a message) without polling: Redis ``BLPOP`` on a per-request
key, or a future in memory. A request is decided once: the store refuses a second decision atomically (a Lua
script on Redis, a lock in memory). The web page (``mcp-guard inbox``, :mod:`mcp_guard._inbox_web`) and
webhook receivers decide through the same store.

Stores:

- ``memory://`` (or ``memory://NAME``): one process. Every :class:`Inbox` built with the same URL in a
  process shares one inbox, so an in-process web page sees what the workers' threads asked.
- ``redis://host:port/db`` (``rediss://``, ``unix://``): every worker and the web page share it. Layout under
  ``prefix`` (default ``mcpg:inbox``): ``<prefix>:req:<id>`` a hash (the public record as JSON, its status,
  the shown decision) whose TTL is the request's deadline, so a worker that dies leaves nothing open for
  ever; ``<prefix>:pending`` a sorted set of pending ids by deadline; ``<prefix>:history`` the ids decided
  lately; ``<prefix>:done:<id>`` a list the decision is pushed onto, which the waiting worker ``BLPOP``\\s.

What the store holds is what the page may show: argument values under the rule's ``redact`` paths are
replaced by ``"[redacted]"`` before the request leaves the worker (the policy is needed to know them: pass
``policy=``; without it every value is hidden). An edit that leaves a hidden value as shown keeps the
original value; the worker puts it back, so the secret never travels.

Interrupt flows (LangGraph ``interrupt``, the Agents SDK's approval pause) do not block inside the guard: the
application records the pause with :meth:`Inbox.submit` and waits with :meth:`Inbox.wait`, which returns the
resume value (``{"type": "approve"}``, ``{"type": "edit", "args": {...}}``, ``{"type": "reject",
"message": ...}``) to pass to ``Command(resume=...)`` or to ``state.approve`` / ``state.reject``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from mcp_guard._approval import ApprovalDecision, ApprovalRequest
from mcp_guard._audit import REDACTED, _redacted_paths, scrub
from mcp_guard._errors import ApprovalError, PolicyError, require_extra
from mcp_guard._policy import Policy, load_policy

log = logging.getLogger("mcp_guard.inbox")

T = TypeVar("T")
_STATUS_OF = {"approve": "approved", "edit": "edited", "reject": "rejected", "expire": "expired"}
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: What the page shows for an argument value it must not show (a ``redact`` path), or one too large to show.
HIDDEN_TOO_LARGE = "[too large to show]"
#: Above this many characters of JSON, an argument value is not put in the store (the page shows a marker).
MAX_VALUE_CHARS = 64_000
#: Longest reject message kept (characters).
MAX_MESSAGE_CHARS = 2_000
#: Seconds a worker waits past its deadline before it gives up on its own (the guard times out first).
_GRACE_S = 1.0


class DecisionRefused(ApprovalError):
    """A decision the inbox refuses: the request is unknown (or gone past its deadline), or already decided.

    ``why`` is ``"unknown"`` or ``"decided"`` (the web API answers 404 and 409); ``status`` is the request's
    status when it was already decided.
    """

    def __init__(self, why: Literal["unknown", "decided"], request_id: str, status: str | None = None) -> None:
        self.why = why
        self.request_id = request_id
        self.status = status
        text = "is unknown or past its deadline" if why == "unknown" else f"was already decided ({status})"
        super().__init__(f"approval request {request_id!r} {text}")


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


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def shown_args(args: Mapping[str, Any], redact: Iterable[str] | None) -> tuple[dict[str, Any], list[str]]:
    """The arguments as the inbox may show them, and the top-level keys whose values it hides.

    ``redact`` is the rule's redact paths; ``None`` means they are unknown, so every value is hidden (fail
    closed). Redaction is by top-level key, as in the audit log: a nested path hides its whole top-level
    value, so no part of a secret is shown.
    """
    keys = set(args) if redact is None else _redacted_paths(args, redact)
    shown: dict[str, Any] = {}
    hidden: list[str] = []
    for key, value in args.items():
        name = str(key)
        if key in keys:
            shown[name] = REDACTED
            hidden.append(name)
            continue
        safe = _jsonable(value)
        if len(_dumps(safe)) > MAX_VALUE_CHARS:
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
        return {"type": "approve"}
    if kind == "edit":
        args = body.get("args")
        if not isinstance(args, Mapping):
            raise ValueError("an edit needs 'args', a JSON object of the new arguments")
        return {"type": "edit", "args": dict(args)}
    if kind == "reject":
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise ValueError("'message' must be text")
        out: dict[str, Any] = {"type": "reject"}
        if message and message.strip():
            out["message"] = message.strip()[:MAX_MESSAGE_CHARS]
        return out
    raise ValueError("'type' must be 'approve', 'edit' or 'reject'")


# -- stores --------------------------------------------------------------------------------------------------


class _Conn(ABC):
    """One connection to an inbox store, used from one event loop."""

    @abstractmethod
    async def put(self, record: dict[str, Any]) -> bool:
        """Add a pending request (its ``deadline`` bounds its life); False if the id exists already."""

    @abstractmethod
    async def get(self, request_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Pending requests (oldest first) and the recently decided ones (newest first)."""

    @abstractmethod
    async def decide(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], now: float) -> None:
        """Decide a pending request once, atomically; :class:`DecisionRefused` otherwise.

        ``decision`` goes to the waiting worker; ``shown`` is what the record keeps for the page.
        """

    @abstractmethod
    async def wait(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The decision, as soon as there is one; ``None`` after ``timeout_s`` or for an unknown request."""

    async def aclose(self) -> None:  # noqa: B027 - most connections hold nothing
        """Release the connection."""


class _Backend(ABC):
    @abstractmethod
    async def connect(self) -> _Conn: ...


# -- memory ------------------------------------------------------------------------------------------------


class _MemoryInbox(_Backend, _Conn):
    """The in-process store: a dict under a lock; waiting workers hold futures on their own event loops."""

    def __init__(self, history: int, history_ttl_s: float, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._full: dict[str, dict[str, Any]] = {}  # decisions not yet taken by their worker
        self._history: deque[str] = deque(maxlen=history)
        self._history_ttl_s = history_ttl_s
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any]]]]] = {}
        self._clock = clock

    async def connect(self) -> _Conn:
        return self

    def _sweep(self, now: float) -> None:
        # Called under the lock. A request past its deadline is gone, as its Redis hash would be.
        # A pending one lives a grace period past its deadline, so its own worker can still mark it expired.
        for rid, rec in list(self._records.items()):
            if rec["status"] == "pending":
                limit = rec["deadline"] + _GRACE_S
            else:
                limit = (rec.get("decided_at") or 0.0) + self._history_ttl_s
            if now > limit:
                del self._records[rid]
                self._full.pop(rid, None)

    async def put(self, record: dict[str, Any]) -> bool:
        with self._lock:
            self._sweep(self._clock())
            if record["id"] in self._records:
                return False
            self._records[record["id"]] = dict(record)
            return True

    async def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._sweep(self._clock())
            rec = self._records.get(request_id)
            return dict(rec) if rec is not None else None

    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            pending = sorted(
                (dict(r) for r in self._records.values() if r["status"] == "pending" and r["deadline"] >= now),
                key=lambda r: r["created_at"],
            )
            history = [dict(self._records[i]) for i in self._history if i in self._records]
        return pending, history

    async def decide(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], now: float) -> None:
        with self._lock:
            self._sweep(now)
            rec = self._records.get(request_id)
            if rec is None:
                raise DecisionRefused("unknown", request_id)
            if rec["status"] != "pending":
                raise DecisionRefused("decided", request_id, rec["status"])
            if decision["type"] != "expire" and now > rec["deadline"]:
                raise DecisionRefused("unknown", request_id)
            rec.update(status=_STATUS_OF[decision["type"]], decision=shown, decided_at=now)
            self._full[request_id] = decision
            self._history.appendleft(request_id)
            waiters = self._waiters.pop(request_id, [])
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that worker's loop has closed: nobody waits there
                loop.call_soon_threadsafe(_resolve, future, decision)

    async def wait(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        with self._lock:
            rec = self._records.get(request_id)
            if rec is None:
                return None
            if rec["status"] != "pending":
                return self._full.pop(request_id, None) or rec.get("decision")
            self._waiters.setdefault(request_id, []).append((loop, future))
        try:
            done, _ = await asyncio.wait((future,), timeout=max(timeout_s, 0.0))
        finally:
            with self._lock:
                mine = self._waiters.get(request_id, [])
                if (loop, future) in mine:
                    mine.remove((loop, future))
        if not done:
            return None
        with self._lock:
            self._full.pop(request_id, None)
        return future.result()


def _resolve(future: asyncio.Future[dict[str, Any]], value: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(value)


_MEMORY: dict[str, _MemoryInbox] = {}
_MEMORY_LOCK = threading.Lock()


def _memory_backend(name: str, history: int, history_ttl_s: float, clock: Callable[[], float]) -> _MemoryInbox:
    # One in-process inbox per name: every Inbox("memory://") of a process shares it, like threads share memory.
    with _MEMORY_LOCK:
        backend = _MEMORY.get(name)
        if backend is None:
            backend = _MEMORY[name] = _MemoryInbox(history, history_ttl_s, clock)
        return backend


# -- redis ---------------------------------------------------------------------------------------------------

# KEYS: request hash, pending zset. ARGV: id, record JSON, deadline, ttl in ms.
_PUT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'status', 'pending', 'deadline', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# KEYS: request hash, pending zset, history list, done list. ARGV: id, status, decision for the worker,
# decision as shown, now, history ttl (ms), history length.
# Returns 'ok', 'unknown' (no such request, or past its deadline) or the status it was already decided with.
_DECIDE = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'deadline')
local status, deadline = meta[1], tonumber(meta[2])
if not status then return 'unknown' end
if status ~= 'pending' then return status end
if deadline and ARGV[2] ~= 'expired' and tonumber(ARGV[5]) > deadline then return 'unknown' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'decision', ARGV[4], 'decided_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('PEXPIRE', KEYS[3], ARGV[6])
redis.call('RPUSH', KEYS[4], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[6])
return 'ok'
"""


class _RedisBackend(_Backend):
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout_s: float,
        history: int,
        history_ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._aioredis = require_extra("redis.asyncio", "redis", "Inbox on redis://")
        try:
            self._aioredis.connection.parse_url(url)  # a malformed URL is found when the Inbox is built
        except ValueError as exc:
            raise PolicyError(f"invalid Redis inbox URL: {exc}") from exc
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.history = history
        self.history_ttl_ms = int(history_ttl_s * 1000)
        self.clock = clock

    async def connect(self) -> _Conn:
        return _RedisConn(self)


class _RedisConn(_Conn):
    def __init__(self, backend: _RedisBackend) -> None:
        self.b = backend
        options = {"decode_responses": True, "socket_connect_timeout": backend.timeout_s}
        # Commands answer at once: bounded. The blocking pop waits as long as the caller asks: its own client.
        self.r = backend._aioredis.Redis.from_url(backend.url, socket_timeout=backend.timeout_s, **options)
        self._blocking_options = options
        self._blocking: Any = None
        self._put = self.r.register_script(_PUT)
        self._decide = self.r.register_script(_DECIDE)

    def _key(self, kind: str, request_id: str | None = None) -> str:
        return f"{self.b.prefix}:{kind}" if request_id is None else f"{self.b.prefix}:{kind}:{request_id}"

    async def put(self, record: dict[str, Any]) -> bool:
        ttl_ms = max(int((record["deadline"] - self.b.clock() + _GRACE_S) * 1000), 1)
        added = await self._put(
            keys=[self._key("req", record["id"]), self._key("pending")],
            args=[record["id"], _dumps(record), repr(float(record["deadline"])), ttl_ms],
        )
        return bool(added)

    @staticmethod
    def _record(fields: list[Any]) -> dict[str, Any] | None:
        data, status, decision, decided_at = fields
        if data is None:
            return None
        record: dict[str, Any] = json.loads(data)
        record["status"] = status
        record["decision"] = json.loads(decision) if decision else None
        record["decided_at"] = float(decided_at) if decided_at else None
        return record

    async def get(self, request_id: str) -> dict[str, Any] | None:
        fields = await self.r.hmget(self._key("req", request_id), "data", "status", "decision", "decided_at")
        record = self._record(fields)
        if record is not None and record["status"] == "pending" and self.b.clock() > record["deadline"] + _GRACE_S:
            return None  # its TTL runs on the server's clock; by ours it is gone
        return record

    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        now = self.b.clock()
        pending_key = self._key("pending")
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(pending_key, "-inf", f"({now!r}")  # past their deadline: gone
            pipe.zrange(pending_key, 0, -1)
            pipe.lrange(self._key("history"), 0, self.b.history - 1)
            _, pending_ids, history_ids = await pipe.execute()
        ids = list(pending_ids) + list(history_ids)
        if not ids:
            return [], []
        async with self.r.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hmget(self._key("req", rid), "data", "status", "decision", "decided_at")
            rows = await pipe.execute()
        records = [self._record(row) for row in rows]
        pending = [r for r in records[: len(pending_ids)] if r is not None and r["status"] == "pending"]
        pending.sort(key=lambda r: r["created_at"])
        history = [r for r in records[len(pending_ids) :] if r is not None and r["status"] != "pending"]
        return pending, history

    async def decide(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], now: float) -> None:
        result = await self._decide(
            keys=[
                self._key("req", request_id),
                self._key("pending"),
                self._key("history"),
                self._key("done", request_id),
            ],
            args=[
                request_id,
                _STATUS_OF[decision["type"]],
                _dumps(decision),
                _dumps(shown),
                repr(float(now)),
                self.b.history_ttl_ms,
                self.b.history,
            ],
        )
        if result == "unknown":
            raise DecisionRefused("unknown", request_id)
        if result != "ok":
            raise DecisionRefused("decided", request_id, str(result))

    async def wait(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        done_key = self._key("done", request_id)
        status = await self.r.hget(self._key("req", request_id), "status")
        if status is None:
            return None
        if status != "pending":  # decided before we looked: the worker's copy is on the list, unless taken
            taken = await self.r.lpop(done_key)
            if taken is not None:
                loaded: dict[str, Any] = json.loads(taken)
                return loaded
            record = await self.get(request_id)
            return record.get("decision") if record is not None else None
        if self._blocking is None:
            self._blocking = self.b._aioredis.Redis.from_url(self.b.url, socket_timeout=None, **self._blocking_options)
        # BLPOP wakes the moment a decision is pushed: no polling. A decision pushed between the HGET above and
        # this pop is on the list already, so it is not missed.
        reply = await self._blocking.blpop([done_key], timeout=max(timeout_s, 0.001))
        if reply is None:
            return None
        popped: dict[str, Any] = json.loads(reply[1])
        return popped

    async def aclose(self) -> None:
        await self.r.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()


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

    ``url``: ``memory://`` (one process; ``memory://NAME`` for a separate one) or ``redis://host:port/db``.
    ``policy``: the policy whose ``redact`` paths hide argument values from the page; without it every
    argument value is hidden. ``schemas``: the tools' argument JSON schemas by tool name, shown beside the
    edit box (a rule's ``args_schema`` is used when there is none). ``ttl_s``: how long a request waits when
    the caller gives no timeout (the guard passes its approval timeout). ``webhook``: a URL that receives
    each new request as JSON, signed with ``webhook_secret`` (header ``X-MCP-Guard-Signature:
    sha256=<hex HMAC-SHA256 of the body>``). ``history``: how many decided requests the page lists, kept
    ``history_ttl_s``. ``prefix``: Redis key prefix. ``timeout_s``: bound on one Redis command.

    As an approver it is async: the guard awaits it (``ainvoke``) or runs it on a private loop (``invoke``).
    When the guard's approval timeout passes, the request is marked expired and a late decision is refused.
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl_s > 0 or not history_ttl_s > 0 or not timeout_s > 0 or history < 1:
            raise ValueError("ttl_s, history_ttl_s and timeout_s must be > 0, history >= 1")
        if webhook is not None:
            if urlsplit(webhook).scheme not in ("http", "https"):
                raise ValueError(f"webhook must be an http(s) URL, not {webhook!r}")
            if not webhook_secret:
                raise ValueError("a webhook needs webhook_secret: receivers verify the HMAC signature with it")
        self.url = url
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.webhook = webhook
        self._webhook_key = webhook_secret.encode() if isinstance(webhook_secret, str) else webhook_secret
        self.schemas: dict[str, Mapping[str, Any]] = dict(schemas or {})
        # A Guard is read at each request, so a policy it reloads is the one whose redact paths apply.
        self._guard: Any = policy if policy is not None and hasattr(policy, "policy") else None
        self._policy: Policy | None = load_policy(policy) if policy is not None else None
        scheme = urlsplit(url).scheme
        self._backend: _Backend
        if scheme == "memory":
            name = url.split("://", 1)[1] if "://" in url else ""
            self._backend = _memory_backend(name, history, history_ttl_s, clock)
        elif scheme in ("redis", "rediss", "unix"):
            self._backend = _RedisBackend(
                url, prefix=prefix, timeout_s=timeout_s, history=history, history_ttl_s=history_ttl_s, clock=clock
            )
        else:
            raise PolicyError(f"unknown inbox store {url!r}: use memory:// or redis://host:port/db")
        self._originals: dict[str, _Original] = {}
        self._originals_lock = threading.Lock()
        self._held: tuple[asyncio.AbstractEventLoop, _Conn] | None = None
        self._warned = False

    @property
    def policy(self) -> Policy | None:
        """The policy whose ``redact`` paths apply (a Guard's current one when built with a Guard)."""
        return self._guard.policy if self._guard is not None else self._policy

    def __repr__(self) -> str:
        where = urlsplit(self.url)
        return f"Inbox({where.scheme}://{where.hostname or ''}{where.path})"  # never the password

    # -- connections ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        held = self._held
        if held is not None and held[0] is asyncio.get_running_loop():
            yield held[1]
            return
        # One connection per operation otherwise: approvals are human-paced, and a connection must not
        # outlive the event loop it was made on (the guard runs sync approvers on short-lived loops).
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
        """Record ``request``, wait for a person's decision, and return it (the guard's approver protocol)."""
        timeout = float(request.timeout_s) if request.timeout_s else self.ttl_s
        async with self._conn() as conn:
            rid = await self._submit(conn, request, timeout_s=timeout)
            answer: dict[str, Any] | None = None
            try:
                answer = await self._wait(conn, rid, timeout + _GRACE_S)
            finally:
                if answer is None:  # timed out, or the guard gave up on us: a late decision must be refused
                    with contextlib.suppress(Exception):
                        await conn.decide(rid, {"type": "expire"}, {"type": "expire"}, self.clock())
                    self._forget(rid)
        if answer is None:
            raise ApprovalError(f"no decision on approval request {rid} within {timeout:g} s")
        return _to_decision(answer)

    # -- the interrupt helpers -------------------------------------------------------------------------------

    async def submit(
        self,
        request: ApprovalRequest | Mapping[str, Any] | Any,
        *,
        request_id: str | None = None,
        identity: str | None = None,
        session: str | None = None,
        schema: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Record a pause in the inbox and return its id (the same id again if ``request_id`` exists already).

        ``request``: an :class:`~mcp_guard.ApprovalRequest`, the payload of ``GuardMiddleware``'s interrupt
        (``interrupt.value``), or an Agents SDK ``ToolApprovalItem``. Use the interrupt's id as
        ``request_id`` so that submitting again after a restart does not record the pause twice.
        """
        call = as_request(request, identity=identity, session=session, timeout_s=timeout_s)
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
            if answer.get("type") == "expire":
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
        :class:`Inbox.DecisionRefused` for an unknown, expired or already decided request.
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

    def app(self, *, token: str, poll_s: float = 1.0) -> Any:
        """The web page and JSON API as an ASGI app (extra ``inbox``); see :func:`mcp_guard._inbox_web.create_app`."""
        from mcp_guard._inbox_web import create_app

        return create_app(self, token=token, poll_s=poll_s)

    # -- internals ---------------------------------------------------------------------------------------------

    def _redact_paths(self, call: ApprovalRequest) -> tuple[str, ...] | None:
        carried = getattr(call, "redact", None)  # a request that carries its rule's redact paths
        if carried is not None:
            return tuple(carried)
        policy = self.policy
        if policy is None:
            return None
        try:
            decision = policy.evaluate(
                call.tool, call.args, server=call.server, identity=call.identity, session=call.session
            )
        except Exception:  # cannot tell what to hide: hide everything
            log.exception("could not find the redact paths for %s; hiding every argument value", call.tool)
            return None
        redact: tuple[str, ...] = decision.redact
        return redact

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
        self, call: ApprovalRequest, rid: str, timeout_s: float, schema: Mapping[str, Any] | None
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
            "status": "pending",
            "decision": None,
            "decided_at": None,
        }
        return record, _Original(dict(args), tuple(hidden))

    async def _submit(
        self,
        conn: _Conn,
        call: ApprovalRequest,
        *,
        timeout_s: float,
        request_id: str | None = None,
        schema: Mapping[str, Any] | None = None,
    ) -> str:
        if request_id is not None and not _ID.match(request_id):
            raise ValueError("request_id: 1-128 characters of letters, digits and . _ : -")
        rid = request_id or uuid.uuid4().hex
        record, original = self._record(call, rid, timeout_s, schema)
        with self._originals_lock:
            self._originals[rid] = original
        added = await conn.put(record)
        if added and self.webhook is not None:
            self._post_webhook(record)
        return rid

    async def _wait(self, conn: _Conn, rid: str, timeout_s: float) -> dict[str, Any] | None:
        answer = await conn.wait(rid, timeout_s)
        if answer is not None and answer.get("type") == "edit" and isinstance(answer.get("args"), Mapping):
            with self._originals_lock:
                original = self._originals.get(rid)
            if original is not None:
                answer = {**answer, "args": restore_hidden(answer["args"], original.args, original.hidden)}
        return answer

    def _forget(self, rid: str) -> None:
        with self._originals_lock:
            self._originals.pop(rid, None)

    def _post_webhook(self, record: Mapping[str, Any]) -> None:
        # A thread of its own: a slow or failing receiver never delays the call beyond its approval timeout.
        assert self.webhook is not None
        assert self._webhook_key is not None
        body = _dumps({"event": "approval_requested", "request": record}).encode("utf-8")
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


def _to_decision(answer: Mapping[str, Any]) -> ApprovalDecision:
    kind = answer.get("type")
    if kind == "approve":
        return ApprovalDecision.approve()
    if kind == "edit" and isinstance(answer.get("args"), Mapping):
        return ApprovalDecision.edit(answer["args"])
    if kind == "reject":
        message = answer.get("message")
        return ApprovalDecision.deny(message if isinstance(message, str) else "a human rejected this call in the inbox")
    raise ApprovalError(f"no usable decision in the inbox (type {kind!r})")


def as_request(
    request: ApprovalRequest | Mapping[str, Any] | Any,
    *,
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
        call = ApprovalRequest(
            tool=str(request.get("tool") or request.get("name") or ""),
            args=dict(args) if isinstance(args, Mapping) else {},
            server=request.get("server"),
            identity=request.get("identity"),
            session=request.get("session"),
            rule=request.get("rule"),
            reason=request.get("reason"),
            risk_class=request.get("risk_class"),
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
    """Run a coroutine from sync code: here when no loop runs in this thread, else on a private loop in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcp-guard-inbox") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


__all__ = ["DecisionRefused", "Inbox", "as_request", "shown_args", "sign", "validate_decision", "verify_signature"]
