"""The pipeline: steps 1-8 of a guarded call written once as generator steps, and the two drivers that run them.

Each step is a generator that *yields* the I/O it needs (:mod:`mcp_guard._calls.ops`: check or reserve quota, give
it back, ask a human, call the tool, sleep) and is sent the result; :meth:`Pipeline.drive` performs that I/O
for sync callers and :meth:`Pipeline.adrive` for async ones (tenacity's design: a loop asking what to do next
and doing it). So the logic of a call, waits and retries included, exists once, and ``run``/``arun`` cannot
drift apart.

Read in this order: :meth:`~Pipeline.run_plan` (what ``Guard.run`` starts),
:meth:`~Pipeline._run_steps` (the whole call), :meth:`~Pipeline._admission_steps` (steps 1-6 with rate-limit
waits), :meth:`~Pipeline._core_admit_steps` (decide, ask, reserve), :meth:`~Pipeline._finish_steps` (give
quota back, write the event), then the drivers.

A :class:`~mcp_guard.Guard` holds one :class:`Pipeline` (built from its options, frozen in a
:class:`~mcp_guard._guard.config.PipelineConfig`) and delegates each entry point to it.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import CoroutineType, GeneratorType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from mcp_guard._audit.events import AuditSink, CallEvent, emit, iso_time, scrub
from mcp_guard._calls.approval import (
    ApprovalDecision,
    ApprovalRequest,
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
from mcp_guard._guard.config import PipelineConfig
from mcp_guard._guard.grants import grant_digest, grant_owner, grant_ttl, lookup_digests, new_grant_id
from mcp_guard._guard.memory import caps as memory_caps
from mcp_guard._guard.memory import input_record, parts_to_read, result_records, result_trust, view_from
from mcp_guard._guard.perform import (
    STORE_WORKERS,
    answer_of,
    as_store_error,
    astore_op,
    checked_verdict,
    store_op,
    verdict_of,
)
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
from mcp_guard._stores import Verdict

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from mcp_guard._calls.call import AdmitKeywords, CallKeywords, RunKeywords

log = logging.getLogger("mcp_guard")

T = TypeVar("T")


class Pipeline:
    """Steps 1-8 of a guarded call and the drivers that run them, for one :class:`~mcp_guard.Guard`.

    Holds the frozen options (:class:`~mcp_guard._guard.config.PipelineConfig`) and the policy in force, which a
    reload swaps (:meth:`use_policy`); a call reads the policy once at its start and is decided by it to the end.
    """

    __slots__ = ("_audit_lock", "audit_failures", "config", "pins", "policy", "policy_hash", "shadow")

    def __init__(self, config: PipelineConfig, policy: Policy, pins: PinWatch | None = None) -> None:
        self.config = config
        self.shadow: Shadow | None = None
        self.use_policy(policy, pins)
        self.audit_failures = 0
        """Audit writes that failed (one per sink per event), counted in both modes."""
        self._audit_lock = threading.Lock()

    def use_policy(self, policy: Policy, pins: PinWatch | None = None) -> None:
        """Put ``policy`` in force (at construction and on reload); calls already started keep theirs."""
        # Modes first, so a call decided by the new policy finds them; the shadow table is kept once made,
        # since calls decided by the previous policy may still be finishing.
        if self.shadow is not None or Shadow.needed(policy, self.config.mode):
            shadow = self.shadow or Shadow(self.config.mode)
            shadow.use(policy)
            self.shadow = shadow
        self.pins = pins
        self.policy = policy
        self.policy_hash: str | None = getattr(policy, "hash", None)

    def copy(self) -> Pipeline:
        """A pipeline for a view of its Guard (``with_approver``): the same policy for now, its own config."""
        return copy.copy(self)

    # -- what the entry points start: steps to drive, or the answer when it needs no I/O -------------

    def run_plan(
        self, tool: str, args: Mapping[str, Any] | None, fn: Callable[..., Any], keywords: RunKeywords
    ) -> Steps[GuardResult] | QuickRun:
        """The steps of the whole call; or, when the decision is all there is (refused outright, or allowed with
        nothing to count, ask, retry or read), a :class:`QuickRun` that calls the tool without steps."""
        approval = keywords.pop("approval", None)
        is_error = keywords.pop("is_error", None)
        call = new_call(tool, args, **cast("CallKeywords", keywords))
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        config = self.config
        started = time.perf_counter()
        decision: Decision | None = None
        if approval is None and policy.session_free:  # a session-aware policy reads memory first: the steps
            decision = self.evaluate(call, policy)
            if decision.denied and self.shadow is None:
                # Refused outright: what the steps do, without them. The steps scrub a refusal's reason once more
                # where the rule redacts (for an approver's or a store's words): so here, for the same text.
                if decision.redact and decision.reason is not None:
                    decision = decision.replace(reason=scrub(decision.reason, call.args, decision.redact))
                admission = Admission.done(call, decision, started)
                self._record(admission, "denied", None)
                return QuickRun(admission, None, None, GuardResult(None, decision, admission))
            if decision.action == "allow" and not decision.limits and self._retry_for(call, decision) is None:
                if not config.audit_sinks:  # nothing to write either
                    return QuickRun(Admission.done(call, decision, 0.0), is_error, None)
                if self.shadow is None and config.audit_failure == "open":
                    return QuickRun(Admission.done(call, decision, started), is_error, self._record)
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

    def admit_plan(
        self, tool: str, args: Mapping[str, Any] | None, keywords: AdmitKeywords
    ) -> Admission | Steps[Admission]:
        """``Guard.admit``: steps 1-6; or the admission itself when the decision is all there is (refused
        outright, or allowed with nothing to count or ask)."""
        approval = keywords.pop("approval", None)
        call = new_call(tool, args, **cast("CallKeywords", keywords))
        policy = self.policy  # one policy for the whole call, even if a reload lands midway
        if approval is not None or self.shadow is not None or not policy.session_free:
            return self._admission_steps(call, AttemptState(self._coerce_given(approval), policy=policy), None)
        started = time.perf_counter()
        decision = self.evaluate(call, policy)
        if decision.denied or (
            decision.action == "allow" and not decision.limits and self.config.audit_failure == "open"
        ):
            return Admission(call, decision, None, started)  # positional: keywords cost ~0.2 µs more per call
        return self._admission_steps(call, AttemptState(None, started, policy=policy), decision)

    def check_plan(self, tool: str, args: Mapping[str, Any] | None, keywords: CallKeywords) -> Steps[Decision]:
        """``Guard.check``: steps 1-4 without side effects."""
        return self._check_steps(new_call(tool, args, **keywords))

    def finish_plan(
        self, admission: Admission, outcome: Outcome, error: BaseException | None, result: Any
    ) -> Steps[GuardResult | None] | GuardResult | None:
        """``Guard.finish``: judge and remember the result (when handed over and the policy reads results), give
        quota back where due, write the event; without steps when no quota can come back."""
        policy = self.policy
        if policy.session_free or admission.finished or not admission.admitted or outcome not in ("ok", "error"):
            # Nothing to judge or remember: settled here, with steps only when quota can come back (a call that
            # did not run, or failed: see _finish_steps); any other outcome keeps its reservation.
            answer = None if result is NO_RESULT else GuardResult(result, None, admission)
            if admission.token is not None and (outcome == "denied" or outcome == "error"):
                steps = self._finish_steps(admission, outcome, error)
                return steps if answer is None else self._then(steps, answer)
            if not admission.finished:
                admission.finished = True
                admission.token = None
                self._record(admission, outcome, error)
            return answer
        return self._after_then_settle_steps(admission, outcome, error, policy, result)

    def _after_then_settle_steps(
        self, admission: Admission, outcome: Outcome, error: BaseException | None, policy: Policy, result: Any
    ) -> Steps[GuardResult | None]:
        value, violation = yield from self._after_steps(admission, policy, result)
        yield from self._finish_steps(admission, outcome, error)
        return None if result is NO_RESULT else GuardResult(value, violation, admission)

    @staticmethod
    def _then(steps: Steps[None], answer: T) -> Steps[T]:
        yield from steps
        return answer

    def observe_plan(self, text: str, session: str | None) -> Steps[None] | None:
        """``Guard.observe_input``: remember the user's words, when a check of the policy reads them."""
        if session is None or not isinstance(text, str) or not text.strip():
            return None
        if "texts" not in self.policy.session_reads:
            return None
        return self._observe_steps(text, str(session))

    def session_view_steps(self, session: str) -> Steps[SessionView]:
        """``Guard.session_view``: what the guard remembers of ``session``, as the policy sees it."""
        view = yield from self._view_steps(ToolCall("", {}, session=session), self.policy)
        if view is None:
            raise StoreError("the session memory could not be read")
        return view

    # -- the steps, once -------------------------------------------------------------------------------

    def evaluate(self, call: ToolCall, policy: Policy | None = None, view: SessionView | None = None) -> Decision:
        policy = self.policy if policy is None else policy  # the call's own policy, across a reload
        try:
            problem = self._argument_problem(call)
            if problem is not None:
                # Refused before the policy reads the arguments, but its rules' redact paths hide them all the
                # same (spec section 10), and the reason may quote a value (a schema error names what it got).
                redact = redact_for(policy, call)
                return Decision.malformed(
                    call.tool, scrub(problem, call.args, redact), server=call.server, policy=policy.hash, redact=redact
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
            if self.pins is not None:
                decision = pinned_decision(self.pins, decision, call.tool, call.server)
            return decision
        except Exception as exc:
            # Fail closed: a policy that cannot decide never lets a call through. The model is told the
            # guard could not check the call; the log gets the exception's type only (its text or
            # traceback may quote arguments, redacted ones included).
            log.error("policy evaluation failed for %s (%s); denying the call", call.tool, type(exc).__name__)
            return Decision.unavailable(
                call.tool,
                "the policy could not be evaluated for this call",
                server=call.server,
                policy=getattr(policy, "hash", None),
                redact=redact_for(policy, call),
            )

    def _argument_problem(self, call: ToolCall) -> str | None:
        """Spec section 8: arguments the tool would run with differently than the policy sees them."""
        bad = non_finite_path(call.args)
        if bad is not None:
            return f"{bad} is not a finite number (NaN and Infinity are not valid JSON)"
        if call.tool_schema is not None and self.config.check_tool_schema:
            return tool_schema_error(call.tool_schema, call.args)
        return None

    def _budget_steps(self, decision: Decision, op: Check | Reserve) -> Steps[tuple[Decision, Verdict | None]]:
        """Check or reserve ``decision``'s limits; a refusal or a store failure becomes a denial."""
        try:
            verdict: Verdict = yield op
        except StoreError as exc:
            if self.config.fail_mode == "open":
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
        return decision.rate_limited(verdict.charge, verdict.retry_after_s), verdict

    def _check_steps(self, call: ToolCall) -> Steps[Decision]:
        """Steps 1-4 for a pre-flight look: the decision, with the budget checked (nothing reserved).

        A call that needs approval but is covered by a grant is allowed here (nothing to pause for); the run
        that follows finds the same grant.
        """
        policy = self.policy
        if policy.session_reads:
            view = yield from self._view_steps(call, policy)
            decision = self.evaluate(call, policy, view) if view is not None else _memory_down(call, policy)
        else:
            decision = self.evaluate(call, policy)
        if decision.needs_approval and self.config.grants:
            granted = yield from self._find_grant_steps(call, decision, policy)
            if granted is not None:
                decision = decision.replace(action="allow")
        if not decision.denied and decision.limits:
            decision, _ = yield from self._budget_steps(decision, Check(decision.limits))
        return decision if self.shadow is None else checked(self.shadow, decision)

    def _admission_steps(self, call: ToolCall, state: AttemptState, decision: Decision | None) -> Steps[Admission]:
        """Steps 1-6 with rate-limit waits; a cancellation writes its event; closed audit writes ahead."""
        try:
            admission = yield from self._admit_steps(call, state, decision)
            slept = 0.0
            while self._should_wait(admission):
                wait = float(admission.decision.retry_after_s or 0.0)
                if slept + wait > self.config.max_wait_s:
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
        if admission.admitted and self.config.audit_failure == "closed" and self.config.audit_sinks:
            admission = yield from self._write_ahead_steps(admission)
        return admission

    def _abort_steps(self, call: ToolCall, state: AttemptState, exc: BaseException) -> Steps[None]:
        # Quota held for this call (an approval pending, a reservation just made) goes back: the tool was
        # never handed the call. Then the call's one event, outcome "cancelled".
        if state.held is not None:
            charges, token = state.held
            state.held = None
            yield from self._release_steps(charges, token, call.tool)
        decision = state.decision or Decision.unavailable(
            call.tool, server=call.server, redact=redact_for(state.policy or self.policy, call)
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
            decision = self.evaluate(call, state.policy, state.view)  # steps 1-3
        if self.shadow is None:
            return self._core_admit_steps(call, state, decision)
        asks = self.config.asker is not None
        return shadow_admit_steps(self.shadow, self._core_admit_steps, call, state, decision, asks)

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
            if self.config.fail_mode == "open":
                log.warning(
                    "session memory unreadable, deciding %s on an empty session (fail_mode='open'): %s", call.tool, exc
                )
                return EMPTY_VIEW
            log.error("session memory unreadable, refusing %s (fail_mode='closed'): %s", call.tool, exc)
            return None
        return view_from(parts, key)

    def _key_steps(self) -> Steps[bytes]:
        """The key of session fingerprints: the audit key when set, else the store's own (shared by its clients)."""
        if self.config.audit_key is not None:
            return self.config.audit_key
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
            trust, trusted_values = result_trust(policy, call, verdict)
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
                    trusted_values,
                )
                if records:
                    limits = memory_caps(self.config.session_memory_bytes)
                    trimmed = yield Remember(session, records, limits, self.config.session_ttl_s)
                    self._audit_trimmed(session, trimmed, limits)
            except StoreError as exc:
                log.error("could not remember the result of %s in session memory: %s", call.tool, exc)
        if verdict is None:
            return None, None
        if verdict.withheld is not None:
            return None, admission.decision
        return verdict.value, None

    def _observe_steps(self, text: str, session: str) -> Steps[None]:
        limits = memory_caps(self.config.session_memory_bytes)
        try:
            trimmed = yield Remember(session, {"texts": [input_record(text)]}, limits, self.config.session_ttl_s)
        except StoreError as exc:
            log.error("could not remember the user's request in session memory: %s", exc)
            return
        self._audit_trimmed(session, trimmed, limits)

    def _audit_trimmed(self, session: str, trimmed: Any, limits: dict[str, int]) -> None:
        """Session memory is bounded: what fell out, and the cap, go to the audit."""
        if not trimmed or not self.config.audit_sinks:
            return
        for part, (records, size) in dict(trimmed).items():
            event = {
                "time": iso_time(self.config.clock()),
                "event": "session_trimmed",
                "session": session,
                "part": part,
                "dropped_records": records,
                "dropped_bytes": size,
                "cap_bytes": limits.get(part),
            }
            failed = emit(self.config.audit_sinks, event)
            if failed:
                with self._audit_lock:
                    self.audit_failures += len(failed)

    def _core_admit_steps(self, call: ToolCall, state: AttemptState, decision: Decision) -> Steps[Admission]:
        """Steps 4-6 for a decided call: ask a human where needed (quota held meanwhile), then reserve.

        With a store that keeps approval grants, a call that needs approval is first looked up among them (a
        grant answers yes, no human is asked), and a yes that grants (a session scope or a time to live) is
        kept for later identical calls once the call it answered is admitted.
        """
        if not (self.config.grants and decision.needs_approval):
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
                return Admission(call, decision.rejected(state.approval.reason), started=started)
            if state.approval.kind == "edit" and state.approval.args is not None:
                # Edited arguments are evaluated again from step 3; the human has already said yes.
                call = call.with_args(state.approval.args)
                decision = state.decision = self.evaluate(call, state.policy, state.view)
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
        if self.config.asker is None:
            if decision.limits:  # a rate limit is the more useful answer when the budget is gone anyway
                checked, _ = yield from self._budget_steps(decision, Check(decision.limits))
                if checked.denied:
                    return Admission(call, checked, started=started)
            return Admission(call, decision.no_approver(), started=started)
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
                refusal = decision.rejected(answer.reason)
        if refusal is not None:
            yield from self._release_held_steps(state, call.tool)
            return Admission(call, refusal, started=started, approval=state.approval)
        assert state.approval is not None
        if state.approval.kind == "edit" and state.approval.args is not None:
            call = call.with_args(state.approval.args)
            edited = state.decision = self.evaluate(call, state.policy, state.view)
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
        timeout = (
            decision.approval_timeout_s if decision.approval_timeout_s is not None else self.config.approval_timeout_s
        )
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
        retry = self.config.retry
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
            self.config.on_rate_limit == "wait"
            and d.code == "rate_limited"
            and d.retry_after_s is not None
            and d.retry_after_s <= self.config.max_wait_s
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
        config = self.config
        sinks = admission.sinks if admission.sinks is not None else config.audit_sinks
        if not sinks:
            return []
        try:
            event = CallEvent(admission, outcome, error, config.clock(), self.policy_hash, config.audit_key)
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
        refusal = fault_decision(
            call.tool, exc, call.server, self.policy, redact_for(state.policy or self.policy, call)
        )
        admission = Admission.done(call, refusal)
        if not state.recorded:
            self._record(admission, "denied", None)
        return GuardResult(violation=admission.decision, admission=admission)

    # -- drivers: perform the I/O the steps ask for ----------------------------------------------------

    @overload
    def drive(self, plan: Steps[T]) -> T: ...

    @overload
    def drive(self, plan: T) -> T: ...

    def drive(self, plan: Any) -> Any:
        """Run a plan to its answer, performing each action here and now (the sync driver).

        tenacity's driver: ask the steps what to do next (``send`` the last action's result, or ``throw`` its
        exception in, so they settle quota and audit), do it, until they return. A plan that needed no I/O is
        its own answer.
        """
        if type(plan) is not GeneratorType:
            return plan
        steps: Steps[Any] = plan
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                do = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            try:
                value, error = self._perform(do), None
            except BaseException as exc:
                value, error = None, exc

    @overload
    async def adrive(self, plan: Steps[T]) -> T: ...

    @overload
    async def adrive(self, plan: T) -> T: ...

    async def adrive(self, plan: Any) -> Any:
        """:meth:`drive` for async callers: each action is awaited."""
        if type(plan) is not GeneratorType:
            return plan
        steps: Steps[Any] = plan
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                do = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            try:
                value, error = await self._aperform(do), None
            except BaseException as exc:
                value, error = None, exc

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Call):
            return sync_result(op.fn(**op.args))
        if isinstance(op, Ask):
            return self._ask_sync(op)  # turns every approver failure into an answer
        if isinstance(op, Sleep):
            return self.config.sleep(op.seconds)
        return self._store_sync(op)

    async def _aperform(self, op: Op) -> Any:
        if isinstance(op, Call):
            # ``fn`` is normally a coroutine function; a plain function's result is used as is.
            value = op.fn(**op.args)
            return await value if inspect.isawaitable(value) else value
        if isinstance(op, Ask):
            return await self._ask_async(op)
        if isinstance(op, Sleep):
            return await self.config.asleep(op.seconds)
        return await self._store_async(op)

    def _store_sync(self, op: StoreOp) -> Any:
        if self.config.store_bounded:  # a third-party store: a hung call is abandoned and the call refused
            return verdict_of(op, *STORE_WORKERS.call(self.config.store_timeout_s, store_op, self.config.store, op))
        try:
            value = store_op(self.config.store, op)
        except Exception as exc:  # built-in stores raise StoreError; anything else fails closed too
            raise as_store_error(exc) from exc
        return checked_verdict(op, value)

    async def _store_async(self, op: StoreOp) -> Any:
        if self.config.store_bounded:
            return verdict_of(op, *await within(astore_op(self.config.store, op), self.config.store_timeout_s))
        try:
            value = await astore_op(self.config.store, op)
        except Exception as exc:
            raise as_store_error(exc) from exc
        return checked_verdict(op, value)

    def _ask_sync(self, op: Ask) -> Answer:
        # The sync caller may itself be inside a running event loop, so nothing here runs a loop in this thread.
        assert self.config.asker is not None  # the steps ask only when there is an approver
        return answer_of(op, self.config.asker.ask(op.request, op.timeout_s))

    async def _ask_async(self, op: Ask) -> Answer:
        assert self.config.asker is not None
        return answer_of(op, await self.config.asker.aask(op.request, op.timeout_s))


