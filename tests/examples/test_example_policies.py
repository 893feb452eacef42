"""The example policy (examples/policies/exchange.json and .yaml) does what its descriptions say.

Every rate-limit check runs through a real Guard with an injected clock: no sleeping to wait for windows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import Guard, Policy
from tests.support.clock import FakeClock

POLICIES = Path(__file__).resolve().parents[2] / "examples" / "policies"
JSON_POLICY = POLICIES / "exchange.json"
YAML_POLICY = POLICIES / "exchange.yaml"
ADDRESS = "0x" + "ab" * 20


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(JSON_POLICY)


def ok(**kwargs: Any) -> dict[str, Any]:
    return {"ok": True, **kwargs}


def test_json_and_yaml_are_the_same_policy(policy: Policy) -> None:
    assert Policy.load(YAML_POLICY).hash == policy.hash


@pytest.mark.parametrize("path", [JSON_POLICY, YAML_POLICY], ids=["json", "yaml"])
def test_cli_validate_accepts_the_example(path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mcp_guard._cli.main import main; sys.exit(main())",
            "validate",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout
    assert "warning" not in (run.stdout + run.stderr).lower()


def test_reads_are_allowed_and_unknown_tools_denied(policy: Policy) -> None:
    for tool in ("get_balance", "get_open_orders", "get_ticker"):
        assert policy.evaluate(tool, {}, server="exchange").action == "allow"
    refused = policy.evaluate("transfer_all", {})
    assert (refused.action, refused.code, refused.rule) == ("deny", "default_deny", "/default")


def test_delete_api_key_is_hidden(policy: Policy) -> None:
    assert not policy.exposes("delete_api_key", server="exchange")
    decision = policy.evaluate("delete_api_key", {"api_key_id": "key-trading"})
    assert decision.code == "hidden"


def test_order_cap_symbols_and_schema(policy: Policy) -> None:
    assert policy.evaluate("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 5000}).action == "allow"
    over = policy.evaluate("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 5001})
    assert (over.code, over.rule) == ("denied", "/tools/place_order/deny_if/args.amount-gt")
    # Issue 10: the allow rule's own reason ("Orders are capped at 5,000 USD") is not the refusal's text;
    # the failing check is reported, so the symbol refusal below does not talk about the cap.
    assert over.reason == "deny_if args.amount > 5000"
    doge = policy.evaluate("place_order", {"symbol": "DOGEUSD", "side": "buy", "amount": 10})
    assert doge.code == "requirement_failed"
    assert doge.reason is not None
    assert "5,000" not in doge.reason
    extra = policy.evaluate("place_order", {"symbol": "BTCUSD", "side": "buy", "amount": 10, "leverage": 10})
    assert extra.code == "invalid_arguments"
    lower = policy.evaluate("place_order", {"symbol": "btcusd", "side": "buy", "amount": 10})
    assert lower.code == "invalid_arguments"


def test_withdrawals_need_approval_above_threshold_or_in_crypto(policy: Policy) -> None:
    small = policy.evaluate("withdraw", {"asset": "USD", "amount": 1000, "address": ADDRESS}, identity="alice")
    assert small.action == "allow"
    large = policy.evaluate("withdraw", {"asset": "USD", "amount": 1000.5, "address": ADDRESS}, identity="alice")
    assert (large.action, large.rule) == ("require_approval", "/tools/withdraw/approve_if/args.amount-gt")
    crypto = policy.evaluate("withdraw", {"asset": "BTC", "amount": 0.1, "address": ADDRESS}, identity="alice")
    assert crypto.action == "require_approval"
    bad = policy.evaluate("withdraw", {"asset": "USD", "amount": 5, "address": "my-wallet"}, identity="alice")
    assert bad.code == "requirement_failed"
    guest = policy.evaluate("withdraw", {"asset": "USD", "amount": 5, "address": ADDRESS}, identity="guest-7")
    assert (guest.code, guest.rule) == ("denied", "/tools/withdraw/deny_if/identity-glob")


def test_unnamed_tools_are_treated_by_their_annotations(policy: Policy) -> None:
    read = policy.evaluate("get_fees", {}, annotations={"readOnlyHint": True})
    assert read.action == "allow"  # get_* matches by name first
    new_read = policy.evaluate("list_trades", {}, annotations={"readOnlyHint": True})
    assert (new_read.action, new_read.risk_class) == ("allow", "read")
    new_write = policy.evaluate(
        "set_leverage", {}, annotations={"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}
    )
    assert new_write.action == "require_approval"
    destructive = policy.evaluate("close_account", {}, annotations={"destructiveHint": True})
    assert (destructive.action, destructive.code) == ("deny", "denied")


def test_listen_keys_30_per_minute_per_identity(policy: Policy) -> None:
    clock = FakeClock()
    guard = Guard(policy, store="memory://", clock=clock)
    results = [guard.invoke("create_listen_key", {}, ok, identity="alice", session=f"s{i}") for i in range(31)]
    assert results[:30] == [{"ok": True}] * 30
    assert results[30]["code"] == "rate_limited"
    assert results[30]["rule"] == "/tools/create_listen_key/limits/0"
    assert 0 < results[30]["retry_after_s"] <= 60
    # Another identity has its own budget; alice gets hers back once the window has slid past.
    assert guard.invoke("create_listen_key", {}, ok, identity="bob", session="b") == {"ok": True}
    clock.now += 60.01
    assert guard.invoke("create_listen_key", {}, ok, identity="alice", session="later") == {"ok": True}


def test_daily_spend_cap_counts_the_amount(policy: Policy) -> None:
    clock = FakeClock()
    guard = Guard(policy, store="memory://", clock=clock)

    def order(amount: int, who: str = "alice") -> Any:
        args = {"symbol": "BTCUSD", "side": "buy", "amount": amount}
        return guard.invoke("place_order", args, lambda **kw: ok(**kw), identity=who, session="s")

    assert order(5000)["ok"]
    assert order(4000)["ok"]
    refused = order(1001)
    assert (refused["code"], refused["rule"]) == ("rate_limited", "/tools/place_order/limits/0")
    assert order(1000)["ok"]  # exactly 10,000 USD in the day
    assert order(5000, who="bob")["ok"]
    clock.now += 86_400.01
    assert order(5000)["ok"]
