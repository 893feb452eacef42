"""What only the memory store has: bounded memory (pruning, idle keys dropped) and the URI factory."""

from __future__ import annotations

import pytest

from mcp_guard import LimitCharge, PolicyError, store_from_uri
from mcp_guard._stores.memory import MemoryStore
from tests.support.clock import FakeClock


def limit(max: int = 5, window: float = 1.0, scope_id: str = "") -> LimitCharge:
    return LimitCharge("calls", "identity", scope_id, window, max, 1, "/r")


def test_entries_older_than_the_window_are_pruned(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    c = limit(max=5, window=1.0)
    admitted = 0
    for _ in range(10_000):
        admitted += store.reserve([c]).ok
        clock.advance(1 / 64)  # exact in binary: no float drift at the window's edge
    assert admitted == 5 * (10_000 // 64) + 5  # 5 in every second, sliding
    (log,) = store._logs.values()
    assert len(log.entries) <= 5


def test_idle_keys_are_dropped(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(1000):  # one key per caller identity, never seen again
        assert store.reserve([limit(scope_id=f"user{i}")]).ok
    assert len(store._logs) == 1000
    clock.advance(61)  # past the window and the sweep interval
    assert store.check([limit(scope_id="someone")]).ok
    assert len(store._logs) == 0


def test_released_keys_are_dropped(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    c = limit()
    token = store.reserve([c]).token
    assert token is not None
    store.release([c], token)
    assert store._logs == {}


def test_store_from_uri_builds_memory_with_the_clock(clock: FakeClock) -> None:
    store = store_from_uri("memory://", clock=clock)
    assert isinstance(store, MemoryStore)
    assert store.clock is clock


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError, match=r"memory://.*redis://"):
        store_from_uri("mongodb://localhost")


def test_close_forgets_every_budget(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    assert store.reserve([limit(max=1)]).ok
    store.close()
    store.close()
    assert store.reserve([limit(max=1)]).ok
