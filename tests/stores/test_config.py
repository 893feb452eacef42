"""A store URI or option the store cannot use is a ConfigurationError with a one-line message, raised when the
store is built (no server is needed to find it out). It is also a PolicyError, what 0.1 raised there.
And what needs no server (a refusal by the plan, no limits, nothing to give back) never reaches for one."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_guard import ConfigurationError, LimitCharge, PolicyError, RedisClusterStore, RedisStore, store_from_uri


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("mongodb://localhost", "scheme 'mongodb' is not one of memory://"),
        ("localhost:6379", "scheme 'localhost' is not one of"),
        ("redis://localhost:notaport/0", "invalid Redis store URL"),
        ("redis://localhost:6379/0?timeout=soon", "invalid Redis store option timeout='soon'"),
        ("redis://localhost:6379/0?max_connections=1.5", "invalid Redis store option max_connections='1.5'"),
        ("redis://localhost:6379/0?timeout=0", "timeout and pool_timeout must be > 0"),
        ("redis+cluster://h:notaport", "'h:notaport' is not host:port"),
        ("redis+cluster://h:1?db=3", "unknown Redis Cluster store option 'db'"),
        ("redis+cluster://h:1?pool_timeout=later", "invalid Redis Cluster store option pool_timeout='later'"),
        ("redis+cluster://h:1/2", "a cluster has database 0 only"),
    ],
)
def test_a_bad_store_uri_is_a_configuration_error(uri: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        store_from_uri(uri)
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert isinstance(info.value, PolicyError)  # 0.1 code that caught PolicyError still catches it
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("cls", [RedisStore, RedisClusterStore])
@pytest.mark.parametrize("option", [{"timeout": 0}, {"pool_timeout": -1}, {"max_connections": 0}])
def test_a_bad_option_by_keyword_is_a_configuration_error(cls: type[Any], option: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="must be > 0"):
        cls(**option)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"])
async def test_what_needs_no_server_never_reaches_for_one(url: str) -> None:
    # Nothing listens on port 1: a client made here would fail. A cost over the max is refused by the plan,
    # no limits admit at once, and a token that is not the store's has nothing to give back.
    store = store_from_uri(url, timeout=0.2)
    never = LimitCharge("c", "identity", "alice", 60.0, 2, 3, "/tools/t/limits/0")
    try:
        for verdict in (store.reserve([never]), await store.areserve([never]), store.check([never])):
            assert (verdict.ok, verdict.charge, verdict.retry_after_s) == (False, never, None)
        assert store.reserve([]).ok
        assert (await store.acheck([])).ok
        store.release([never], "not-ours")
        await store.arelease([], "x.1@1.0")
        assert store.usage([]) == []
    finally:
        await store.aclose()
