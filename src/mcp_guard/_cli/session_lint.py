"""Session rules that validate but can never work (spec section 11), for ``mcp-guard validate`` and the proxy.

Warnings, not errors: the policy is valid, it just cannot do what it says where it runs.
"""

from __future__ import annotations

from typing import Any

from mcp_guard._policy.matching import pointer


def _rules_of(doc: Any) -> list[tuple[str, Any]]:
    rules = [(pointer("tools", text), rule) for text, rule in doc.tools.items()]
    rules += [(pointer("classes", name), rule) for name, rule in doc.classes.items()]
    if doc.all_tools is not None:
        rules.append(("/all_tools", doc.all_tools))
    return rules


def session_warnings(doc: Any, *, proxy: bool = False) -> list[str]:
    """Session rules that can never work: ``no_secrets`` with nothing to remember, ``from: [user]`` in a proxy."""
    out: list[str] = []
    rules = _rules_of(doc)
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
                if "user" in _sources(ops):
                    out.append(
                        f"{where}/{kind}/{path}: 'user' is unavailable behind mcp-guard proxy (no user text "
                        "reaches it): from [user] never holds there, so this check fails closed"
                    )
    return out


def _sources(ops: Any) -> list[str]:
    """Every source a condition's ``from`` / ``not_from`` names, inside ``any`` / ``all`` too."""
    found: list[str] = []
    if isinstance(ops, dict):
        for op, value in ops.items():
            if op in ("from", "not_from") and isinstance(value, list):
                found.extend(str(v) for v in value)
            elif op in ("any", "all"):
                found.extend(_sources(value))
    return found


__all__ = ["session_warnings"]
