"""The sends of issue 9 an attacker makes to get past a policy through a server's type coercion.

Each send is arguments for the recording server's ``transfer`` tool (``amount: int, force: bool = False,
leverage: int = 1, order: Order | None = None``); the server (pydantic) would coerce every one of them into a
value the policy forbids: ``force=True``, ``leverage`` 50 or 100, ``order.qty`` over 100, ``amount`` over
10,000, or a non-finite number. The judge is the server's own record: none of these may ever run.
"""

from __future__ import annotations

import math
from typing import Any

CONDITIONS: dict[str, Any] = {
    "args.force": {"eq": True},
    "args.leverage": {"in": [50, 100]},
    "args.order.qty": {"gt": 100},
    "args.amount": {"gt": 10_000},
}


def policy(kind: str) -> dict[str, Any]:
    """``kind`` "deny_if": the conditions refuse; "approve_if": they ask a human (who, in these tests, says no)."""
    return {
        "version": "1",
        "default": "allow",
        "hide": ["admin_reset"],
        "tools": {"transfer": {kind: CONDITIONS}, "exchange/withdraw": {"action": "deny"}},
    }


ORDER_TEXT = '{"symbol": "BTC", "qty": 1000000}'

# (label, arguments): the sixteen sends.
SENDS: list[tuple[str, dict[str, Any]]] = [
    ("force-str-true", {"amount": 5, "force": "true"}),
    ("force-str-True", {"amount": 5, "force": "True"}),
    ("force-int-1", {"amount": 5, "force": 1}),
    ("force-str-1", {"amount": 5, "force": "1"}),
    ("force-str-yes", {"amount": 5, "force": "yes"}),
    ("force-str-on", {"amount": 5, "force": "on"}),
    ("leverage-str-100", {"amount": 5, "leverage": "100"}),
    ("leverage-str-50", {"amount": 5, "leverage": "50"}),
    ("leverage-float-100", {"amount": 5, "leverage": 100.0}),
    ("order-json-string", {"amount": 5, "order": ORDER_TEXT}),
    ("order-qty-str", {"amount": 5, "order": {"symbol": "BTC", "qty": "1000000"}}),
    ("order-qty-float", {"amount": 5, "order": {"symbol": "BTC", "qty": 1e6}}),
    ("amount-str", {"amount": "50000"}),
    ("amount-float", {"amount": 50000.0}),
    ("amount-nan", {"amount": math.nan}),
    ("amount-inf", {"amount": math.inf}),
]
CONTROL: dict[str, Any] = {"amount": 5, "memo": "control"}
"""An allowed send: it must run, or the tests prove nothing about the path."""

REFUSED_CODES = {"invalid_arguments", "denied", "approval_denied", "approval_required"}


def ran_attacks(record: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transfers the server ran other than the control: must be empty."""
    return [r for r in record if r["tool"] == "transfer" and r["args"].get("memo") != "control"]


def never_approve(request: Any) -> bool:
    return False