class QuickRun:
    """A call decided without I/O, run without steps: refused outright (:attr:`refused`), or allowed with nothing
    to count, ask or retry, so the tool is just called and its event written as it ends (``record``; None when
    there are no sinks).

    What :meth:`Pipeline._run_steps` does for such a call, without a generator and its driver: ~1 µs, a fifth of
    the guard's cost on the allow path. Nothing here can fail but the tool.
    """

    __slots__ = ("admission", "is_error", "record", "refused")

    def __init__(
        self,
        admission: Admission,
        is_error: Callable[[Any], bool] | None,
        record: Callable[[Admission, Outcome, BaseException | None], object] | None,
        refused: GuardResult | None = None,
    ) -> None:
        self.admission = admission
        self.is_error = is_error
        self.record = record
        self.refused = refused

    def call(self, fn: Callable[..., Any]) -> GuardResult:
        if self.refused is not None:
            return self.refused
        try:
            value = sync_result(fn(**self.admission.call.args))
        except BaseException as exc:
            self._failed(exc)
            raise
        if self.record is not None:
            self.record(self.admission, "error" if _failed(value, self.is_error) else "ok", None)
        return GuardResult(value, None, self.admission)

    async def acall(self, fn: Callable[..., Any]) -> GuardResult:
        if self.refused is not None:
            return self.refused
        try:
            value = fn(**self.admission.call.args)  # a sync ``fn``'s result is used as is
            if inspect.isawaitable(value):
                value = await value
        except BaseException as exc:
            self._failed(exc)
            raise
        if self.record is not None:
            self.record(self.admission, "error" if _failed(value, self.is_error) else "ok", None)
        return GuardResult(value, None, self.admission)

    def _failed(self, exc: BaseException) -> None:
        # As the steps would: an exception is the tool's error; anything else (cancelled, interrupted) is a
        # cancellation; GeneratorExit is passed on unrecorded.
        if self.record is not None and not isinstance(exc, GeneratorExit):
            self.record(self.admission, "error" if isinstance(exc, Exception) else "cancelled", exc)


# -- helpers ---------------------------------------------------------------------------------------------


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


def fault_decision(
    tool: str, exc: BaseException, server: str | None, policy: Any, redact: tuple[str, ...] = ()
) -> Decision:
    """The ``guard_unavailable`` refusal for a fault of the guard itself (see :meth:`Guard.unavailable`).

    The log gets the exception's type and traceback; the model gets only its type (its text may quote
    arguments, redacted ones included).
    """
    log.error("mcp-guard failed while checking %s (%s)", tool, type(exc).__name__, exc_info=exc)
    reason = f"the policy guard failed: {type(exc).__name__}"
    return Decision.unavailable(
        tool, reason, server=server, rule="/guard", policy=getattr(policy, "hash", None), redact=redact
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


def _memory_down(call: ToolCall, policy: Policy) -> Decision:
    reason = "the session memory could not be read"
    return Decision.unavailable(call.tool, reason, server=call.server, rule="/store", policy=policy.hash)


class _NoResult:
    """No result was handed over (an adapter finished a call without it)."""

    __slots__ = ()


_NO_RESULT: Any = _NoResult()


__all__ = ["NO_RESULT", "Pipeline", "QuickRun", "fault_decision", "sync_result"]

NO_RESULT = _NO_RESULT
