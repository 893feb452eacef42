"""The strict argument checks that run before the policy: the tool's own schema, finite numbers."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel

from mcp_guard import Guard
from mcp_guard._compat import result_is_error
from mcp_guard._policy.argcheck import non_finite_path, tool_schema_error

SCHEMA = {
    "type": "object",
    "properties": {
        "force": {"type": "boolean"},
        "leverage": {"type": "integer"},
        "order": {"type": "object", "properties": {"qty": {"type": "integer"}}},
    },
}


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ({"force": "true"}, "args.force"),
        ({"force": 1}, "args.force"),
        ({"leverage": "100"}, "args.leverage"),
        ({"leverage": True}, "args.leverage"),
        ({"order": '{"qty": 1000000}'}, "args.order"),
        ({"order": {"qty": "5"}}, "args.order.qty"),
    ],
)
def test_values_a_server_would_coerce_are_refused_naming_the_path(args: dict[str, object], path: str) -> None:
    problem = tool_schema_error(SCHEMA, args)
    assert problem is not None
    assert problem.startswith(path + " must be of type")


def test_well_typed_arguments_pass_and_defaults_are_not_filled_in() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "default": 3}}}
    args: dict[str, object] = {}
    assert tool_schema_error(schema, args) is None
    assert args == {}


def test_a_pydantic_model_is_a_schema_too() -> None:
    class Args(BaseModel):
        force: bool

    assert tool_schema_error(Args, {"force": "true"}) is not None
    assert tool_schema_error(Args, {"force": False}) is None


def test_schema_messages_never_quote_the_value() -> None:
    schema = {"type": "object", "properties": {"pin": {"type": "string", "pattern": "^[0-9]{4}$"}}}
    problem = tool_schema_error(schema, {"pin": "secret-value-xyz"})
    assert problem is not None
    assert "secret-value-xyz" not in problem


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_anywhere_are_found(bad: float) -> None:
    assert non_finite_path({"a": [1, {"b": bad}]}) == "args.a[1].b"
    assert non_finite_path({"a": [1, {"b": 1.5}], "s": "nan"}) is None


def test_deep_nesting_does_not_raise() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10_000):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    node["x"] = math.nan
    assert non_finite_path(deep) is not None
    guard = Guard({"version": "1", "default": "allow"})
    result = guard.invoke("t", deep, lambda **a: "ran", tool_schema=SCHEMA)
    assert result["code"] == "invalid_arguments"


def test_guard_refuses_before_the_tool_runs_and_can_be_told_not_to_check() -> None:
    ran: list[dict[str, object]] = []
    guard = Guard({"version": "1", "default": "allow"})
    result = guard.invoke("t", {"force": "true"}, lambda **a: ran.append(a), tool_schema=SCHEMA)
    assert result["code"] == "invalid_arguments"
    assert ran == []
    lax = Guard({"version": "1", "default": "allow"}, check_tool_schema=False)
    lax.invoke("t", {"force": "true"}, lambda **a: ran.append(a), tool_schema=SCHEMA)
    assert ran == [{"force": "true"}]


def test_error_results_in_both_mcp_spellings() -> None:
    class V1:
        isError = True

    class V2:
        is_error = True

    class Ok:
        is_error = False

    assert result_is_error(V1())
    assert result_is_error(V2())
    assert not result_is_error(Ok())
    assert result_is_error({"is_error": True})
