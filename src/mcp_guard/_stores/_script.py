"""What both Redis stores share: the Lua scripts, the key layout, and the decisions written once as flows.

A *flow* is a generator that does no I/O itself: it yields each awaitable-or-not operation it needs, as
``(function, *args)``, and is sent the result (or thrown the exception). :func:`run` calls the operations,
:func:`arun` awaits them, so the same flow serves ``check`` and ``acheck``, and a store's connection code
(:meth:`ScriptStore._call`) is written once for its sync and its async client. This is tenacity's and httpx's
``auth_flow`` shape: the logic is one generator, the drivers are two five-line loops that differ by an ``await``.

The layout per budget key and the clock rules are in :mod:`mcp_guard._stores.redis`'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import itertools
import os
import secrets
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import parse_qsl

from mcp_guard._errors import StoreConfigurationError, StoreError, require_extra
from mcp_guard._policy.decision import LimitCharge, escape_key_part
from mcp_guard._stores._base import ADMIT, Clock, Group, Part, Store, Trimmed, Usage, Verdict, plan

# KEYS: per budget, its ZSET then its HASH. ARGV: now, mode ("r" reserve, "c" check), token, then per budget
# its cost and number of limits, then per limit its window and max.
# Returns {1} when every limit admits (in reserve mode the entries are then recorded), otherwise
# {0, <1-based index of the refusing limit with the longest wait, in ARGV order>, <wait in seconds>}.
#
# The common path is three commands (HMGET, ZADD, HSET): the running sum ``s`` covers every entry still in
# the ZSET, some possibly expired, so it is never below what any window holds. When ``s + cost`` fits, the
# call fits every window on the key, exactly; only when it does not are expired entries pruned and the
# window counted exactly. The TTL is set to twice the longest window (plus a second) and renewed once per
# window (``r`` = when it was last renewed), not on every call.
# Numbers go back to Redis through fmt(): Lua's own number-to-string keeps only 14 digits, which would
# round an epoch timestamp to 0.1 ms and break exactness at the window's edge.
_DECIDE = """
local function fmt(x) return string.format('%.17g', x) end
local function cost_of(m) return tonumber(string.match(m, ':([^:]*)$')) or 0 end
local function total(members)
  local s = 0
  for _, m in ipairs(members) do s = s + cost_of(m) end
  return s
end

local now = tonumber(ARGV[1])
local pos, index = 4, 0
local budgets = {}
local worst_wait, worst_index = nil, nil
for b = 1, #KEYS / 2 do
  local z, h = KEYS[2 * b - 1], KEYS[2 * b]
  local cost_text, n = ARGV[pos], tonumber(ARGV[pos + 1])
  local cost = tonumber(cost_text)
  pos = pos + 2
  local meta = redis.call('HMGET', h, 'w', 's', 'r')
  local stored_w = tonumber(meta[1]) or 0
  local held = tonumber(meta[2])
  local has_meta = held ~= nil
  if not has_meta then held = total(redis.call('ZRANGE', z, 0, -1)) end  -- new key, or the hash was lost
  local wmax = stored_w
  local first = pos
  for j = 1, n do
    local w = tonumber(ARGV[pos])
    if w > wmax then wmax = w end
    pos = pos + 2
  end
  local pruned = false
  for j = 1, n do
    index = index + 1
    local w, mx = tonumber(ARGV[first + 2 * j - 2]), tonumber(ARGV[first + 2 * j - 1])
    if held + cost > mx then
      if not pruned then
        -- drop what no window on this key still counts, keeping the running sum exact
        pruned = true
        local cutoff = fmt(now - wmax)
        local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
        if #old > 0 then
          held = held - total(old)
          redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
          if has_meta then redis.call('HSET', h, 's', fmt(held)) end
        end
      end
      local used = held
      if w < wmax then used = total(redis.call('ZRANGEBYSCORE', z, '(' .. fmt(now - w), '+inf')) end
      if used + cost > mx then
        -- wait until the oldest entries in this window that free enough units have left it
        local need = used + cost - mx
        local entries = redis.call('ZRANGEBYSCORE', z, '(' .. fmt(now - w), '+inf', 'WITHSCORES')
        local freed, wait = 0, w
        for i = 1, #entries, 2 do
          freed = freed + cost_of(entries[i])
          if freed >= need then
            wait = tonumber(entries[i + 1]) + w - now
            break
          end
        end
        if wait < 0 then wait = 0 end
        if worst_wait == nil or wait > worst_wait then worst_wait, worst_index = wait, index end
      end
    end
  end
  local renewed = tonumber(meta[3])
  -- held == 0: the ZSET is empty, so the ZADD below makes a new key that has no TTL yet
  local renew = (not has_meta) or held == 0 or renewed == nil or wmax > stored_w
    or now >= renewed + wmax or now < renewed
  budgets[b] = {z, h, cost, cost_text, wmax, held, renew}
