"""Sliding windows, as a property: random call times and costs against an exact model, on both backends.

Each example uses fresh budget keys, so the function-scoped ``store`` can serve every example.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_guard import LimitCharge
from mcp_guard._stores import Store
from tests.support.clock import FakeClock

_fresh = itertools.count()

# A step: how far the clock moves (as a fraction of the shortest window, often 0 for bursts), the call's
# cost, and whether the call is given back right away (as a failed tool call would).
steps = st.lists(
    st.tuples(
        # exact binary fractions land calls right on window edges, where off-by-one bugs live
        st.one_of(st.just(0.0), st.sampled_from([0.25, 0.5, 1.0]), st.floats(0.001, 0.8, allow_nan=False)),
        st.integers(min_value=0, max_value=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)


Limit = tuple[float, int]  # (window, max)


def _run(store: Store, clock: FakeClock, limits: list[Limit], plan: list[tuple[float, int, bool]]) -> None:
    """Drive one fresh key under ``limits`` (all on the same counter, so one budget) through ``plan``."""
    counter = f"prop{next(_fresh)}"
    held: list[tuple[float, int]] = []  # the model: admitted entries still held (time, cost)
    shortest = min(w for w, _ in limits)
    for step, cost, give_back in plan:
        now = clock.advance(step * shortest)
        charges = [LimitCharge(counter, "global", "", w, m, cost, f"/r/{i}") for i, (w, m) in enumerate(limits)]
        used = [sum(k for t, k in held if t > now - w) for w, _ in limits]
        fits = [u + cost <= m for u, (_, m) in zip(used, limits, strict=True)]
        verdict = store.reserve(charges)
        # The store refuses exactly when the model says the call does not fit every window.
        assert verdict.ok == all(fits), (now, used, cost)
        if verdict.ok:
            assert verdict.token is not None
            if give_back:
                store.release(charges, verdict.token)
            elif cost:
                held.append((now, cost))
        elif any(cost > m for _, m in limits):
            assert verdict.retry_after_s is None  # never fits
        else:
            # The wait is the longest among the refusing limits: until enough of the oldest entries in that
            # window have left it.
            waits = []
            for (w, m), u, ok in zip(limits, used, fits, strict=True):
                if ok:
                    continue
                need, freed = u + cost - m, 0
                for t, k in sorted(e for e in held if e[0] > now - w):
                    freed += k
                    if freed >= need:
                        waits.append(t + w - now)
                        break
            assert verdict.retry_after_s == pytest.approx(max(waits), abs=1e-6)
    # The property: no interval of one window's length holds more than that limit's max. The worst interval
    # starting anywhere is matched by one starting at an admission, so checking those is enough.
    for w, m in limits:
        for start, _ in held:
            assert sum(k for t, k in held if start <= t < start + w) <= m


windows = st.sampled_from([10.0, 60.0, 0.5, 7.25])
maxima = st.integers(min_value=0, max_value=6)
# One limit, or two on the same counter with different windows (a per-minute and a per-hour, say).
limit_sets = st.one_of(
    st.lists(st.tuples(windows, maxima), min_size=1, max_size=1),
    st.tuples(st.tuples(windows, maxima), st.tuples(windows, maxima)).map(list),
)
_relaxed = [HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize("store", ["memory"], indirect=True)
@given(limits=limit_sets, plan=steps)
@settings(deadline=None, suppress_health_check=_relaxed, max_examples=300)
def test_sliding_window_never_admits_more_than_max_memory(
    store: Store, clock: FakeClock, limits: list[Limit], plan: list[tuple[float, int, bool]]
) -> None:
    _run(store, clock, limits, plan)


# Modest: every step is a real round trip to redis-server.
@pytest.mark.redis
@pytest.mark.parametrize("store", ["redis"], indirect=True)
@given(limits=limit_sets, plan=steps)
@settings(deadline=None, suppress_health_check=_relaxed, max_examples=40)
def test_sliding_window_never_admits_more_than_max_redis(
    store: Store, clock: FakeClock, limits: list[Limit], plan: list[tuple[float, int, bool]]
) -> None:
    _run(store, clock, limits, plan)
