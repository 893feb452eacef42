"""Patterns mean one thing (issue 9 "silent skips", spec section 8): only ``*`` is a wildcard, a server part
never holds ``/``, and a server-qualified rule is never skipped in silence when the call's server is unknown."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from mcp_guard import Policy, PolicyError


def policy(default: str = "allow", **fields: Any) -> Policy:
    return Policy.from_dict({"version": "1", "default": default, **fields})


@pytest.mark.parametrize("text", ["a/b/withdraw", "x/y/*", "a//b", "s/t/"])
def test_a_pattern_that_reads_two_ways_is_a_load_error(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(tools={text: {"action": "deny"}})
    assert "can be read two ways" in str(info.value)
    assert info.value.errors[0]["path"] == "/tools/" + text.replace("/", "~1")


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("tool[1]", ["tool[1]"], ["tool1", "toolx"]),
        ("get?", ["get?"], ["gets", "get"]),
        ("[ab]*", ["[ab]", "[ab]x"], ["a", "bx"]),
        ("a*b*c", ["abc", "a-b-c", "axxbyyc", "abcbc"], ["ab", "acb", "bac"]),
        ("*_log", ["git_log", "_log"], ["git_logs"]),
    ],
)
def test_only_star_is_a_wildcard(pattern: str, matches: list[str], misses: list[str]) -> None:
    p = policy(tools={pattern: {"action": "deny"}})
    for name in matches:
        assert p.evaluate(name).code == "denied", name
    for name in misses:
        assert p.evaluate(name).allowed, name


def test_a_star_glob_is_linear_on_long_names() -> None:
    # fnmatch-style regexes backtrack on "*a*a*a*...b" against "aaaa..."; the greedy matcher does not.
    p = policy(tools={"*a" * 30 + "*b": {"action": "deny"}})
    start = time.perf_counter()
    assert p.evaluate("a" * 5_000).allowed
    assert time.perf_counter() - start < 1.0


def test_unknown_server_qualified_deny_takes_part(caplog: pytest.LogCaptureFixture) -> None:
    # Issue 9: without server=, `exchange/withdraw: deny` was skipped and the tool ran.
    p = policy(tools={"exchange/withdraw": {"action": "deny", "reason": "no withdrawals"}})
    with caplog.at_level(logging.WARNING, logger="mcp_guard"):
        decision = p.evaluate("withdraw")
        assert p.evaluate("withdraw", {"x": 1}).code == "denied"
        p.evaluate("withdraw", identity="other")
    assert (decision.code, decision.rule, decision.reason) == ("denied", "/tools/exchange~1withdraw", "no withdrawals")
    assert not p.exposes("withdraw")
    warnings = [r for r in caplog.records if "exchange/withdraw" in r.getMessage()]
    assert len(warnings) == 1  # once per pattern
    # With the server known, other servers are not touched by it.
    assert p.evaluate("withdraw", server="bank").allowed
    assert p.evaluate("withdraw", server="exchange").code == "denied"


def test_unknown_server_strictest_candidate_wins() -> None:
    p = policy(
        default="deny",
        tools={
            "github/create_issue": {},
            "gitlab/create_issue": {"action": "require_approval"},
            "*_issue": {"deny_if": {"args.title": {"eq": "x"}}},
            "jira/*": {"limits": [{"counter": "jira", "window": 60, "max": 5}]},
        },
    )
    decision = p.evaluate("create_issue", {"title": "t"})
    assert decision.action == "require_approval"
    assert decision.rule == "/tools/gitlab~1create_issue"
    assert [c.counter for c in decision.limits] == ["jira"]  # every candidate's limits apply
    assert p.evaluate("create_issue", {"title": "x"}).code == "denied"  # and every candidate's checks
    # Only qualified rules allow it: on any other server the default (deny) would apply, so it takes part.
    assert policy(default="deny", tools={"github/x": {}}).evaluate("x").code == "default_deny"
    assert policy(default="allow", tools={"github/x": {}}).evaluate("x").allowed


def test_unknown_server_qualified_hide_takes_part(caplog: pytest.LogCaptureFixture) -> None:
    p = policy(hide=["exchange/withdraw"])
    with caplog.at_level(logging.WARNING, logger="mcp_guard"):
        assert p.evaluate("withdraw").code == "hidden"
    assert any("exchange/withdraw" in r.getMessage() for r in caplog.records)
    assert p.evaluate("withdraw", server="bank").allowed