end
if worst_index ~= nil then return {0, worst_index, fmt(worst_wait)} end
if ARGV[2] == 'r' then
  for b = 1, #budgets do
    local z, h, cost, cost_text, wmax, held, renew = unpack(budgets[b])
    if cost > 0 then redis.call('ZADD', z, ARGV[1], ARGV[3] .. ':' .. cost_text) end
    if renew then
      redis.call('HSET', h, 'w', fmt(wmax), 's', fmt(held + cost), 'r', ARGV[1])
      local ttl = math.ceil(wmax * 2000) + 1000
      redis.call('PEXPIRE', z, ttl)
      redis.call('PEXPIRE', h, ttl)
    else
      redis.call('HSET', h, 's', fmt(held + cost))
    end
  end
end
return {1}
"""

# KEYS: per budget, its ZSET then its HASH. ARGV: token, its admission time (the members' score).
# Removes exactly that token's entries; a second release finds nothing and changes nothing.
_RELEASE = """
local prefix = ARGV[1] .. ':'
for b = 1, #KEYS / 2 do
  local z, h = KEYS[2 * b - 1], KEYS[2 * b]
  local removed = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, ARGV[2], ARGV[2])) do
    if string.sub(m, 1, #prefix) == prefix then
      redis.call('ZREM', z, m)
      removed = removed + (tonumber(string.match(m, ':([^:]*)$')) or 0)
    end
  end
  if removed > 0 and redis.call('HEXISTS', h, 's') == 1 then
    redis.call('HINCRBYFLOAT', h, 's', string.format('%.17g', -removed))
  end
end
return 1
"""

# KEYS: per limit, its budget's ZSET. ARGV: now, then per limit its window. Read-only: per limit
# {used, score of the oldest entry in the window or ''}, as strings (Lua numbers would come back truncated).
_USAGE = """
local function fmt(x) return string.format('%.17g', x) end
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local w = tonumber(ARGV[i + 1])
  local entries = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. fmt(now - w), '+inf', 'WITHSCORES')
  local used, oldest = 0, ''
  for j = 1, #entries, 2 do
    local cost = tonumber(string.match(entries[j], ':([^:]*)$')) or 0
    used = used + cost
    if oldest == '' and cost > 0 then oldest = entries[j + 1] end
  end
  out[i] = {fmt(used), oldest}
