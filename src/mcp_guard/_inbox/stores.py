"""The approval inbox's stores: where pending requests wait and how a decision reaches the waiting worker.

``memory://NAME``: a dict under a lock, one per name and process; waiting workers hold futures on their own
event loops, resolved thread-safely. ``redis://``: hashes with a TTL, a sorted set of pending ids, a history list
and one list per request that the decision is pushed onto and the worker ``BLPOP``\\s (layout in
:mod:`mcp_guard._inbox.inbox`). Deciding is atomic in both: a lock, or one Lua script. Used through
:class:`~mcp_guard.Inbox`, not directly.

Each store registers its URL schemes on :class:`Backend` as it is defined (as the rate-limit stores do on
``Store``); :func:`backend_from_url` builds one by scheme and names the schemes there are when it knows none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from mcp_guard._errors import ApprovalError, StoreConfigurationError, require_extra
from mcp_guard._inbox.urls import hide_secrets, scheme_of, shown_url

# A decision's type -> the status its request has afterwards. "expire": the worker gave up at the deadline;
# "withdraw": the worker's waiting task was cancelled (its caller left); "abandon": the worker stopped renewing
# its lease (killed, crashed, frozen), recorded by whoever looks first once the lease has run out.
STATUS_OF = {
    "approve": "approved",
    "edit": "edited",
    "reject": "rejected",
    "expire": "expired",
    "withdraw": "withdrawn",
    "abandon": "abandoned",
}
#: Statuses of a request whose caller is gone: a decision for it is refused as ``left`` (HTTP 410).
LEFT = frozenset({"withdrawn", "abandoned"})
#: What the worker's list and the page's history hold for a request abandoned by its worker.
ABANDON = {"type": "abandon"}

#: Seconds a worker waits past its deadline before it gives up on its own (the guard times out first).
GRACE_S = 1.0


class DecisionRefused(ApprovalError):
    """A decision the inbox refuses: the request is unknown (or gone past its deadline), already decided, or its
    caller left (its waiting worker was cancelled, or stopped renewing its lease).

    ``why`` is ``"unknown"``, ``"decided"`` or ``"left"`` (the web API answers 404, 409 and 410); ``status`` is
    the request's status when it was already settled (``"withdrawn"`` or ``"abandoned"`` for ``"left"``).
    """

    def __init__(self, why: Literal["unknown", "decided", "left"], request_id: str, status: str | None = None) -> None:
        self.why = why
        self.request_id = request_id
        self.status = status
        if why == "unknown":
            text = "is unknown or past its deadline"
        elif why == "left":
            text = f"has no caller any more ({status}): nobody would act on a decision"
        else:
            text = f"was already decided ({status})"
        super().__init__(f"approval request {request_id!r} {text}")

    @classmethod
    def settled(cls, request_id: str, status: str) -> DecisionRefused:
        """The refusal for a request already settled with ``status``."""
        return cls("left" if status in LEFT else "decided", request_id, status)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- stores --------------------------------------------------------------------------------------------------


class Conn(ABC):
    """One connection to an inbox store, used from one event loop."""

    @abstractmethod
    async def put(self, record: dict[str, Any]) -> bool:
        """Add a pending request (its ``deadline`` bounds its life); False if the id exists already.

        A record whose ``lease_until`` is a time (not ``None``) has a waiting worker that renews it with
        :meth:`renew`; once that time passes unrenewed, the request is abandoned.
        """

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

    @abstractmethod
    async def renew(self, request_id: str, lease_until: float, now: float) -> str:
        """Extend a pending request's lease to ``lease_until``: ``"ok"``, else the status it has now (or
        ``"unknown"``). A lease that had run out by ``now`` is not extended: the request is abandoned."""

    async def aclose(self) -> None:  # noqa: B027 - most connections hold nothing
        """Release the connection."""


@dataclass(frozen=True)
class StoreOptions:
    """What an :class:`~mcp_guard.Inbox` tells its store; each store uses the fields it needs."""

    prefix: str
    timeout_s: float
    history: int
    history_ttl_s: float
    clock: Callable[[], float]


class Backend(ABC):
    """An inbox store. Subclasses set ``schemes`` to be built by :func:`backend_from_url` for URLs of those
    schemes (the registry is filled here, as each subclass is defined, like the rate-limit stores')."""

    schemes: ClassVar[tuple[str, ...]] = ()
    _registry: ClassVar[dict[str, type[Backend]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.schemes:
            Backend._registry[scheme] = cls

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, options: StoreOptions) -> Backend:
        """The store for ``url``; :class:`~mcp_guard.ConfigurationError` when it cannot be used."""

    @abstractmethod
    async def connect(self) -> Conn: ...


def backend_from_url(url: str, options: StoreOptions) -> Backend:
    """The inbox store for ``url``, by its scheme. An unknown scheme or a malformed URL raises
    :class:`~mcp_guard.ConfigurationError` naming the URL (its password hidden) and the schemes there are (a
    ``StoreConfigurationError``: a :class:`~mcp_guard.PolicyError` too, what 0.2 raised here)."""
    scheme = scheme_of(url)
    cls = Backend._registry.get(scheme) if scheme is not None else None
    if cls is None:
        known = ", ".join(f"{s}://" for s in sorted(Backend._registry))
        what = f"the scheme {scheme!r} is" if scheme else "it has no scheme that is"
        raise StoreConfigurationError(
            f"unknown inbox store {shown_url(url)!r}: {what} not one of {known} (use memory:// or redis://host:port/db)"
        )
    return cls.from_url(url, options)


# -- memory ------------------------------------------------------------------------------------------------


# A worker waiting on its own event loop, and what wakes it.
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[dict[str, Any]]"]
_Wake = tuple[asyncio.AbstractEventLoop, "asyncio.Future[dict[str, Any]]", dict[str, Any]]


class _MemoryInbox(Backend, Conn):
    """The in-process store: a dict under a lock; waiting workers hold futures on their own event loops."""

    schemes = ("memory",)

    @classmethod
    def from_url(cls, url: str, options: StoreOptions) -> Backend:
        # memory://NAME: the first Inbox built for a name sets its history and clock.
        name = url.split("://", 1)[1] if "://" in url else ""
        return memory_backend(name, options.history, options.history_ttl_s, options.clock)

    def __init__(self, history: int, history_ttl_s: float, clock: Callable[[], float]) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._full: dict[str, dict[str, Any]] = {}  # decisions not yet taken by their worker
        self._history: deque[str] = deque(maxlen=history)
        self._history_ttl_s = history_ttl_s
        self._waiters: dict[str, list[_Waiter]] = {}
        self._clock = clock

    async def connect(self) -> Conn:
        return self

    def _settle(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], at: float) -> list[_Wake]:
        # Called under the lock: the request leaves the pending list; its waiters are woken by the caller, after
        # the lock is released (a waiter's loop may be this thread's).
        self._records[request_id].update(status=STATUS_OF[decision["type"]], decision=shown, decided_at=at)
        self._full[request_id] = decision
        self._history.appendleft(request_id)
        return [(loop, future, decision) for loop, future in self._waiters.pop(request_id, [])]

    def _sweep(self, now: float) -> list[_Wake]:
        # Called under the lock. A request past its deadline is gone, as its Redis hash would be.
        # A pending one lives a grace period past its deadline, so its own worker can still mark it expired.
        # A pending one whose lease ran out is abandoned: its worker is gone, and whoever looks first says so.
        woken: list[_Wake] = []
        for rid, rec in list(self._records.items()):
            if rec["status"] == "pending":
                limit = rec["deadline"] + GRACE_S
            else:
                limit = (rec.get("decided_at") or 0.0) + self._history_ttl_s
            if now > limit:
                del self._records[rid]
                self._full.pop(rid, None)
            elif rec["status"] == "pending" and _lapsed(rec, now):
                woken += self._settle(rid, ABANDON, ABANDON, rec["lease_until"])
        return woken

    async def put(self, record: dict[str, Any]) -> bool:
        with self._lock:
            woken = self._sweep(self._clock())
            added = record["id"] not in self._records
            if added:
                self._records[record["id"]] = dict(record)
        _wake(woken)
        return added

    async def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            woken = self._sweep(self._clock())
            rec = self._records.get(request_id)
            found = dict(rec) if rec is not None else None
        _wake(woken)
        return found

    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            now = self._clock()
            woken = self._sweep(now)
            pending = sorted(
                (dict(r) for r in self._records.values() if r["status"] == "pending" and r["deadline"] >= now),
                key=lambda r: r["created_at"],
            )
            history = [dict(self._records[i]) for i in self._history if i in self._records]
        _wake(woken)
        return pending, history

    async def decide(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], now: float) -> None:
        with self._lock:
            woken = self._sweep(now)
            rec = self._records.get(request_id)
            refused: DecisionRefused | None = None
            if rec is None:
                refused = DecisionRefused("unknown", request_id)
            elif rec["status"] != "pending":
                refused = DecisionRefused.settled(request_id, rec["status"])
            elif decision["type"] not in ("expire", "withdraw") and now > rec["deadline"]:
                refused = DecisionRefused("unknown", request_id)
            else:
                woken += self._settle(request_id, decision, shown, now)
        _wake(woken)
        if refused is not None:
            raise refused

    async def renew(self, request_id: str, lease_until: float, now: float) -> str:
        with self._lock:
            woken = self._sweep(now)
            rec = self._records.get(request_id)
            if rec is None:
                status = "unknown"
            elif rec["status"] != "pending":
                status = rec["status"]
            else:
                rec["lease_until"] = lease_until
                status = "ok"
        _wake(woken)
        return status

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


