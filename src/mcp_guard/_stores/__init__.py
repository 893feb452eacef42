"""Rate-limit stores: ``memory://`` (default, one process), ``redis://`` (shared by every worker) and
``redis+cluster://`` (shared, spread over a Redis Cluster's shards)."""

from mcp_guard._stores._base import ADMIT, Clock, Store, StoreProtocol, Verdict, store_from_uri

__all__ = ["ADMIT", "Clock", "Store", "StoreProtocol", "Verdict", "store_from_uri"]
