"""Checks of a policy that validate but cannot work where it runs, shared by the CLI and the adapters.

Warnings, not errors (``mcp-guard validate`` prints them; :func:`guardrail_warnings` is also logged by the
Agents SDK's bare ``policy_guardrail`` when it is built).
"""

from __future__ import annotations

from typing import Any

from mcp_guard._policy.matching import pointer


def rules_of(doc: Any) -> list[tuple[str, Any]]:
    rules = [(pointer("tools", text), rule) for text, rule in doc.tools.items()]
    rules += [(pointer("classes", name), rule) for name, rule in doc.classes.items()]
    if doc.all_tools is not None:
        rules.append(("/all_tools", doc.all_tools))
    return rules


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
    for where, rule in rules_of(doc):
        if rule.result is not None:
            out.append(f"{where}/result: never applied: {_UNSEEN}")
        for kind in ("require", "deny_if", "approve_if"):
            for path, ops in getattr(rule, kind).items():
                if kind == "require" and "no_secrets" in ops:
                    out.append(
                        f"{where}/{kind}/{path}: no_secrets can never refuse: {_UNSEEN}, so no secret is remembered"
                    )
                if any(source != "user" for source in sources_of(ops)):
                    out.append(
                        f"{where}/{kind}/{path}: a value from a tool's output is never found: {_UNSEEN}; only "
                        "'user' can match, so this check fails closed for values the tools returned"
                    )
    return out


def sources_of(ops: Any) -> list[str]:
    """Every source a condition's ``from`` / ``not_from`` names, inside ``any`` / ``all`` too."""
    found: list[str] = []
    if isinstance(ops, dict):
        for op, value in ops.items():
            if op in ("from", "not_from") and isinstance(value, list):
                found.extend(str(v) for v in value)
            elif op in ("any", "all"):
                found.extend(sources_of(value))
    return found


__all__ = ["guardrail_warnings", "rules_of", "sources_of"]