def _lapsed(record: dict[str, Any], now: float) -> bool:
    """Whether ``record`` has a lease (a worker waits for it) that ran out before ``now``."""
    lease = record.get("lease_until")
    return lease is not None and now > lease


def _wake(woken: list[_Wake]) -> None:
    for loop, future, decision in woken:
        with contextlib.suppress(RuntimeError):  # that worker's loop has closed: nobody waits there
            loop.call_soon_threadsafe(_resolve, future, decision)


def _resolve(future: asyncio.Future[dict[str, Any]], value: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(value)


_MEMORY: dict[str, _MemoryInbox] = {}
_MEMORY_LOCK = threading.Lock()


def memory_backend(name: str, history: int, history_ttl_s: float, clock: Callable[[], float]) -> _MemoryInbox:
    # One in-process inbox per name: every Inbox("memory://") of a process shares it, like threads share memory.
    with _MEMORY_LOCK:
        backend = _MEMORY.get(name)
        if backend is None:
            backend = _MEMORY[name] = _MemoryInbox(history, history_ttl_s, clock)
        return backend


# -- redis ---------------------------------------------------------------------------------------------------

# KEYS: request hash, pending zset. ARGV: id, record JSON, deadline, ttl in ms, lease ('' when none).
_PUT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'status', 'pending', 'deadline', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'lease', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# Every change to a request after it is put: a decision, the worker's expire or withdraw, a lease renewal, and the
# abandonment of a request whose lease ran out. One script, so the lease rule is applied first, atomically,
# whatever the action: a lease that ran out means the worker is gone, and whoever looks first records it.
# KEYS: request hash, pending zset, history list, done list. ARGV: id, action (a status from STATUS_OF, or
# 'renew'), decision for the worker, decision as shown, now, history ttl (ms), history length, the abandon
# decision (JSON), the new lease (renew only).
# Returns 'ok'; 'unknown' (no such request, or past its deadline); 'live' (abandon asked, the lease still
# runs); or the status the request was already settled with (also 'abandoned' when the lease ran out just now).
_ACT = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'deadline', 'lease')
local status, deadline, lease = meta[1], tonumber(meta[2]), meta[3]
if not status then return 'unknown' end
local now = tonumber(ARGV[5])
local function settle(new_status, for_worker, shown, at)
  redis.call('HSET', KEYS[1], 'status', new_status, 'decision', shown, 'decided_at', at)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('LPUSH', KEYS[3], ARGV[1])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  redis.call('RPUSH', KEYS[4], for_worker)
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
end
if status == 'pending' and lease and now > tonumber(lease) then
  settle('abandoned', ARGV[8], ARGV[8], lease)
  status = 'abandoned'
