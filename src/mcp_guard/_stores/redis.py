"""The Redis store (``redis://host:port/db``, ``rediss://``, ``unix://``): exact sliding windows shared by every worker.

One round trip per decision: a Lua script checks (and, to reserve, records) every limit of the call
atomically on the server, so concurrent callers in any number of processes can never together exceed a
limit, and a call under several limits is recorded by all of them or by none.

Layout, per budget key (``LimitCharge.key``, already escaped so that ids cannot collide):

- ``<prefix>:log:<key>``: a ZSET, one member per admitted call, score = admission time,
  member = ``<token>:<cost>`` (the token is unique per call: a per-process id and a sequence number);
- ``<prefix>:meta:<key>``: a HASH, ``w`` = the longest window seen for the key (entries older than it are
  pruned), ``s`` = the sum of the costs in the ZSET (so a call that fits is decided in O(1)) and ``r`` =
  when the TTLs were last renewed.

Both keys get a TTL of twice the key's longest window plus one second, renewed once per window, so idle
keys expire on their own. The
prefix is percent-escaped like the key's parts, so it holds no ``:`` and the layout parses one way only.

Time: the admission times are read from the **client's** clock (``clock=``, default :func:`time.time`) and
sent to the script as an argument, not from the server's ``TIME``. Tests can therefore move time, and
processes on one machine share ``time.time``. Processes on several machines must keep their clocks in
sync (NTP): a client whose clock runs ahead sees less of the budget as used, one that runs behind sees
more. The TTLs are kept by the server's clock, with a window and a second of slack.
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
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from mcp_guard._decision import LimitCharge, escape_key_part
from mcp_guard._errors import PolicyError, StoreError, require_extra
from mcp_guard._stores._base import ADMIT, Clock, Store, Usage, Verdict
from mcp_guard._stores.memory import Group, plan

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
_USAGE_SHA = hashlib.sha1(_USAGE.encode()).hexdigest()
_DECIDE_SHA = hashlib.sha1(_DECIDE.encode()).hexdigest()
_RELEASE_SHA = hashlib.sha1(_RELEASE.encode()).hexdigest()

# Tokens must be unique across every process sharing the server: a random per-process id (renewed in a
# forked child, which would otherwise repeat its parent's id and sequence) and a sequence number.
_node = secrets.token_hex(6)
# Bumped in a forked child: connections kept idle by a store in the parent must never be used by the child.
_generation = 0


def _after_fork_in_child() -> None:
    global _node, _generation
    _node = secrets.token_hex(6)
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_OPTIONS = ("prefix", "timeout", "max_connections", "pool_timeout")


def _pack(*args: str | int) -> list[bytes]:
    """One command in RESP, ready for ``send_packed_command``.

    redis-py's general packer costs about 2 µs per argument (a decision sends a dozen); this one does the
    same for strings and ints only, in a fraction of that.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return [b"".join(parts)]


