"""Store semantics, run on every backend (``store`` is parametrised over memory and a real redis-server)."""

from __future__ import annotations

import pytest

from mcp_guard import LimitCharge
from mcp_guard._stores import Store
from tests.support.clock import FakeClock


def limit(
    max: int = 3,
    window: float = 60.0,
    cost: int = 1,
    *,
    counter: str = "calls",
    scope: str = "global",
    scope_id: str = "",
    rule: str = "/tools/t/limits/0",
) -> LimitCharge:
    return LimitCharge(counter, scope, scope_id, window, max, cost, rule)  # type: ignore[arg-type]


def admitted(store: Store, charges: list[LimitCharge], n: int) -> int:
    return sum(store.reserve(charges).ok for _ in range(n))


def test_admits_up_to_max_then_refuses_with_the_wait(store: Store, clock: FakeClock) -> None:
    c = limit(max=3, window=60)
    first = store.reserve([c])
    assert first.ok
    assert first.token
    clock.advance(10)
    assert store.reserve([c]).ok
    assert store.reserve([c]).ok
    refused = store.reserve([c])
    assert not refused.ok
    assert refused.charge == c
    assert refused.token is None
    # The oldest entry (t=0) leaves the window at t=60; we are at t=10.
    assert refused.retry_after_s == pytest.approx(50.0)
    clock.advance(49.99)
    assert not store.reserve([c]).ok
    clock.advance(0.02)
    assert store.reserve([c]).ok


def test_tokens_are_unique(store: Store) -> None:
    c = limit(max=100)
    tokens = {store.reserve([c]).token for _ in range(50)}
    assert len(tokens) == 50


def test_no_double_burst_at_the_window_boundary(store: Store, clock: FakeClock) -> None:
    # A fixed window would reset at t=60 and admit 30 more; a sliding window admits none until t=119.9.
    c = limit(max=30, window=60)
    clock.advance(59.9)
    assert admitted(store, [c], 30) == 30
    clock.advance(0.2)  # t = 60.1: a new fixed window would have started
    assert admitted(store, [c], 30) == 0
    refused = store.reserve([c])
    assert refused.retry_after_s == pytest.approx(59.8)
    clock.advance(59.8)
    assert admitted(store, [c], 31) == 30


def test_cost_counts_units_and_the_wait_covers_enough_entries(store: Store, clock: FakeClock) -> None:
    small, big = limit(max=10, cost=3), limit(max=10, cost=6)
    assert store.reserve([small]).ok  # t=0: 3
    clock.advance(5)
    assert store.reserve([small]).ok  # t=5: 6
    clock.advance(5)
    refused = store.reserve([big])  # t=10: 6 + 6 > 10; freeing 2 units needs the t=0 entry gone (t=60)
    assert not refused.ok
    assert refused.retry_after_s == pytest.approx(50.0)
    assert store.reserve([limit(max=10, cost=4)]).ok  # 6 + 4 fits exactly


def test_cost_above_max_never_fits(store: Store) -> None:
    c = limit(max=5, cost=6)
    refused = store.reserve([c])
    assert not refused.ok
    assert refused.retry_after_s is None
    assert refused.charge == c
    assert store.reserve([limit(max=0)]).retry_after_s is None
    assert store.reserve([limit(max=5, cost=5)]).ok


def test_negative_cost_is_refused_and_adds_no_budget(store: Store) -> None:
    c = limit(max=2)
    assert admitted(store, [c], 2) == 2
    refused = store.reserve([limit(max=2, cost=-5)])
    assert not refused.ok
    assert refused.retry_after_s is None
    assert not store.reserve([c]).ok


def test_zero_cost_is_admitted_while_full(store: Store) -> None:
    c = limit(max=1)
    assert store.reserve([c]).ok
    assert store.reserve([limit(max=1, cost=0)]).ok
    assert not store.reserve([c]).ok


def test_empty_charges_admit(store: Store) -> None:
    assert store.reserve([]).ok
    assert store.check([]).ok


def test_check_reserves_nothing(store: Store) -> None:
    c = limit(max=2)
    for _ in range(10):
        assert store.check([c]).ok
    assert admitted(store, [c], 3) == 2
    refused = store.check([c])
    assert not refused.ok
    assert refused.charge == c
    assert refused.retry_after_s == pytest.approx(60.0)


def test_all_or_nothing_second_limit_exhausted_consumes_nothing_from_the_first(store: Store) -> None:
    per_minute = limit(max=5, window=60, counter="a")
    per_hour = limit(max=2, window=3600, counter="b", rule="/all_tools/limits/0")
    assert admitted(store, [per_minute, per_hour], 2) == 2
    for _ in range(10):
        refused = store.reserve([per_minute, per_hour])
        assert not refused.ok
        assert refused.charge == per_hour
    # The refused calls took nothing from "a": it still has 3 of its 5.
    assert admitted(store, [per_minute], 10) == 3


def test_the_longest_wait_is_reported(store: Store, clock: FakeClock) -> None:
    short = limit(max=1, window=10, counter="short", rule="/short")
    long = limit(max=1, window=100, counter="long", rule="/long")
    assert store.reserve([short, long]).ok
    clock.advance(1)
    refused = store.reserve([short, long])
    assert refused.charge == long
    assert refused.retry_after_s == pytest.approx(99.0)
    refused = store.reserve([long, short])
    assert refused.charge == long


