"""Loading policies: JSON / YAML / dict, the hash, the JSON Schema, and every kind of broken policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mcp_guard import Policy, PolicyError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"

GOOD: dict[str, Any] = {
    "version": "1",
    "name": "demo",
    "description": "every field once",
    "default": "deny",
    "hide": ["admin_*", "github/delete_repo"],
    "all_tools": {"limits": [{"counter": "all", "window": 60, "max": 1000, "scope": "global"}]},
    "classes": {"read": {}, "destructive": {"action": "require_approval", "approval": {"timeout_s": 60}}},
    "tools": {
        "git_log": {"rate_limit": "30/minute", "description": "read history"},
        "git_*": {"action": "deny", "reason": "ask first"},
        "github/create_issue": {
            "require": {"args.repo": {"in": ["a/b", "c/d"]}},
            "deny_if": {"args.title": {"regex": "(?i)urgent"}},
            "approve_if": {"args.labels": {"contains": "security"}},
            "args_schema": {"type": "object", "required": ["repo", "title"]},
            "limits": [{"counter": "issues", "window": "day", "max": 20, "scope": "session", "cost": 1}],
            "redact": ["args.body"],
            "approval": {"timeout_s": 30, "description": "issue"},
        },
        "pay": {
            "limits": [
                {"counter": "spend", "window": "day", "max": 5000, "cost": "args.amount", "count_failures": True}
            ]
        },
        "old": {"on_deny": "retired", "action": "deny"},
    },
}

GOOD_YAML = """
version: "1"
name: demo
description: every field once
default: deny
hide: [admin_*, github/delete_repo]
all_tools:
  limits: [{counter: all, window: 60, max: 1000, scope: global}]
classes:
  read: {}
  destructive: {action: require_approval, approval: {timeout_s: 60}}
tools:
  git_log: {rate_limit: 30/minute, description: read history}
  git_*: {action: deny, reason: ask first}
  github/create_issue:
    require: {args.repo: {in: [a/b, c/d]}}
    deny_if: {args.title: {regex: "(?i)urgent"}}
    approve_if: {args.labels: {contains: security}}
    args_schema: {type: object, required: [repo, title]}
    limits: [{counter: issues, window: day, max: 20, scope: session, cost: 1}]
    redact: [args.body]
    approval: {timeout_s: 30, description: issue}
  pay:
    limits: [{counter: spend, window: day, max: 5000, cost: args.amount, count_failures: true}]
  old: {on_deny: retired, action: deny}