class ScriptStore(Store):
    """What :class:`RedisStore` and the Redis Cluster store share: the key layout, the scripts' arguments, tokens
    and the reading of the scripts' answers. Subclasses only move the commands (``_budget_keys`` may rename keys).
    """

    def __init__(self, *, prefix: str, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.prefix = prefix
        self._prefix = escape_key_part(prefix)
        self._seq = itertools.count(1)

    def _budget_keys(self, key: str) -> tuple[str, str]:
        """The ZSET and the HASH of one budget key."""
        return f"{self._prefix}:log:{key}", f"{self._prefix}:meta:{key}"

    # -- the decisions, once: build the script's arguments, read its answer ---------------------------

    def _decide_args(self, groups: list[Group], mode: str, token: str, now: str) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        argv: list[Any] = [now, mode, token]
        for key, cost, limits in groups:
            keys.extend(self._budget_keys(key))
            argv.append(repr(cost))
            argv.append(len(limits))
            for c in limits:
                argv.append(repr(float(c.window_s)))
                argv.append(c.max)
        return keys, argv

    @staticmethod
    def _verdict(reply: Any, groups: list[Group], token: str | None) -> Verdict:
        if int(reply[0]) == 1:
            return Verdict(ok=True, token=token)
        flat = [c for _, _, limits in groups for c in limits]
        return Verdict(ok=False, charge=flat[int(reply[1]) - 1], retry_after_s=float(reply[2]))

    def _release_args(self, charges: Sequence[LimitCharge], token: str) -> tuple[list[str], list[Any]] | None:
        if not charges or "@" not in token:
            return None  # nothing to give back, or not a token of ours: nothing of it is stored
        keys: list[str] = []
        for key in dict.fromkeys(c.key for c in charges):
            keys.extend(self._budget_keys(key))
        return keys, [token, token.rsplit("@", 1)[1]]

    def _stamp(self, reserve: bool) -> tuple[str, str]:
        """The call's token (empty for a check) and its admission time, as the scripts take them."""
        now = repr(float(self.clock()))
        return (f"{_node}.{next(self._seq)}@{now}" if reserve else ""), now

    def _prepare(self, charges: Sequence[LimitCharge], reserve: bool) -> tuple[list[Group], Verdict | None, Any]:
        groups, refused = plan(charges)
        if refused is not None:
            return groups, refused, None
        token, now = self._stamp(reserve)
        return groups, None, (token, *self._decide_args(groups, "r" if reserve else "c", token, now))


class RedisStore(ScriptStore):
    """Exact sliding-window rate limits shared by every process that points at one Redis server.

    ``RedisStore("redis://localhost:6379/0", prefix="mcpg", timeout=0.25)``, or through
    ``store_from_uri("redis://localhost:6379/0?prefix=app&timeout=0.5")``. Options (keyword or URI query):

    - ``prefix``: namespace of every key (default ``mcpg``);
    - ``timeout``: socket connect and read timeout in seconds (default 0.25). Any Redis failure (refused,
      timed out, server gone) raises :class:`~mcp_guard.StoreError` with the cause chained, within about
      this bound: the client does not retry, so a down server costs one timeout, never a hang;
    - ``max_connections``: connections per pool (default 64); ``pool_timeout``: how long a call waits
      for a free connection when all are busy (default 1 s) before it fails with ``StoreError``.

    Other keywords go to redis-py's connection pool (``password``, ``ssl_ca_certs``...). Two redis-py
    blocking connection pools, created on first use: a sync one (``redis.BlockingConnectionPool``) and an
    async one (``redis.asyncio.BlockingConnectionPool``); each decision is one command on one pooled
    connection, without the ``redis.Redis`` client's per-command wrappers. The async pool belongs to the event
    loop it was first used in (a new loop gets a new pool), so call :meth:`aclose` from that loop when done.
    After a server restart, calls work again: a dead pooled connection is replaced on checkout and the
    scripts are loaded again on ``NOSCRIPT``.

    In asyncio, ``timeout`` also counts the time the event loop spends elsewhere: with thousands of
    concurrent calls on a loaded machine, raise it, or calls fail (closed) although the server is fine.

    Not for Redis Cluster (one call's keys may live in several slots): use ``redis+cluster://``
    (:mod:`~mcp_guard._stores.redis_cluster`). Time comes from the client's
    ``clock``; see the module docstring.
    """

    schemes = ("redis", "rediss", "unix")

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "mcpg",
        timeout: float = 0.25,
        max_connections: int = 64,
        pool_timeout: float = 1.0,
        clock: Clock = time.time,
        **pool_options: Any,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        self._redis = require_extra("redis", "redis", "RedisStore")
        for module in ("redis.asyncio", "redis.asyncio.retry", "redis.backoff", "redis.connection", "redis.retry"):
            importlib.import_module(module)  # submodules the pools below are built from
        if timeout <= 0 or pool_timeout <= 0 or max_connections < 1:
            raise ValueError("timeout and pool_timeout must be > 0 and max_connections >= 1")
        try:
            self._redis.connection.parse_url(url)  # a malformed URL is a configuration error, found now
        except ValueError as exc:
            raise PolicyError(f"invalid Redis store URL: {exc}") from exc
        self.url = url
        self.timeout = float(timeout)
        self._pool_options: dict[str, Any] = {
            "max_connections": int(max_connections),
            "timeout": float(pool_timeout),
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "driver_info": None,  # no CLIENT SETINFO: one fewer round trip per new connection
            **pool_options,
        }
        self._lock = threading.Lock()
        self._sync_pool: Any = None
        self._async: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self._idle: list[Any] = []  # connections kept between sync calls (see _checkout)
        self._aidle: list[Any] = []
        self._idle_generation = self._aidle_generation = _generation
        self._waiting = self._awaiting = 0  # callers blocked in a pool for a connection
        split = urlsplit(url)
        # Where, for error messages: never the password.
        self._where = (
            f"{split.scheme}://{split.hostname or ''}{':' + str(split.port) if split.port else ''}{split.path}"
        )

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> RedisStore:
        """Options in the query (``?prefix=app&timeout=0.5``) are ours; keywords override them."""
        split = urlsplit(uri)
        ours: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(split.query, keep_blank_values=True):
            if name in _OPTIONS:
                ours[name] = value if name == "prefix" else float(value)
            else:
                rest.append((name, value))
        if "max_connections" in ours:
            ours["max_connections"] = int(ours["max_connections"])
        # Rebuilt by hand: urlunsplit would turn "unix:///path" into "unix:/path", which redis-py refuses.
        url = uri.split("?", 1)[0] + (f"?{urlencode(rest)}" if rest else "")
        return cls(url, **{**ours, **options})

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    def _fail(self, exc: BaseException) -> StoreError:
        return StoreError(f"redis store {self._where} failed: {type(exc).__name__}: {exc}")

    # -- sync -----------------------------------------------------------------------------------------

    def _pool(self) -> Any:
        pool = self._sync_pool
        if pool is None:
            with self._lock:
                if self._sync_pool is None:
                    r = self._redis
                    retry = r.retry.Retry(r.backoff.NoBackoff(), 0)  # bounded: one attempt per call
                    self._sync_pool = r.BlockingConnectionPool.from_url(self.url, retry=retry, **self._pool_options)
                pool = self._sync_pool
        return pool

    # Connections are kept on a small LIFO list of our own between calls rather than returned to redis-py's
    # pool each time: checking one out of the pool costs more than a whole round trip's client time (a queue,
    # a liveness poll, metrics). The pool still creates and bounds them. A kept connection that died while
    # idle (the server restarted) fails at once on use; then every kept one is dropped and the call is made
    # once more on a fresh connection from the pool, so the first call after a restart is admitted too.

    def _checkout(self) -> tuple[Any, Any, bool]:
        if self._idle_generation != _generation:
            self._idle, self._idle_generation = [], _generation  # forked: the parent's sockets are not ours
        pool = self._pool()
        idle = self._idle
        try:
            return pool, idle.pop(), True
        except IndexError:
            pass
        # Announce the wait before looking once more, and _checkin() looks for waiters after putting a
        # connection back: so a connection is never left idle while a caller blocks in the pool.
        with self._lock:
            self._waiting += 1
        try:
            try:
                return pool, idle.pop(), True
            except IndexError:
                return pool, pool.get_connection(), False
        finally:
            with self._lock:
                self._waiting -= 1

    def _checkin(self, pool: Any, conn: Any) -> None:
        self._idle.append(conn)
        if self._waiting:  # someone waits in the pool: hand it a connection there
            with contextlib.suppress(IndexError):  # the waiter took it from the list itself
                pool.release(self._idle.pop())

    def _drop_idle(self, pool: Any) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()
            pool.release(conn)

    def _eval(self, script: str, sha: str, keys: list[str], argv: list[Any]) -> Any:
        errors = self._redis.exceptions
        command = _pack("EVALSHA", sha, len(keys), *keys, *argv)
        while True:
            try:
                pool, conn, kept = self._checkout()
            except (errors.RedisError, OSError) as exc:
                raise self._fail(exc) from exc
            try:
                try:
                    conn.send_packed_command(command, check_health=False)
                    reply = conn.read_response()
                except errors.NoScriptError:  # first use on this server, or it restarted: EVAL caches it again
                    conn.send_packed_command(_pack("EVAL", script, len(keys), *keys, *argv), check_health=False)
                    reply = conn.read_response()
            except errors.ResponseError as exc:  # the server answered (an error): the connection is fine
                self._checkin(pool, conn)
                raise self._fail(exc) from exc
            except BaseException as exc:
                conn.disconnect()  # a reply may still be on its way: never hand this connection to another call
                pool.release(conn)
                if kept and isinstance(exc, errors.ConnectionError):
                    self._drop_idle(pool)
                    continue
                if isinstance(exc, (errors.RedisError, OSError)):
                    raise self._fail(exc) from exc
                raise
            self._checkin(pool, conn)
            return reply

    def check(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._decide(charges, reserve=False)

    def reserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return self._decide(charges, reserve=True)

    def _decide(self, charges: Sequence[LimitCharge], *, reserve: bool) -> Verdict:
        if not charges:
            return ADMIT
        groups, refused, call = self._prepare(charges, reserve)
        if refused is not None:
            return refused
        token, keys, argv = call
        reply = self._eval(_DECIDE, _DECIDE_SHA, keys, argv)
        return self._verdict(reply, groups, token or None)

    def release(self, charges: Sequence[LimitCharge], token: str) -> None:
        args = self._release_args(charges, token)
        if args is not None:
            self._eval(_RELEASE, _RELEASE_SHA, *args)

    # -- async ----------------------------------------------------------------------------------------

    def _apool(self) -> Any:
        loop = asyncio.get_running_loop()
        current = self._async
        if current is not None and current[0] is loop:
            return current[1]
        if current is not None:
            _abandon(current[0], current[1])
        r = self._redis
        retry = r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0)
        pool = r.asyncio.BlockingConnectionPool.from_url(self.url, retry=retry, **self._pool_options)
        self._async = (loop, pool)
        self._aidle = []  # connections of the previous loop's pool went with it
        return pool

    async def _acheckout(self) -> tuple[Any, Any, bool]:
        pool = self._apool()
        if self._aidle_generation != _generation:
            self._aidle, self._aidle_generation = [], _generation
        try:
            return pool, self._aidle.pop(), True
        except IndexError:
            pass
        self._awaiting += 1  # one event loop: no await between looking and announcing, so no race
        try:
            return pool, await pool.get_connection(), False
        finally:
            self._awaiting -= 1

    async def _acheckin(self, pool: Any, conn: Any) -> None:
        if self._awaiting:
            await pool.release(conn)
        else:
            self._aidle.append(conn)

    async def _adrop_idle(self, pool: Any) -> None:
        idle, self._aidle = self._aidle, []
        for conn in idle:
            await conn.disconnect()
            await pool.release(conn)

    async def _aeval(self, script: str, sha: str, keys: list[str], argv: list[Any]) -> Any:
        errors = self._redis.exceptions
        command = _pack("EVALSHA", sha, len(keys), *keys, *argv)
        while True:
            try:
                pool, conn, kept = await self._acheckout()
            except (errors.RedisError, OSError) as exc:
                raise self._fail(exc) from exc
            try:
                try:
                    await conn.send_packed_command(command, check_health=False)
                    reply = await conn.read_response()
                except errors.NoScriptError:
                    await conn.send_packed_command(_pack("EVAL", script, len(keys), *keys, *argv), check_health=False)
                    reply = await conn.read_response()
            except errors.ResponseError as exc:
                await self._acheckin(pool, conn)
                raise self._fail(exc) from exc
            except BaseException as exc:
                # Cancelled or failed mid-call: a reply may still come, so this connection is not reused.
                await conn.disconnect()
                await pool.release(conn)
                if kept and isinstance(exc, errors.ConnectionError):
                    await self._adrop_idle(pool)
                    continue
                if isinstance(exc, (errors.RedisError, OSError)):
                    raise self._fail(exc) from exc
                raise
            await self._acheckin(pool, conn)
            return reply

    async def acheck(self, charges: Sequence[LimitCharge]) -> Verdict:
        return await self._adecide(charges, reserve=False)

    async def areserve(self, charges: Sequence[LimitCharge]) -> Verdict:
        return await self._adecide(charges, reserve=True)

    async def _adecide(self, charges: Sequence[LimitCharge], *, reserve: bool) -> Verdict:
        if not charges:
            return ADMIT
        groups, refused, call = self._prepare(charges, reserve)
        if refused is not None:
            return refused
        token, keys, argv = call
        reply = await self._aeval(_DECIDE, _DECIDE_SHA, keys, argv)
        return self._verdict(reply, groups, token or None)

    async def arelease(self, charges: Sequence[LimitCharge], token: str) -> None:
        args = self._release_args(charges, token)
        if args is not None:
            await self._aeval(_RELEASE, _RELEASE_SHA, *args)

    # -- closing --------------------------------------------------------------------------------------

    # -- usage: one read-only script, one round trip ---------------------------------------------------

    def _usage_args(self, charges: Sequence[LimitCharge]) -> tuple[float, list[str], list[Any]]:
        now = float(self.clock())
        keys = [f"{self._prefix}:log:{c.key}" for c in charges]
        return now, keys, [repr(now), *(repr(float(c.window_s)) for c in charges)]

    @staticmethod
    def _usage_reply(reply: Any, charges: Sequence[LimitCharge], now: float) -> list[Usage]:
        out: list[Usage] = []
        for (used, oldest), c in zip(reply, charges, strict=True):
            text = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
            wait = max(float(text) + c.window_s - now, 0.0) if text else None
            out.append(Usage(float(used), wait))
        return out

    def usage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        if not charges:
            return []
        now, keys, argv = self._usage_args(charges)
        return self._usage_reply(self._eval(_USAGE, _USAGE_SHA, keys, argv), charges, now)

    async def ausage(self, charges: Sequence[LimitCharge]) -> list[Usage]:
        if not charges:
            return []
        now, keys, argv = self._usage_args(charges)
        return self._usage_reply(await self._aeval(_USAGE, _USAGE_SHA, keys, argv), charges, now)

    def close(self) -> None:
        """Close both pools' connections. Safe to call twice; prefer :meth:`aclose` inside a running loop."""
        with self._lock:
            pool, self._sync_pool = self._sync_pool, None
            current, self._async = self._async, None
            self._idle, self._aidle = [], []  # still counted by their pools, which disconnect them all
        if pool is not None:
            pool.disconnect()
        if current is not None:
            loop, apool = current
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(apool.disconnect())
            else:
                _abandon(loop, apool)

    async def aclose(self) -> None:
        """Close both pools. Call it from the event loop the async methods ran in."""
        current = self._async
        if current is not None and current[0] is asyncio.get_running_loop():
            self._async, self._aidle = None, []
            await current[1].disconnect()
        self.close()


def _abandon(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """Drop an async pool whose event loop is no longer ours, closing its sockets without that loop."""
    connections = list(getattr(pool, "_available_connections", ())) + list(getattr(pool, "_in_use_connections", ()))
    abandon_connections(loop, connections)


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


__all__ = ["RedisStore"]
