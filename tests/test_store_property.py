"""Sliding windows, as a property: random call times and costs against an exact model, on both backends.

Each example uses fresh budget keys, so the function-scoped ``store`` can serve every example.
"""

from __future__ import annotations

import itertools

import pytest
from conftest import FakeClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_guard import LimitCharge
from mcp_guard._stores import Store

_fresh = itertools.count()

# A step: how far the clock moves (seconds, often 0 for bursts), the call's cost, and whether the call
# is given back right away (as a failed tool call would).
steps = st.lists(
    st.tuples(
        st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=25.0, allow_nan=False)),
        st.integers(min_value=0, max_value=4),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)


def _run(store: Store, clock: FakeClock, window: float, maximum: int, plan: list[tuple[float, int, bool]]) -> None:
    n = next(_fresh)
    charge = LimitCharge(f"prop{n}", "global", "", window, maximum, 1, "/r")
    held: list[tuple[float, int, str]] = []  # the model: admitted entries still held (time, cost, token)
    admitted: list[tuple[float, int]] = []  # every admission that was not given back
    for dt, cost, give_back in plan:
        now = clock.advance(dt)
        c = LimitCharge(f"prop{n}", "global", "", window, maximum, cost, "/r")
        used = sum(k for t, k, _ in held if t > now - window)
        verdict = store.reserve([c])
        # The store refuses exactly when the model says the call does not fit.
        assert verdict.ok == (used + cost <= maximum), (now, used, cost)
        if verdict.ok:
            assert verdict.token is not None
            if give_back:
                store.release([c], verdict.token)
            elif cost:
                held.append((now, cost, verdict.token))
                admitted.append((now, cost))
        elif cost > maximum:
            assert verdict.retry_after_s is None  # never fits
        else:
            # The wait is when enough of the oldest entries in the window have left it.
            assert verdict.retry_after_s is not None
            need, freed = used + cost - maximum, 0
            inside = sorted((t, k) for t, k, _ in held if t > now - window)
            for t, k in inside:
                freed += k
                if freed >= need:
                    assert verdict.retry_after_s == pytest.approx(t + window - now, abs=1e-6)
                    break
    # The property: no interval of one window's length holds more than max units. The worst interval
    # starting anywhere is matched by one starting at an admission, so checking those is enough.
    for start, _ in admitted:
        assert sum(k for t, k in admitted if start <= t < start + window) <= maximum
    assert charge.key.startswith("prop")


windows = st.sampled_from([10.0, 60.0, 0.5, 7.25])
maxima = st.integers(min_value=0, max_value=8)
_relaxed = [HealthCheck.function_scoped_fixture]


@pytest.mark.parametrize("store", ["memory"], indirect=True)
@given(window=windows, maximum=maxima, plan=steps)
@settings(deadline=None, suppress_health_check=_relaxed, max_examples=150)
def test_sliding_window_never_admits_more_than_max_memory(
    store: Store, clock: FakeClock, window: float, maximum: int, plan: list[tuple[float, int, bool]]
) -> None:
    _run(store, clock, window, maximum, plan)


# Modest: every step is a real round trip to redis-server.
@pytest.mark.redis
@pytest.mark.parametrize("store", ["redis"], indirect=True)
@given(window=windows, maximum=maxima, plan=steps)
@settings(deadline=None, suppress_health_check=_relaxed, max_examples=30)
def test_sliding_window_never_admits_more_than_max_redis(
    store: Store, clock: FakeClock, window: float, maximum: int, plan: list[tuple[float, int, bool]]
) -> None:
    _run(store, clock, window, maximum, plan)
