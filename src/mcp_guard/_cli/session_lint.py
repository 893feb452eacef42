"""Session rules that validate but can never work (spec section 11), for ``mcp-guard validate``, the proxy and
the Agents SDK's bare ``policy_guardrail``.

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


def session_warnings(doc: Any, *, proxy: bool = False, guardrail: bool = False) -> list[str]:
    """Session rules that can never work: ``no_secrets`` with nothing to remember, ``from: [user]`` in a proxy,
    and, for a bare Agents SDK ``policy_guardrail`` (``guardrail``), anything that needs a tool's output."""
    out: list[str] = []
    if guardrail:
        out.extend(guardrail_warnings(doc))
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


#: What a bare policy_guardrail lacks: it runs before each tool and never sees what the tool returns.
_UNSEEN = "a bare policy_guardrail never sees what a tool returns (use guard_tools / guard_mcp_server)"


def guardrail_warnings(doc: Any) -> list[str]:
    """Checks that need tool outputs, under an Agents SDK ``policy_guardrail`` used alone.

    The guardrail sees each call's arguments, the run input and which tools ran (with their trust labels, so
    ``session.*`` works), but not the outputs: result rules never run, ``no_secrets`` never has a secret to
    refuse (it fails open), and ``from`` / ``not_from`` find no value of a tool's output (they fail closed:
    ``from: [trusted]`` refuses what a trusted tool returned).
    """
    out: list[str] = []
    for where, rule in _rules_of(doc):
        if rule.result is not None:
            out.append(f"{where}/result: never applied: {_UNSEEN}")
        for kind in ("require", "deny_if", "approve_if"):
            for path, ops in getattr(rule, kind).items():
                if kind == "require" and "no_secrets" in ops:
                    out.append(
                        f"{where}/{kind}/{path}: no_secrets can never refuse: {_UNSEEN}, so no secret is remembered"
                    )
                if any(source != "user" for source in _sources(ops)):
                    out.append(
                        f"{where}/{kind}/{path}: a value from a tool's output is never found: {_UNSEEN}; only "
                        "'user' can match, so this check fails closed for values the tools returned"
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


__all__ = ["guardrail_warnings", "session_warnings"]