end
if status ~= 'pending' then return status end
local action = ARGV[2]
if action == 'renew' then
  redis.call('HSET', KEYS[1], 'lease', ARGV[9])
  return 'ok'
end
if action == 'abandoned' then return 'live' end
if deadline and action ~= 'expired' and action ~= 'withdrawn' and now > deadline then return 'unknown' end
settle(action, ARGV[3], ARGV[4], ARGV[5])
return 'ok'
"""


class RedisBackend(Backend):
    schemes = ("redis", "rediss", "unix")

    @classmethod
    def from_url(cls, url: str, options: StoreOptions) -> Backend:
        return cls(
            url,
            prefix=options.prefix,
            timeout_s=options.timeout_s,
            history=options.history,
            history_ttl_s=options.history_ttl_s,
            clock=options.clock,
        )

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
            # Not chained: a driver's message about a URL may quote its secrets in a traceback. What it said is
            # kept here, with them taken out.
            why = hide_secrets(str(exc), url)
            raise StoreConfigurationError(f"invalid Redis inbox URL {shown_url(url)!r}: {why}") from None
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.history = history
        self.history_ttl_ms = int(history_ttl_s * 1000)
        self.clock = clock

    async def connect(self) -> Conn:
        return _RedisConn(self)


class _RedisConn(Conn):
    def __init__(self, backend: RedisBackend) -> None:
        self.b = backend
        options = {"decode_responses": True, "socket_connect_timeout": backend.timeout_s}
        # Commands answer at once: bounded. The blocking pop waits as long as the caller asks: its own client.
        self.r = backend._aioredis.Redis.from_url(backend.url, socket_timeout=backend.timeout_s, **options)
        self._blocking_options = options
        self._blocking: Any = None
        self._put = self.r.register_script(_PUT)
        self._act = self.r.register_script(_ACT)

    def _key(self, kind: str, request_id: str | None = None) -> str:
        return f"{self.b.prefix}:{kind}" if request_id is None else f"{self.b.prefix}:{kind}:{request_id}"

    async def put(self, record: dict[str, Any]) -> bool:
        ttl_ms = max(int((record["deadline"] - self.b.clock() + GRACE_S) * 1000), 1)
        lease = record.get("lease_until")
        added = await self._put(
            keys=[self._key("req", record["id"]), self._key("pending")],
            args=[
                record["id"],
                dumps(record),
                repr(float(record["deadline"])),
                ttl_ms,
                "" if lease is None else repr(float(lease)),
            ],
        )
        return bool(added)

    _FIELDS = ("data", "status", "decision", "decided_at", "lease")

    @staticmethod
    def _record(fields: list[Any]) -> dict[str, Any] | None:
        data, status, decision, decided_at, lease = fields
        if data is None:
            return None
        record: dict[str, Any] = json.loads(data)
        record["status"] = status
        record["decision"] = json.loads(decision) if decision else None
        record["decided_at"] = float(decided_at) if decided_at else None
        record["lease_until"] = float(lease) if lease else None  # the renewed lease, not the first one
        return record

    async def _act_on(
        self,
        request_id: str,
        action: str,
        now: float,
        decision: dict[str, Any] | None = None,
        shown: dict[str, Any] | None = None,
        lease_until: float | None = None,
    ) -> str:
        result = await self._act(
            keys=[
                self._key("req", request_id),
                self._key("pending"),
                self._key("history"),
                self._key("done", request_id),
            ],
            args=[
                request_id,
                action,
                dumps(decision) if decision is not None else "",
                dumps(shown) if shown is not None else "",
                repr(float(now)),
                self.b.history_ttl_ms,
                self.b.history,
                dumps(ABANDON),
                repr(float(lease_until)) if lease_until is not None else "",
            ],
        )
        return str(result)

    async def _read(self, request_ids: list[str]) -> list[dict[str, Any] | None]:
        if not request_ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for rid in request_ids:
                pipe.hmget(self._key("req", rid), *self._FIELDS)
            rows = await pipe.execute()
        return [self._record(row) for row in rows]

    async def _abandon_lapsed(self, records: list[dict[str, Any] | None], now: float) -> bool:
        """Record as abandoned each pending request whose lease ran out; whether there was any."""
        lapsed = [r["id"] for r in records if r is not None and r["status"] == "pending" and _lapsed(r, now)]
        for rid in lapsed:
            await self._act_on(rid, "abandoned", now)
        return bool(lapsed)

    async def get(self, request_id: str) -> dict[str, Any] | None:
        now = self.b.clock()
        records = await self._read([request_id])
        if await self._abandon_lapsed(records, now):
            records = await self._read([request_id])
        record = records[0]
        if record is not None and record["status"] == "pending" and now > record["deadline"] + GRACE_S:
            return None  # its TTL runs on the server's clock; by ours it is gone
        return record

    async def listing(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        pending, history, lapsed = await self._listing(self.b.clock())
        if lapsed:  # recorded as abandoned just now: read again, so they are listed where they now belong
            pending, history, _ = await self._listing(self.b.clock())
        return pending, history

    async def _listing(self, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        pending_key = self._key("pending")
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(pending_key, "-inf", f"({now!r}")  # past their deadline: gone
            pipe.zrange(pending_key, 0, -1)
            pipe.lrange(self._key("history"), 0, self.b.history - 1)
            _, pending_ids, history_ids = await pipe.execute()
        records = await self._read(list(pending_ids) + list(history_ids))
        if await self._abandon_lapsed(records[: len(pending_ids)], now):
            return [], [], True
        pending = [r for r in records[: len(pending_ids)] if r is not None and r["status"] == "pending"]
        pending.sort(key=lambda r: r["created_at"])
        history = [r for r in records[len(pending_ids) :] if r is not None and r["status"] != "pending"]
        return pending, history, False

    async def decide(self, request_id: str, decision: dict[str, Any], shown: dict[str, Any], now: float) -> None:
        result = await self._act_on(request_id, STATUS_OF[decision["type"]], now, decision, shown)
        if result == "unknown":
            raise DecisionRefused("unknown", request_id)
        if result != "ok":
            raise DecisionRefused.settled(request_id, result)

    async def renew(self, request_id: str, lease_until: float, now: float) -> str:
        return await self._act_on(request_id, "renew", now, lease_until=lease_until)

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


__all__ = [
    "ABANDON",
    "GRACE_S",
    "LEFT",
    "STATUS_OF",
    "Backend",
    "Conn",
    "DecisionRefused",
    "RedisBackend",
    "dumps",
    "memory_backend",
]
