"""Session rules that validate but can never work (spec section 11), for ``mcp-guard validate``, the proxy and
the Agents SDK's bare ``policy_guardrail``.

Warnings, not errors: the policy is valid, it just cannot do what it says where it runs.
"""

from __future__ import annotations

from typing import Any

from mcp_guard._policy.lint import guardrail_warnings, rules_of, sources_of


def session_warnings(doc: Any, *, proxy: bool = False, guardrail: bool = False) -> list[str]:
    """Session rules that can never work: ``no_secrets`` with nothing to remember, ``from: [user]`` in a proxy,
    and, for a bare Agents SDK ``policy_guardrail`` (``guardrail``), anything that needs a tool's output."""
    out: list[str] = []
    if guardrail:
        out.extend(guardrail_warnings(doc))
    rules = rules_of(doc)
    remembers = any(
        rule.result is not None
        and (
            rule.result.redact
            or any("detect" in ops for block in (rule.result.withhold, rule.result.taint) for ops in block.values())
        )
        for _, rule in rules
    )
    for where, rule in rules:
        for path, ops in rule.require.items():
            if "no_secrets" in ops and not remembers:
                out.append(
                    f"{where}/require/{path}: no_secrets can never refuse: no result rule redacts or detects "
                    "anything, so the session never remembers a secret (add e.g. result: {redact: {result.text: "
                    "{detect: [secrets]}}} to the tools that read them)"
                )
        if not proxy:
            continue
        for kind in ("require", "deny_if", "approve_if"):
            for path, ops in getattr(rule, kind).items():
                if "user" in sources_of(ops):
                    out.append(
                        f"{where}/{kind}/{path}: 'user' is unavailable behind mcp-guard proxy (no user text "
                        "reaches it): from [user] never holds there, so this check fails closed"
                    )
    return out


__all__ = ["guardrail_warnings", "session_warnings"]
