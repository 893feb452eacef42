"""Rate-limit stores: ``memory://`` (default, one process), ``redis://`` (shared by every worker) and
``redis+cluster://`` (shared, spread over a Redis Cluster's shards), and :func:`store_from_uri`.

Who imports whom (no module imports one that imports it back)::

    _stores/__init__  ->  _base, memory, redis, redis_cluster
    memory            ->  _base
    _script           ->  _base            (the Lua scripts and the decision flows both Redis stores run)
    redis             ->  _script          (the store's own connection path to one server)
    redis_cluster     ->  _script          (redis-py's cluster client, split by slot)

The backends register their schemes on :class:`Store` as they are defined; importing them here is what
fills the registry. None of them imports its driver (redis-py) before a store is built.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mcp_guard._errors import StoreConfigurationError
from mcp_guard._stores._base import (
    ADMIT,
    Clock,
    Group,
    Store,
    StoreProtocol,
    Usage,
    Verdict,
    plan,
    usage_by_check,
)
from mcp_guard._stores.memory import MemoryStore
from mcp_guard._stores.redis import RedisStore
from mcp_guard._stores.redis_cluster import RedisClusterStore


def store_from_uri(uri: str, **options: Any) -> Store:
    """Build a store from a URI: ``memory://``, ``redis://host:port/db``, ``rediss://...``, ``unix:///path``,
    ``redis+cluster://host:port[,host:port...]``. Keywords go to the store's constructor.

    An unknown scheme, a malformed URL or a bad option raises :class:`~mcp_guard.ConfigurationError`
    (a ``StoreConfigurationError``, which 0.1 code may still catch as ``PolicyError``).
    """
    scheme = urlsplit(uri).scheme
    cls = Store._registry.get(scheme)
    if cls is None:
        known = ", ".join(f"{s}://" for s in sorted(Store._registry))
        raise StoreConfigurationError(f"unknown store {uri!r}: the scheme {scheme!r} is not one of {known}")
    return cls.from_uri(uri, **options)


__all__ = [
    "ADMIT",
    "Clock",
    "Group",
    "MemoryStore",
    "RedisClusterStore",
    "RedisStore",
    "Store",
    "StoreProtocol",
    "Usage",
    "Verdict",
    "plan",
    "store_from_uri",
    "usage_by_check",
]
