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
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

from mcp_guard._errors import StoreConfigurationError
from mcp_guard._stores._script import FORKS, Flow, ScriptStore, Step, abandon_connections, split_options


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


def _exchange(conn: Any, command: list[bytes]) -> Any:
    """One command and its reply on a sync connection (no health check: a dead socket fails on use)."""
    conn.send_packed_command(command, False)
    return conn.read_response()


async def _aexchange(conn: Any, command: list[bytes]) -> Any:
    await conn.send_packed_command(command, False)
    return await conn.read_response()


class _Lane:
    """One redis-py connection pool (sync, or async for one event loop) and the connections kept beside it.

    Connections are kept on a small LIFO list of our own between calls rather than returned to the pool each
    time: checking one out of redis-py's pool costs more than a whole round trip's client time (a queue, a
    liveness poll, metrics). The pool still creates and bounds them. ``waiting`` counts callers blocked in the
    pool for a connection: a connection put back while someone waits goes to the pool, never idles here.
    """

    __slots__ = ("exchange", "generation", "idle", "lock", "loop", "pool", "waiting")

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.pool, self.loop = pool, loop
        self.exchange = _exchange if loop is None else _aexchange
        self.idle: list[Any] = []
        self.generation = FORKS.generation
        self.waiting = 0
        self.lock = threading.Lock()

    def pop(self) -> Any:
        """A kept connection, or None."""
        if self.generation != FORKS.generation:
            self.idle, self.generation = [], FORKS.generation  # forked: the parent's sockets are not ours
        try:
            return self.idle.pop()
        except IndexError:
            return None

    def wait(self, delta: int) -> None:
        with self.lock:
            self.waiting += delta

    def checkin(self, conn: Any) -> Any:
        """Keep ``conn``; or, when a caller waits in the pool, the connection to hand to the pool (else None)."""
        self.idle.append(conn)
        if self.waiting:
            try:
                return self.idle.pop()
            except IndexError:  # the waiter took it from the list itself
                return None
        return None

    def close(self) -> None:
        self.idle = []  # still counted by the pool, which disconnects them all
        self.pool.disconnect()

    async def aclose(self) -> None:
        self.idle = []
        await self.pool.disconnect()

    def abandon(self) -> None:
        """Close the sockets of an async pool whose event loop is no longer ours, without that loop."""
        pool = self.pool
        connections = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
        if self.loop is not None:
            abandon_connections(self.loop, connections)


