"""Rate-limit stores: ``memory://`` (default, one process), ``redis://`` (shared by every worker) and
``redis+cluster://`` (shared, spread over a Redis Cluster's shards)."""

from mcp_guard._stores._base import ADMIT, Clock, Store, StoreProtocol, Usage, Verdict, store_from_uri, usage_by_check

__all__ = ["ADMIT", "Clock", "Store", "StoreProtocol", "Usage", "Verdict", "store_from_uri", "usage_by_check"]
