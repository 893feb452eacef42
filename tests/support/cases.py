"""The shared table of cases: one policy and the decision each call must get, through every adapter.

The LangChain adapters (``wrap_tools``, ``GuardInterceptor``, ``GuardMiddleware``) and the Agents SDK
adapters all run this table against the real counter server (``tests/support/servers/counter_server.py``, server
name ``"exchange"``) and must give the same decisions.

How to run a case: build a fresh ``Guard(CASES_POLICY)`` (fresh ``memory://`` store, no approver) per
case, tell the adapter the server is ``"exchange"``, make the call ``case.repeat`` times; every call but the
last must be allowed, and the last must give ``case.expect``: ``"allow"`` or a violation code.

Import as ``from tests.support.cases import CASES, CASES_POLICY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVER = "exchange"

CASES_POLICY: dict[str, Any] = {
    "version": "1",
    "name": "exchange cases",
    "description": "One rule of each kind, over the counter server's tools.",
    "default": "deny",
    "hide": ["delete_api_key"],
    "tools": {
        # glob + args_schema
        "get_*": {
            "args_schema": {
                "type": "object",
                "properties": {"asset": {"type": "string", "pattern": "^[A-Z]{2,10}$"}},
                "required": ["asset"],
            }
        },
        # exact + rate_limit shorthand (a global budget, so the caller's identity does not matter)
        "create_listen_key": {"limits": [{"counter": "listen_key", "window": "minute", "max": 2, "scope": "global"}]},
        # glob + require + deny_if
        "place_*": {
            "require": {"args.side": {"in": ["buy", "sell"]}},
            "deny_if": {"args.amount": {"gt": 1000}},
            "rate_limit": "100/minute",
        },
        # server-qualified beats unqualified: withdraw is only possible through the exchange server, with a human
        "exchange/withdraw": {
            "action": "require_approval",
            "deny_if": {"args.address": {"regex": "^bad"}},
            "reason": "withdrawals need a human's approval",
        },
        "withdraw": {"action": "deny", "reason": "withdrawals are only allowed through the exchange server"},
    },
}


@dataclass(frozen=True)
class Case:
    """One call (made ``repeat`` times on a fresh guard) and what the last of them must give."""

    id: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    expect: str = "allow"
    repeat: int = 1


CASES: list[Case] = [
    Case("read_allowed", "get_balance", {"asset": "BTC"}),
    Case("read_bad_args", "get_balance", {"asset": "btc!"}, "invalid_arguments"),
    Case("order_allowed", "place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 1.0}),
    Case("order_too_big", "place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 5000.0}, "denied"),
    Case("order_bad_side", "place_order", {"symbol": "BTCUSD", "side": "short", "amount": 1.0}, "requirement_failed"),
    Case("listen_key_allowed", "create_listen_key", {}),
    Case("listen_key_over_budget", "create_listen_key", {}, "rate_limited", repeat=3),
    Case("withdraw_needs_human", "withdraw", {"asset": "BTC", "amount": 1.0, "address": "addr1"}, "approval_required"),
    Case("withdraw_bad_address", "withdraw", {"asset": "BTC", "amount": 1.0, "address": "bad-addr"}, "denied"),
    Case("hidden_tool", "delete_api_key", {"key_id": "k1"}, "hidden"),
    Case("no_rule", "flaky", {}, "default_deny"),
]

CASE_IDS: list[str] = [c.id for c in CASES]
