"""Usage: how much of each limit is used, what remains, and when the next unit frees up.

:meth:`Guard.usage` resolves the policy's limits for a caller (and optionally a tool) into the same budget
keys the guard charges, and asks the store for them in one read (one round trip on Redis). Nothing is
reserved or changed. ``mcp-guard usage`` prints the same as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

from mcp_guard._policy.decision import LimitCharge
from mcp_guard._policy.matching import parse_pattern, pointer
from mcp_guard._policy.policy import Policy, compile_rule, risk_class
from mcp_guard._stores import Usage, usage_by_check


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """One limit as it stands for one caller: ``used`` of ``max`` units in the sliding window ending now.

    ``scope_key`` is who the budget belongs to (the identity, the session, ``server/tool``, or ``""`` for
    global). ``next_free_in_s`` / ``next_free_at`` (epoch seconds, by the guard's clock): when the oldest
    counted unit leaves the window and one more unit is free; ``None`` when nothing is used.
    """

    counter: str
    scope: str
    scope_key: str
    rule: str
    used: float
    max: int
    remaining: float
    window_s: float
    next_free_in_s: float | None
    next_free_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UsageKeywords(TypedDict, total=False):
    """Whose usage :meth:`Guard.usage` reports, and optionally for which tool (all optional)."""

    identity: str | None
    session: str | None
    tool: str | None
    server: str | None
    annotations: Mapping[str, Any] | None


def usage_charges(
    policy: Policy,
    *,
    tool: str | None = None,
    server: str | None = None,
    identity: str | None = None,
    session: str | None = None,
    annotations: Mapping[str, Any] | None = None,
) -> list[LimitCharge]:
    """The limits to report, resolved to budget keys exactly as the guard charges them (cost 1 each).

    With ``tool``: the limits a call of it is charged (none when it is hidden or denied). Without: every
    limit of every rule; a ``scope: tool`` limit only where its rule names one tool (a glob names many).
    """
    if tool is not None:
        plan = policy._plan(tool, server, risk_class(annotations) if annotations else None)
        if plan.kind != "run":
            return []
        return _dedupe(spec.charge(tool, server, identity, session, 1) for spec in plan.limits)
    doc = policy.document
    charges: list[LimitCharge] = []
    rules: list[tuple[Any, str, str, str | None]] = []
    if doc.all_tools is not None:
        rules.append((doc.all_tools, "/all_tools", "all_tools", None))
    for text, rule in doc.tools.items():
        rules.append((rule, pointer("tools", text), text, text))
    for name, rule in doc.classes.items():
        rules.append((rule, pointer("classes", name), f"classes.{name}", None))
    for rule, ptr, label, pattern in rules:
        compiled = compile_rule(rule, ptr, label, "allow", None)
        named = parse_pattern(pattern) if pattern is not None else None
        for spec in compiled.limits:
            if spec.scope == "tool":
                if named is None or not named.exact:
                    continue
                where = named.server if named.server is not None else server
                charges.append(spec.charge(named.name, where, identity, session, 1))
            else:
                charges.append(spec.charge(label, server, identity, session, 1))
    return _dedupe(charges)


def _dedupe(charges: Any) -> list[LimitCharge]:
    seen: dict[tuple[str, float, int], LimitCharge] = {}
    for c in charges:
        seen.setdefault((c.key, c.window_s, c.max), c)
    return list(seen.values())


def _report(charges: Sequence[LimitCharge], usages: Sequence[Usage], now: float) -> list[LimitUsage]:
    out: list[LimitUsage] = []
    for c, u in zip(charges, usages, strict=True):
        wait = u.next_free_in_s
        out.append(
            LimitUsage(
                counter=c.counter,
                scope=c.scope,
                scope_key=c.scope_id,
                rule=c.rule,
                used=u.used,
                max=c.max,
                remaining=max(c.max - u.used, 0),
                window_s=c.window_s,
                next_free_in_s=wait,
                next_free_at=None if wait is None else now + wait,
            )
        )
    return out


def report_usage(store: Any, charges: Sequence[LimitCharge], clock: Callable[[], float]) -> list[LimitUsage]:
    if not charges:
        return []
    reader = getattr(store, "usage", None)
    usages = reader(charges) if callable(reader) else usage_by_check(store.check, charges)
    return _report(charges, usages, clock())


async def areport_usage(store: Any, charges: Sequence[LimitCharge], clock: Callable[[], float]) -> list[LimitUsage]:
    if not charges:
        return []
    reader = getattr(store, "ausage", None)
    if callable(reader):
        usages = await reader(charges)
    else:  # a third-party store without usage: its (sync) check answers it
        usages = usage_by_check(store.check, charges)
    return _report(charges, usages, clock())


__all__ = ["LimitUsage", "UsageKeywords", "areport_usage", "report_usage", "usage_charges"]