"""


def test_every_field_loads_from_dict_json_and_yaml(tmp_path: Path) -> None:
    a = Policy.from_dict(GOOD)
    b = Policy.from_json(json.dumps(GOOD))
    c = Policy.from_yaml(GOOD_YAML)
    (tmp_path / "p.json").write_text(json.dumps(GOOD, indent=2))
    (tmp_path / "p.yaml").write_text(GOOD_YAML)
    (tmp_path / "p.yml").write_text(GOOD_YAML)
    hashes = {p.hash for p in (a, b, c, *(Policy.load(tmp_path / n) for n in ("p.json", "p.yaml", "p.yml")))}
    assert len(hashes) == 1, "the same document gives the same hash whatever its format"
    assert a.hash.startswith("sha256:")
    assert len(a.hash) == 7 + 64
    assert (a.name, a.description, a.default) == ("demo", "every field once", "deny")


def test_hash_is_canonical_and_sensitive() -> None:
    reordered = dict(reversed(list(GOOD.items())))
    assert Policy.from_dict(reordered).hash == Policy.from_dict(GOOD).hash
    changed = json.loads(json.dumps(GOOD))
    changed["tools"]["git_log"]["rate_limit"] = "31/minute"
    assert Policy.from_dict(changed).hash != Policy.from_dict(GOOD).hash


def test_policy_does_not_follow_later_changes_to_the_callers_dict() -> None:
    data = json.loads(json.dumps(GOOD))
    policy = Policy.from_dict(data)
    before = policy.evaluate("git_log").action
    data["tools"]["git_log"]["action"] = "deny"
    data["default"] = "allow"
    assert policy.evaluate("git_log").action == before == "allow"
    assert policy.rule_at("/tools/git_log") == GOOD["tools"]["git_log"]


@pytest.mark.parametrize("name", ["binance_us.json", "binance_futures.json"])
def test_policylayer_policies_load_unchanged(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    data = json.loads(text)
    policy = Policy.load(EXAMPLES / name)
    assert policy.hash == Policy.from_dict(data).hash
    ((tool, rule),) = data["tools"].items()
    decision = policy.evaluate(tool, {}, identity="grant-1")
    assert decision.allowed
    (charge,) = decision.limits
    spec = rule["limits"][0]
    assert (charge.counter, charge.max, charge.window_s, charge.scope, charge.scope_id) == (
        spec["counter"],
        spec["max"],
        60.0,
        "grant",
        "grant-1",
    )
    assert policy.evaluate("some_other_tool").code == "default_deny"


def test_json_schema_accepts_the_example_policies() -> None:
    schema = Policy.json_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in sorted(EXAMPLES.glob("*.json")):
        errors = list(validator.iter_errors(json.loads(path.read_text())))
        assert not errors, (path.name, errors[0].message)
    assert not list(validator.iter_errors(GOOD))
    assert list(validator.iter_errors({"version": "1"})), "default is required"
    assert list(validator.iter_errors({"version": "1", "default": "deny", "tols": {}})), "unknown fields are errors"


# --- broken policies --------------------------------------------------------------------------------------------


def base(**fields: Any) -> dict[str, Any]:
    return {"version": "1", "default": "deny", **fields}


def limit(**fields: Any) -> dict[str, Any]:
    return {"counter": "c", "window": "minute", "max": 1, **fields}


# (id, document, path that must be named, words the message must contain)
BROKEN: list[tuple[str, Any, str, str]] = [
    ("wrong_version", {"version": "2", "default": "deny"}, "/version", 'allowed: "1"'),
    ("version_bool", {"version": True, "default": "deny"}, "/version", "unsupported version"),
    ("missing_version", {"default": "deny"}, "/version", "required field 'version'"),
    ("missing_default", {"version": "1"}, "/default", "allowed: allow, deny, require_approval"),
    ("unknown_default", base(default="block"), "/default", "'block' is not an action"),
    (
        "unknown_action",
        base(tools={"x": {"action": "permit"}}),
        "/tools/x/action",
        "allowed: allow, deny, require_approval",
    ),
    (
        "unknown_top_field",
        base(tool={}),
        "/tool",
        "unknown field 'tool' (did you mean 'tools'?); allowed fields: version, default, tools",
    ),
    (
        "unknown_rule_field",
        base(tools={"x": {"acton": "deny"}}),
        "/tools/x/acton",
        "allowed fields: action, reason, on_deny",
    ),
    (
        "unknown_limit_field",
        base(tools={"x": {"limits": [limit(per="minute")]}}),
        "/tools/x/limits/0/per",
        "unknown field 'per'",
    ),
    (
        "unknown_approval_field",
        base(tools={"x": {"approval": {"timeout": 3}}}),
        "/tools/x/approval/timeout",
        "timeout_s",
    ),
    ("unknown_all_tools_field", base(all_tools={"limit": []}), "/all_tools/limit", "unknown field 'limit'"),
    ("negative_max", base(tools={"x": {"limits": [limit(max=-1)]}}), "/tools/x/limits/0/max", "an integer >= 0"),
    ("float_max", base(tools={"x": {"limits": [limit(max=1.5)]}}), "/tools/x/limits/0/max", "not an integer"),
    ("bool_max", base(tools={"x": {"limits": [limit(max=True)]}}), "/tools/x/limits/0/max", "boolean"),
    ("string_max", base(tools={"x": {"limits": [limit(max="10")]}}), "/tools/x/limits/0/max", "an integer >= 0"),
    (
        "missing_max",
        base(tools={"x": {"limits": [{"window": "minute"}]}}),
        "/tools/x/limits/0/max",
        "required field 'max'",
    ),
    (
        "window_word",
        base(tools={"x": {"limits": [limit(window="hour ")]}}),
        "/tools/x/limits/0/window",
        "'hour ' is not a window; allowed: second, minute, hour, day, or a number of seconds > 0",
    ),
    ("window_zero", base(tools={"x": {"limits": [limit(window=0)]}}), "/tools/x/limits/0/window", "0 is not a window"),
    ("window_negative", base(tools={"x": {"limits": [limit(window=-60)]}}), "/tools/x/limits/0/window", "seconds > 0"),
    ("window_huge", base(tools={"x": {"limits": [limit(window=10**400)]}}), "/tools/x/limits/0/window", "not a window"),
    ("window_bool", base(tools={"x": {"limits": [limit(window=True)]}}), "/tools/x/limits/0/window", "not a window"),
    (
        "unknown_scope",
        base(tools={"x": {"limits": [limit(scope="user")]}}),
        "/tools/x/limits/0/scope",
        "allowed: grant, identity, session, global, tool",
    ),
    (
        "negative_cost",
        base(tools={"x": {"limits": [limit(cost=-1)]}}),
        "/tools/x/limits/0/cost",
        "an integer >= 0 or an argument path",
    ),
    (
        "bad_cost_path",
        base(tools={"x": {"limits": [limit(cost="amount")]}}),
        "/tools/x/limits/0/cost",
        "not a cost path",
    ),
    (
        "empty_cost_path",
        base(tools={"x": {"limits": [limit(cost="args.")]}}),
        "/tools/x/limits/0/cost",
        "not a cost path",
    ),
    (
        "count_failures_string",
        base(tools={"x": {"limits": [limit(count_failures="yes")]}}),
        "/tools/x/limits/0/count_failures",
        "true or false",
    ),
    ("limits_not_list", base(tools={"x": {"limits": {"max": 1}}}), "/tools/x/limits", "expected a list"),
    ("rule_not_mapping", base(tools={"x": "allow"}), "/tools/x", "expected a mapping"),
    ("rate_limit_word", base(tools={"x": {"rate_limit": "30 per minute"}}), "/tools/x/rate_limit", "'<max>/<window>'"),
    ("rate_limit_zero_window", base(tools={"x": {"rate_limit": "30/0"}}), "/tools/x/rate_limit", "not a rate limit"),
    ("rate_limit_unit", base(tools={"x": {"rate_limit": "30/fortnight"}}), "/tools/x/rate_limit", "not a rate limit"),
    (
        "unknown_operator",
        base(tools={"x": {"deny_if": {"args.a": {"greater": 1}}}}),
        "/tools/x/deny_if/args.a/greater",
        "unknown operator 'greater'; allowed: eq, neq",
    ),
    (
        "in_not_list",
        base(tools={"x": {"require": {"args.a": {"in": "main"}}}}),
        "/tools/x/require/args.a/in",
        "needs a list",
    ),
    (
        "not_in_not_list",
        base(tools={"x": {"require": {"args.a": {"not_in": 3}}}}),
        "/tools/x/require/args.a/not_in",
        "needs a list",
    ),
    (
        "gt_string",
        base(tools={"x": {"deny_if": {"args.a": {"gt": "10"}}}}),
        "/tools/x/deny_if/args.a/gt",
        "needs a number",
    ),
    (
        "invalid_regex",
        base(tools={"x": {"deny_if": {"args.a": {"regex": "(unclosed"}}}}),
        "/tools/x/deny_if/args.a/regex",
        "invalid regular expression",
    ),
    (
        "exists_not_bool",
        base(tools={"x": {"require": {"args.a": {"exists": "yes"}}}}),
        "/tools/x/require/args.a/exists",
        "true or false",
    ),
    (
        "bad_condition_path",
        base(tools={"x": {"require": {"amount": {"gt": 1}}}}),
        "/tools/x/require/amount",
        "not a condition path",
    ),
    ("empty_condition", base(tools={"x": {"require": {"args.a": {}}}}), "/tools/x/require/args.a", "no operator given"),
    (
        "condition_not_mapping",
        base(tools={"x": {"require": {"args.a": 5}}}),
        "/tools/x/require/args.a",
        "mapping of operator",
    ),
    ("conditions_not_mapping", base(tools={"x": {"deny_if": ["args.a"]}}), "/tools/x/deny_if", "mapping of path"),
    (
        "invalid_json_schema",
        base(tools={"x": {"args_schema": {"type": "strin"}}}),
        "/tools/x/args_schema/type",
        "invalid JSON Schema",
    ),
    ("json_schema_not_object", base(tools={"x": {"args_schema": "object"}}), "/tools/x/args_schema", "JSON Schema"),
    (
        # fastjsonschema enforces drafts 4-7: a 2020-12 keyword would load and then check nothing.
        "json_schema_unenforced_keyword",
        base(tools={"x": {"args_schema": {"type": "object", "properties": {"pair": {"prefixItems": [{}]}}}}}),
        "/tools/x/args_schema/properties/pair/prefixItems",
        "draft 7",
    ),
    (
        "json_schema_unsupported_draft",
        base(tools={"x": {"args_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}}),
        "/tools/x/args_schema/$schema",
        "draft 4, 6 or 7",
    ),
    (
        "json_schema_remote_ref",
        base(tools={"x": {"args_schema": {"$ref": "https://example.com/s.json"}}}),
        "/tools/x/args_schema/$ref",
        "only local references",
    ),
    (
        "glob_in_server",
        base(tools={"git*/log": {}}),
        "/tools/git*~1log",
        "server part 'git*' may not contain glob characters",
    ),
    ("empty_server", base(tools={"/log": {}}), "/tools/~1log", "empty server part"),
    ("empty_tool_part", base(tools={"git/": {}}), "/tools/git~1", "empty tool part"),
    ("empty_pattern", base(tools={"": {}}), "/tools/", "non-empty"),
    ("glob_in_hidden_server", base(hide=["s*/x"]), "/hide/0", "may not contain glob characters"),
    ("two_slashes", base(tools={"a/b/withdraw": {}}), "/tools/a~1b~1withdraw", "can be read two ways"),
    ("two_slashes_hidden", base(hide=["a/b/c"]), "/hide/0", "can be read two ways"),
    (
        "regex_backreference",
        base(tools={"x": {"deny_if": {"args.a": {"regex": "(a)\\1"}}}}),
        "/tools/x/deny_if/args.a/regex",
        "no backreferences or lookaround",
    ),
    (
        "regex_lookahead",
        base(tools={"x": {"require": {"args.a": {"regex": "^(?=a)"}}}}),
        "/tools/x/require/args.a/regex",
        "'^(?=a)'",
    ),
    ("hide_not_list", base(hide="x"), "/hide", "expected a list"),
    (
        "action_on_all_tools",
        base(all_tools={"action": "deny"}),
        "/all_tools/action",
        "'all_tools' cannot carry 'action'",
    ),
    ("reason_on_all_tools", base(all_tools={"reason": "x"}), "/all_tools/reason", "cannot carry 'reason'"),
    (
        "unknown_class",
        base(classes={"dangerous": {}}),
        "/classes/dangerous",
        "allowed: read, write, destructive, open_world",
    ),
    ("reason_and_on_deny", base(tools={"x": {"reason": "a", "on_deny": "b"}}), "/tools/x", "not both"),
    ("timeout_zero", base(tools={"x": {"approval": {"timeout_s": 0}}}), "/tools/x/approval/timeout_s", "seconds > 0"),
    ("redact_empty", base(tools={"x": {"redact": [""]}}), "/tools/x/redact/0", "not an argument path"),
    ("name_not_text", base(name=5), "/name", "expected a string"),
    ("top_not_mapping", ["version", "1"], "", "mapping (JSON object) at the top level"),
    ("empty_dict_missing_both", {}, "/version", "required field"),
]


@pytest.mark.parametrize(("data", "path", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_policy_names_the_path(data: Any, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data)
    err = info.value
    paths = [e["path"] for e in err.errors]
    assert path in paths, (paths, str(err))
    message = next(e["message"] for e in err.errors if e["path"] == path)
    assert words in message, message
    # str(err) lists every problem, one per line, each with its path.
    lines = str(err).splitlines()
    assert len(lines) == 1 + len(err.errors)
    assert f"{path or '/'}: {message}" in str(err)
    assert "pydantic" not in str(err)
    assert "https://errors" not in str(err)


def test_every_problem_is_reported_at_once() -> None:
    data = base(
        version="9",
        tools={
            "x": {"acton": "deny", "limits": [limit(max=-1, window="hour ")]},
            "y": {"deny_if": {"args.a": {"in": 1}}},
        },
    )
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(data)
    assert {e["path"] for e in info.value.errors} >= {
        "/version",
        "/tools/x/acton",
        "/tools/x/limits/0/max",
        "/tools/x/limits/0/window",
        "/tools/y/deny_if/args.a/in",
    }


# Text documents: (id, suffix, text, words)
BROKEN_TEXT: list[tuple[str, str, str, str]] = [
    ("malformed_json", ".json", '{"version": "1", "default": "deny",', "malformed JSON at line 1"),
    ("json_trailing_comma", ".json", '{"version": "1", "default": "deny",}', "malformed JSON"),
    (
        "duplicate_json_keys",
        ".json",
        '{"version": "1", "default": "allow", "default": "deny"}',
        "duplicate key 'default'",
    ),
    (
        "duplicate_nested_json_keys",
        ".json",
        '{"version": "1", "default": "deny", "tools": {"x": {}, "x": {"action": "deny"}}}',
        "duplicate key 'x'",
    ),
    ("empty_json", ".json", "", "the policy is empty"),
    ("blank_json", ".json", "  \n", "the policy is empty"),
    ("json_null", ".json", "null", "the policy is empty"),
    ("malformed_yaml", ".yaml", "version: '1'\ndefault: [deny\n", "malformed YAML"),
    ("duplicate_yaml_keys", ".yaml", "version: '1'\ndefault: allow\ndefault: deny\n", "duplicate key 'default'"),
    ("empty_yaml", ".yml", "", "the policy is empty"),
    ("comment_only_yaml", ".yaml", "# nothing\n", "the policy is empty"),
    ("yaml_scalar", ".yaml", "just text\n", "at the top level"),
    ("unknown_suffix", ".toml", 'version = "1"', "unknown policy file type '.toml'"),
]


@pytest.mark.parametrize(("suffix", "text", "words"), [b[1:] for b in BROKEN_TEXT], ids=[b[0] for b in BROKEN_TEXT])
def test_broken_file(tmp_path: Path, suffix: str, text: str, words: str) -> None:
    path = tmp_path / f"policy{suffix}"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert words in str(info.value), str(info.value)
    assert str(path) in str(info.value).splitlines()[0], "the first line names the file"


def test_duplicate_json_key_path() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_json('{"version": "1", "default": "deny", "tools": {"x": {"limits": [], "limits": []}}}')
    assert info.value.errors[0]["path"] == "/tools/x/limits"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        Policy.load(tmp_path / "nope.json")


def test_non_json_values_in_a_dict_are_refused() -> None:
    with pytest.raises(PolicyError):
        Policy.from_dict({"version": "1", "default": "deny", "name": object()})


def test_integer_version_is_accepted() -> None:
    assert Policy.from_dict({"version": 1, "default": "allow"}).evaluate("x").allowed


def test_identical_schemas_compile_once() -> None:
    from mcp_guard._policy.model import compile_schema

    schema = {"type": "object", "properties": {"unique_for_this_test": {"type": "integer"}}}
    before = compile_schema.cache_info().misses
    Policy.from_dict(base(tools={f"t{i}": {"args_schema": schema} for i in range(200)}))
    assert compile_schema.cache_info().misses - before == 1


def test_policy_pickles_and_copies() -> None:
    import copy
    import pickle

    policy = Policy.from_dict(GOOD)
    for clone in (pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy)):
        assert clone.hash == policy.hash
        call = ("create_issue", {"repo": "a/b", "title": "URGENT fix"})
        assert clone.evaluate(*call, server="github") == policy.evaluate(*call, server="github")
