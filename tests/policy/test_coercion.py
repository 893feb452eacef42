"""Coercion bypass (issue 9, spec section 8): conditions compare JSON types exactly, and a value a tool would
coerce into a forbidden one is never admitted by the evaluator.

The oracle is pydantic itself in lax mode (what a FastMCP or LangChain tool runs its arguments through):
every value it turns into the forbidden one must be refused (``deny_if``) or held (``approve_if``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from mcp_guard import Policy


def policy(rule: dict[str, Any], default: str = "deny") -> Policy:
    return Policy.from_dict({"version": "1", "default": default, "tools": {"t": rule}})


FORCE = policy({"deny_if": {"args.force": {"eq": True}}})
LEVERAGE = policy({"deny_if": {"args.leverage": {"in": [50, 100]}}})
QTY = policy({"deny_if": {"args.order.qty": {"gt": 100}}})
FORCE_APPROVE = policy({"approve_if": {"args.force": {"eq": True}}})

# Values that look like something else: numbers, booleans and JSON inside strings, and their neighbours.
tricky_scalars = st.one_of(
    st.sampled_from(
        ["true", "True", "TRUE", "1", "yes", "on", "y", "t", "false", "0", "off", "no", "100", "50", "100.0", "1e2"]
    ),
    st.sampled_from(["0x64", " 100", "100 ", "+100", "50.0", "", "null", "[100]", '{"qty": 1000000}']),
    st.booleans(),
    st.integers(min_value=-5, max_value=200),
    st.sampled_from([0.0, 1.0, 50.0, 100.0, 100.5, 1e2]),
    st.text(max_size=6),
    st.none(),
)


def _lax(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return ValidationError


BOOL = TypeAdapter(bool)
INT = TypeAdapter(int)


@settings(max_examples=300, deadline=None)
@given(value=tricky_scalars)
@example(value="true")
@example(value="1")
@example(value=1)
@example(value="yes")
@example(value="on")
@example(value=True)
def test_deny_if_eq_true_never_admits_what_bool_coerces_to_true(value: Any) -> None:
    decision = FORCE.evaluate("t", {"force": value})
    if _lax(BOOL, value) is True:
        assert not decision.allowed, (value, decision)
        assert decision.code == "denied"
    held = FORCE_APPROVE.evaluate("t", {"force": value})
    if _lax(BOOL, value) is True:
        assert held.action == "require_approval", (value, held)


@settings(max_examples=300, deadline=None)
@given(value=tricky_scalars)
@example(value="100")
@example(value="50")
@example(value=100.0)
@example(value=True)
def test_deny_if_in_never_admits_what_int_coerces_into_the_list(value: Any) -> None:
    decision = LEVERAGE.evaluate("t", {"leverage": value})
    if _lax(INT, value) in (50, 100):
        assert not decision.allowed, (value, decision)


class Order(BaseModel):
    qty: int


class Call(BaseModel):
    order: Order


def _server_qty(order: Any) -> Any:
    # FastMCP pre-parses a JSON string given for an object parameter, then validates in lax mode.
    if isinstance(order, str):
        try:
            order = json.loads(order)
        except ValueError:
            return None
    try:
        return Call.model_validate({"order": order}).order.qty
    except ValidationError:
        return None


@settings(max_examples=300, deadline=None)
@given(
    order=st.one_of(
        st.builds(lambda q: json.dumps({"qty": q}), st.integers(-10, 10**7)),
        st.builds(lambda q: {"qty": q}, tricky_scalars),
        st.builds(lambda q: [{"qty": q}], st.integers(0, 10**6)),
        tricky_scalars,
    )
)
@example(order='{"qty": 1000000}')
@example(order={"qty": "1000000"})
def test_nested_deny_if_never_admits_a_json_string_order(order: Any) -> None:
    decision = QTY.evaluate("t", {"order": order})
    qty = _server_qty(order)
    if qty is not None and qty > 100:
        assert not decision.allowed, (order, decision)


@pytest.mark.parametrize(
    ("rule", "args", "code"),
    [
        # A path through a string or a list is the strict side: deny_if fires, require fails.
        ({"deny_if": {"args.order.qty": {"gt": 100}}}, {"order": '{"qty": 5}'}, "denied"),
        ({"deny_if": {"args.order.qty": {"gt": 100}}}, {"order": [{"qty": 5}]}, "denied"),
        ({"require": {"args.order.qty": {"lte": 100}}}, {"order": "x"}, "requirement_failed"),
        ({"require": {"args.order.qty": {"exists": True}}}, {"order": 7}, "requirement_failed"),
        ({"deny_if": {"args.order.qty": {"exists": False}}}, {"order": "x"}, "denied"),
        # A simply absent path keeps the old rule: deny_if quiet, require fails.
        ({"deny_if": {"args.order.qty": {"gt": 100}}}, {"order": {}}, None),
        ({"deny_if": {"args.order.qty": {"gt": 100}}}, {}, None),
        ({"require": {"args.order.qty": {"lte": 100}}}, {"order": {}}, "requirement_failed"),
        # Digit segments still index lists.
        ({"deny_if": {"args.to.0": {"eq": "x"}}}, {"to": ["x"]}, "denied"),
        ({"deny_if": {"args.to.0": {"eq": "x"}}}, {"to": []}, None),
    ],
)
def test_paths_through_non_objects_are_the_strict_side(rule: dict[str, Any], args: Any, code: str | None) -> None:
    decision = policy(rule, default="allow").evaluate("t", args)
    assert decision.code == code, decision
    through = not isinstance(args.get("order", {}), dict) and "args.order.qty" in str(rule)
    if through:
        assert "part of the path is not an object" in (decision.reason or ""), decision


@pytest.mark.parametrize(
    ("expected", "value", "fires"),
    [
        (True, "true", True),  # a string is not a boolean: mismatch, strict side
        (True, 1, True),  # a number is not a boolean
        (1, True, True),  # a boolean is not a number
        (1, 1.0, True),  # the same number: equal, fires
        (100, "100", True),
        ("a", "a", True),
        ("a", "b", False),
        (None, None, False),  # an explicit null is absent (spec section 11): eq null never fires
    ],
)
def test_eq_types_exactly(expected: Any, value: Any, fires: bool) -> None:
    decision = policy({"deny_if": {"args.v": {"eq": expected}}}).evaluate("t", {"v": value})
    assert decision.allowed is not fires


def test_mixed_type_lists() -> None:
    p = policy({"require": {"args.v": {"in": [1, "1", True]}}})
    assert p.evaluate("t", {"v": 1}).allowed
    assert p.evaluate("t", {"v": 1.0}).allowed  # 1 and 1.0 are the same number
    assert p.evaluate("t", {"v": "1"}).allowed
    assert p.evaluate("t", {"v": True}).allowed
    assert p.evaluate("t", {"v": False}).code == "requirement_failed"  # a boolean, but not in the list
    assert p.evaluate("t", {"v": None}).code == "requirement_failed"  # null: no member has that type
    assert p.evaluate("t", {"v": 2}).code == "requirement_failed"


SECRETS = ["sk-live-0123456789abcdef", "hunter2", "4242", 'a\\b"c\nd', "1000000"]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize(
    "rule",
    [
        {"require": {"args.v": {"eq": "x"}}},
        {"require": {"args.v": {"regex": "^[0-9]{4}$"}}},
        {"require": {"args.v": {"lte": 5}}},
        {"deny_if": {"args.v": {"contains": "k"}}},
        {"deny_if": {"args.v": {"neq": "x"}}},
        {"deny_if": {"args.v": {"gt": 5}}},
        {"approve_if": {"args.v": {"glob": "*"}}},
        {"require": {"args.v.inner": {"exists": True}}},
        {"limits": [{"window": 60, "max": 5, "cost": "args.v"}]},
    ],
)
def test_reasons_never_quote_an_argument_value(rule: dict[str, Any], secret: str) -> None:
    p = policy(rule)
    for value in (secret, {"inner": secret}, [secret], -int(secret) if secret.isdigit() else secret):
        decision = p.evaluate("t", {"v": value})
        text = json.dumps(decision.to_payload()) + (decision.reason or "")
        assert secret not in text, decision
        assert secret not in repr(decision.reason), decision


def test_non_finite_numbers_are_invalid_arguments_where_a_check_reads_arguments() -> None:
    p = policy({"deny_if": {"args.amount": {"gt": 1000}}})
    for bad in (math.nan, math.inf, -math.inf):
        for args in ({"amount": bad}, {"other": bad}, {"x": {"y": [1, bad]}}):
            decision = p.evaluate("t", args)
            assert decision.code == "invalid_arguments", (args, decision)
            assert decision.reason is not None
            assert "not a finite number" in decision.reason
    # A rule that reads no argument gives the same answer whatever the numbers (the Guard refuses them anyway).
    assert policy({}).evaluate("t", {"amount": math.nan}).allowed


def test_a_rules_reason_leads_and_the_failing_check_follows() -> None:
    # Spec section 3: a rule's ``reason`` is "the text the model sees when this rule denies", and a firing
    # deny_if or a failing require is this rule denying (issue 23: it was dropped in silence). The check still
    # follows in brackets, so the model is never told only "capped at 5,000 USD" when the symbol is wrong
    # (issue 10).
    p = policy(
        {
            "reason": "Orders are capped at 5,000 USD",
            "require": {"args.symbol": {"in": ["BTCUSD", "ETHUSD"]}},
            "deny_if": {"args.amount": {"gt": 5000}},
        }
    )
    bad_symbol = p.evaluate("t", {"symbol": "DOGE", "amount": 5})
    assert bad_symbol.reason == 'Orders are capped at 5,000 USD (args.symbol is not in ["BTCUSD", "ETHUSD"])'
    too_big = p.evaluate("t", {"symbol": "BTCUSD", "amount": 6000})
    assert too_big.reason == "Orders are capped at 5,000 USD (deny_if args.amount > 5000)"
    assert too_big.to_payload()["reason"] == too_big.reason
    # Without a reason of its own, the check alone; a deny rule's own reason is the model's text.
    assert policy({"deny_if": {"args.amount": {"gt": 5000}}}).evaluate("t", {"amount": 6000}).reason == (
        "deny_if args.amount > 5000"
    )
    denied = policy({"action": "deny", "reason": "use the sandbox"}).evaluate("t", {})
    assert denied.reason == "use the sandbox"
    # all_tools has no reason: its checks speak for themselves beside a tool rule's reason.
    both = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "all_tools": {"deny_if": {"identity": {"eq": "mallory"}}},
            "tools": {"t": {"reason": "t is for alice"}},
        }
    )
    assert both.evaluate("t", {}, identity="mallory").reason == "deny_if identity == 'mallory'"


def test_a_refusal_is_built_once_per_check() -> None:
    p = policy({"deny_if": {"args.amount": {"gt": 1000}}})
    first = p.evaluate("t", {"amount": 5000})
    assert p.evaluate("t", {"amount": 9000}) is first  # no values in the reason: the same refusal object
    assert first.to_payload()["reason"] == "deny_if args.amount > 1000"


# --- any arguments: a decision, never an exception ---------------------------------------------------------

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["true", "1", "100", '{"qty": 1}', "[1]", "null", "NaN", "1e999"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)

ALL_OPS_POLICY = Policy.from_dict(
    {
        "version": "1",
        "default": "allow",
        "all_tools": {"limits": [{"window": 60, "max": 100, "cost": "args.n"}]},
        "tools": {
            "t": {
                "require": {"args.a": {"exists": True}, "args.s": {"regex": "^(a+)+$"}},
                "deny_if": {
                    "args.n": {"gt": 5},
                    "args.a.b.c": {"eq": True},
                    "args.l": {"contains": 1},
                    "args.g": {"glob": "x*y"},
                    "args.i": {"in": [1, "1", None, [1]]},
                    "args.o": {"neq": {"k": 1}},
                },
                "approve_if": {"args.a": {"not_in": ["x"]}, "args.n": {"lte": 0.5}},
                "args_schema": {"type": "object"},
            },
        },
    }
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": [value]}
    return value


@settings(max_examples=200, deadline=None)
@given(
    args=st.dictionaries(st.sampled_from(["a", "n", "s", "l", "g", "i", "o", "x"]), json_like, max_size=7),
    tool=st.sampled_from(["t", "other"]),
)
@example(args={"n": 10**5000}, tool="t")
@example(args={"n": math.nan}, tool="t")
def test_evaluate_never_raises(args: dict[str, Any], tool: str) -> None:
    decision = ALL_OPS_POLICY.evaluate(tool, args, identity="i", session="s")
    assert decision.action in ("allow", "deny", "require_approval")
    json.dumps(decision.to_payload())


@pytest.mark.parametrize("key", ["a", "o"])
def test_evaluate_on_arguments_nested_10000_deep(key: str) -> None:
    # Outside hypothesis: its report printer recurses on such values; the evaluator must not.
    decision = ALL_OPS_POLICY.evaluate("t", {"s": "aaa", "a": 1, key: _deep(10_000)})
    assert decision.action in ("allow", "deny", "require_approval")
    json.dumps(decision.to_payload())


def test_null_on_the_way_is_absent_but_a_string_is_the_strict_side() -> None:
    # A pydantic tool fills an optional object it was not given with None: nothing is there to read, so
    # the check does not fire; a JSON string where an object belongs still counts as firing.
    policy = Policy.from_dict(
        {"version": "1", "default": "allow", "tools": {"t": {"deny_if": {"args.order.qty": {"gt": 100}}}}}
    )
    assert policy.evaluate("t", {"order": None}).action == "allow"
    assert policy.evaluate("t", {"order": '{"qty": 1000}'}).code == "denied"
    assert policy.evaluate("t", {"order": {"qty": 1000}}).code == "denied"
