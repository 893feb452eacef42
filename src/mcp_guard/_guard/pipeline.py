"""The pipeline: steps 1-8 of a guarded call written once as generator steps, and the two drivers that run them.

Each step is a generator that *yields* the I/O it needs (:mod:`mcp_guard._calls.ops`: check or reserve quota, give
it back, ask a human, call the tool, sleep) and is sent the result; :meth:`Pipeline._drive` performs that I/O
for sync callers and :meth:`Pipeline._adrive` for async ones (tenacity's design). So the logic of a call,
waits and retries included, exists once, and ``run``/``arun`` cannot drift apart.

Read in this order: :meth:`~Pipeline._run_steps` (the whole call), :meth:`~Pipeline._admission_steps`
(steps 1-6 with rate-limit waits), :meth:`~Pipeline._core_admit_steps` (decide, ask, reserve),
:meth:`~Pipeline._finish_steps` (give quota back, write the event), then the drivers.

:class:`Pipeline` is a base of :class:`~mcp_guard.Guard`, which holds the configuration it reads (declared
below) and the public entry points.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from mcp_guard._audit.events import AuditSink, CallEvent, emit, iso_time, scrub
from mcp_guard._calls.approval import (
    ApprovalDecision,
    ApprovalRequest,
    Asked,
    Asker,
    NoAnswer,
    Workers,
    coerce_decision,
    within,
)
from mcp_guard._calls.call import Admission, GuardResult, Outcome, ToolCall, new_call
from mcp_guard._calls.ops import (
    Answer,
    Ask,
    AttemptState,
    Call,
    Check,
    FindGrant,
    Op,
    Recall,
    Release,
    Remember,
    Reserve,
    SaveGrant,
    SessionKey,
    Sleep,
    Steps,
    StoreOp,
)
from mcp_guard._compat import result_is_error
from mcp_guard._errors import ApprovalError, StoreError
from mcp_guard._guard.grants import grant_digest, grant_owner, grant_ttl, lookup_digests, new_grant_id
from mcp_guard._guard.memory import caps as memory_caps
from mcp_guard._guard.memory import input_record, parts_to_read, result_records, view_from
from mcp_guard._guard.pins import PinWatch, pinned_decision
from mcp_guard._guard.retry import RetryPolicy, next_sleep
from mcp_guard._guard.retry import not_sent as _not_sent
from mcp_guard._guard.shadow import Shadow, checked
from mcp_guard._guard.shadow import admit_steps as shadow_admit_steps
from mcp_guard._policy.argcheck import non_finite_path, tool_schema_error
from mcp_guard._policy.decision import Decision, LimitCharge
from mcp_guard._policy.policy import Policy
from mcp_guard._policy.results import ResultVerdict, judge_result
from mcp_guard._policy.session import EMPTY_VIEW, SessionView
from mcp_guard._stores import Store, StoreProtocol, Verdict

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from mcp_guard._calls.call import AdmitKeywords, CallKeywords, RunKeywords

log = logging.getLogger("mcp_guard")

T = TypeVar("T")


class Pipeline:
    """Steps and drivers; the configuration they read is the :class:`~mcp_guard.Guard`'s (see its docstring)."""

    policy: Policy
    _policy_hash: str | None
    _shadow: Shadow | None
    store: Store | StoreProtocol
    store_timeout_s: float
    _store_bounded: bool
    _asker: Asker | None
    audit_sinks: tuple[AuditSink, ...]
    audit_failure: Literal["open", "closed"]
    audit_failures: int
    _audit_lock: threading.Lock
    _audit_key: bytes | None
    on_rate_limit: Literal["error", "wait"]
    max_wait_s: float
    fail_mode: Literal["closed", "open"]
    approval_timeout_s: float | None
    retry: RetryPolicy | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    asleep: Callable[[float], Awaitable[None]]
    check_tool_schema: bool
    _pins: PinWatch | None
    _grants: bool
    session_memory_bytes: int
    session_ttl_s: float

    # -- what the entry points start -----------------------------------------------------------------

    def _run_plan(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], keywords: RunKeywords
    ) -> GuardResult | Admission | PlainCall | Steps[GuardResult]:
        """What ``run``/``arun`` drive: the steps of the whole call; a :class:`PlainCall` when there is nothing to
        count, ask or retry; when there is not even an event to write, the call's finished admission (the caller
        just calls the tool); or, for a call the policy refuses outright, its result (event written)."""
        approval = keywords.pop("approval", None)
        is_error = keywords.pop("is_error", None)
        call = new_call(tool, args, **cast("CallKeywords", keywords))
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        started = time.perf_counter()
        decision: Decision | None = None
        if approval is None and policy.session_free:  # a session-aware policy reads memory first: the steps
            decision = self._evaluate(call, policy)
            if decision.denied and self._shadow is None:
                # Refused outright: what the steps do, without them. The steps scrub a refusal's reason once more
                # where the rule redacts (for an approver's or a store's words): so here, for the same text.
                if decision.redact and decision.reason is not None:
                    decision = decision.replace(reason=scrub(decision.reason, call.args, decision.redact))
                admission = Admission(call, decision, None, started, None, False, True)  # finished
                self._record(admission, "denied", None)
                return GuardResult(None, decision, admission)
            if decision.action == "allow" and not decision.limits and self._retry_for(call, decision) is None:
                if not self.audit_sinks:
                    return Admission(call, decision, None, 0.0, None, False, True)  # finished
                if self._shadow is None and self.audit_failure == "open":
                    admission = Admission(call, decision, None, started, None, False, True)  # finished
                    return PlainCall(admission, is_error, self._record)
        state = AttemptState(self._coerce_given(approval), started, policy=policy)
        return self._fault_safe(call, state, self._run_steps(call, state, decision, fn, is_error))

    def _fault_safe(self, call: ToolCall, state: AttemptState, steps: Steps[GuardResult]) -> Steps[GuardResult]:
        """``steps``, but a fault of the guard's own (not the tool's) refuses the call as ``guard_unavailable``."""
        try:
            return (yield from steps)
        except Exception as exc:
            if state.called:  # the tool's own failure: exactly what the unguarded tool would have raised
                raise
            return self._guard_fault(call, state, exc)

    def _admit_plan(
        self, tool: str, args: Mapping[str, Any] | None, keywords: AdmitKeywords
    ) -> Admission | Steps[Admission]:
        """What ``admit``/``aadmit`` drive: steps 1-6; or the admission itself when the decision is all there is
        (refused outright, or allowed with nothing to count or ask)."""
        approval = keywords.pop("approval", None)
        call = new_call(tool, args, **cast("CallKeywords", keywords))
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        if approval is not None or self._shadow is not None or not policy.session_free:
            return self._admission_steps(call, AttemptState(self._coerce_given(approval), policy=policy), None)
        started = time.perf_counter()
        decision = self._evaluate(call, policy)
        if decision.denied or (decision.action == "allow" and not decision.limits and self.audit_failure == "open"):
            return Admission(call, decision, None, started)  # positional: keywords cost ~0.2 µs more per call
        return self._admission_steps(call, AttemptState(None, started, policy=policy), decision)

    def _finish_plan(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> Steps[None] | None:
        """What ``finish``/``afinish`` drive: the steps; or, with no quota to give back, None (event written).

        Only a call that did not run, or failed, can give quota back (see :meth:`_finish_steps`): any other
        outcome settles here, its reservation kept, without the steps and their driver.
        """
        if admission.token is not None and (outcome == "denied" or outcome == "error"):
            return self._finish_steps(admission, outcome, error)
        if not admission.finished:
            admission.finished = True
            admission.token = None
            self._record(admission, outcome, error)
        return None

    # -- the steps, once -------------------------------------------------------------------------------

    def _evaluate(self, call: ToolCall, policy: Policy | None = None, view: SessionView | None = None) -> Decision:
        policy = self.policy if policy is None else policy  # the call's own policy, across a reload
        try:
            problem = self._argument_problem(call)
            if problem is not None:
                # Refused before the policy reads the arguments, but its rules' redact paths hide them all the
                # same (spec section 10), and the reason may quote a value (a schema error names what it got).
                redact = redact_for(policy, call)
                return Decision.deny(
                    call.tool,
                    "invalid_arguments",
                    server=call.server,
                    reason=scrub(problem, call.args, redact),
                    policy=policy.hash,
                    redact=redact,
                )
            decision = policy.evaluate(
                call.tool,
                call.args,
                server=call.server,
                identity=call.identity,
                session=call.session,
                annotations=call.annotations,
                session_view=view,
                context=call.context,
                claims=call.claims,
            )
            if decision.redact and decision.reason is not None:
                # A reason may quote the argument that failed a check: never a redacted one (spec section 8).
                decision = decision.replace(reason=scrub(decision.reason, call.args, decision.redact))
            if self._pins is not None:
                decision = pinned_decision(self._pins, decision, call.tool, call.server)
            return decision
        except Exception as exc:
            # Fail closed: a policy that cannot decide never lets a call through. The model is told the
            # guard could not check the call; the log gets the exception's type only (its text or
            # traceback may quote arguments, redacted ones included).
            log.error("policy evaluation failed for %s (%s); denying the call", call.tool, type(exc).__name__)
            return Decision.deny(
                call.tool,
                "guard_unavailable",
                server=call.server,
                reason="the policy could not be evaluated for this call",
                policy=getattr(policy, "hash", None),
                redact=redact_for(policy, call),
            )

    def _argument_problem(self, call: ToolCall) -> str | None:
        """Spec section 8: arguments the tool would run with differently than the policy sees them."""
        bad = non_finite_path(call.args)
        if bad is not None:
            return f"{bad} is not a finite number (NaN and Infinity are not valid JSON)"
        if call.tool_schema is not None and self.check_tool_schema:
            return tool_schema_error(call.tool_schema, call.args)
        return None

    def _budget_steps(self, decision: Decision, op: Check | Reserve) -> Steps[tuple[Decision, Verdict | None]]:
        """Check or reserve ``decision``'s limits; a refusal or a store failure becomes a denial."""
        try:
            verdict: Verdict = yield op
        except StoreError as exc:
            if self.fail_mode == "open":
                log.warning("rate-limit store failed, allowing %s (fail_mode='open'): %s", decision.tool, exc)
                return decision, None
            log.error("rate-limit store failed, denying %s (fail_mode='closed'): %s", decision.tool, exc)
            return (
                decision.violation(
                    "guard_unavailable", reason="the rate-limit store could not be reached", rule="/store"
                ),
                None,
            )
        if verdict.ok:
            return decision, verdict
        charge = verdict.charge
        reason = charge.describe(decision.tool) if charge is not None else f"{decision.tool} is rate limited"
        return (
            decision.violation(
                "rate_limited",
                reason=reason,
                rule=charge.rule if charge is not None else decision.rule,
                retry_after_s=verdict.retry_after_s,
            ),
            verdict,
        )

    def _check_steps(self, call: ToolCall) -> Steps[Decision]:
        """Steps 1-4 for a pre-flight look: the decision, with the budget checked (nothing reserved).

        A call that needs approval but is covered by a grant is allowed here (nothing to pause for); the run
        that follows finds the same grant.
        """
        policy = self.policy
        if policy.session_reads:
            view = yield from self._view_steps(call, policy)
            decision = self._evaluate(call, policy, view) if view is not None else _memory_down(call, policy)
        else:
            decision = self._evaluate(call, policy)
        if decision.needs_approval and self._grants:
            granted = yield from self._find_grant_steps(call, decision, policy)
            if granted is not None:
                decision = decision.replace(action="allow")
        if not decision.denied and decision.limits:
            decision, _ = yield from self._budget_steps(decision, Check(decision.limits))
        return decision if self._shadow is None else checked(self._shadow, decision)

    def _admission_steps(self, call: ToolCall, state: AttemptState, decision: Decision | None) -> Steps[Admission]:
        """Steps 1-6 with rate-limit waits; a cancellation writes its event; closed audit writes ahead."""
        try:
            admission = yield from self._admit_steps(call, state, decision)
            slept = 0.0
            while self._should_wait(admission):
                wait = float(admission.decision.retry_after_s or 0.0)
                if slept + wait > self.max_wait_s:
                    break
                yield Sleep(wait)
                slept += wait
                admission = yield from self._admit_steps(admission.call, state)
        except GeneratorExit:
            raise
        except BaseException as exc:  # cancelled or interrupted before the tool was handed the call
            yield from self._abort_steps(call, state, exc)
            raise
        if admission.decision.redact and admission.decision.reason is not None and admission.decision.denied:
            # An approver's or a store's words may quote arguments too.
            admission.decision = admission.decision.replace(
                reason=scrub(admission.decision.reason, admission.call.args, admission.decision.redact)
            )
        if admission.admitted and self.audit_failure == "closed" and self.audit_sinks:
            admission = yield from self._write_ahead_steps(admission)
        return admission

    def _abort_steps(self, call: ToolCall, state: AttemptState, exc: BaseException) -> Steps[None]:
        # Quota held for this call (an approval pending, a reservation just made) goes back: the tool was
        # never handed the call. Then the call's one event, outcome "cancelled".
        if state.held is not None:
            charges, token = state.held
            state.held = None
            yield from self._release_steps(charges, token, call.tool)
        decision = state.decision or Decision.deny(
            call.tool, "guard_unavailable", server=call.server, redact=redact_for(state.policy or self.policy, call)
        )
        admission = Admission(call, decision, started=state.started, approval=state.approval)
        state.recorded = True
        self._record(admission, "cancelled", exc)

    def _write_ahead_steps(self, admission: Admission) -> Steps[Admission]:
        """``audit_failure="closed"``: the call's one event is written before the tool runs, or it does not run."""
        failed = self._record(admission, "admitted", None)
        if not failed:
            return admission
        if admission.token is not None:
            yield from self._release_steps(admission.decision.limits, admission.token, admission.call.tool)
        refused = Admission(
            admission.call,
            admission.decision.violation(
                "guard_unavailable", reason="the audit record of this call could not be written", rule="/audit"
            ),
            started=admission.started,
            approval=admission.approval,
        )
        # The sinks that took the "admitted" record keep it; only the others are given the refusal.
        refused.sinks = tuple(failed)
        return refused

    def _admit_steps(self, call: ToolCall, state: AttemptState, decision: Decision | None = None) -> Steps[Admission]:
        # Not a generator itself (one level of delegation less per step): callers ``yield from`` it at once.
        if decision is None:
            policy = state.policy if state.policy is not None else self.policy
            if policy.session_reads and state.view is None:
                return self._read_then_admit_steps(call, state, policy)
            decision = self._evaluate(call, state.policy, state.view)  # steps 1-3
        if self._shadow is None:
            return self._core_admit_steps(call, state, decision)
        asks = self._asker is not None
        return shadow_admit_steps(self._shadow, self._core_admit_steps, call, state, decision, asks)

    def _read_then_admit_steps(self, call: ToolCall, state: AttemptState, policy: Policy) -> Steps[Admission]:
        """Read the session's memory once, then decide on it (a store failure refuses, fail closed)."""
        view = yield from self._view_steps(call, policy)
        if view is None:
            return (yield from self._admit_steps(call, state, _memory_down(call, policy)))
        state.view = view
        return (yield from self._admit_steps(call, state))

    def _view_steps(self, call: ToolCall, policy: Policy) -> Steps[SessionView | None]:
        """The session view the call is decided on: what the policy's checks read, from the store. None when the
        store could not be read and the guard fails closed."""
        session = call.session if call.session is not None else call.run_id
        if session is None:
            return EMPTY_VIEW  # no session, no memory: nothing came from the user (fail closed)
        try:
            parts = yield Recall(session, parts_to_read(policy.session_reads))
            key = (yield from self._key_steps()) if "secrets" in policy.session_reads else None
        except StoreError as exc:
            if self.fail_mode == "open":
                log.warning(
                    "session memory unreadable, deciding %s on an empty session (fail_mode='open'): %s", call.tool, exc
                )
                return EMPTY_VIEW
            log.error("session memory unreadable, refusing %s (fail_mode='closed'): %s", call.tool, exc)
            return None
        return view_from(parts, key)

    def _key_steps(self) -> Steps[bytes]:
        """The key of session fingerprints: the audit key when set, else the store's own (shared by its clients)."""
        if self._audit_key is not None:
            return self._audit_key
        key: bytes = yield SessionKey()
        return key

    def _after_steps(self, admission: Admission, policy: Policy, value: Any) -> Steps[tuple[Any, Decision | None]]:
        """A call that ran: its result judged by the result rules, and the call remembered in session memory.

        Returns what the model gets (the result, a redacted copy, or None) and the ``result_withheld`` violation
        when a rule withholds it. ``value`` is ``_NO_RESULT`` when the adapter did not hand the result over.
        """
        call = admission.call
        verdict: ResultVerdict | None = None
        if value is not _NO_RESULT:
            try:
                verdict = judge_result(
                    policy.result_rules(call.tool, server=call.server, annotations=call.annotations), value
                )
            except Exception as exc:  # a result the rules cannot read is withheld, never passed on unjudged
                log.error("result rules failed for %s (%s); withholding the result", call.tool, type(exc).__name__)
                admission.decision = admission.decision.violation(
                    "result_withheld", reason="the result could not be checked by the policy", rule="/guard"
                )
                return None, admission.decision
            if verdict.acted:
                admission.result_note = {"rules": list(verdict.acted), "redacted": verdict.redacted}
                if verdict.tainted:
                    admission.result_note["tainted"] = True
            if verdict.withheld is not None:
                rule = verdict.withheld
                admission.result_note = {**(admission.result_note or {}), "withheld": True}
                admission.decision = admission.decision.violation(
                    "result_withheld",
                    reason=rule.reason or f"the result of {call.tool} is withheld by the policy",
                    rule=rule.pointer,
                )
        session = call.session if call.session is not None else call.run_id
        reads = policy.session_reads
        if session is not None and reads:
            trust = (
                "untrusted"
                if verdict is not None and verdict.tainted
                else policy.trust_of(call.tool, server=call.server, annotations=call.annotations)
            )
            flagged = verdict.flagged if verdict is not None else ()
            try:
                key = (yield from self._key_steps()) if "secrets" in reads and flagged else None
                records = result_records(
                    reads,
                    call.tool,
                    call.server,
                    admission.decision.risk_class,
                    trust,
                    None if verdict is None or verdict.withheld is not None else verdict.text,
                    flagged,
                    key,
                )
                if records:
                    limits = memory_caps(self.session_memory_bytes)
                    trimmed = yield Remember(session, records, limits, self.session_ttl_s)
                    self._audit_trimmed(session, trimmed, limits)
            except StoreError as exc:
                log.error("could not remember the result of %s in session memory: %s", call.tool, exc)
        if verdict is None:
            return None, None
        if verdict.withheld is not None:
            return None, admission.decision
        return verdict.value, None

    def _observe_steps(self, text: str, session: str) -> Steps[None]:
        limits = memory_caps(self.session_memory_bytes)
        try:
            trimmed = yield Remember(session, {"texts": [input_record(text)]}, limits, self.session_ttl_s)
        except StoreError as exc:
            log.error("could not remember the user's request in session memory: %s", exc)
            return
        self._audit_trimmed(session, trimmed, limits)

    def _audit_trimmed(self, session: str, trimmed: Any, limits: dict[str, int]) -> None:
        """Session memory is bounded: what fell out, and the cap, go to the audit."""
        if not trimmed or not self.audit_sinks:
            return
        for part, (records, size) in dict(trimmed).items():
            event = {
                "time": iso_time(self.clock()),
                "event": "session_trimmed",
                "session": session,
                "part": part,
                "dropped_records": records,
                "dropped_bytes": size,
                "cap_bytes": limits.get(part),
            }
            failed = emit(self.audit_sinks, event)
            if failed:
                with self._audit_lock:
                    self.audit_failures += len(failed)

    def _core_admit_steps(self, call: ToolCall, state: AttemptState, decision: Decision) -> Steps[Admission]:
        """Steps 4-6 for a decided call: ask a human where needed (quota held meanwhile), then reserve.

        With a store that keeps approval grants, a call that needs approval is first looked up among them (a
        grant answers yes, no human is asked), and a yes that grants (a session scope or a time to live) is
        kept for later identical calls once the call it answered is admitted.
        """
        if not (self._grants and decision.needs_approval):
            return (yield from self._approve_and_reserve_steps(call, state, decision))
        policy = state.policy or self.policy
        if state.approval is None:
            state.approval = yield from self._find_grant_steps(call, decision, policy)
        admission = yield from self._approve_and_reserve_steps(call, state, decision)
        approval = admission.approval
        if approval is not None and approval.grants and approval.grant is None and admission.decision.allowed:
            admission.approval = yield from self._save_grant_steps(admission.call, decision, policy, approval)
        return admission

    def _find_grant_steps(self, call: ToolCall, decision: Decision, policy: Policy) -> Steps[ApprovalDecision | None]:
        digests = lookup_digests(call.tool, call.server, call.args, call.session, decision, policy)
        try:
            found = yield FindGrant(grant_owner(call.identity), digests)
        except StoreError as exc:  # no answer about grants: the human is asked, as without them
            log.error("could not look up approval grants for %s: %s", call.tool, exc)
            return None
        return None if found is None else ApprovalDecision("approve", grant=found)

    def _save_grant_steps(
        self, call: ToolCall, decision: Decision, policy: Policy, approval: ApprovalDecision
    ) -> Steps[ApprovalDecision]:
        session_scope = approval.scope == "session"
        digest = grant_digest(
            call.tool,
            call.server,
            call.args,
            call.session,
            decision,
            policy,
            session_scope=session_scope,
            any_args=approval.any_args,
        )
        if digest is None:  # a session grant for a call with no session: this yes covers this call only
            return approval
        grant_id = new_grant_id()
        try:
            yield SaveGrant(grant_owner(call.identity), digest, grant_id, grant_ttl(session_scope, approval.ttl_s))
        except StoreError as exc:  # the call was approved; only later calls will ask again
            log.error("could not keep the approval grant for %s: %s", call.tool, exc)
            return approval
        return approval.replace(grant=grant_id)

    def _approve_and_reserve_steps(self, call: ToolCall, state: AttemptState, decision: Decision) -> Steps[Admission]:
        started = state.started
        state.decision = decision
        if decision.denied:
            return Admission(call, decision, started=started)
        if decision.needs_approval and state.approval is None:
            return (yield from self._ask_and_hold_steps(call, state, decision))
        if state.approval is not None:
            # An answer obtained elsewhere (a resume value) or earlier in this call (before a rate-limit wait).
            # A refusal reports a spent budget first (the more useful answer); an approval goes straight to the
            # reservation, which refuses exactly as a check would: one store round trip, not two.
            if decision.limits and not state.approval.approved:
                checked, _ = yield from self._budget_steps(decision, Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            if not state.approval.approved:
                reason = state.approval.reason or "a human declined this call"
                return Admission(call, decision.violation("approval_denied", reason=reason), started=started)
            if state.approval.kind == "edit" and state.approval.args is not None:
                # Edited arguments are evaluated again from step 3; the human has already said yes.
                call = call.with_args(state.approval.args)
                decision = state.decision = self._evaluate(call, state.policy, state.view)
                if decision.denied:
                    return Admission(call, decision, started=started, approval=state.approval)
            decision = decision.replace(action="allow")
        return (yield from self._reserve_steps(call, state, decision))

    def _reserve_steps(self, call: ToolCall, state: AttemptState, decision: Decision) -> Steps[Admission]:
        # Step 6: reserve every limit atomically (the fast path: no limits, no I/O).
        if not decision.limits:
            return Admission(call, decision, started=state.started, approval=state.approval)
        reserved, verdict = yield from self._budget_steps(decision, Reserve(decision.limits))
        token = verdict.token if verdict is not None and reserved.allowed else None
        fail_open = verdict is None and reserved.allowed
        return Admission(call, reserved, token, state.started, state.approval, fail_open)  # positional: cheaper

    def _ask_and_hold_steps(self, call: ToolCall, state: AttemptState, decision: Decision) -> Steps[Admission]:
        """Step 5 with the quota held: reserved before the human is asked, so concurrent calls see it.

        No human is asked about a call the budget would refuse, and a call a human approved is not then
        refused for want of budget. Rejection, timeout or a failed approver gives the quota back.
        """
        started = state.started
        if self._asker is None:
            if decision.limits:  # a rate limit is the more useful answer when the budget is gone anyway
                checked, _ = yield from self._budget_steps(decision, Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            reason = decision.reason or f"{call.tool} requires a human's approval and no approver is set"
            return Admission(call, decision.violation("approval_required", reason=reason), started=started)
        fail_open = False
        if decision.limits:
            held, verdict = yield from self._budget_steps(decision, Reserve(decision.limits))
            if held.denied:
                return Admission(call, held, started=started)
            if verdict is not None and verdict.token is not None:
                state.held = (decision.limits, verdict.token)
            fail_open = verdict is None
        answer = yield from self._ask_steps(call, decision)
        refusal: Decision | None = None
        if isinstance(answer, Decision):  # timed out or the approver failed
            refusal = answer
        else:
            state.approval = answer
            if not answer.approved:
                refusal = decision.violation("approval_denied", reason=answer.reason or "a human declined this call")
        if refusal is not None:
            yield from self._release_held_steps(state, call.tool)
            return Admission(call, refusal, started=started, approval=state.approval)
        assert state.approval is not None
        if state.approval.kind == "edit" and state.approval.args is not None:
            call = call.with_args(state.approval.args)
            edited = state.decision = self._evaluate(call, state.policy, state.view)
            if edited.denied:
                yield from self._release_held_steps(state, call.tool)
                return Admission(call, edited, started=started, approval=state.approval)
            if edited.limits != decision.limits:  # the edit changed what the call costs: reserve that instead
                yield from self._release_held_steps(state, call.tool)
                return (yield from self._reserve_steps(call, state, edited.replace(action="allow")))
            decision = edited
        token = state.held[1] if state.held is not None else None
        state.held = None  # handed to the admission
        return Admission(
            call,
            decision.replace(action="allow"),
            token=token,
            started=started,
            approval=state.approval,
            fail_open=fail_open,
        )

    def _release_held_steps(self, state: AttemptState, tool: str) -> Steps[None]:
        if state.held is not None:
            charges, token = state.held
            state.held = None
            yield from self._release_steps(charges, token, tool)

    def _release_steps(self, charges: tuple[LimitCharge, ...], token: str, tool: str) -> Steps[None]:
        if not charges:
            return
        try:
            yield Release(charges, token)
        except StoreError as exc:
            log.error("could not give quota back for %s: %s", tool, exc)

    def _ask_steps(self, call: ToolCall, decision: Decision) -> Steps[ApprovalDecision | Decision]:
        timeout = decision.approval_timeout_s if decision.approval_timeout_s is not None else self.approval_timeout_s
        request = ApprovalRequest(  # positional, in the field order: tool, args, server, identity, ...
            call.tool,
            dict(call.args),
            call.server,
            call.identity,
            call.session,
            decision.rule,
            decision.reason,
            decision.risk_class,
            decision.approval_description,
            timeout,
            decision.redact,
        )
        answer: Answer = yield Ask(request, timeout, decision.redact)
        if answer.decision is not None:
            return answer.decision
        assert answer.code is not None
        return decision.violation(answer.code, reason=answer.reason)

    def _retry_for(self, call: ToolCall, decision: Decision) -> RetryPolicy | None:
        """The retry policy for this call, or None: retries only where repeating the call is known to be safe."""
        retry = self.retry
        if retry is None or decision.retry is False:
            return None
        if decision.retry is True or not retry.idempotent_only:
            return retry
        annotations = call.annotations
        if annotations and (annotations.get("readOnlyHint") is True or annotations.get("idempotentHint") is True):
            return retry
        return None

    def _run_steps(
        self,
        call: ToolCall,
        state: AttemptState,
        decision: Decision | None,
        fn: Callable[..., Any],
        is_error: Callable[[Any], bool] | None,
    ) -> Steps[GuardResult]:
        """The whole call: admit, then call the tool with retries, each attempt charged, then one event.

        Quota comes back only when the tool is known not to have run: refused before the call, the
        transport failed before sending, or the tool returned an error result (unless the limit counts
        failures). A timeout, a connection lost mid-call, an exception from inside the tool or a
        cancellation keeps its charge: the tool may have acted.
        """
        admission = yield from self._admission_steps(call, state, decision)
        if not admission.admitted:
            yield from self._finish_steps(admission, "denied", None)
            return GuardResult(violation=admission.decision, admission=admission)
        retry = self._retry_for(admission.call, admission.decision)
        charges = admission.decision.limits
        token = admission.token
        admission.token = None  # this loop settles every attempt's quota itself
        args = admission.call.args
        # tenacity decides whether and how long to wait (asked after a failed attempt, as its drivers do); this
        # loop performs the answer as its own Call and Sleep steps. The state is made at the first failure.
        retry_state: RetryCallState | None = None
        attempt = 1
        while True:
            state.called = True
            try:
                value = yield Call(fn, args)
            except GeneratorExit:
                raise
            except Exception as exc:
                if token is not None and _never_ran(exc):
                    yield from self._release_steps(charges, token, call.tool)
                elif token is not None and _is_error_result(exc):
                    yield from self._release_steps(_uncounted(charges), token, call.tool)
                wait = None
                if retry is not None:
                    retry_state = retry_state or retry.retry_state()
                    retry_state.set_exception((type(exc), exc, exc.__traceback__))
                    wait = next_sleep(retry_state)
                if wait is None:
                    admission.attempts = attempt
                    yield from self._finish_steps(admission, "error", exc)
                    raise
                last_error: BaseException | None = exc
            except BaseException as exc:  # cancelled or interrupted while the tool ran: its charge is kept
                admission.attempts = attempt
                yield from self._finish_steps(admission, "cancelled", exc)
                raise
            else:
                failed = _failed(value, is_error)
                if failed and token is not None:
                    yield from self._release_steps(_uncounted(charges), token, call.tool)
                wait = None
                if retry is not None and failed:
                    retry_state = retry_state or retry.retry_state()
                    retry_state.set_result(value)
                    wait = next_sleep(retry_state)
                if wait is None:
                    admission.attempts = attempt
                    policy = state.policy if state.policy is not None else self.policy
                    withheld: Decision | None = None
                    if not policy.session_free:
                        value, withheld = yield from self._after_steps(admission, policy, value)
                    yield from self._finish_steps(admission, "error" if failed else "ok", None)
                    return GuardResult(value=value, violation=withheld, admission=admission)
                last_error = None
            # Every attempt is charged: a retry reserves again, and stops when the budget is gone.
            try:
                yield Sleep(wait)
            except GeneratorExit:
                raise
            except BaseException as exc:
                admission.attempts = attempt
                yield from self._finish_steps(admission, "cancelled", exc)
                raise
            token = None
            if charges:
                again, verdict = yield from self._budget_steps(admission.decision, Reserve(charges))
                if again.denied:
                    admission.attempts = attempt
                    if last_error is not None:
                        yield from self._finish_steps(admission, "error", last_error)
                        raise last_error
                    yield from self._finish_steps(admission, "error", None)
                    return GuardResult(value=value, admission=admission)
                token = verdict.token if verdict is not None else None
            attempt += 1

    def _finish_steps(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> Steps[None]:
        if admission.finished:
            return None
        admission.finished = True
        decision = admission.decision
        if admission.token is not None:
            give_back: tuple[LimitCharge, ...] = ()
            if outcome == "denied":  # refused, or admitted but never called: all of it
                give_back = decision.limits
            elif outcome == "error" and error is not None and _never_ran(error):
                give_back = decision.limits  # the transport failed before sending: the tool did not run
            elif outcome == "error" and (error is None or _is_error_result(error)):
                # An error result: the tool reported failure (the limits that count failures keep theirs).
                # Any other exception is ambiguous (the tool may have acted): its charge is kept.
                give_back = _uncounted(decision.limits)
            token, admission.token = admission.token, None
            yield from self._release_steps(give_back, token, decision.tool)
        self._record(admission, outcome, error)
        return None

    def _should_wait(self, admission: Admission) -> bool:
        d = admission.decision
        return (
            self.on_rate_limit == "wait"
            and d.code == "rate_limited"
            and d.retry_after_s is not None
            and d.retry_after_s <= self.max_wait_s
        )

    def _coerce_given(self, approval: Any) -> ApprovalDecision | None:
        if approval is None:
            return None
        try:
            return coerce_decision(approval)
        except ApprovalError as exc:
            # Only the type: a resume value may carry edited arguments, redacted ones included.
            log.error("invalid approval answer (%s): %s", type(approval).__name__, exc)
            return ApprovalDecision.deny("the approval answer was not understood")

    def _record(self, admission: Admission, outcome: Outcome, error: BaseException | None) -> list[AuditSink]:
        """Write the call's one event (once); returns the sinks that failed. Never raises.

        The event is taken down now and built when a sink needs it (:class:`~mcp_guard._audit.events.CallEvent`).
        """
        if admission.recorded:
            return []
        admission.recorded = True
        sinks = admission.sinks if admission.sinks is not None else self.audit_sinks
        if not sinks:
            return []
        try:
            event = CallEvent(admission, outcome, error, self.clock(), self._policy_hash, self._audit_key)
        except Exception as exc:  # auditing must never break the call it records (an injected clock that fails)
            log.error("could not record the audit event for %s (%s)", admission.call.tool, type(exc).__name__)
            return []
        failed = emit(sinks, event)
        if failed:
            with self._audit_lock:
                self.audit_failures += len(failed)
        return failed

    def _guard_fault(self, call: ToolCall, state: AttemptState, exc: Exception) -> GuardResult:
        # run/arun never raise for the guard's own faults: the call is refused (closed), with one event.
        refusal = unavailable(call.tool, exc, call.server, self.policy, redact_for(state.policy or self.policy, call))
        admission = Admission(call, refusal, finished=True)
        if not state.recorded:
            self._record(admission, "denied", None)
        return GuardResult(violation=admission.decision, admission=admission)

    # -- drivers: perform the I/O the steps ask for ----------------------------------------------------

    def _drive(self, steps: Steps[T]) -> T:
        """Run ``steps`` to the end, performing each action here and now (for sync callers)."""
        value: Any = None
        error: BaseException | None = None
        while True:
            done, op = _advance(steps, value, error)
            if done:
                return op  # type: ignore[no-any-return]  # the steps' return value
            try:  # an exception is handed to the steps: they settle quota and audit, then re-raise
                value, error = self._perform(op), None
            except BaseException as exc:
                value, error = None, exc

    async def _adrive(self, steps: Steps[T]) -> T:
        """Run ``steps`` to the end, awaiting each action (for async callers)."""
        value: Any = None
        error: BaseException | None = None
        while True:
            done, op = _advance(steps, value, error)
            if done:
                return op  # type: ignore[no-any-return]
            try:
                value, error = await self._aperform(op), None
            except BaseException as exc:
                value, error = None, exc

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Call):
            return sync_result(op.fn(**op.args))
        if isinstance(op, Ask):
            return self._ask_sync(op)  # turns every approver failure into an answer
        if isinstance(op, Sleep):
            return self.sleep(op.seconds)
        return self._store_sync(op)

    async def _aperform(self, op: Op) -> Any:
        if isinstance(op, Call):
            # ``fn`` is normally a coroutine function; a plain function's result is used as is.
            value = op.fn(**op.args)
            return await value if inspect.isawaitable(value) else value
        if isinstance(op, Ask):
            return await self._ask_async(op)
        if isinstance(op, Sleep):
            return await self.asleep(op.seconds)
        return await self._store_async(op)

    def _store_sync(self, op: StoreOp) -> Any:
        if self._store_bounded:  # a third-party store: a hung call is abandoned and the call refused
            return _verdict_of(op, *_STORE_WORKERS.call(self.store_timeout_s, _store_op, self.store, op))
        try:
            value = _store_op(self.store, op)
        except Exception as exc:  # built-in stores raise StoreError; anything else fails closed too
            raise _as_store_error(exc) from exc
        return _checked_verdict(op, value)

    async def _store_async(self, op: StoreOp) -> Any:
        if self._store_bounded:
            return _verdict_of(op, *await within(_astore_op(self.store, op), self.store_timeout_s))
        try:
            value = await _astore_op(self.store, op)
        except Exception as exc:
            raise _as_store_error(exc) from exc
        return _checked_verdict(op, value)

    def _ask_sync(self, op: Ask) -> Answer:
        # The sync caller may itself be inside a running event loop, so nothing here runs a loop in this thread.
        assert self._asker is not None  # the steps ask only when there is an approver
        return _answer_of(op, self._asker.ask(op.request, op.timeout_s))

    async def _ask_async(self, op: Ask) -> Answer:
        assert self._asker is not None
        return _answer_of(op, await self._asker.aask(op.request, op.timeout_s))


class PlainCall:
    """An allowed call with no quota, no approval and no retry, whose event is written as it ends (audit open).

    What :meth:`Pipeline._run_steps` does for such a call, without a generator and its driver (~1 µs): the entry
    point calls the tool inside ``with plain as args:`` (a failure or cancellation there is recorded as it
    propagates) and hands its value to :meth:`result`, which records the outcome. Nothing here can fail but the tool.
    """

    __slots__ = ("admission", "is_error", "record")

    def __init__(
        self,
        admission: Admission,
        is_error: Callable[[Any], bool] | None,
        record: Callable[[Admission, Outcome, BaseException | None], object],
    ) -> None:
        self.admission = admission
        self.is_error = is_error
        self.record = record

    def __enter__(self) -> Mapping[str, Any]:
        return self.admission.call.args

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        # As the steps would: an exception is the tool's error; anything else (cancelled, interrupted) is a
        # cancellation; GeneratorExit is passed on unrecorded.
        if exc is not None and not isinstance(exc, GeneratorExit):
            self.record(self.admission, "error" if isinstance(exc, Exception) else "cancelled", exc)

    def result(self, value: Any) -> GuardResult:
        """The tool returned ``value``: write the call's event and hand the value on."""
        self.record(self.admission, "error" if _failed(value, self.is_error) else "ok", None)
        return GuardResult(value, None, self.admission)


# -- helpers ---------------------------------------------------------------------------------------------


def _advance(steps: Steps[Any], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Send the last action's result (or throw its exception) into ``steps``: (True, what they returned) when
    they are done, else (False, the next action)."""
    try:
        return False, (steps.throw(error) if error is not None else steps.send(value))
    except StopIteration as stop:
        return True, stop.value


class _NeverRan(TypeError):
    """An async tool handed to a sync entry point: its coroutine was closed unstarted, so the tool never ran."""


def sync_result(value: Any) -> Any:
    # An async tool handed to invoke/run would "succeed" with an un-awaited coroutine as its result.
    if type(value) is CoroutineType:  # inspect.iscoroutine without the call (CoroutineType has no subclasses)
        value.close()
        raise _NeverRan("the tool returned a coroutine: call async tools with ainvoke/arun, not invoke/run")
    return value


def _is_error_result(exc: BaseException) -> bool:
    """An exception that carries a tool's error *result*: LangChain's ``ToolException``, which is how
    langchain-mcp-adapters hands on an MCP result marked ``isError``. Read by name: no LangChain import."""
    return any(cls.__name__ == "ToolException" for cls in type(exc).__mro__)


def _never_ran(exc: BaseException) -> bool:
    """The tool is known not to have run: the call was never sent, or never started."""
    return isinstance(exc, _NeverRan) or _not_sent(exc)


def _uncounted(charges: tuple[LimitCharge, ...]) -> tuple[LimitCharge, ...]:
    """The charges a failed call gives back: all but those on a budget key some limit counts failures for.

    A budget key holds one entry per call, so a limit that counts failures keeps it for every limit
    sharing that key (keeping too much is the safe side).
    """
    kept = {c.key for c in charges if c.count_failures}
    return tuple(c for c in charges if c.key not in kept) if kept else charges


def _failed(value: Any, is_error: Callable[[Any], bool] | None) -> bool:
    if is_error is not None:
        try:
            return bool(is_error(value))
        except Exception:  # the tool ran; a broken predicate must not turn its result into a crash
            log.exception("is_error raised; counting the call as successful")
            return False
    return result_is_error(value)


def unavailable(
    tool: str, exc: BaseException, server: str | None, policy: Any, redact: tuple[str, ...] = ()
) -> Decision:
    """The ``guard_unavailable`` refusal for a fault of the guard itself (see :meth:`Guard.unavailable`)."""
    log.error("mcp-guard failed while checking %s (%s)", tool, type(exc).__name__, exc_info=exc)
    return Decision.deny(
        tool,
        "guard_unavailable",
        server=server,
        reason=f"the policy guard failed: {type(exc).__name__}",
        rule="/guard",
        policy=getattr(policy, "hash", None),
        redact=redact,
    )


_EVERY_ARGUMENT = ("args",)


def redact_for(policy: Any, call: ToolCall) -> tuple[str, ...]:
    """The redact paths of the rules that apply to ``call``, for a refusal made without the policy's decision.

    When they cannot be known (the policy itself failed), every argument is hidden: the safe side.
    """
    try:
        paths: tuple[str, ...] = policy._redact_for(call.tool, server=call.server, annotations=call.annotations)
    except Exception:
        return _EVERY_ARGUMENT
    return paths


# -- the store and the approver, as the drivers call them -------------------------------------------------

_STORE_WORKERS = Workers("mcp-guard-store")


def _store_op(store: Store | StoreProtocol, op: StoreOp) -> Any:
    if isinstance(op, Recall):
        return _session_store(store).session_read(op.session, op.parts)
    if isinstance(op, Remember):
        return _session_store(store).session_append(op.session, op.records, op.caps, op.ttl_s)
    if isinstance(op, SessionKey):
        return _session_store(store).session_key()
    if isinstance(op, Check):
        return store.check(op.charges)
    if isinstance(op, Reserve):
        return store.reserve(op.charges)
    if isinstance(op, FindGrant):
        return cast(Store, store).find_grant(op.owner, op.digests)
    if isinstance(op, SaveGrant):
        return cast(Store, store).save_grant(op.owner, op.digest, op.grant_id, op.ttl_s)
    return store.release(op.charges, op.token)


def _session_store(store: Any) -> Any:
    if not callable(getattr(store, "session_read", None)):
        raise StoreError(f"the store {type(store).__name__} keeps no session memory (a policy here needs it)")
    return store


async def _astore_op(store: Store | StoreProtocol, op: StoreOp) -> Any:
    if isinstance(op, Recall):
        return await _session_store(store).asession_read(op.session, op.parts)
    if isinstance(op, Remember):
        return await _session_store(store).asession_append(op.session, op.records, op.caps, op.ttl_s)
    if isinstance(op, SessionKey):
        return await _session_store(store).asession_key()
    if isinstance(op, Check):
        return await store.acheck(op.charges)
    if isinstance(op, Reserve):
        return await store.areserve(op.charges)
    if isinstance(op, FindGrant):
        return await cast(Store, store).afind_grant(op.owner, op.digests)
    if isinstance(op, SaveGrant):
        return await cast(Store, store).asave_grant(op.owner, op.digest, op.grant_id, op.ttl_s)
    return await store.arelease(op.charges, op.token)


def _verdict_of(op: StoreOp, value: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise _as_store_error(error) from error
    return _checked_verdict(op, value)


def _checked_verdict(op: StoreOp, value: Any) -> Any:
    """A store's answer, or StoreError when it is not a Verdict the guard can act on (fail closed)."""
    if isinstance(op, (Release, SaveGrant)):
        return None
    if isinstance(op, FindGrant):
        if value is not None and not isinstance(value, str):
            raise StoreError(f"the store returned a grant id of type {type(value).__name__}")
        return value
    if isinstance(op, (Recall, Remember, SessionKey)):
        return _checked_memory(op, value)
    if not isinstance(value, Verdict) or type(value.ok) is not bool:
        raise StoreError(f"the store returned {type(value).__name__}, not a Verdict")
    if isinstance(op, Reserve) and value.ok and value.token is not None and not isinstance(value.token, str):
        raise StoreError(f"the store returned a reservation token of type {type(value.token).__name__}")
    return value


def _checked_memory(op: Recall | Remember | SessionKey, value: Any) -> Any:
    """A store's answer to a session-memory op, or StoreError when it has the wrong shape (fail closed)."""
    if isinstance(op, SessionKey):
        if not isinstance(value, bytes) or not value:
            raise StoreError("the store returned no session key")
        return value
    if not isinstance(value, dict):
        raise StoreError(f"the store returned {type(value).__name__} for session memory, not a dict")
    return value


def _memory_down(call: ToolCall, policy: Policy) -> Decision:
    return Decision.deny(
        call.tool,
        "guard_unavailable",
        server=call.server,
        reason="the session memory could not be read",
        rule="/store",
        policy=policy.hash,
    )


class _NoResult:
    """No result was handed over (an adapter finished a call without it)."""

    __slots__ = ()


_NO_RESULT: Any = _NoResult()


def _as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _answer_of(op: Ask, outcome: Asked) -> Answer:
    """What the approver's outcome means for the call: an answer, or the code of why there is none."""
    raw, error = outcome
    if isinstance(error, NoAnswer):
        return Answer(code="approval_timeout", reason=f"no approval within {op.timeout_s:g} s")
    if error is not None:
        # The model is told a human did not approve; the details go to the log, with any redacted argument
        # the approver's message quotes blanked.
        detail = scrub(str(error), op.request.args, op.redact)
        log.error("approver failed for %s: %s: %s", op.request.tool, type(error).__name__, detail)
        return Answer(code="approval_denied", reason="the approval could not be obtained")
    try:
        return Answer(decision=coerce_decision(raw))
    except ApprovalError:
        log.error("approver for %s returned an invalid answer (%s)", op.request.tool, type(raw).__name__)
        return Answer(code="approval_denied", reason="the approver gave no valid answer")


__all__ = ["NO_RESULT", "Pipeline", "PlainCall", "sync_result", "unavailable"]

NO_RESULT = _NO_RESULT