def test_release_gives_quota_back(store: Store) -> None:
    c = limit(max=2)
    first = store.reserve([c])
    assert store.reserve([c]).ok
    assert not store.reserve([c]).ok
    assert first.token is not None
    store.release([c], first.token)
    assert store.reserve([c]).ok
    assert not store.reserve([c]).ok


def test_release_leaves_other_tokens_and_twice_is_harmless(store: Store) -> None:
    c = limit(max=3)
    tokens = [store.reserve([c]).token for _ in range(3)]
    assert all(tokens)
    store.release([c], tokens[1])  # type: ignore[arg-type]
    store.release([c], tokens[1])  # type: ignore[arg-type]
    store.release([c], "not-a-token")
    assert admitted(store, [c], 5) == 1


def test_release_only_on_the_given_keys(store: Store) -> None:
    a, b = limit(max=1, counter="a"), limit(max=1, counter="b")
    token = store.reserve([a, b]).token
    assert token is not None
    store.release([a], token)  # b counts failures, say: it keeps its entry
    assert store.reserve([a]).ok
    assert not store.reserve([b]).ok


def test_same_counter_across_tools_shares_one_budget(store: Store) -> None:
    # Two tools' rules with the same counter and scope make the same key, whatever their rule pointers.
    from_a = limit(max=3, counter="exchange", scope="grant", scope_id="alice", rule="/tools/a/limits/0")
    from_b = limit(max=3, counter="exchange", scope="identity", scope_id="alice", rule="/tools/b/limits/0")
    assert from_a.key == from_b.key
    assert store.reserve([from_a]).ok
    assert store.reserve([from_b]).ok
    assert store.reserve([from_a]).ok
    assert not store.reserve([from_b]).ok
    # Another identity has its own budget.
    assert store.reserve([limit(max=3, counter="exchange", scope="grant", scope_id="bob")]).ok


def test_a_key_is_charged_once_per_call_with_the_largest_cost(store: Store) -> None:
    cheap = limit(max=10, cost=1, rule="/tools/t/limits/0")
    dear = limit(max=10, cost=4, rule="/all_tools/limits/0")
    assert store.reserve([cheap, dear]).ok  # 4 units, not 5
    assert store.reserve([cheap, dear]).ok  # 8
    refused = store.reserve([cheap, dear])
    assert not refused.ok
    assert store.reserve([limit(max=10, cost=2)]).ok  # 10


def test_every_limit_on_a_shared_key_is_checked_with_its_own_window(store: Store, clock: FakeClock) -> None:
    per_minute = limit(max=2, window=60, rule="/m")
    per_hour = limit(max=3, window=3600, rule="/h")
    assert admitted(store, [per_minute, per_hour], 3) == 2
    clock.advance(61)
    assert store.reserve([per_minute, per_hour]).ok  # minute has room again; hour now holds 3
    refused = store.reserve([per_minute, per_hour])
    assert refused.charge == per_hour
    assert refused.retry_after_s == pytest.approx(3600 - 61)
    # The minute limit alone still sees one entry in its window, the hour limit three.
    assert store.reserve([per_minute]).ok


def test_a_longer_window_on_a_key_keeps_the_entries_it_counts(store: Store, clock: FakeClock) -> None:
    # Tool A counts per minute and tool B per hour on the same counter: A's calls must not prune
    # the entries B's hour still counts.
    per_minute = limit(max=100, window=60, rule="/tools/a/limits/0")
    per_hour = limit(max=3, window=3600, rule="/tools/b/limits/0")
    assert store.reserve([per_hour]).ok
    assert store.reserve([per_minute]).ok
    clock.advance(120)
    assert store.reserve([per_minute]).ok  # would prune everything older than a minute if it could
    assert not store.reserve([per_hour]).ok  # 3 entries in the hour: t=0, t=0, t=120


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a:b", "c"), ("a", "b:c")),
        (("a%3Ab", "c"), ("a:b", "c")),
        (("a", "b:global:c"), ("a:global:b", "c")),
    ],
)
def test_ids_with_separators_do_not_collide(store: Store, one: tuple[str, str], other: tuple[str, str]) -> None:
    x = limit(max=1, counter=one[0], scope_id=one[1], scope="session")
    y = limit(max=1, counter=other[0], scope_id=other[1], scope="session")
    assert x.key != y.key
    assert store.reserve([x]).ok
    assert store.reserve([y]).ok


async def test_async_twins(store: Store, clock: FakeClock) -> None:
    c = limit(max=2)
    first = await store.areserve([c])
    assert first.ok
    assert (await store.areserve([c])).ok
    refused = await store.areserve([c])
    assert not refused.ok
    assert not (await store.acheck([c])).ok
    assert first.token is not None
    await store.arelease([c], first.token)
    assert (await store.acheck([c])).ok
    assert (await store.areserve([c])).ok
    assert (await store.areserve([])).ok


def test_clock_going_back_stays_exact(store: Store, clock: FakeClock) -> None:
    # An entry from the "future" still counts: a backwards clock step never admits more than max.
    c = limit(max=2, window=60)
    clock.advance(30)
    assert store.reserve([c]).ok
    clock.advance(-20)
    assert store.reserve([c]).ok
    assert not store.reserve([c]).ok
    clock.advance(60)  # t=70: the t=10 entry is out, the t=30 one still in
    assert store.reserve([c]).ok
    assert not store.reserve([c]).ok