class RedisStore(ScriptStore):
    """Exact sliding-window rate limits shared by every process that points at one Redis server (``redis://``).

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
    connection, without the ``redis.Redis`` client's per-command wrappers (``benchmarks/runtime.py`` measures
    what that saves). The async pool belongs to the event loop it was first used in (a new loop gets a new
    pool), so call :meth:`aclose` from that loop when done. After a server restart, calls work again: a dead
    kept connection is dropped and the call made once more on a fresh one, and the scripts are loaded again
    on ``NOSCRIPT``.

    In asyncio, ``timeout`` also counts the time the event loop spends elsewhere: with thousands of
    concurrent calls on a loaded machine, raise it, or calls fail (closed) although the server is fine.

    Not for Redis Cluster (one call's keys may live in several slots): use ``redis+cluster://``
    (:class:`~mcp_guard.RedisClusterStore`). Time comes from the client's ``clock``; see the module docstring.
    """

    schemes = ("redis", "rediss", "unix")

    default_url = "redis://localhost:6379/0"
    _feature = "RedisStore"
    _modules = ("redis.asyncio", "redis.asyncio.retry", "redis.backoff", "redis.connection", "redis.retry")

    def _configure(self, url: str, options: dict[str, Any]) -> None:
        try:
            self._redis.connection.parse_url(url)  # a malformed URL is a configuration error, found now
        except ValueError as exc:
            raise StoreConfigurationError(f"invalid Redis store URL: {exc}") from exc
        self._pool_options: dict[str, Any] = {
            "max_connections": self.max_connections,
            "timeout": self.pool_timeout,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "driver_info": None,  # no CLIENT SETINFO: one fewer round trip per new connection
            **options,
        }
        r = self._redis
        try:
            # A connection object is built without connecting: an option redis-py does not know (a typo in the
            # URL's query) is found now, as a configuration error, rather than as a TypeError on the first call.
            r.BlockingConnectionPool.from_url(url, **self._pool_options).make_connection()
        except (TypeError, ValueError, r.exceptions.RedisError) as exc:
            raise StoreConfigurationError(f"invalid Redis store option: {exc}") from exc
        split = urlsplit(url)
        self._where = (
            f"{split.scheme}://{split.hostname or ''}{':' + str(split.port) if split.port else ''}{split.path}"
        )

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> RedisStore:
        """Options in the query (``?prefix=app&timeout=0.5``) are ours; keywords override them; the rest of
        the query goes to redis-py."""
        ours, rest = split_options(urlsplit(uri).query, "Redis")
        # Rebuilt by hand: urlunsplit would turn "unix:///path" into "unix:/path", which redis-py refuses.
        url = uri.split("?", 1)[0] + (f"?{urlencode(rest)}" if rest else "")
        return cls(url, **{**ours, **options})

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self.prefix!r})"

    # -- the pools ------------------------------------------------------------------------------------

    def _lane(self) -> _Lane:
        lane: _Lane | None = self._sync
        if lane is None:
            with self._lock:
                lane = self._sync
                if lane is None:
                    r = self._redis
                    retry = r.retry.Retry(r.backoff.NoBackoff(), 0)  # bounded: one attempt per call
                    pool = r.BlockingConnectionPool.from_url(self.url, retry=retry, **self._pool_options)
                    lane = self._sync = _Lane(pool)
        return lane

    def _new_alane(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        r = self._redis
        retry = r.asyncio.retry.Retry(r.backoff.NoBackoff(), 0)
        return _Lane(r.asyncio.BlockingConnectionPool.from_url(self.url, retry=retry, **self._pool_options), loop)

    # -- one script call, for both pools ----------------------------------------------------------------

    def _call(self, lane: _Lane, step: Step) -> Flow[Any]:
        script, sha, keys, argv = step
        errors = self._redis.exceptions
        pool = lane.pool
        command = _pack("EVALSHA", sha, len(keys), *keys, *argv)
        while True:
            conn = lane.pop()
            kept = conn is not None
            if conn is None:
                # Announce the wait before looking once more, and the check-in below looks for waiters after
                # putting a connection back: so a connection is never left idle while a caller blocks in the pool.
                lane.wait(1)
                try:
                    conn = lane.pop()
                    kept = conn is not None
                    if conn is None:
                        conn = yield (pool.get_connection,)
                except (errors.RedisError, OSError) as exc:
                    raise self._fail(exc) from exc
                finally:
                    lane.wait(-1)
            try:
                try:
                    reply = yield lane.exchange, conn, command
                except errors.NoScriptError:  # first use on this server, or it restarted: EVAL caches it again
                    reply = yield lane.exchange, conn, _pack("EVAL", script, len(keys), *keys, *argv)
            except errors.ResponseError as exc:  # the server answered (an error): the connection is fine
                spare = lane.checkin(conn)
                if spare is not None:
                    yield pool.release, spare
                raise self._fail(exc) from exc
            except BaseException as exc:
                # Failed or cancelled mid-call: a reply may still be on its way, so no other call may use this
                # connection. A kept one that died while idle (the server restarted) fails at once on use: then
                # every kept one is dropped and the call is made once more on a fresh connection from the pool.
                yield (conn.disconnect,)
                yield pool.release, conn
                if kept and isinstance(exc, errors.ConnectionError):
                    idle, lane.idle = lane.idle, []
                    for old in idle:
                        yield (old.disconnect,)
                        yield pool.release, old
                    continue
                if isinstance(exc, (errors.RedisError, OSError)):
                    raise self._fail(exc) from exc
                raise
            spare = lane.checkin(conn)
            if spare is not None:  # someone waits in the pool: hand it a connection there
                yield pool.release, spare
            return reply


__all__ = ["RedisStore"]
