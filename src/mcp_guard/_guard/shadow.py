"""Shadow mode: decide and audit as the policy says, refuse nothing.

``"mode": "shadow"`` at the top of a policy, on a rule (``tools``, ``classes``, ``all_tools``), or
``Guard(mode="shadow")`` for everything. A decision is in shadow when the rule that made it is: a refusal by
``/tools/x/limits/0`` or ``/tools/x/deny_if/...`` belongs to ``/tools/x``; ``/hide/...``, ``/default`` and
the guard's own refusals (store, evaluator) belong to the policy's top-level mode.

In shadow the would-be decision is audited (``shadow: true``, ``would_code``, ``would_rule``; ``decision`` /
``code`` / ``rule`` / ``reason`` are what enforcement would have written) and the call goes ahead. Quota is
still reserved where it fits, so a would-be ``rate_limited`` is realistic; a human is never asked (a rule in
shadow that requires approval is recorded as ``require_approval``, or as ``approval_required`` when the
guard has no approver, which is what enforcement would have done).

Used by the pipeline (:mod:`mcp_guard._guard.pipeline`) through one hook in its admission and check steps, which
hands this module the pipeline's own admission as a function (so this module never imports the pipeline); a
policy without any shadow rule pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from mcp_guard._audit.events import add_shadow_fields as add_event_fields
from mcp_guard._calls.call import Admission, ToolCall
from mcp_guard._calls.ops import AttemptState, Reserve, Steps
from mcp_guard._errors import StoreError
from mcp_guard._policy.decision import Decision, LimitCharge
from mcp_guard._policy.matching import pointer
from mcp_guard._policy.policy import Policy

CoreAdmission = Callable[[ToolCall, AttemptState, Decision], Steps[Admission]]

Mode = Literal["enforce", "shadow"]
MODES: tuple[Mode, ...] = ("enforce", "shadow")


class RuleModes:
    """The mode of every rule of one policy, looked up by a decision's rule pointer."""

    __slots__ = ("any_shadow", "rules", "top")

    def __init__(self, policy: Policy) -> None:
        doc = policy.document
        top: Mode = getattr(doc, "mode", None) or "enforce"
        rules: dict[str, Mode] = {}
        for text, rule in doc.tools.items():
            rules[pointer("tools", text)] = getattr(rule, "mode", None) or top
        for name, rule in doc.classes.items():
            rules[pointer("classes", name)] = getattr(rule, "mode", None) or top
        if doc.all_tools is not None:
            rules["/all_tools"] = getattr(doc.all_tools, "mode", None) or top
        self.top: Mode = top
        self.rules = rules
        self.any_shadow = top == "shadow" or "shadow" in rules.values()

    def of(self, rule: str | None) -> Mode:
        if not rule:
            return self.top
        parts = rule.split("/", 3)
        if len(parts) >= 3 and parts[1] in ("tools", "classes"):
            return self.rules.get(f"/{parts[1]}/{parts[2]}", self.top)
        if len(parts) >= 2 and parts[1] == "all_tools":
            return self.rules.get("/all_tools", self.top)
        return self.top


class Shadow:
    """What a Guard needs to apply shadow mode: the modes of the policies it has had, by hash."""

    def __init__(self, override: Mode | None) -> None:
        self.override = override
        self._by_hash: dict[str, RuleModes] = {}
        self._current: RuleModes | None = None

    @staticmethod
    def needed(policy: Policy, override: Mode | None) -> bool:
        if override is not None:
            return override == "shadow"
        return RuleModes(policy).any_shadow

    def use(self, policy: Policy) -> None:
        """Record the modes of ``policy`` (at construction and after each reload)."""
        modes = RuleModes(policy)
        if len(self._by_hash) > 64:  # reloads are rare; keep the table bounded anyway
            self._by_hash.clear()
        self._by_hash[policy.hash] = modes
        self._current = modes

    def mode_of(self, decision: Decision) -> Mode:
        return self.mode_at(decision.rule, decision.policy)

    def mode_at(self, rule: str | None, policy_hash: str | None) -> Mode:
        """The mode of the rule at pointer ``rule`` in the policy with this hash (the current one if unknown)."""
        if self.override is not None:
            return self.override
        modes = self._by_hash.get(policy_hash or "") or self._current
        return modes.of(rule) if modes is not None else "enforce"


def check_mode(mode: Any) -> Mode | None:
    if mode is None or mode in MODES:
        return mode  # type: ignore[no-any-return]
    raise ValueError(f"mode must be 'enforce', 'shadow' or None (the policy decides), not {mode!r}")


