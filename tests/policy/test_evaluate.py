"""Table-driven tests of ``Policy.evaluate``: every field, precedence rule and limit form of spec section 3."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from mcp_guard import Decision, LimitCharge, Policy, load_policy


def doc(default: str = "deny", **fields: Any) -> dict[str, Any]:
    return {"version": "1", "default": default, **fields}


def lim(**fields: Any) -> dict[str, Any]:
    return {"counter": "c", "window": "minute", "max": 10, **fields}


@dataclass
class Case:
    id: str
    policy: dict[str, Any]
    tool: str
    args: Any = None
    call: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)


AMOUNT_DENY = {"deny_if": {"args.amount": {"gt": 1000}}}

CASES: list[Case] = [
    # --- which rule: exact, glob, server-qualified ---------------------------------------------------------
    Case(
        "exact_allow", doc(tools={"git_log": {}}), "git_log", {}, expect={"action": "allow", "rule": "/tools/git_log"}
    ),
    Case("empty_rule_allows", doc(tools={"x": {}}), "x", expect={"action": "allow", "code": None, "reason": None}),
    Case(
        "exact_beats_glob",
        doc(tools={"git_*": {"action": "deny"}, "git_log": {}}),
        "git_log",
        expect={"action": "allow", "rule": "/tools/git_log"},
    ),
    Case(
        "glob_other_name",
        doc(tools={"git_*": {"action": "deny"}, "git_log": {}}),
        "git_push",
        expect={
            "action": "deny",
            "code": "denied",
            "rule": "/tools/git_*",
            "reason": "git_push is denied by the policy",
        },
    ),
    Case(
        "more_literals_wins",
        doc(tools={"git_*": {"action": "deny"}, "git_lo*": {}}),
        "git_log",
        expect={"action": "allow", "rule": "/tools/git_lo*"},
    ),
    # Only "*" is a wildcard (spec section 8): "?" and "[...]" are literal characters.
    Case("question_mark_is_literal", doc(tools={"git_?og": {}}), "git_log", expect={"code": "default_deny"}),
    Case(
        "question_mark_matches_itself",
        doc(tools={"git_?og": {}}),
        "git_?og",
        expect={"action": "allow", "rule": "/tools/git_?og"},
    ),
    Case("bracket_is_literal", doc(tools={"git_[lp]*": {}}), "git_push", expect={"code": "default_deny"}),
    Case(
        "bracket_then_star",
        doc(tools={"git_[lp]*": {}}),
        "git_[lp]ush",
        expect={"action": "allow", "rule": "/tools/git_[lp]*"},
    ),
    Case("tool_index_is_literal", doc(tools={"tool[1]": {}}), "tool1", expect={"code": "default_deny"}),
    Case(
        "tool_index_exact", doc(tools={"tool[1]": {}}), "tool[1]", expect={"action": "allow", "rule": "/tools/tool[1]"}
    ),
    Case(
        "literal_bracket_is_exact_not_glob",
        doc(tools={"tool[1]": {"action": "deny"}, "tool*": {}}),
        "tool[1]",
        expect={"action": "deny", "rule": "/tools/tool[1]"},
    ),
    Case("star_matches_all", doc(tools={"*": {}}), "anything", expect={"action": "allow", "rule": "/tools/*"}),
    Case(
        "qualified_beats_unqualified",
        doc(tools={"git_log": {"action": "deny"}, "git/git_log": {}}),
        "git_log",
        call={"server": "git"},
        expect={"action": "allow", "rule": "/tools/git~1git_log", "server": "git"},
    ),
    Case(
        "qualified_other_server",
        doc(tools={"git_log": {"action": "deny"}, "git/git_log": {}}),
        "git_log",
        call={"server": "github"},
        expect={"action": "deny", "rule": "/tools/git_log"},
    ),
    Case(
        "qualified_glob_beats_unqualified_exact",
        doc(tools={"git_log": {}, "git/*": {"action": "deny"}}),
        "git_log",
        call={"server": "git"},
        expect={"action": "deny", "code": "denied", "rule": "/tools/git~1*"},
    ),
    Case(
        "qualified_exact_beats_qualified_glob",
        doc(tools={"git/*": {"action": "deny"}, "git/git_log": {}}),
        "git_log",
        call={"server": "git"},
        expect={"action": "allow", "rule": "/tools/git~1git_log"},
    ),
    Case(
        "qualified_needs_server",
        doc(tools={"git/git_log": {}}),
        "git_log",
        expect={"action": "deny", "code": "default_deny", "rule": "/default"},
    ),
    Case(
        "unqualified_matches_any_server",
        doc(tools={"git_log": {}}),
        "git_log",
        call={"server": "whatever"},
        expect={"action": "allow"},
    ),
    Case(
        "pointer_escapes_tilde",
        doc(tools={"a~b": {"action": "deny"}}),
        "a~b",
        expect={"rule": "/tools/a~0b"},
    ),
    # --- ties: strictest action, all limits and conditions ----------------------------------------------
    Case(
        "tie_strictest_approval",
        doc(
            tools={
                "a_*": {"limits": [lim(counter="c1")]},
                "*_b": {"action": "require_approval", "limits": [lim(counter="c2")]},
            }
        ),
        "a_b",
        expect={"action": "require_approval", "rule": "/tools/*_b", "counters": ["c1", "c2"]},
    ),
    Case(
        "tie_strictest_deny_reason",
        doc(tools={"a_*": {}, "*_b": {"action": "deny", "reason": "no b"}, "a*b": {"action": "require_approval"}}),
        "a_b",
        expect={"action": "deny", "code": "denied", "rule": "/tools/*_b", "reason": "no b"},
    ),
    Case(
        "tie_conditions_all_apply_deny_if",
        doc(tools={"a_*": AMOUNT_DENY, "*_b": {"require": {"args.x": {"exists": True}}}}),
        "a_b",
        {"x": 1, "amount": 5000},
        expect={"code": "denied", "rule": "/tools/a_*/deny_if/args.amount-gt"},
    ),
    Case(
        "tie_conditions_all_apply_require",
        doc(tools={"a_*": AMOUNT_DENY, "*_b": {"require": {"args.x": {"exists": True}}}}),
        "a_b",
        {"amount": 1},
        expect={"code": "requirement_failed", "rule": "/tools/*_b/require/args.x-exists"},
    ),
    Case(
        "tie_passes",
        doc(tools={"a_*": AMOUNT_DENY, "*_b": {"require": {"args.x": {"exists": True}}}}),
        "a_b",
        {"amount": 1, "x": 0},
        expect={"action": "allow", "rule": "/tools/a_*"},
    ),
    # --- classes and default ------------------------------------------------------------------------------
    Case(
        "class_read",
        doc(classes={"read": {}}),
        "get",
        call={"annotations": {"readOnlyHint": True}},
        expect={"action": "allow", "rule": "/classes/read", "risk_class": "read"},
    ),
    Case(
        "class_destructive_default_hint",
        doc(default="allow", classes={"destructive": {"action": "deny"}}),
        "drop",
        call={"annotations": {"title": "Drop"}},
        expect={"code": "denied", "rule": "/classes/destructive", "risk_class": "destructive"},
    ),
    Case(
        "class_open_world",
        doc(classes={"open_world": {"action": "require_approval"}}),
        "fetch",
        call={"annotations": {"readOnlyHint": False, "destructiveHint": False}},
        expect={"action": "require_approval", "rule": "/classes/open_world"},
    ),
    Case(
        "class_write",
        doc(classes={"write": {"rate_limit": "5/minute"}}),
        "put",
        call={"annotations": {"destructiveHint": False, "openWorldHint": False}},
        expect={"action": "allow", "rule": "/classes/write", "counters": ["classes.write:rate_limit"]},
    ),
    Case(
        "class_non_bool_hint_is_strict",
        doc(classes={"read": {}}),
        "get",
        call={"annotations": {"readOnlyHint": "yes"}},
        expect={"code": "default_deny", "risk_class": "destructive"},
    ),
    Case(
        "no_annotations_no_class",
        doc(classes={"read": {}}),
        "get",
        expect={"code": "default_deny", "risk_class": None},
    ),
    Case(
        "empty_annotations_no_class",
        doc(classes={"destructive": {"action": "deny"}}, default="allow"),
        "get",
        call={"annotations": {}},
        expect={"action": "allow", "rule": "/default", "risk_class": None},
    ),
    Case(
        "pattern_before_class",
        doc(tools={"drop": {}}, classes={"destructive": {"action": "deny"}}),
        "drop",
        call={"annotations": {"destructiveHint": True}},
        expect={"action": "allow", "rule": "/tools/drop"},
    ),
    Case(
        "default_deny",
        doc(),
        "x",
        expect={"code": "default_deny", "rule": "/default", "reason": "no rule allows x (default: deny)"},
    ),
    Case("default_allow", doc(default="allow"), "x", expect={"action": "allow", "rule": "/default"}),
    Case(
        "default_approval",
        doc(default="require_approval"),
        "x",
        expect={"action": "require_approval", "rule": "/default"},
    ),
    # --- hide -------------------------------------------------------------------------------------------------
    Case(
        "hidden_beats_rule",
        doc(default="allow", hide=["secret_*"], tools={"secret_key": {}}),
        "secret_key",
        expect={"code": "hidden", "rule": "/hide/0"},
    ),
    Case(
        "hidden_first_matching_index",
        doc(default="allow", hide=["x", "a*", "ab"]),
        "ab",
        expect={"code": "hidden", "rule": "/hide/1"},
    ),
    Case(
        "hidden_qualified_only_that_server",
        doc(default="allow", hide=["s/x"]),
        "x",
        call={"server": "t"},
        expect={"action": "allow"},
    ),
    Case(
        "hidden_qualified",
        doc(default="allow", hide=["s/x"]),
        "x",
        call={"server": "s"},
        expect={"code": "hidden", "rule": "/hide/0"},
    ),
    Case(
        "hidden_before_bad_args",
        doc(hide=["x"]),
        "x",
        ["not", "a", "mapping"],
        expect={"code": "hidden"},
    ),
    # --- rule fields --------------------------------------------------------------------------------------------
    Case(
        "deny_reason",
        doc(tools={"git_push": {"action": "deny", "reason": "pushing is off"}}),
        "git_push",
        expect={"code": "denied", "reason": "pushing is off", "rule": "/tools/git_push"},
    ),
    Case(
        "on_deny_alias",
        doc(tools={"git_push": {"action": "deny", "on_deny": "use a PR"}}),
        "git_push",
        expect={"reason": "use a PR"},
    ),
    Case(
        "rule_reason_with_check_detail",
        doc(tools={"pay": {**AMOUNT_DENY, "reason": "large payments need finance"}}),
        "pay",
        {"amount": 5000},
        # The rule denies, so its own reason is shown (spec: "text the model sees when this rule denies"; issue
        # 23), and the failing check follows it, so the model still learns which condition this call broke
        # (issue 10).
        expect={"reason": "large payments need finance (deny_if args.amount > 1000)"},
    ),
    Case(
        "deny_if_fires",
        doc(tools={"pay": AMOUNT_DENY}),
        "pay",
        {"amount": 5000},
        expect={
            "code": "denied",
            "rule": "/tools/pay/deny_if/args.amount-gt",
            "reason": "deny_if args.amount > 1000",
        },
    ),
    Case("deny_if_quiet", doc(tools={"pay": AMOUNT_DENY}), "pay", {"amount": 1000}, expect={"action": "allow"}),
    Case("deny_if_missing_quiet", doc(tools={"pay": AMOUNT_DENY}), "pay", {}, expect={"action": "allow"}),
    Case(
        "deny_if_wrong_type_fires",
        doc(tools={"pay": AMOUNT_DENY}),
        "pay",
        {"amount": "5000"},
        expect={"code": "denied", "reason_has": "wrong type"},
    ),
    Case(
        "require_fails",
        doc(tools={"pay": {"require": {"args.amount": {"lte": 1000}}}}),
        "pay",
        {"amount": 5000},
        expect={
            "code": "requirement_failed",
            "rule": "/tools/pay/require/args.amount-lte",
            "reason": "args.amount is not <= 1000",
        },
    ),
    Case(
        "require_missing_fails",
        doc(tools={"pay": {"require": {"args.amount": {"lte": 1000}}}}),
        "pay",
        {},
        expect={"code": "requirement_failed", "reason_has": "args.amount is missing"},
    ),
    Case(
        "require_wrong_type_fails",
        doc(tools={"pay": {"require": {"args.amount": {"lte": 1000}}}}),
        "pay",
        {"amount": {"value": 1}},
        expect={"code": "requirement_failed", "reason_has": "wrong type"},
    ),
    Case(
        "require_before_deny_if",
        doc(tools={"pay": {"require": {"args.cur": {"eq": "USD"}}, **AMOUNT_DENY}}),
        "pay",
        {"cur": "EUR", "amount": 5000},
        expect={"code": "requirement_failed", "rule": "/tools/pay/require/args.cur-eq"},
    ),
    Case(
        "schema_before_require",
        doc(
            tools={
                "pay": {
                    "require": {"args.cur": {"eq": "USD"}},
                    "args_schema": {"type": "object", "required": ["amount"]},
                }
            }
        ),
        "pay",
        {"cur": "EUR"},
        expect={"code": "invalid_arguments", "rule": "/tools/pay/args_schema"},
    ),
    Case(
        "args_schema_path_in_reason",
        doc(tools={"pay": {"args_schema": {"type": "object", "properties": {"amount": {"type": "integer"}}}}}),
        "pay",
        {"amount": "x"},
        expect={"code": "invalid_arguments", "rule": "/tools/pay/args_schema", "reason_has": "args.amount"},
    ),
    Case(
        "args_schema_ok",
        doc(tools={"pay": {"args_schema": {"type": "object", "properties": {"amount": {"type": "integer"}}}}}),
        "pay",
        {"amount": 3},
        expect={"action": "allow"},
    ),
    Case(
        "args_not_mapping",
        doc(tools={"pay": {}}),
        "pay",
        [1, 2],
        expect={"code": "invalid_arguments", "rule": "/tools/pay", "reason_has": "JSON object"},
    ),
    Case(
        "args_not_mapping_default_allow",
        doc(default="allow"),
        "pay",
        "text",
        expect={"code": "invalid_arguments", "rule": "/default"},
    ),
    Case(
        "approve_if_fires",
        doc(
            tools={
                "pay": {
                    "approve_if": {"args.amount": {"gte": 500}},
                    "approval": {"timeout_s": 30, "description": "big"},
                }
            }
        ),
        "pay",
        {"amount": 500},
        expect={
            "action": "require_approval",
            "rule": "/tools/pay/approve_if/args.amount-gte",
            "reason": "approve_if args.amount >= 500",
            "approval_timeout_s": 30.0,
            "approval_description": "big",
        },
    ),
    Case(
        "approve_if_quiet",
        doc(tools={"pay": {"approve_if": {"args.amount": {"gte": 500}}}}),
        "pay",
        {"amount": 499.5},
        expect={"action": "allow", "rule": "/tools/pay"},
    ),
    Case(
        "approve_if_wrong_type_fires",
        doc(tools={"pay": {"approve_if": {"args.amount": {"gte": 500}}}}),
        "pay",
        {"amount": True},
        expect={"action": "require_approval", "reason_has": "wrong type"},
    ),
    Case(
        "deny_if_before_approval",
        doc(tools={"pay": {"action": "require_approval", **AMOUNT_DENY}}),
        "pay",
        {"amount": 5000},
        expect={"code": "denied"},
    ),
    Case(
        "require_approval_action",
        doc(tools={"rm": {"action": "require_approval", "approval": {"timeout_s": 5}}}),
        "rm",
        {},
        expect={"action": "require_approval", "rule": "/tools/rm", "approval_timeout_s": 5.0},
    ),
    Case(
        "redact_passes_through",
        doc(tools={"login": {"redact": ["args.password"]}}, all_tools={"redact": ["token"]}),
        "login",
        {"password": "p"},
        expect={"redact": ("token", "args.password")},
    ),
    # --- all_tools -------------------------------------------------------------------------------------------------
    Case(
        "all_tools_limits_added",
        doc(
            tools={"x": {"limits": [lim(counter="own")]}}, all_tools={"limits": [lim(counter="every", scope="global")]}
        ),
        "x",
        expect={"action": "allow", "counters": ["every", "own"]},
    ),
    Case(
        "all_tools_not_on_denied",
        doc(all_tools={"limits": [lim(counter="every")]}),
        "x",
        expect={"code": "default_deny", "counters": []},
    ),
    Case(
        "all_tools_on_default_allow",
        doc(default="allow", all_tools={"rate_limit": "100/hour"}),
        "x",
        expect={"action": "allow", "counters": ["all_tools:rate_limit"], "rule": "/default"},
    ),
    Case(
        "all_tools_deny_if",
        doc(default="allow", all_tools={"deny_if": {"identity": {"eq": "mallory"}}}),
        "x",
        call={"identity": "mallory"},
        expect={"code": "denied", "rule": "/all_tools/deny_if/identity-eq"},
    ),
    Case(
        "all_tools_require",
        doc(default="allow", all_tools={"require": {"session": {"exists": True}}}),
        "x",
        expect={"code": "requirement_failed", "rule": "/all_tools/require/session-exists"},
    ),
    Case(
        "all_tools_schema",
        doc(default="allow", all_tools={"args_schema": {"type": "object", "maxProperties": 1}}),
        "x",
        {"a": 1, "b": 2},
        expect={"code": "invalid_arguments", "rule": "/all_tools/args_schema"},
    ),
    Case(
        "all_tools_approve_if",
        doc(default="allow", all_tools={"approve_if": {"tool": {"glob": "delete_*"}}}),
        "delete_x",
        expect={"action": "require_approval", "rule": "/all_tools/approve_if/tool-glob"},
    ),
    # --- limits -----------------------------------------------------------------------------------------------------
    Case(
        "limit_fields",
        doc(
            tools={
                "x": {
                    "limits": [{"counter": "k", "window": "hour", "max": 7, "scope": "global", "count_failures": True}]
                }
            }
        ),
        "x",
        expect={
            "limits": (LimitCharge("k", "global", "", 3600.0, 7, 1, "/tools/x/limits/0", True),),
        },
    ),
    Case(
        "limit_default_scope_grant",
        doc(tools={"x": {"limits": [{"counter": "k", "window": "second", "max": 1}]}}),
        "x",
        call={"identity": "alice"},
        expect={"limits": (LimitCharge("k", "grant", "alice", 1.0, 1, 1, "/tools/x/limits/0"),)},
    ),
    Case(
        "limit_default_counter",
        doc(tools={"x": {"limits": [{"window": "day", "max": 1}]}}),
        "x",
        expect={"counters": ["x:limits/0"], "window_s": [86400.0]},
    ),
    Case(
        "window_seconds_int",
        doc(tools={"x": {"limits": [lim(window=90)]}}),
        "x",
        expect={"window_s": [90.0]},
    ),
    Case(
        "window_seconds_float",
        doc(tools={"x": {"limits": [lim(window=0.5)]}}),
        "x",
        expect={"window_s": [0.5]},
    ),
    Case(
        "window_minute",
        doc(tools={"x": {"limits": [lim(window="minute")]}}),
        "x",
        expect={"window_s": [60.0]},
    ),
    Case(
        "rate_limit_minute",
        doc(tools={"git_log": {"rate_limit": "30/minute"}}),
        "git_log",
        call={"identity": "bob"},
        expect={
            "limits": (LimitCharge("git_log:rate_limit", "grant", "bob", 60.0, 30, 1, "/tools/git_log/rate_limit"),)
        },
    ),
    Case("rate_limit_60s", doc(tools={"x": {"rate_limit": "5/60s"}}), "x", expect={"window_s": [60.0], "max": [5]}),
    Case("rate_limit_bare_seconds", doc(tools={"x": {"rate_limit": "5/10"}}), "x", expect={"window_s": [10.0]}),
    Case(
        "rate_limit_and_limits",
        doc(tools={"x": {"rate_limit": "5/day", "limits": [lim()]}}),
        "x",
        expect={"counters": ["c", "x:rate_limit"]},
    ),
    Case(
        "scope_identity",
        doc(tools={"x": {"limits": [lim(scope="identity")]}}),
        "x",
        call={"identity": "a"},
        expect={"scope_ids": ["a"]},
    ),
    Case("scope_grant_anonymous", doc(tools={"x": {"limits": [lim()]}}), "x", expect={"scope_ids": ["anonymous"]}),
    Case(
        "scope_session",
        doc(tools={"x": {"limits": [lim(scope="session")]}}),
        "x",
        call={"session": "s1", "identity": "a"},
        expect={"scope_ids": ["s1"]},
    ),
    Case(
        "scope_session_anonymous",
        doc(tools={"x": {"limits": [lim(scope="session")]}}),
        "x",
        expect={"scope_ids": ["anonymous"]},
    ),
    Case(
        "scope_global",
        doc(tools={"x": {"limits": [lim(scope="global")]}}),
        "x",
        call={"identity": "a"},
        expect={"scope_ids": [""]},
    ),
    Case("scope_tool", doc(tools={"x*": {"limits": [lim(scope="tool")]}}), "xy", expect={"scope_ids": ["xy"]}),
    Case(
        "scope_tool_server",
        doc(tools={"x*": {"limits": [lim(scope="tool")]}}),
        "xy",
        call={"server": "s"},
        expect={"scope_ids": ["s/xy"]},
    ),
    Case("cost_int", doc(tools={"x": {"limits": [lim(cost=3)]}}), "x", expect={"costs": [3]}),
    Case("cost_zero", doc(tools={"x": {"limits": [lim(cost=0)]}}), "x", expect={"costs": [0]}),
    Case(
        "cost_path",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": 40},
        expect={"costs": [40]},
    ),
    Case(
        "cost_path_ceil",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": 2.1},
        expect={"costs": [3]},
    ),
    Case(
        "cost_path_nested",
        doc(tools={"x": {"limits": [lim(cost="args.order.qty")]}}),
        "x",
        {"order": {"qty": 2}},
        expect={"costs": [2]},
    ),
    Case(
        "cost_path_missing",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {},
        expect={"code": "invalid_arguments", "rule": "/tools/x/limits/0/cost", "reason_has": "args.amount is missing"},
    ),
    Case(
        "cost_path_huge_int",
        doc(tools={"x": {"limits": [lim(cost="args.n")]}}),
        "x",
        {"n": 10**400},
        expect={"costs": [10**400]},
    ),
    Case(
        "cost_path_bool",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": True},
        expect={"code": "invalid_arguments"},
    ),
    Case(
        "cost_path_negative",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": -1},
        expect={"code": "invalid_arguments"},
    ),
    Case(
        "cost_path_string",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": "5"},
        expect={"code": "invalid_arguments"},
    ),
    Case(
        "cost_path_nan",
        doc(tools={"x": {"limits": [lim(cost="args.amount")]}}),
        "x",
        {"amount": math.nan},
        expect={"code": "invalid_arguments"},
    ),
    Case(
        "cost_path_all_tools",
        doc(default="allow", all_tools={"limits": [lim(cost="args.n")]}),
        "x",
        {},
        expect={"code": "invalid_arguments", "rule": "/all_tools/limits/0/cost"},
    ),
]


def _check(decision: Decision, expect: dict[str, Any]) -> None:
    derived = {
        "counters": sorted(c.counter for c in decision.limits),
        "scope_ids": [c.scope_id for c in decision.limits],
        "window_s": [c.window_s for c in decision.limits],
        "costs": [c.cost for c in decision.limits],
        "max": [c.max for c in decision.limits],
    }
    for key, want in expect.items():
        if key == "reason_has":
            assert want in (decision.reason or ""), decision
        elif key in derived:
            assert derived[key] == want, decision
        else:
            assert getattr(decision, key) == want, f"{key}: {decision}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_evaluate(case: Case) -> None:
    policy = Policy.from_dict(case.policy)
    decision = policy.evaluate(case.tool, case.args, **case.call)
    _check(decision, case.expect)
    assert decision.tool == case.tool
    assert decision.policy == policy.hash
    if decision.denied:
        assert decision.code is not None
        assert decision.rule is not None
        assert decision.reason
    else:
        assert decision.code is None
    # Memoised resolution and precomputed decisions must give the same answer the second time.
    assert policy.evaluate(case.tool, case.args, **case.call) == decision


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exposes_matches_outright_decision(case: Case) -> None:
    policy = Policy.from_dict(case.policy)
    shown = policy.exposes(case.tool, server=case.call.get("server"), annotations=case.call.get("annotations"))
    outright = policy.evaluate(case.tool, {}, **case.call)
    # Hidden, or denied by the rule's action itself (its pointer is the rule: /tools/x or /classes/x).
    hidden_or_denied = outright.code in ("hidden", "default_deny") or (
        outright.code == "denied" and (outright.rule or "").count("/") == 2
    )
    assert shown is not hidden_or_denied


# --- operators -------------------------------------------------------------------------------------------------

T, F, MISMATCH = True, False, "mismatch"
OPERATOR_CASES: list[tuple[str, Any, Any, Any]] = [
    ("eq", 1, 1, T),
    ("eq", 1, 1.0, T),
    ("eq", 1, True, MISMATCH),
    ("eq", True, 1, MISMATCH),
    ("eq", True, "true", MISMATCH),
    ("eq", 100, "100", MISMATCH),
    ("eq", "100", 100, MISMATCH),
    ("eq", None, 0, MISMATCH),
    ("eq", 1, math.nan, MISMATCH),
    ("eq", "a", "a", T),
    ("eq", "a", "A", F),
    ("eq", [1, 2], [1, 2], T),
    ("eq", {"k": 1}, {"k": 1}, T),
    ("eq", None, None, F),  # an explicit null is absent (spec section 11): nothing compares equal
    ("neq", 1, 2, T),
    ("neq", 1, 1, F),
    ("neq", "a", "b", T),
    ("neq", "a", 1, MISMATCH),
    ("in", [1, 2], 2, T),
    ("in", [1, 2], 3, F),
    ("in", ["main", "dev"], "main", T),
    ("in", [1], True, MISMATCH),
    ("in", [50, 100], "100", MISMATCH),
    ("in", [50, 100], 100.0, T),
    ("in", [1, "a"], "a", T),
    ("in", [1, "a"], "1", F),
    ("in", [1, "a"], False, MISMATCH),
    ("not_in", [1, 2], 3, T),
    ("not_in", [1, 2], 1, F),
    ("not_in", [1, 2], "1", MISMATCH),
    ("lt", 10, 5, T),
    ("lt", 10, 10, F),
    ("lt", 10, 9.99, T),
    ("lt", 10, "5", MISMATCH),
    ("lt", 10, True, MISMATCH),
    ("lt", 10, {"a": 1}, MISMATCH),
    ("lt", 10, [5], MISMATCH),
    ("lt", 10, None, F),  # null is absent, not a wrong type
    ("lt", 10, math.nan, MISMATCH),
    ("lte", 10, 10, T),
    ("lte", 10, 11, F),
    ("gt", 10, 11, T),
    ("gt", 10, 10, F),
    ("gt", 10, math.inf, MISMATCH),
    ("lt", 10, -math.inf, MISMATCH),
    ("gt", 10, "11", MISMATCH),
    ("gt", 10, 10**400, T),
    ("lt", 0.5, -(10**400), T),
    ("gte", 10, 10, T),
    ("gte", 10, 9.9, F),
    ("gte", 0.5, 1, T),
    ("regex", "^ab", "abc", T),
    ("regex", "b", "abc", T),
    ("regex", "^b", "abc", F),
    ("regex", "^a", "A", F),
    ("regex", "x", 5, MISMATCH),
    ("glob", "a*", "abc", T),
    ("glob", "A*", "abc", F),
    ("glob", "a?c", "abc", F),
    ("glob", "a?c", "a?c", T),
    ("glob", "a*c*e", "abcde", T),
    ("glob", "a*c*e", "aecb", F),
    ("glob", "a*", 1, MISMATCH),
    ("contains", "bc", "abc", T),
    ("contains", "x", "abc", F),
    ("contains", 2, [1, 2], T),
    ("contains", 3, [1, 2], F),
    ("contains", "a", ["a", "b"], T),
    ("contains", 1, [True], F),
    ("contains", "a", 5, MISMATCH),
    ("contains", 1, "abc", MISMATCH),
    ("contains", "a", {"a": 1}, MISMATCH),
    ("exists", True, 0, T),
    ("exists", True, None, F),  # "given and not null" is exists: true
    ("exists", False, 0, F),
]


def _op_policy(kind: str, op: str, expected: Any) -> Policy:
    return Policy.from_dict(doc(tools={"t": {kind: {"args.v": {op: expected}}}}))


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


@pytest.mark.parametrize(("op", "expected", "value", "holds"), OPERATOR_CASES)
def test_operator_require(op: str, expected: Any, value: Any, holds: Any) -> None:
    decision = _op_policy("require", op, expected).evaluate("t", {"v": value})
    if _non_finite(value):  # refused before any check (spec section 8: numbers are finite)
        assert decision.code == "invalid_arguments", decision
        assert decision.reason == "args.v is not a finite number (NaN and Infinity are not valid JSON)"
    elif holds is True:
        assert decision.allowed, decision
    else:
        assert decision.code == "requirement_failed", decision
        assert decision.rule == f"/tools/t/require/args.v-{op}"
        if holds == MISMATCH:
            assert decision.reason is not None
            assert "wrong type" in decision.reason


@pytest.mark.parametrize(("op", "expected", "value", "holds"), OPERATOR_CASES)
def test_operator_deny_if(op: str, expected: Any, value: Any, holds: Any) -> None:
    decision = _op_policy("deny_if", op, expected).evaluate("t", {"v": value})
    if _non_finite(value):
        assert decision.code == "invalid_arguments", decision
    elif holds is False:
        assert decision.allowed, decision
    else:
        assert decision.code == "denied", decision
        assert decision.rule == f"/tools/t/deny_if/args.v-{op}"
        if holds == MISMATCH:
            assert decision.reason is not None
            assert "wrong type" in decision.reason


@pytest.mark.parametrize(("op", "expected", "value", "holds"), OPERATOR_CASES)
def test_operator_approve_if(op: str, expected: Any, value: Any, holds: Any) -> None:
    decision = _op_policy("approve_if", op, expected).evaluate("t", {"v": value})
    if _non_finite(value):
        assert decision.code == "invalid_arguments", decision
    else:
        assert decision.action == ("allow" if holds is False else "require_approval"), decision


@pytest.mark.parametrize(("op", "expected", "value", "holds"), OPERATOR_CASES)
def test_operator_check_alone(op: str, expected: Any, value: Any, holds: Any) -> None:
    # The compiled check on its own (no NaN screen in front): a non-finite number is a type mismatch.
    from mcp_guard._policy.conditions import compile_check

    fires = compile_check("args.v", op, expected, "deny_if")({"v": value}, None, None, None, "t")
    assert (fires is None) is (holds is False), fires
    if holds == MISMATCH:
        assert fires is not None
        assert "wrong type" in fires


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("eq", 1),
        ("neq", 1),
        ("in", [1]),
        ("not_in", [1]),
        ("lt", 1),
        ("lte", 1),
        ("gt", 1),
        ("gte", 1),
        ("regex", "."),
        ("glob", "*"),
        ("contains", "a"),
        ("exists", True),
    ],
)
def test_missing_path_comparison_is_false(op: str, expected: Any) -> None:
    # require fails and deny_if does not fire, whatever the operator.
    assert _op_policy("require", op, expected).evaluate("t", {}).code == "requirement_failed"
    assert _op_policy("deny_if", op, expected).evaluate("t", {}).allowed


def test_exists_false_holds_when_missing() -> None:
    assert _op_policy("require", "exists", False).evaluate("t", {}).allowed
    assert _op_policy("require", "exists", False).evaluate("t", {"v": 1}).code == "requirement_failed"
    assert _op_policy("deny_if", "exists", False).evaluate("t", {}).code == "denied"


@pytest.mark.parametrize(
    ("path", "call", "holds"),
    [
        ("identity", {"identity": "alice"}, True),
        ("identity", {"identity": "bob"}, False),
        ("identity", {}, False),
        ("session", {"session": "alice"}, True),
        ("server", {"server": "alice"}, True),
        ("server", {}, False),
        ("tool", {}, False),
    ],
)
def test_context_paths(path: str, call: dict[str, Any], holds: bool) -> None:
    policy = Policy.from_dict(doc(tools={"t": {"require": {path: {"eq": "alice"}}}}))
    assert policy.evaluate("t", {}, **call).allowed is holds


def test_tool_path() -> None:
    policy = Policy.from_dict(doc(tools={"get_*": {"deny_if": {"tool": {"regex": "_secret$"}}}}))
    assert policy.evaluate("get_secret").code == "denied"
    assert policy.evaluate("get_public").allowed


@pytest.mark.parametrize(
    ("args", "holds"),
    [
        ({"order": {"side": "buy"}}, True),
        ({"order": {"side": "sell"}}, False),
        ({"order": "buy"}, False),
        ({"order": {}}, False),
        ({}, False),
    ],
)
def test_nested_args_path(args: dict[str, Any], holds: bool) -> None:
    policy = Policy.from_dict(doc(tools={"t": {"require": {"args.order.side": {"eq": "buy"}}}}))
    assert policy.evaluate("t", args).allowed is holds


@pytest.mark.parametrize(
    ("args", "holds"),
    [
        ({"items": [{"qty": 1}, {"qty": 2}]}, True),
        ({"items": [{"qty": 1}]}, False),
        ({"items": {"1": {"qty": 2}}}, True),  # a digit segment on a mapping is a key
        ({"items": []}, False),
    ],
)
def test_list_index_path(args: dict[str, Any], holds: bool) -> None:
    policy = Policy.from_dict(doc(tools={"t": {"require": {"args.items.1.qty": {"eq": 2}}}}))
    assert policy.evaluate("t", args).allowed is holds


def test_redacted_value_not_in_reason() -> None:
    policy = Policy.from_dict(
        doc(tools={"login": {"require": {"args.pin": {"regex": "^[0-9]{4}$"}}, "redact": ["pin"]}})
    )
    decision = policy.evaluate("login", {"pin": "hunter2"})
    assert decision.code == "requirement_failed"
    assert decision.reason is not None
    # No argument value is quoted in a reason at all (redacted or not): the check is named instead.
    assert "hunter2" not in decision.reason
    assert decision.reason == "args.pin does not match regex '^[0-9]{4}$'"


def test_long_values_are_truncated_in_reasons() -> None:
    policy = Policy.from_dict(doc(tools={"t": {"require": {"args.s": {"eq": "x"}}}}))
    decision = policy.evaluate("t", {"s": "y" * 10_000})
    assert decision.reason is not None
    assert len(decision.reason) < 300


def test_mapping_args_that_are_not_dicts() -> None:
    from types import MappingProxyType

    policy = Policy.from_dict(doc(tools={"pay": AMOUNT_DENY, "x": {}}))
    assert policy.evaluate("pay", MappingProxyType({"amount": 5000})).code == "denied"
    assert policy.evaluate("x", MappingProxyType({})).allowed


def test_evaluate_does_not_mutate_arguments() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "default": 3}}}
    policy = Policy.from_dict(doc(tools={"t": {"args_schema": schema}}))
    args: dict[str, Any] = {}
    assert policy.evaluate("t", args).allowed
    assert args == {}


def test_caller_specific_limits_are_not_shared_between_callers() -> None:
    policy = Policy.from_dict(doc(tools={"t": {"limits": [lim(), lim(counter="s", scope="session")]}}))
    a = policy.evaluate("t", {}, identity="alice", session="1")
    b = policy.evaluate("t", {}, identity="bob", session="2")
    assert [c.scope_id for c in a.limits] == ["alice", "1"]
    assert [c.scope_id for c in b.limits] == ["bob", "2"]
    assert a.limits[0].key != b.limits[0].key


def test_resolution_cache_is_bounded() -> None:
    from mcp_guard._policy import policy as _policy

    policy = Policy.from_dict(doc(tools={"t_*": {}}))
    for i in range(_policy._CACHE_MAX + 50):
        policy.evaluate(f"t_{i}")
    assert len(policy._cache) == _policy._CACHE_MAX
    assert policy.evaluate(f"t_{_policy._CACHE_MAX + 10}").allowed  # past the cap: still right, just not cached


def test_to_payload_of_a_policy_denial() -> None:
    policy = Policy.from_dict(doc(tools={"git_push": {"action": "deny"}}))
    payload = policy.evaluate("git_push", server="git").to_payload()
    assert payload == {
        "error": "policy_violation",
        "code": "denied",
        "tool": "git_push",
        "server": "git",
        "reason": "git_push is denied by the policy",
        "rule": "/tools/git_push",
        "hint": payload["hint"],
        "policy": policy.hash,
    }


def test_load_policy_sources(tmp_path: Any) -> None:
    from mcp_guard import Guard

    data = doc(tools={"x": {}})
    path = tmp_path / "p.json"
    import json

    path.write_text(json.dumps(data))
    policy = Policy.from_dict(data)
    assert load_policy(policy) is policy
    assert load_policy(data).hash == policy.hash
    assert load_policy(str(path)).hash == policy.hash
    assert load_policy(path).hash == policy.hash
    guard = Guard(policy)
    try:
        assert load_policy(guard) is policy
    finally:
        guard.close()
    with pytest.raises(TypeError, match="a Policy, a Guard, a mapping"):
        load_policy(42)
    with pytest.raises(TypeError):
        load_policy(None)


def test_evaluate_is_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every feature at once, with the clock, files and sockets made to explode: evaluate touches none of them.
    import builtins
    import socket
    import time

    policy = Policy.from_dict(
        doc(
            hide=["h*"],
            all_tools={"limits": [lim(scope="session")], "approve_if": {"args.amount": {"gt": 50}}},
            classes={"read": {}},
            tools={
                "pay": {
                    **AMOUNT_DENY,
                    "require": {"identity": {"regex": "^[a-z]+$"}},
                    "args_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
                    "limits": [lim(cost="args.amount", scope="tool")],
                }
            },
        )
    )

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluate did I/O or read the clock")

    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, boom)
    monkeypatch.setattr(socket, "socket", boom)
    monkeypatch.setattr(builtins, "open", boom)
    calls = [
        ("pay", {"amount": 5}, {"identity": "alice", "session": "s"}),
        ("pay", {"amount": 60}, {"identity": "alice"}),
        ("pay", {"amount": 5000}, {"identity": "alice"}),
        ("pay", {"amount": "x"}, {"identity": "alice"}),
        ("pay", {"amount": 5}, {"identity": "Mallory"}),
        ("hx", {}, {}),
        ("get", {}, {"annotations": {"readOnlyHint": True}}),
        ("other", {}, {}),
    ]
    results = [policy.evaluate(tool, args, **call).action for tool, args, call in calls]
    assert results == ["allow", "require_approval", "deny", "deny", "deny", "deny", "allow", "deny"]


def test_concurrent_evaluation_matches_serial() -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = doc(tools={f"t{i}_*": {"rate_limit": "5/minute"} for i in range(50)} | {"t1_x": AMOUNT_DENY})
    names = [f"t{i % 60}_{j}" for i in range(60) for j in ("x", "y")]
    serial = Policy.from_dict(data)
    expected = [serial.evaluate(n, {"amount": 2000}, identity=n) for n in names]
    shared = Policy.from_dict(data)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            got = list(pool.map(lambda n: shared.evaluate(n, {"amount": 2000}, identity=n), names))
            assert got == expected


def test_non_string_names_are_a_type_error() -> None:
    policy = Policy.from_dict(doc(tools={"x*": {}}))
    with pytest.raises(TypeError, match="must be strings"):
        policy.evaluate(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be strings"):
        policy.exposes("x", server=5)  # type: ignore[arg-type]


def test_non_string_identity_is_used_as_text() -> None:
    policy = Policy.from_dict(doc(tools={"x": {"limits": [lim()]}}))
    assert policy.evaluate("x", identity=42).limits[0].scope_id == "42"  # type: ignore[arg-type]


def test_may_require_approval_says_which_tools_can_be_held_for_a_human() -> None:
    from mcp_guard import Policy

    policy = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "hide": ["secret"],
            "tools": {
                "read": {},
                "wire": {"action": "require_approval"},
                "withdraw": {"approve_if": {"args.amount": {"gt": 100}}},
                "secret": {"action": "require_approval"},
                "nuke": {"action": "deny"},
            },
            "classes": {"destructive": {"action": "require_approval"}},
        }
    )
    assert not policy.may_require_approval("read")
    assert policy.may_require_approval("wire")
    assert policy.may_require_approval("withdraw")
    assert not policy.may_require_approval("secret")  # hidden: refused before any human is asked
    assert not policy.may_require_approval("nuke")
    assert not policy.may_require_approval("unknown")  # default deny
    assert policy.may_require_approval("unknown", annotations={"destructiveHint": True})


def test_a_property_named_like_a_newer_keyword_is_just_a_name() -> None:
    from mcp_guard import Policy

    policy = Policy.from_dict(
        {
            "version": "1",
            "default": "deny",
            "tools": {"t": {"args_schema": {"type": "object", "properties": {"prefixItems": {"type": "integer"}}}}},
        }
    )
    assert policy.evaluate("t", {"prefixItems": 3}).allowed
    assert policy.evaluate("t", {"prefixItems": "x"}).code == "invalid_arguments"