end
return out
"""

# Approval grants: the first live key among KEYS (all one owner's, so one slot in a cluster); and one key set
# with a time to live in milliseconds.
_FIND_GRANT = """
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then return v end
end
return false
"""
_SAVE_GRANT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_FIND_GRANT_SHA = hashlib.sha1(_FIND_GRANT.encode()).hexdigest()
_SAVE_GRANT_SHA = hashlib.sha1(_SAVE_GRANT.encode()).hexdigest()
# Session memory. KEYS: the session's meta HASH, then one LIST per part. ARGV: TTL in ms, then per part its name,
# its byte cap, its number of new records and those records. Appends, drops the oldest records past the cap,
# counts every record ever appended (``<part>:n``) and the bytes held (``<part>:b``). Returns per part
# {name, records dropped, bytes dropped}.
_SESSION_APPEND = """
local ttl = tonumber(ARGV[1])
local pos = 2
local out = {}
for i = 2, #KEYS do
  local list = KEYS[i]
  local name, cap, n = ARGV[pos], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  pos = pos + 3
  local held = tonumber(redis.call('HGET', KEYS[1], name .. ':b') or '0')
  if redis.call('EXISTS', list) == 0 then held = 0 end
  for j = 1, n do
    local record = ARGV[pos]
    pos = pos + 1
    redis.call('RPUSH', list, record)
    held = held + #record
  end
  redis.call('HINCRBY', KEYS[1], name .. ':n', n)
  local dropped, dropped_bytes = 0, 0
  while held > cap do
    local record = redis.call('LPOP', list)
    if not record then held = 0 break end
    held = held - #record
    dropped = dropped + 1
    dropped_bytes = dropped_bytes + #record
  end
  redis.call('HSET', KEYS[1], name .. ':b', held)
  if ttl > 0 then redis.call('PEXPIRE', list, ttl) end
  out[#out + 1] = {name, dropped, dropped_bytes}
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return out
"""

# KEYS: the meta HASH, then one LIST per part; ARGV: the parts' names. Returns per part {records, appended ever}.
_SESSION_READ = """
local out = {}
for i = 2, #KEYS do
  out[#out + 1] = {redis.call('LRANGE', KEYS[i], 0, -1), redis.call('HGET', KEYS[1], ARGV[i - 1] .. ':n') or '0'}
end
return out
"""

# KEYS: the store's session key. ARGV: a new random key, kept only if none is there yet. Returns the key in force.
_SESSION_KEY = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

_SESSION_APPEND_SHA = hashlib.sha1(_SESSION_APPEND.encode()).hexdigest()
_SESSION_READ_SHA = hashlib.sha1(_SESSION_READ.encode()).hexdigest()
_SESSION_KEY_SHA = hashlib.sha1(_SESSION_KEY.encode()).hexdigest()

_DECIDE_SHA = hashlib.sha1(_DECIDE.encode()).hexdigest()
_RELEASE_SHA = hashlib.sha1(_RELEASE.encode()).hexdigest()
_USAGE_SHA = hashlib.sha1(_USAGE.encode()).hexdigest()

# Tokens must be unique across every process sharing the server: a random per-process id (renewed in a
# forked child, which would otherwise repeat its parent's id and sequence) and a sequence number.
_node = secrets.token_hex(6)


class _Forks:
    """How many forks this process is from the one that imported this module (bumped in each forked child):
    connections kept idle by a store in the parent must never be used by the child."""

    generation = 0


FORKS = _Forks()


def _after_fork_in_child() -> None:
    global _node
    _node = secrets.token_hex(6)
    FORKS.generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


T = TypeVar("T")
# One script call: (script, its SHA1, KEYS, ARGV).
Step = tuple[str, str, list[str], list[Any]]
# A flow yields operations ``(function, *args)`` and returns T; see the module docstring.
Flow = Generator[tuple[Any, ...], Any, T]


def _resume(flow: Flow[T], reply: Any, error: BaseException | None) -> tuple[tuple[Any, ...] | None, T | None]:
    """Send the last result into the flow (or throw its error): the next operation, or ``(None, result)``."""
    try:
        return (flow.send(reply) if error is None else flow.throw(error)), None
    except StopIteration as stop:
        return None, stop.value


def _outcome(op: tuple[Any, ...]) -> tuple[Any, BaseException | None]:
    try:
        return op[0](*op[1:]), None
    except BaseException as exc:  # the flow decides: it may clean up, retry, or let it go
        return None, exc


def run(flow: Flow[T]) -> T:
    """Drive a flow with blocking calls: each operation is called, its result (or exception) sent back in."""
    op, result = _resume(flow, None, None)
    while op is not None:
        op, result = _resume(flow, *_outcome(op))
    return cast(T, result)  # the flow's return value, once it stopped


async def _aoutcome(op: tuple[Any, ...]) -> tuple[Any, BaseException | None]:
    try:
        return await op[0](*op[1:]), None
    except BaseException as exc:  # cancellation too: the flow must not reuse a connection it was cut off on
        return None, exc


async def arun(flow: Flow[T]) -> T:
    """Drive a flow on the running event loop: each operation is awaited, its result (or exception) sent in."""
    op, result = _resume(flow, None, None)
    while op is not None:
        op, result = _resume(flow, *(await _aoutcome(op)))
    return cast(T, result)


OPTIONS = ("prefix", "timeout", "max_connections", "pool_timeout")


def split_options(query: str, kind: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A store URL's query: our options (``prefix``, ``timeout``...), converted, and the rest, untouched."""
    ours: dict[str, Any] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            rest.append((name, value))
            continue
        try:
            ours[name] = value if name == "prefix" else int(value) if name == "max_connections" else float(value)
        except ValueError as exc:
            raise StoreConfigurationError(f"invalid {kind} store option {name}={value!r}") from exc
    return ours, rest


class ScriptStore(Store):
    """What :class:`~mcp_guard.RedisStore` and :class:`~mcp_guard.RedisClusterStore` share: the constructor and
    its options (see each store's docstring), key layout, tokens, the scripts' arguments and answers, and the
    decision flows. A subclass checks its URL (:meth:`_configure`), says how one script call travels
    (:meth:`_call`, a flow), where its clients are (:meth:`_lane`, :meth:`_alane`) and, for a cluster, which
    slot a key lives on (:meth:`_slot`, so a call is split into one script call per slot).
    """

    default_url: ClassVar[str]
    _feature: ClassVar[str]  # names the store in the missing-extra message
    _modules: ClassVar[tuple[str, ...]]  # the driver's submodules its clients are built from
    _kind: ClassVar[str] = "redis store"  # in error messages

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "mcpg",
        timeout: float = 0.25,
        max_connections: int = 64,
        pool_timeout: float = 1.0,
        clock: Clock = time.time,
        **options: Any,
    ) -> None:
        super().__init__(clock=clock)
        self._redis = require_extra("redis", "redis", self._feature)
        for module in self._modules:
            importlib.import_module(module)
        if timeout <= 0 or pool_timeout <= 0 or max_connections < 1:
            raise StoreConfigurationError("timeout and pool_timeout must be > 0 and max_connections >= 1")
        self.url = self.default_url if url is None else url
        self.prefix = prefix
        self.timeout = float(timeout)
        self.pool_timeout = float(pool_timeout)
        self.max_connections = int(max_connections)
        self._prefix = escape_key_part(prefix)
        self._seq = itertools.count(1)
        self._where = ""  # where, for messages (never the password): set by _configure
        self._lock = threading.Lock()  # guards the creation and the closing of the clients
        self._sync: Any = None  # the blocking lane, made by _lane() on first use
        self._async: Any = None  # the running loop's lane (see _alane)
        self._cached_key: bytes | None = None  # the session key, once read from the server
        self._configure(self.url, options)

    # -- what a subclass provides ---------------------------------------------------------------------

    @abstractmethod
    def _configure(self, url: str, options: dict[str, Any]) -> None:
        """Check ``url`` (a malformed one raises :class:`StoreConfigurationError` now, not on first use), keep
        what the clients will need, and set ``_where``. ``options`` are the driver's own keywords."""

    @abstractmethod
    def _lane(self) -> Any:
        """What :meth:`_call` needs to make a blocking call (a pool, a client), created on first use."""

    @abstractmethod
    def _new_alane(self, loop: asyncio.AbstractEventLoop) -> Any:
        """A lane for ``loop``: it has ``loop``, ``aclose()`` (a coroutine) and ``abandon()``."""

    def _alane(self) -> Any:
        """The running loop's lane. One loop at a time: a lane left by another loop (``asyncio.run`` twice, a
        notebook cell) is abandoned, its sockets closed without that loop."""
        loop = asyncio.get_running_loop()
        lane = self._async
        if lane is not None and lane.loop is loop:
            return lane
        if lane is not None:
            lane.abandon()
        lane = self._async = self._new_alane(loop)
        return lane

    @abstractmethod
    def _call(self, lane: Any, step: Step) -> Flow[Any]:
        """One script call on ``lane``: its reply, or :class:`StoreError` (the script loaded on ``NOSCRIPT``)."""

    def _slot(self, redis_key: str) -> int:
        """The slot ``redis_key`` lives on. One server: all in one, so every call is one script call."""
        return 0

    def _fail(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self._kind} {self._where} failed: {type(exc).__name__}: {exc}")

    def _budget_keys(self, key: str) -> tuple[str, str]:
        """The ZSET and the HASH of one budget key."""
        return f"{self._prefix}:log:{key}", f"{self._prefix}:meta:{key}"

    def _grant_key(self, owner: str, digest: str) -> str:
        """Where one approval grant lives (a cluster tags the owner, so one caller's grants share a slot)."""
        return f"{self._prefix}:grant:{owner}:{digest}"

    # -- the public methods: one flow each, driven blocking or on the loop ---------------------------

    supports_grants = True

    def find_grant(self, owner: str, digests: Sequence[str]) -> str | None:
        return run(self._find_grant(self._lane, owner, digests)) if digests else None

    def save_grant(self, owner: str, digest: str, grant_id: str, ttl_s: float) -> None:
        run(self._save_grant(self._lane, owner, digest, grant_id, ttl_s))

    async def afind_grant(self, owner: str, digests: Sequence[str]) -> str | None:
        return await arun(self._find_grant(self._alane, owner, digests)) if digests else None

    async def asave_grant(self, owner: str, digest: str, grant_id: str, ttl_s: float) -> None:
        await arun(self._save_grant(self._alane, owner, digest, grant_id, ttl_s))

    def _find_grant(self, lane: Callable[[], Any], owner: str, digests: Sequence[str]) -> Flow[str | None]:
        keys = [self._grant_key(owner, d) for d in digests]
        reply = yield from self._call(lane(), (_FIND_GRANT, _FIND_GRANT_SHA, keys, []))
        return reply.decode() if isinstance(reply, bytes) else (reply if isinstance(reply, str) else None)

    def _save_grant(self, lane: Callable[[], Any], owner: str, digest: str, grant_id: str, ttl_s: float) -> Flow[None]:
        millis = max(1, int(ttl_s * 1000))
        yield from self._call(
            lane(), (_SAVE_GRANT, _SAVE_GRANT_SHA, [self._grant_key(owner, digest)], [grant_id, millis])
        )

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        return ADMIT if not charges else run(self._decide(self._lane, charges, False))

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return ADMIT if not charges else run(self._decide(self._lane, charges, True))

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        run(self._release(self._lane, charges, token))

    def usage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        return run(self._usage(self._lane, charges)) if charges else []

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        return ADMIT if not charges else await arun(self._decide(self._alane, charges, False))

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return ADMIT if not charges else await arun(self._decide(self._alane, charges, True))

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        await arun(self._release(self._alane, charges, token))

    async def ausage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        return await arun(self._usage(self._alane, charges)) if charges else []

    def close(self) -> None:
        """Close both lanes' connections. Safe to call twice; prefer :meth:`aclose` inside a running loop."""
        with self._lock:
            sync, self._sync = self._sync, None
            lane, self._async = self._async, None
        if sync is not None:
            sync.close()
        if lane is not None:
            if not lane.loop.is_closed() and not lane.loop.is_running():
                lane.loop.run_until_complete(lane.aclose())
            else:
                lane.abandon()

    async def aclose(self) -> None:
        """Close both lanes. Call it from the event loop the async methods ran in."""
        lane = self._async
        if lane is not None and lane.loop is asyncio.get_running_loop():
            self._async = None
            await lane.aclose()
        self.close()

    # -- session memory: one script call each, on the session's slot -------------------------------------

    def _session_keys(self, session: str, parts: list[str]) -> list[str]:
        # Hash-tagged by session: every part of one session lives on one Redis Cluster slot.
        tag = escape_key_part(session).replace("{", "%7B").replace("}", "%7D")
        base = f"{self._prefix}:sess:{{{tag}}}"
        return [f"{base}:meta", *(f"{base}:p:{part}" for part in parts)]

    def _session_append(
        self, lane: Callable[[], Any], session: str, records: dict[str, list[str]], caps: dict[str, int], ttl_s: float
    ) -> Flow[dict[str, Trimmed]]:
        parts = list(records)
        argv: list[Any] = [int(ttl_s * 1000)]
        for part in parts:
            argv += [part, caps.get(part, 0), len(records[part]), *records[part]]
        reply = yield from self._call(
            lane(), (_SESSION_APPEND, _SESSION_APPEND_SHA, self._session_keys(session, parts), argv)
        )
        out: dict[str, Trimmed] = {}
        for name, dropped, dropped_bytes in reply:
            if int(dropped):
                out[name.decode() if isinstance(name, bytes) else str(name)] = (int(dropped), int(dropped_bytes))
        return out

    def _session_read(self, lane: Callable[[], Any], session: str, parts: list[str]) -> Flow[dict[str, Part]]:
        reply = yield from self._call(
            lane(), (_SESSION_READ, _SESSION_READ_SHA, self._session_keys(session, parts), list(parts))
        )
        return {
            part: ([r.decode("utf-8", "surrogatepass") if isinstance(r, bytes) else str(r) for r in records], int(n))
            for part, (records, n) in zip(parts, reply, strict=True)
        }

    def _session_key_flow(self, lane: Callable[[], Any]) -> Flow[bytes]:
        if self._cached_key is None:
            reply = yield from self._call(
                lane(), (_SESSION_KEY, _SESSION_KEY_SHA, [f"{self._prefix}:sesskey"], [secrets.token_hex(32)])
            )
            self._cached_key = reply if isinstance(reply, bytes) else str(reply).encode()
        return self._cached_key

    def session_append(
        self, session: str, records: dict[str, list[str]], max_bytes: dict[str, int], ttl_s: float
    ) -> dict[str, Trimmed]:
        return run(self._session_append(self._lane, session, records, max_bytes, ttl_s))

    def session_read(self, session: str, parts: list[str]) -> dict[str, Part]:
        return run(self._session_read(self._lane, session, parts))

    def session_key(self) -> bytes:
        return run(self._session_key_flow(self._lane))

    async def asession_append(
        self, session: str, records: dict[str, list[str]], max_bytes: dict[str, int], ttl_s: float
    ) -> dict[str, Trimmed]:
        return await arun(self._session_append(self._alane, session, records, max_bytes, ttl_s))

    async def asession_read(self, session: str, parts: list[str]) -> dict[str, Part]:
        return await arun(self._session_read(self._alane, session, parts))

    async def asession_key(self) -> bytes:
        return await arun(self._session_key_flow(self._alane))

    # -- the flows ----------------------------------------------------------------------------------------

    def _by_slot(self, groups: list[Group]) -> list[list[Group]]:
        """The call's budgets, one list per slot, in ascending slot order (the fixed reservation order)."""
        parts: dict[int, list[Group]] = {}
        for group in groups:
            parts.setdefault(self._slot(self._budget_keys(group[0])[0]), []).append(group)
        return [parts[slot] for slot in sorted(parts)]

    def _decide(self, lane: Callable[[], Any], charges: Sequence[LimitCharge], reserve: bool) -> Flow[Verdict]:
        """Check (and, to reserve, record) every limit, slot by slot; one script call on one server.

        ``lane`` gives the lane when a call is made: a call the plan refuses (or a release with nothing to give
        back) never creates a client, so it needs no server.

        Across slots: when a slot refuses, the slots already reserved are given back and the later ones are
        only checked, so the refusal carries the longest wait. See :mod:`mcp_guard._stores.redis_cluster`.
        """
        groups, refused = plan(charges)
        if refused is not None:
            return refused
        token, now = self._stamp(reserve)
        mode = "r" if reserve else "c"
        held: list[list[Group]] = []  # slots this call has reserved: given back if a later slot refuses
        refusal: Verdict | None = None
        admitted = ADMIT
        for part in [groups] if len(groups) == 1 else self._by_slot(groups):
            if refusal is None:
                try:
                    reply = yield from self._call(lane(), self._decide_step(part, mode, token, now))
                except StoreError:
                    yield from self._give_back(lane, held, token)
                    raise
                verdict = self._verdict(reply, part, token or None)
                if verdict.ok:
                    admitted = verdict  # every slot's answer carries the one token of the call
                    if reserve:
                        held.append(part)
                    continue
                refusal = verdict
                yield from self._give_back(lane, held, token)
                held = []
            else:
                # Refused already: the later slots are only checked, so the refusal carries the longest wait.
                try:
                    reply = yield from self._call(lane(), self._decide_step(part, "c", "", now))
                except StoreError:
                    break  # the refusal stands, with the longest wait known so far
                verdict = self._verdict(reply, part, None)
                if not verdict.ok and (verdict.retry_after_s or 0.0) > (refusal.retry_after_s or 0.0):
                    refusal = verdict
        return refusal if refusal is not None else admitted

    def _give_back(self, lane: Callable[[], Any], parts: list[list[Group]], token: str) -> Flow[None]:
        """Release this call's entries on the slots it reserved. Best effort: an entry left behind (its node
        is unreachable) only under-admits, until its window ends."""
        argv: list[Any] = [token, token.rsplit("@", 1)[-1]]
        for part in parts:
            keys = [name for key, _, _ in part for name in self._budget_keys(key)]
            with contextlib.suppress(StoreError):
                yield from self._call(lane(), (_RELEASE, _RELEASE_SHA, keys, argv))

    def _release(self, lane: Callable[[], Any], charges: Sequence[LimitCharge], token: str) -> Flow[None]:
        if not charges or "@" not in token:
            return  # nothing to give back, or not a token of ours: nothing of it is stored
        argv: list[Any] = [token, token.rsplit("@", 1)[1]]
        parts: dict[int, list[str]] = {}
        for key in dict.fromkeys(c.key for c in charges):
            z, h = self._budget_keys(key)  # a budget's ZSET and HASH share their tag, so their slot
            parts.setdefault(self._slot(z), []).extend((z, h))
        failed: StoreError | None = None
        for slot in sorted(parts):  # every slot is tried, even after one failed
            try:
                yield from self._call(lane(), (_RELEASE, _RELEASE_SHA, parts[slot], argv))
            except StoreError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def _usage(self, lane: Callable[[], Any], charges: Sequence[LimitCharge]) -> Flow[list[Usage]]:
        """Exact and read-only: one script call per slot, reading each charge's window."""
        now = float(self.clock())
        parts: dict[int, list[int]] = {}
        keys = [self._budget_keys(c.key)[0] for c in charges]
        for i, key in enumerate(keys):
            parts.setdefault(self._slot(key), []).append(i)
        out: list[Usage] = [Usage(0.0, None)] * len(charges)
        for slot in sorted(parts):
            index = parts[slot]
            argv = [repr(now), *(repr(float(charges[i].window_s)) for i in index)]
            reply = yield from self._call(lane(), (_USAGE, _USAGE_SHA, [keys[i] for i in index], argv))
            for i, (used, oldest) in zip(index, reply, strict=True):
                text = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
                wait = max(float(text) + charges[i].window_s - now, 0.0) if text else None
                out[i] = Usage(float(used), wait)
        return out

    # -- the scripts' arguments and answers ----------------------------------------------------------

    def _stamp(self, reserve: bool) -> tuple[str, str]:
        """The call's token (empty for a check) and its admission time, as the scripts take them."""
        now = repr(float(self.clock()))
        return (f"{_node}.{next(self._seq)}@{now}" if reserve else ""), now

    def _decide_step(self, groups: list[Group], mode: str, token: str, now: str) -> Step:
        keys: list[str] = []
        argv: list[Any] = [now, mode, token]
        for key, cost, limits in groups:
            keys.extend(self._budget_keys(key))
            argv.append(repr(cost))
            argv.append(len(limits))
            for c in limits:
                argv.append(repr(float(c.window_s)))
                argv.append(c.max)
        return _DECIDE, _DECIDE_SHA, keys, argv

    @staticmethod
    def _verdict(reply: Any, groups: list[Group], token: str | None) -> Verdict:
        if int(reply[0]) == 1:
            return Verdict(ok=True, token=token)
        flat = [c for _, _, limits in groups for c in limits]
        return Verdict(ok=False, charge=flat[int(reply[1]) - 1], retry_after_s=float(reply[2]))


def abandon_connections(loop: asyncio.AbstractEventLoop, connections: Iterable[Any]) -> None:
    """Close redis-py async connections whose event loop is no longer ours, without that loop."""
    for conn in connections:
        writer = getattr(conn, "_writer", None)
        if writer is None:
            continue
        transport = writer.transport
        try:
            if loop.is_closed():
                # The loop cannot run the transport's close callbacks any more: close the socket directly
                # (asyncio keeps it in ``_sock``) so nothing leaks and nothing warns at garbage collection.
                sock = getattr(transport, "_sock", None)
                if sock is not None:
                    sock.close()
                    transport._sock = None
                transport._closing = True  # what the stream's __del__ asks before warning
            else:
                loop.call_soon_threadsafe(transport.close)
        except Exception:  # best effort: a half-closed transport must not break the caller's new loop
            pass
        conn._writer = conn._reader = None


__all__ = ["FORKS", "OPTIONS", "Flow", "ScriptStore", "Step", "abandon_connections", "arun", "run", "split_options"]
