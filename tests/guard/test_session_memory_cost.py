"""Session memory costs a call nothing when its policy has no session rules: no store command at all, judged by
the redis-server's own command counters; a policy that reads the session is the control (it does send some)."""

from __future__ import annotations

from typing import Any

import redis

from mcp_guard import Guard, Policy

NO_SESSION_RULES = Policy.from_dict(
    {"version": "1", "default": "allow", "tools": {"pay": {"deny_if": {"args.amount": {"gt": 5000}}}}}
)
READS_THE_SESSION = Policy.from_dict(
    {"version": "1", "default": "allow", "tools": {"pay": {"require": {"args.iban": {"from": ["user"]}}}}}
)


def _commands(client: redis.Redis, guard: Guard, calls: int, **call: Any) -> dict[str, int]:
    client.config_resetstat()
    for _ in range(calls):
        guard.run("pay", {"amount": 10, "iban": "DE89"}, lambda **_: "ok", **call)
    stats = client.info("commandstats")
    return {name: entry["calls"] for name, entry in stats.items() if name != "cmdstat_config|resetstat"}


async def test_a_session_with_memory_costs_a_policy_without_session_rules_no_store_command(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    guard = Guard(NO_SESSION_RULES, store=redis_url, retry=False)
    reader = Guard(READS_THE_SESSION, store=redis_url, retry=False)
    try:
        reader.observe_input("pay DE89 please, " + "x" * 50_000, session="s")  # the session's memory is not empty
        assert _commands(client, guard, 20, session="s") == {}
        assert _commands(client, guard, 20) == {}
        client.config_resetstat()
        for _ in range(5):
            result = await guard.arun("pay", {"amount": 10}, _ok, session="s")
            assert result.value == "ok"
        assert {k: v for k, v in client.info("commandstats").items() if k != "cmdstat_config|resetstat"} == {}
        # The control: the same calls under a policy that reads the session do reach the store.
        assert _commands(client, reader, 5, session="s")
    finally:
        guard.close()
        reader.close()
        client.close()


async def _ok(**_: Any) -> str:
    return "ok"
