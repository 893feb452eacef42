"""Rate-limit stores: ``memory://`` (default, one process) and ``redis://`` (shared by every worker)."""

from mcp_guard._stores._base import ADMIT, Clock, Store, StoreProtocol, Usage, Verdict, store_from_uri, usage_by_check

__all__ = ["ADMIT", "Clock", "Store", "StoreProtocol", "Usage", "Verdict", "store_from_uri", "usage_by_check"]