def admit_steps(
    shadow: Shadow, core: CoreAdmission, call: ToolCall, state: AttemptState, decision: Decision, asks: bool
) -> Steps[Admission]:
    """The guard's admission (steps 1-6) with shadow mode applied: a refusal in shadow becomes a go-ahead.

    A budget refusal in shadow (a limit whose rule is in shadow, or the store when the policy is) drops that
    budget and runs the guard's own admission again, so whatever else applies still does: an approval a rule
    in enforce mode asks for is still asked (with the rest of the quota held), limits in enforce mode still
    refuse. Any other refusal in shadow lets the call go ahead with the quota that still fits. ``core`` is the
    pipeline's admission without this hook; ``asks``: the guard has an approver.
    """
    would: Decision | None = None
    if decision.needs_approval and state.approval is None and shadow.mode_of(decision) == "shadow":
        # Never ask a human in shadow; record what enforcement would have done instead.
        would = decision if asks else decision.no_approver()
        decision = decision.replace(action="allow")
    first: Decision | None = None  # the first refusal in shadow: what enforcement would have answered
    while True:  # each pass drops at least one budget, so this ends
        admission = yield from core(call, state, decision)
        refused = admission.decision
        if not refused.denied or shadow.mode_of(refused) != "shadow":
            break
        first = first or refused
        kept = _without_refusing(decision.limits, refused)
        if kept is None:
            break
        decision = decision.replace(limits=kept)
    if first is None:
        if admission.admitted:
            if would is not None:
                admission.shadow = would
            elif shadow.mode_of(admission.decision) == "shadow":
                admission.shadow = admission.decision  # decided in shadow, and enforcement would have allowed it
        return admission
    if admission.admitted:
        admission.shadow = first
        return admission
    if shadow.mode_of(refused) != "shadow":  # a refusal in enforce mode stands
        return admission
    # A refusal in shadow that is not about the budget (a deny, an edit denied): go ahead, counting what fits.
    charges = () if decision.denied else decision.limits
    reserved, token, enforced = yield from _reserve_what_fits(shadow, decision, charges)
    if enforced is not None:  # a limit in enforce mode refuses too: that refusal stands
        return Admission(admission.call, enforced, started=admission.started, approval=admission.approval)
    base = refused if decision.denied else decision
    allowed = base.replace(action="allow", code=None, retry_after_s=None, limits=reserved)
    return Admission(
        admission.call,
        allowed,
        token=token,
        started=admission.started,
        approval=admission.approval,
        shadow=first,
    )


def _without_refusing(charges: Sequence[LimitCharge], refused: Decision) -> tuple[LimitCharge, ...] | None:
    """``charges`` less the budget that refused the call; None when the refusal was not the budget's."""
    if refused.code == "rate_limited":
        keys = {c.key for c in charges if c.rule == refused.rule}
    elif refused.code == "guard_unavailable" and refused.rule == "/store":
        keys = {c.key for c in charges}  # the store is down: count nothing, refuse nothing
    else:
        return None
    if not keys:
        return None
    return tuple(c for c in charges if c.key not in keys)


def checked(shadow: Shadow, decision: Decision) -> Decision:
    """The guard's pre-flight check with shadow mode applied: what admission will do (never a refusal in shadow)."""
    if (decision.denied or decision.needs_approval) and shadow.mode_of(decision) == "shadow":
        return decision.replace(action="allow", code=None, retry_after_s=None)
    return decision


def _reserve_what_fits(
    shadow: Shadow, decision: Decision, charges: Sequence[LimitCharge]
) -> Steps[tuple[tuple[LimitCharge, ...], Any, Decision | None]]:
    """Reserve every limit that still has room: drop the refusing budget and try again with the rest.

    A would-be rate-limited call in shadow still runs, so it still counts where it can: the counts stay what
    they would be if the refused limit did not exist. At most one try per budget key. When a refusing limit
    belongs to a rule in enforce mode, its refusal is the answer (third value) and nothing is reserved.
    """
    remaining = tuple(charges)
    while remaining:
        try:
            verdict = yield Reserve(remaining)
        except StoreError:
            return (), None, None  # the store is down: nothing is reserved, nothing will be given back
        if verdict.ok:
            return remaining, verdict.token, None
        charge = verdict.charge
        if charge is None:
            return (), None, None
        if shadow.mode_at(charge.rule, decision.policy) == "enforce":
            return (), None, decision.rate_limited(charge, verdict.retry_after_s)
        remaining = tuple(c for c in remaining if c.key != charge.key)
    return (), None, None


__all__ = ["MODES", "Mode", "RuleModes", "Shadow", "add_event_fields", "admit_steps", "check_mode", "checked"]
