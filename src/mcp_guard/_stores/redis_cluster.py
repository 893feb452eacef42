"""The Redis Cluster store (``redis+cluster://host:port[,host:port...]``): exact sliding windows on many shards.

It runs the same scripts and decision flows as ``redis://`` (:mod:`~mcp_guard._stores._script`: same layout
per budget, same exactness, same TTLs, same client clock) on redis-py's cluster client; only the key names and
the slot of each key differ, so a call's budgets are split into one script call per slot.

Keys are hash-tagged by the scope's owner: ``<prefix>:log:<counter>:{identity:alice}``, ``{session:s1}``,
``{tool:git_log}``; every global limit shares ``{global:}``. So the budgets of one caller live together on
one slot, and many callers spread over the shards.

One decision, by the slots its budgets live on (fixed order: ascending slot number):

- one slot (a call under per-identity limits only, or only global ones): one script call, exactly as on a
  single Redis: atomic, all-or-nothing;
- several slots (per-identity and global, say): the script reserves slot by slot; when a slot refuses, the
  slots already reserved are given back (released by the call's token) and the refusal is returned. No slot
  ever holds more than its ``max``, so the call **never over-admits**. While a call holds a slot it may
  still give back, another call can be refused by that slot: the price is a brief **under-admission** under
  contention at the very edge of a limit. The fixed order keeps two such calls from each holding the slot
  the other one needs. After a refusal, the later slots are only checked, so the refusal still reports the
  longest wait, as one script call would.

MOVED/ASK redirections and topology refreshes after a failover are redis-py's job. Any failure to reach the
cluster (refused, timed out, ``CLUSTERDOWN``, no node for a slot) is raised as :class:`~mcp_guard.StoreError`,
so the guard's ``fail_mode`` applies (``closed``: the call is refused with ``guard_unavailable``). The
client does not retry a failed command (a down node costs one timeout, never a hang); the topology is
refreshed, so the next call goes to the new master after a failover. A call that fails after reserving
some slots gives those back, best effort.

Failover and replication: Redis replicates asynchronously, so a master that dies right after admitting a
call may take that admission with it; the replica promoted in its place can then admit up to the lost
entries again. Within one window after a failover, a budget may therefore over-admit by what the dead
master had not yet sent to its replica (usually nothing or a few calls). Without replicas, a dead master's
slots refuse (fail closed) until it is back.

Valkey speaks the same protocol, scripting and cluster bus, and works wherever Redis does.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from mcp_guard._errors import StoreConfigurationError, StoreError
from mcp_guard._stores._script import OPTIONS, Flow, ScriptStore, Step, abandon_connections, split_options


def _braces(part: str) -> str:
    # After the store's own %-escaping (so this stays one-to-one): no brace may open or close a hash tag early.
    return part.replace("{", "%7B").replace("}", "%7D")


def _parse(url: str) -> tuple[list[tuple[str, int]], dict[str, Any], dict[str, Any]]:
    """``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]`` into startup nodes,
    client options (credentials, TLS) and our options (``prefix``, ``timeout``, ...)."""
    split = urlsplit(url)
    if split.scheme not in RedisClusterStore.schemes:
        raise StoreConfigurationError(
            f"invalid Redis Cluster store URL {url!r}: the scheme is redis+cluster or rediss+cluster"
        )
    if split.path not in ("", "/", "/0"):
        raise StoreConfigurationError(f"invalid Redis Cluster store URL {url!r}: a cluster has database 0 only")
    userinfo, _, hosts = split.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            port = -1
        if not host or not 0 < port < 65536:
            raise StoreConfigurationError(f"invalid Redis Cluster store URL: {item!r} is not host:port")
        nodes.append((host, port))
    client: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            client["username"] = unquote(user)
        if has_password:
            client["password"] = unquote(password)
    if split.scheme == "rediss+cluster":
        client["ssl"] = True
    ours, unknown = split_options(split.query, "Redis Cluster")
    if unknown:
        known = ", ".join(OPTIONS)
        raise StoreConfigurationError(
            f"unknown Redis Cluster store option {unknown[0][0]!r} (known: {known}; pass others as keywords)"
        )
    return nodes, client, ours


class RedisClusterStore(ScriptStore):
    """Exact sliding-window rate limits on a Redis (or Valkey) Cluster, spread over its shards by caller.

    ``RedisClusterStore("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")``, or through ``store_from_uri`` with
    the same URL (``rediss+cluster://`` for TLS, ``user:password@`` before the first node). Any node will do
    to discover the cluster; list a few so a dead one does not stop a start. Options, keyword or URI query,
    as for ``redis://``: ``prefix`` (default ``mcpg``), ``timeout`` (socket connect and read timeout in seconds,
    default 0.25), ``max_connections`` (calls in flight per store and per event loop, default 64) and
    ``pool_timeout`` (how long a call waits for one of those, default 1 s). Other keywords go to redis-py's
    cluster client (``ssl_ca_certs``, ``address_remap``...).

    ``usage`` is exact, as on ``redis://``: one read-only script call per slot the limits live on.

    A call fails with :class:`~mcp_guard.StoreError` within about ``timeout`` per slot it spans (at most one
    per scope: identity, session, tool, global), plus the topology refresh redis-py makes after a failure.

    The clients are created on first use (a sync one, and an async one per event loop), not in the
    constructor; call :meth:`aclose` from the loop the async methods ran in when done. See the module
    docstring for how a call spanning several slots stays exact, and for what a failover can lose.
    """

    schemes = ("redis+cluster", "rediss+cluster")
    _kind = "redis cluster store"

    default_url = "redis+cluster://localhost:6379"
    _feature = "RedisClusterStore"
    _modules = ("redis.asyncio.cluster", "redis.asyncio.retry", "redis.backoff", "redis.cluster", "redis.retry")

    def _configure(self, url: str, options: dict[str, Any]) -> None:
        nodes, credentials, _ = _parse(url)
        self._nodes = nodes
        self._tagged_prefix = _braces(self._prefix)
        self._options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "driver_info": None,  # no CLIENT SETINFO: one fewer round trip per new connection
            **credentials,
            **options,
        }
        if int(self._redis.__version__.split(".")[0]) < 6:
            # Before redis-py 6 the cluster's attempts were counted by this argument (deprecated since).
            self._options["cluster_error_retry_attempts"] = 0
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
        self._where = f"{urlsplit(url).scheme}://{hosts}"  # for messages: never the password

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> RedisClusterStore:
        """Options in the query (``?prefix=app&timeout=0.5``) are ours; keywords override them."""
        _, _, ours = _parse(uri)
        return cls(uri.split("?", 1)[0], **{**ours, **options})

    def __repr__(self) -> str:
        return f"RedisClusterStore({self._where!r}, prefix={self.prefix!r})"

    # -- keys and slots -------------------------------------------------------------------------------

    def _budget_keys(self, key: str) -> tuple[str, str]:
        # LimitCharge.key is "<counter>:<kind>:<scope id>", each part %-escaped: the owner is what follows the
        # counter, and it becomes the hash tag.
        counter, owner = key.split(":", 1)
        tagged = f"{_braces(counter)}:{{{_braces(owner)}}}"
        return f"{self._tagged_prefix}:log:{tagged}", f"{self._tagged_prefix}:meta:{tagged}"

    def _grant_key(self, owner: str, digest: str) -> str:
        return f"{self._tagged_prefix}:grant:{{{_braces(owner)}}}:{digest}"

    def _slot(self, redis_key: str) -> int:
        slot: int = self._redis.crc.key_slot(redis_key.encode())
        return slot

    # -- the clients ----------------------------------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        exceptions = self._redis.exceptions
        return (exceptions.RedisError, exceptions.RedisClusterException, OSError)

    def _client_options(self, cluster: Any, retry_class: Any) -> dict[str, Any]:
        """Keywords for ``cluster.RedisCluster`` (redis-py's sync or async cluster module)."""
        startup = [cluster.ClusterNode(host, port) for host, port in self._nodes]
        # No retries of our own or redis-py's: a failure costs one timeout; MOVED/ASK are still followed.
        return {"retry": retry_class(self._redis.backoff.NoBackoff(), 0), **self._options, "startup_nodes": startup}

    def _lane(self) -> _SyncClient:
        current: _SyncClient | None = self._sync
        if current is not None and current.pid == os.getpid():
            return current
        with self._lock:
            current = self._sync
            if current is not None and current.pid != os.getpid():
                # Forked: the parent's sockets are not ours (redis-py closes them here without shutting them down).
                current.client.close()
                current = self._sync = None
            if current is None:
                cluster = self._redis.cluster
                try:
                    # The sync client learns the topology in its constructor: a round trip, hence on first use.
                    client = cluster.RedisCluster(**self._client_options(cluster, self._redis.retry.Retry))
                except self._errors() as exc:
                    raise self._fail(exc) from exc
                current = self._sync = _SyncClient(client, self.max_connections)
            return current

    def _new_alane(self, loop: asyncio.AbstractEventLoop) -> _AsyncClient:
        cluster = self._redis.asyncio.cluster
        options = self._client_options(cluster, self._redis.asyncio.retry.Retry)
        # The async client's per-node pools refuse (not wait) past max_connections; the gate keeps this
        # store's calls in flight below that, each waiting at most pool_timeout for its turn. It connects on
        # first use (see _AsyncClient.discover), not here.
        client = cluster.RedisCluster(max_connections=self.max_connections, **options)
        return _AsyncClient(loop, client, self.max_connections)

    # -- one script call, for both clients -------------------------------------------------------------

    def _call(self, lane: _SyncClient | _AsyncClient, step: Step) -> Flow[Any]:
        script, sha, keys, argv = step
        errors = self._errors()
        try:
            if lane.stale():
                yield (lane.discover,)
            admitted = yield lane.acquire, self.pool_timeout
        except errors as exc:
            raise self._fail(exc) from exc
        if not admitted:
            raise StoreError(f"redis cluster store {self._where}: no free connection within {self.pool_timeout} s")
        try:
            try:
                return (yield lane.client.execute_command, "EVALSHA", sha, len(keys), *keys, *argv)
            except self._redis.exceptions.NoScriptError:  # first use on this node, or it restarted
                return (yield lane.client.execute_command, "EVAL", script, len(keys), *keys, *argv)
        except errors as exc:
            raise self._fail(exc) from exc
        finally:
            lane.gate.release()


class _SyncClient:
    """The sync cluster client of one process, and the gate that bounds its calls in flight."""

    def __init__(self, client: Any, max_connections: int) -> None:
        self.pid, self.client = os.getpid(), client
        self.gate = threading.BoundedSemaphore(max_connections)

    def stale(self) -> bool:
        return False  # the sync client refreshes its topology itself, inside the failed command

    def discover(self) -> None:  # never called: never stale
        """Nothing to do."""

    def acquire(self, timeout: float) -> bool:
        return self.gate.acquire(timeout=timeout)

    def close(self) -> None:
        self.client.close()


class _AsyncClient:
    """An async cluster client and what goes with it, for one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: Any, max_connections: int) -> None:
        self.loop, self.client = loop, client
        self.gate = asyncio.Semaphore(max_connections)
        self._discovered = False
        self._discovering = asyncio.Lock()

    def stale(self) -> bool:
        # redis-py sets ``_initialize`` when a command failed to reach a node: the topology is refreshed first.
        return not self._discovered or bool(getattr(self.client, "_initialize", False))

    async def discover(self) -> None:
        """Learn the topology before the commands that need it, one caller at a time.

        redis-py's async client does it on the next command too, but then a burst of commands can race the
        refresh: it marks for reconnection the connections other calls just opened, and some of those calls
        fail with "Connection closed". Done here under a lock, the burst waits for one refresh instead.
        """
        async with self._discovering:
            if self.stale():
                await self.client.initialize()
                await asyncio.sleep(0)  # let the refresh's own clean-up tasks run before any command
                self._discovered = True

    async def acquire(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.gate.acquire(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        await self.client.aclose()

    def abandon(self) -> None:
        """Close the sockets of a client whose event loop is no longer ours, without that loop."""
        manager = self.client.nodes_manager
        nodes = {id(n): n for n in [*manager.nodes_cache.values(), *manager.startup_nodes.values()]}
        abandon_connections(self.loop, [c for node in nodes.values() for c in getattr(node, "_connections", ())])
        self.client._initialize = True  # what aclose() leaves behind: "closed", so its __del__ does not warn


__all__ = ["RedisClusterStore"]
